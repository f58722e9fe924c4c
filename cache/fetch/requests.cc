#include "cache/fetch/requests.h"

#include <atomic>
#include <vector>

#include "cache/fetch/executor.h"
#include "cache/fetcher.h"
#include "cache/util/log.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return cache_log(); }

class TrackedSink : public http::Sink {
 public:
  using Note = std::function<void(bool answered, http::Outcome, long status)>;
  TrackedSink(std::shared_ptr<http::Sink> inner, Note note, std::function<void(uint64_t)> done)
      : inner_(std::move(inner)), note_(std::move(note)), done_(std::move(done)) {}
  bool on_head(const http::Head& h) override {
    answered_.store(true);
    return inner_->on_head(h);
  }
  bool on_data(const char* d, size_t n) override { return inner_->on_data(d, n); }
  void on_done(http::Outcome o, const http::Head& h, std::string body,
               std::string detail) override {
    // First: what the sink decides (retry or not) sees upstream's health. A
    // transfer that stalls after the headers came from a live upstream.
    note_(answered_.load(), o, h.status);
    inner_->on_done(o, h, std::move(body), std::move(detail));
    done_(id.load());
  }
  std::atomic<uint64_t> id{0};

 private:
  std::shared_ptr<http::Sink> inner_;
  Note note_;
  std::atomic<bool> answered_{false};
  std::function<void(uint64_t)> done_;
};

}  // namespace

void Requests::start(http::Request req, std::shared_ptr<http::Sink> sink, size_t origin) {
  auto finished_flag = std::make_shared<std::atomic<bool>>(false);
  const int method = req.method == http::Request::Method::kHead ? 1 : 0;
  auto note = [this, origin, method](bool answered, http::Outcome o, long status) {
    stats_.responses[method][FetcherStats::status_slot(answered ? status : 0)].fetch_add(
        1, std::memory_order_relaxed);
    noted_(health_.note(origin, answered, o, status, now_ms()));
  };
  auto tracked =
      std::make_shared<TrackedSink>(std::move(sink), note, [this, finished_flag](uint64_t id) {
        std::lock_guard lk(mu_);
        finished_flag->store(true);
        if (id) ids_.erase(id);
        --inflight_;
        cv_.notify_all();
      });
  {
    std::lock_guard lk(mu_);
    ++inflight_;
  }
  const uint64_t id = client_.start(std::move(req), tracked);
  std::lock_guard lk(mu_);
  tracked->id = id;
  if (!finished_flag->load()) ids_.emplace(id, true);
}

void Requests::cancel_all() {
  std::vector<uint64_t> ids;
  {
    std::lock_guard lk(mu_);
    for (auto& [id, unused] : ids_) ids.push_back(id);
  }
  for (uint64_t id : ids) client_.cancel(id);
  std::unique_lock lk(mu_);
  if (!cv_.wait_for(lk, std::chrono::seconds(10), [this] { return inflight_ == 0; })) {
    log()->warn("{} upstream requests did not stop in time", inflight_);
  }
}

}  // namespace netbootfs::cache
