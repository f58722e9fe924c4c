#include "cache/fetch/download.h"

#include <algorithm>
#include <utility>

#include "cache/fetch/policy.h"
#include "cache/fetcher.h"
#include "cache/util/log.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return cache_log(); }

bool is_weak_etag(const std::string& etag) { return etag.rfind("W/", 0) == 0; }

}  // namespace

Download::Download(DownloadEvents& events, BlobStore& blobs, FetcherStats& stats, int64_t stall_ms,
                   std::string path, Plan plan)
    : events_(events),
      blobs_(blobs),
      stats_(stats),
      stall_ms_(stall_ms),
      path_(std::move(path)),
      started_ms_(now_ms()),
      plan_(std::move(plan)),
      first_try_ms_(started_ms_),
      whole_(plan_.whole) {}

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
      const uint64_t end = read_end(w.offset, w.len, size);
      (end <= frontier_ && end < size ? ready : waiting).push_back(std::move(w));
    }
    readers_.swap(waiting);
  }
  stats_.download_bytes += len;
  const uint64_t size = expected_size_.value_or(UINT64_MAX);
  for (auto& w : ready) {
    const uint64_t end = read_end(w.offset, w.len, size);
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
    if (plan_.conditional && outcome == http::Outcome::kOk && head.status == 304) {
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
  const uint64_t end = read_end(offset, len, size);
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

void Download::prepare_request(http::Request& req, size_t origin) {
  req.max_recv_speed = plan_.max_rate;
  if (plan_.conditional) {
    if (!plan_.cond_etag.empty()) {
      req.if_none_match = plan_.cond_etag;
    } else if (plan_.cond_last_modified > 0) {
      req.if_modified_since = plan_.cond_last_modified;
    }
  }
  std::lock_guard lk(mu_);
  origin_ = origin;
}

bool Download::prepare_resume(http::Request& req, size_t origin) {
  req.max_recv_speed = plan_.max_rate;
  std::lock_guard lk(mu_);
  if (state_ != State::kStreaming) return false;
  req.range_from = frontier_;
  req.if_range = etag_;
  resuming_ = true;
  origin_ = origin;
  return true;
}

Download::Announced Download::announced() const {
  std::lock_guard lk(mu_);
  return Announced{expected_size_.value_or(0), etag_, last_modified_, origin_};
}

void Download::hold(Evictor::Reservation reservation) {
  std::lock_guard lk(mu_);
  reservation_ = std::move(reservation);
}

void Download::release_reservation() {
  std::lock_guard lk(mu_);
  reservation_.release();
}

void Download::await_room() {
  std::lock_guard lk(mu_);
  room_pending_ = true;
}

bool Download::defer_publish() {
  std::lock_guard lk(mu_);
  publish_owed_ = room_pending_;
  return publish_owed_;
}

bool Download::room_made() {
  std::lock_guard lk(mu_);
  room_pending_ = false;
  return std::exchange(publish_owed_, false);
}

void Download::bind(const std::shared_ptr<FileVersion>& version) {
  std::lock_guard lk(mu_);
  version_ = version;
}

int Download::write_errno() const {
  std::lock_guard lk(mu_);
  return write_errno_;
}

bool Download::whole() const {
  std::lock_guard lk(mu_);
  return whole_;
}

bool Download::complete() const {
  std::lock_guard lk(mu_);
  return state_ == State::kComplete;
}

bool Download::failed() const {
  std::lock_guard lk(mu_);
  return state_ == State::kFailed;
}

void Download::mark_failed() {
  std::lock_guard lk(mu_);
  state_ = State::kFailed;
}

Download::BodyEnd Download::end_body(http::Outcome outcome) {
  std::lock_guard lk(mu_);
  BodyEnd end;
  end.write_errno = write_errno_;
  end.refused = resume_refused_;
  end.frontier = frontier_;
  resuming_ = false;
  if (outcome == http::Outcome::kOk && (status_ == 200 || status_ == 206)) {
    // Without a Content-Length the size is known only now; publish()
    // announces it.
    if (!expected_size_) expected_size_ = frontier_;
    end.complete = frontier_ == *expected_size_;
  }
  return end;
}

std::optional<int64_t> Download::next_resume(int64_t stall_ms, double jitter) {
  std::lock_guard lk(mu_);
  const bool can = !etag_.empty() && !is_weak_etag(etag_) && expected_size_;
  auto delay =
      plan_resume(can, resumes_, now_ms() - last_progress_ms_, stall_ms, retry_after_, jitter);
  retry_after_.reset();
  if (delay) {
    resumes_++;
  } else {
    state_ = State::kFailed;
  }
  return delay;
}

PathEntry Download::entry(const std::string& sha256, int64_t validated_at) const {
  std::lock_guard lk(mu_);
  PathEntry e;
  e.sha256 = sha256;
  e.size = frontier_;
  e.etag = etag_;
  e.last_modified = last_modified_;
  e.validated_at = validated_at;
  return e;
}

Download::Completed Download::complete_as(const std::string& sha256) {
  std::lock_guard lk(mu_);
  Completed c;
  sha256_ = sha256;
  state_ = State::kComplete;
  c.readers.swap(readers_);
  c.fd = tmp_.fd();
  c.version = version_.lock();
  return c;
}

std::string Download::blob_in_use() const {
  std::lock_guard lk(mu_);
  return handles_.load() > 0 ? sha256_ : std::string();
}

}  // namespace netbootfs::cache
