#include "cache/fetch/download.h"

#include <algorithm>

#include "cache/fetch/policy.h"
#include "cache/fetcher.h"
#include "cache/util/log.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return cache_log(); }

}  // namespace

bool Download::on_head(const http::Head& head) {
  std::unique_lock lk(mu_);
  status_ = head.status;
  if (resuming_) {
    // A resume continues only the same bytes: a 206 that starts where we
    // stopped. Anything else means the validator changed (or Range is not
    // supported): the bytes would be another version's.
    if (head.status == 206 && head.range_start && *head.range_start == frontier_) return true;
    if (is_retryable(http::Outcome::kOk, head.status)) {
      // Upstream is busy or failing, not changed: on_done resumes again.
      retry_after_ = head.retry_after;
      return true;
    }
    log()->warn("{}: resume refused by upstream (status {}): the file changed", path_, head.status);
    resume_refused_ = true;
    return false;
  }
  if (head.status != 200) return true;  // judged in on_done
  expected_size_ = head.content_length;
  etag_ = head.etag;
  last_modified_ = head.last_modified.value_or(0);
  auto tmp = blobs_.create_temp();
  if (!tmp) {
    write_errno_ = tmp.error().code;
    log()->error("{}: cannot create a temp file: {}", path_, tmp.error().message);
    return false;
  }
  tmp_ = std::move(tmp).value();
  state_ = State::kStreaming;
  last_progress_ms_ = now_ms();
  if (!expected_size_) whole_ = true;
  const bool announce = !whole_;
  lk.unlock();
  if (announce) events_.on_download_head(shared_from_this());
  return true;
}

bool Download::on_data(const char* data, size_t len) {
  // Only the HTTP thread writes; readers pread below frontier_.
  if (expected_size_ && tmp_.size() + len > *expected_size_) {
    log()->warn("{}: upstream sent more bytes than Content-Length", path_);
    return false;
  }
  auto r = tmp_.append(data, len);
  if (!r) {
    std::lock_guard lk(mu_);
    write_errno_ = r.error().code;
    log()->error("{}: writing the cache failed: {}", path_, r.error().message);
    return false;
  }
  std::vector<ReadWaiter> ready;
  int fd = tmp_.fd();
  {
    std::lock_guard lk(mu_);
    frontier_ = tmp_.size();
    last_progress_ms_ = now_ms();
    const uint64_t size = expected_size_.value_or(UINT64_MAX);
    // Into two lists: compacting in place self-move-assigns, which empties a weak_ptr.
    std::vector<ReadWaiter> waiting;
    for (auto& w : readers_) {
      const uint64_t end = std::min<uint64_t>(w.offset + w.len, size);
      (end <= frontier_ && end < size ? ready : waiting).push_back(std::move(w));
    }
    readers_.swap(waiting);
  }
  stats_.download_bytes += len;
  const uint64_t size = expected_size_.value_or(UINT64_MAX);
  for (auto& w : ready) {
    uint64_t end = std::min<uint64_t>(w.offset + w.len, size);
    w.cb(Slice{fd, w.offset, static_cast<size_t>(end - w.offset)});
  }
  return true;
}

void Download::on_done(http::Outcome outcome, const http::Head& head, std::string /*body*/,
                       std::string detail) {
  auto self = shared_from_this();
  State st;
  {
    std::lock_guard lk(mu_);
    st = state_;
  }
  if (st == State::kConnecting) {
    if (conditional_ && outcome == http::Outcome::kOk && head.status == 304) {
      events_.on_not_modified(self);
    } else {
      events_.on_download_early_failure(self, outcome, head.status, head.retry_after, detail);
    }
    return;
  }
  events_.on_download_body_done(self, outcome, detail);
}

void Download::read(uint64_t offset, size_t len, ReadCallback cb,
                    std::shared_ptr<std::atomic<int64_t>> handle_progress) {
  std::unique_lock lk(mu_);
  const uint64_t size = expected_size_.value_or(0);  // known before any reader exists
  if (offset >= size || len == 0) {
    lk.unlock();
    cb(Slice{tmp_.fd(), offset, 0});
    return;
  }
  const uint64_t end = std::min<uint64_t>(offset + len, size);
  const bool ready = state_ == State::kComplete || (end < size && end <= frontier_);
  if (!ready) {
    const int64_t stall = stall_ms_;
    if (std::max(handle_progress->load(), last_progress_ms_) + stall <= now_ms()) {
      lk.unlock();  // a retry of a read that already stalled: no new wait
      cb(stats_.count(FetcherStats::ErrorSite::kReadStall,
                      Error{EIO, "read stalled: no progress for read_stall_timeout"}));
      return;
    }
    log()->debug("{}: read {}+{} parked at frontier {}", path_, offset, len, frontier_);
    readers_.push_back(ReadWaiter{offset, len, std::move(cb), std::move(handle_progress)});
    return;
  }
  int fd = tmp_.fd();
  lk.unlock();
  cb(Slice{fd, offset, static_cast<size_t>(end - offset)});
}

bool Download::sweep(int64_t now, int64_t stall_ms) {
  std::vector<ReadWaiter> expired;
  bool remaining;
  {
    std::lock_guard lk(mu_);
    std::vector<ReadWaiter> waiting;
    for (auto& w : readers_) {
      const bool stalled = std::max(w.handle_progress->load(), last_progress_ms_) + stall_ms <= now;
      (stalled ? expired : waiting).push_back(std::move(w));
    }
    readers_.swap(waiting);
    remaining = !readers_.empty();
  }
  for (auto& w : expired) {
    w.cb(stats_.count(FetcherStats::ErrorSite::kReadStall,
                      Error{EIO, "read stalled: no progress for read_stall_timeout"}));
  }
  if (!expired.empty()) {
    log()->error("{}: {} read(s) failed after {} ms without progress", path_, expired.size(),
                 stall_ms);
  }
  return remaining;
}

size_t Download::fail_all(int err, const char* why) {
  std::vector<ReadWaiter> all;
  {
    std::lock_guard lk(mu_);
    all.swap(readers_);
  }
  for (auto& w : all) w.cb(Error{err, why});
  return all.size();
}

}  // namespace netbootfs::cache
