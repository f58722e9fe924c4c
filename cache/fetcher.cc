#include "cache/fetcher.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <tsl/robin_map.h>

#include "cache/derived_keys.h"
#include "cache/http/url.h"
#include "cache/listing.h"
#include "cache/maintenance.h"
#include "cache/origins.h"
#include "cache/util/log.h"

namespace netbootfs::cache {
namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::shared_ptr<spdlog::logger> log() {
  static auto l = logger("cache");
  return l;
}

bool is_weak_etag(const std::string& etag) { return etag.rfind("W/", 0) == 0; }

}  // namespace

// ---------------------------------------------------------------------------
// Pure decisions.

OpenPlan plan_open(bool cached, int64_t validated_at_ms, int64_t now,
                   std::chrono::milliseconds revalidate) {
  if (!cached) return OpenPlan::kDownload;
  if (revalidate.count() > 0 && now - validated_at_ms < revalidate.count() &&
      now >= validated_at_ms) {
    return OpenPlan::kServeCached;
  }
  return OpenPlan::kRevalidate;
}

RevalidationVerdict judge_revalidation(http::Outcome outcome, long status) {
  if (outcome != http::Outcome::kOk) return RevalidationVerdict::kServeStale;
  switch (status) {
    case 304: return RevalidationVerdict::kNotModified;
    case 200: return RevalidationVerdict::kChanged;
    case 404:
    case 410: return RevalidationVerdict::kDeleted;
    case 401:
    case 403: return RevalidationVerdict::kDenied;
    default: return RevalidationVerdict::kServeStale;  // 5xx, 429, surprises
  }
}

int errno_for(http::Outcome outcome, long status) {
  if (outcome != http::Outcome::kOk) return EIO;
  switch (status) {
    case 404:
    case 410: return ENOENT;
    case 401:
    case 403: return EACCES;
    default: return EIO;
  }
}

bool is_retryable(http::Outcome outcome, long status) {
  if (outcome != http::Outcome::kOk) return http::is_transient(outcome);
  switch (status) {
    case 500:
    case 502:
    case 503:
    case 504:
    case 429: return true;
    default: return false;
  }
}

bool is_connection_failure(http::Outcome outcome) {
  return outcome == http::Outcome::kConnectFailed || outcome == http::Outcome::kTimeout ||
         outcome == http::Outcome::kTls;
}

std::optional<int64_t> plan_retry(int attempt, int64_t elapsed_ms, int64_t budget_ms,
                                  std::optional<int64_t> retry_after_s, double jitter) {
  if (attempt < 0 || budget_ms <= 0) return std::nullopt;
  const int64_t base = std::min<int64_t>(3200, int64_t{200} << std::min(attempt, 4));
  jitter = std::clamp(jitter, 0.0, std::nextafter(1.0, 0.0));
  int64_t delay = base / 2 + static_cast<int64_t>(jitter * static_cast<double>(base / 2));
  // Upstream asked for more time: coming back earlier would only fail again.
  if (retry_after_s && *retry_after_s > 0) {
    delay = std::max<int64_t>(delay, std::min<int64_t>(*retry_after_s, 86400) * 1000);
  }
  if (elapsed_ms + delay >= budget_ms) return std::nullopt;
  return delay;
}

// ---------------------------------------------------------------------------
// Download: one upstream transfer of one path, shared by every reader.

struct ReadWaiter {
  uint64_t offset;
  size_t len;
  ReadCallback cb;
  std::shared_ptr<std::atomic<int64_t>> handle_progress;
};

using VersionCallback = std::function<void(Result<std::shared_ptr<FileVersion>>)>;

struct Fetcher::PathState {
  std::shared_ptr<FileVersion> current;
  int64_t validated_ms = 0;  // last 200/304 for `current`
  bool loaded = false;       // index consulted
  bool is_dir = false;
  int64_t negative_until_ms = 0;
  int negative_errno = 0;
  // First time upstream said the cached `current` is gone (missing_grace).
  int64_t missing_since_ms = 0;
  // A request that will establish the current version (GET, conditional GET
  // or HEAD) and the callers waiting for it.
  std::shared_ptr<Download> pending;
  bool head_in_flight = false;
  std::vector<VersionCallback> version_waiters;
  // Filtered files cached but not yet derived with the current filter.
  std::optional<PathEntry> underived;
  bool deriving = false;
  // Directories: the upstream listing.
  std::shared_ptr<const Listing> listing;
  bool listing_in_flight = false;
  std::vector<std::function<void()>> listing_waiters;
};

struct Fetcher::Listing {
  bool available = false;
  int error = 0;  // when not available: ENOENT/EACCES (upstream said so) or EIO (unreachable)
  int64_t fetched_ms = 0;
  std::vector<ListingEntry> entries;  // sorted by name
  const ListingEntry* find(std::string_view name) const {
    auto it = std::lower_bound(entries.begin(), entries.end(), name,
                               [](const ListingEntry& e, std::string_view n) { return e.name < n; });
    return it != entries.end() && it->name == name ? &*it : nullptr;
  }
};

class Download : public http::Sink, public std::enable_shared_from_this<Download> {
 public:
  enum class State { kConnecting, kStreaming, kComplete, kFailed };

  Download(Fetcher::Impl* impl, std::string path)
      : impl_(impl), path_(std::move(path)), started_ms_(now_ms()) {}

  bool on_head(const http::Head& head) override;
  bool on_data(const char* data, size_t len) override;
  void on_done(http::Outcome outcome, const http::Head& head, std::string body,
               std::string detail) override;

  void read(uint64_t offset, size_t len, ReadCallback cb,
            std::shared_ptr<std::atomic<int64_t>> handle_progress);
  // Fails parked readers whose deadline passed; true while any remain.
  bool sweep(int64_t now, int64_t stall_ms);
  size_t fail_all(int err, const char* why = "shutting down");  // how many it answered

  Fetcher::Impl* impl_;
  const std::string path_;
  const int64_t started_ms_;
  // Set before start, read-only afterwards.
  bool conditional_ = false;
  uint64_t max_rate_ = 0;  // bytes/s, 0: unlimited
  // OpenFiles reading through it: a published download's blob is in use
  // while they are (the Download itself may outlive them a moment on the
  // worker that published it, which must not keep the blob from eviction).
  std::atomic<int> handles_{0};
  std::string cond_etag_;
  int64_t cond_last_modified_ = 0;

  std::mutex mu_;  // lock order: Fetcher::Impl::mu_ before this
  State state_ = State::kConnecting;
  std::optional<uint64_t> expected_size_;
  std::string etag_;
  int64_t last_modified_ = 0;
  long status_ = 0;
  TempBlob tmp_;
  uint64_t frontier_ = 0;
  std::string sha256_;
  int64_t last_progress_ms_ = 0;
  int resumes_ = 0;
  bool resuming_ = false;       // the current request is a Range request
  bool resume_refused_ = false; // upstream answered a resume with other bytes
  // Announced only once complete: a filtered file (its served size depends
  // on its content) or a response without Content-Length.
  bool whole_ = false;
  int write_errno_ = 0;         // the cache write that failed, if any
  // The announced size, counted by every eviction pass until the bytes are
  // in the index (publish) or the download failed (see cache/evictor.h).
  Evictor::Reservation reservation_;
  // Failed for a reason waiting cannot cure (the cache's disk): reads of
  // missing bytes fail at once.
  // Retries before any size was reported (HTTP thread and timer only).
  int attempts_ = 0;
  int64_t first_try_ms_ = 0;
  std::optional<int64_t> retry_after_;  // from the last refused resume
  size_t origin_ = 0;  // of the last request sent for it
  std::vector<ReadWaiter> readers_;
  // Weak: the version owns its download while it is in flight, not the
  // other way round.
  std::weak_ptr<FileVersion> version_;
};

struct Fetcher::Impl {
  Impl(Fetcher* owner, http::Client& c, Index& i, BlobStore& b)
      : self(owner),
        opt(owner->options_),
        stats(owner->stats_),
        client(c),
        index(i),
        blobs(b),
        origins(bases(owner->options_),
                Origins::Options{owner->options_.mirror_backoff.count(),
                                 owner->options_.mirror_backoff_max.count()}),
        origin_failed_(origins.size(), false) {}
  static std::vector<std::string> bases(const FetcherOptions& o) {
    std::vector<std::string> v{o.base_url};
    v.insert(v.end(), o.mirrors.begin(), o.mirrors.end());
    return v;
  }

  Fetcher* self;
  const FetcherOptions& opt;
  FetcherStats& stats;
  http::Client& client;
  Index& index;
  BlobStore& blobs;
  Origins origins;
  // The URL of `rel` at the origin a new request goes to now.
  std::pair<size_t, std::string> pick_url(const std::string& rel, bool directory = false) {
    const size_t o = origins.pick(now_ms());
    const std::string& base = origins.base(o);
    return {o, rel.empty() ? base : http::join_url(base, rel, directory)};
  }

  std::mutex mu_;  // guards states_, PathState, FileVersion bindings, filter_
  std::shared_ptr<const ContentFilter> filter_;
  tsl::robin_map<std::string, std::unique_ptr<PathState>> states_;
  uint64_t next_version_id_ = 1;
  bool stopping_ = false;
  // invalidate(): (prefix, when) for paths not loaded yet; bounded (an
  // overflow collapses into "" = everything, which only over-invalidates).
  std::vector<std::pair<std::string, int64_t>> invalidations_;
  std::vector<std::weak_ptr<Download>> active_;  // downloads that may hold parked readers

  // Publishing (shared) and deleting blobs (exclusive) exclude each other so
  // that a blob being deleted is never the target of a concurrent publish.
  // Lock order: gc_mu_, then Evictor's mutex, then mu_, then use_mu_.
  std::shared_mutex gc_mu_;

  // Bounded cache (see cache/evictor.h).
  std::atomic<Evictor*> evictor_{nullptr};
  std::mutex use_mu_;  // guards blob_users_; a leaf
  std::unordered_map<std::string, int> blob_users_;  // sha256 -> OpenFiles reading its fd
  std::atomic<bool> eviction_queued_{false};
  // One pass; `incoming`: bytes a download is about to add. Takes gc_mu_.
  Result<EvictReport> run_eviction(uint64_t incoming);
  void queue_eviction();  // a background pass on a completion worker, coalesced
  std::unordered_set<std::string> blobs_in_use();  // gc_mu_ held
  void forget_evicted(const std::vector<std::string>& paths);  // gc_mu_ held
  void release_blob(const std::string& sha);

  // Completion workers: fsync, rename, index commits.
  std::mutex work_mu_;
  std::condition_variable work_cv_;
  std::deque<std::function<void()>> work_;
  std::vector<std::thread> workers_;
  bool work_stop_ = false;

  // Timer: delayed retries, read-stall sweeps, access-time flushes.
  std::mutex timer_mu_;
  std::condition_variable timer_cv_;
  std::multimap<int64_t, std::function<void()>> timers_;
  std::thread timer_thread_;
  bool timer_stop_ = false;

  // Every upstream request goes through start_request(), so that shutdown()
  // can cancel what is in flight and wait until no callback can run.
  std::mutex inflight_mu_;
  std::condition_variable inflight_cv_;
  size_t inflight_ = 0;
  tsl::robin_map<uint64_t, bool> inflight_ids_;
  void start_request(http::Request req, std::shared_ptr<http::Sink> sink, size_t origin);
  void cancel_all_requests();

  void start_threads();
  void stop_threads();
  void post(std::function<void()> fn);
  void schedule(int64_t due_ms, std::function<void()> fn);
  void timer_loop();
  void sweep();

  PathState& state(const std::string& path);  // mu_ held
  void ensure_loaded(const std::string& path, PathState& ps);
  std::shared_ptr<FileVersion> make_version(const std::string& path, uint64_t size, int64_t mtime,
                                            std::string etag);
  Attr attr_of(const std::shared_ptr<FileVersion>& v) const {
    return Attr{false, v->size(), v->mtime(), v};
  }

  // kListingFetched: the parent's listing was fetched for this lookup, so
  // it is used whatever its age (with listing_ttl=0 it is never "fresh").
  // kPeek: answer only what is known now (Fetcher::peek): where the lookup
  // would send a request or wait for one, EWOULDBLOCK instead.
  enum class LookupMode { kAsk, kListingFetched, kPeek };
  void lookup(const std::string& path, Fetcher::AttrCallback cb,
              LookupMode mode = LookupMode::kAsk);
  void with_listing(const std::string& dir, std::function<void()> then);
  void fetch_listing(const std::string& dir);
  void start_head(const std::string& path, PathState& ps);
  void start_download(const std::string& path, PathState& ps, bool conditional,
                      uint64_t max_rate = 0);
  // The requests behind them, sent again by retries (mu_ held). While
  // upstream is down they fail at once without a request.
  void send_listing(const std::string& dir, int attempt, int64_t first_ms);
  void send_head(const std::string& path, int attempt, int64_t first_ms);
  void send_download(const std::shared_ptr<Download>& dl);
  // The delay before the next attempt of a request first sent at
  // `first_ms`, or nullopt when it must fail now.
  std::optional<int64_t> retry_delay(int attempt, int64_t first_ms, http::Outcome o, long status,
                                     std::optional<int64_t> retry_after);
  // missing_grace: true while the cached `current` may still be served
  // although upstream says it is gone (mu_ held).
  bool within_missing_grace(const std::string& path, PathState& ps, int64_t now);

  // Upstream health.
  std::mutex health_mu_;
  // Guarded by health_mu_: connection failures in a row (any origin), and
  // whether each origin's last answer was one (never asked: false).
  int conn_failures_ = 0;
  std::vector<bool> origin_failed_;
  size_t probe_next_ = 0;  // the origin the next probe asks (mu_)
  std::atomic<bool> down_{false};
  bool down() const { return down_.load(std::memory_order_relaxed); }
  // `answered`: headers arrived (a live origin whatever came after).
  void note_outcome(size_t origin, bool answered, http::Outcome o, long status);
  void schedule_probe();
  void marked_up();
  void resolve(const std::string& path, Result<std::shared_ptr<FileVersion>> r);
  void open(const std::shared_ptr<FileVersion>& v, Fetcher::OpenCallback cb,
            uint64_t max_rate = 0);
  void apply_invalidations(const std::string& path, PathState& ps);  // mu_ held
  void open_resolved(const std::shared_ptr<FileVersion>& want,
                     Result<std::shared_ptr<FileVersion>> got, Fetcher::OpenCallback cb);

  // Download events.
  void on_download_head(const std::shared_ptr<Download>& dl);
  void on_download_early_failure(const std::shared_ptr<Download>& dl, http::Outcome outcome,
                                 long status, std::optional<int64_t> retry_after,
                                 const std::string& detail);
  void on_not_modified(const std::shared_ptr<Download>& dl);
  void on_download_body_done(const std::shared_ptr<Download>& dl, http::Outcome outcome,
                             const std::string& detail);
  void publish(const std::shared_ptr<Download>& dl);
  // `fatal`: the cache could not be written (counted apart).
  void fail_download(const std::shared_ptr<Download>& dl, const std::string& why,
                     bool fatal = false);
  void try_resume(const std::shared_ptr<Download>& dl);
  void remove_cached(const std::string& path);
  void collect_garbage(const std::string& sha);

  void list_dir(const std::string& path, Fetcher::ListCallback cb);

  // Filtered files.
  std::shared_ptr<const ContentFilter> filter_for(const std::string& path) const {  // mu_ held
    return filter_ && filter_->matches(path) ? filter_ : nullptr;
  }
  struct Derived {
    std::string sha256;
    uint64_t size = 0;
    std::string note;
  };
  Result<Derived> derive(const ContentFilter& filter, const std::string& path,
                         const PathEntry& source);
  void start_derive(const std::string& path, PathState& ps);  // mu_ held
  void install_version(const std::string& path, const PathEntry& source,
                       const std::shared_ptr<const ContentFilter>& filter,
                       const Result<Derived>& derived, const std::shared_ptr<Download>& dl);
  void forget_derived(const std::string& old_source_sha);
};

// --- Download ---------------------------------------------------------------

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
  auto tmp = impl_->blobs.create_temp();
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
  if (announce) impl_->on_download_head(shared_from_this());
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
  impl_->stats.download_bytes += len;
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
      impl_->on_not_modified(self);
    } else {
      impl_->on_download_early_failure(self, outcome, head.status, head.retry_after, detail);
    }
    return;
  }
  impl_->on_download_body_done(self, outcome, detail);
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
    const int64_t stall = impl_->opt.read_stall_timeout.count();
    if (std::max(handle_progress->load(), last_progress_ms_) + stall <= now_ms()) {
      lk.unlock();  // a retry of a read that already stalled: no new wait
      cb(Error{EIO, "read stalled: no progress for read_stall_timeout"});
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
    impl_->stats.read_stall_failures++;
    w.cb(Error{EIO, "read stalled: no progress for read_stall_timeout"});
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

// --- OpenFile ---------------------------------------------------------------

void OpenFile::read(uint64_t offset, size_t len, ReadCallback cb) {
  if (fd_.valid()) {
    const uint64_t size = version_->size();
    const uint64_t end = offset >= size ? offset : std::min<uint64_t>(offset + len, size);
    cb(Slice{fd_.get(), offset, static_cast<size_t>(end - offset)});
    return;
  }
  download_->read(
      offset, len,
      [progress = progress_, cb = std::move(cb)](Result<Slice> r) {
        if (r) progress->store(now_ms());
        cb(std::move(r));
      },
      progress_);
}

OpenFile::~OpenFile() {
  if (!fetcher_) return;
  const bool held_download = download_ != nullptr;
  if (held_download) download_->handles_.fetch_sub(1);  // before the pass below
  download_.reset();
  if (!used_blob_.empty()) {
    fetcher_->impl_->release_blob(used_blob_);
  } else if (held_download) {
    fetcher_->impl_->queue_eviction();
  }
}

// --- Impl: requests ---------------------------------------------------------

namespace {

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

size_t FetcherStats::status_slot(long status) {
  if (status <= 0) return kStatusCount - 1;  // "error"
  for (size_t i = 0; i + 2 < kStatusCount; ++i) {
    if (std::to_string(status) == kStatusLabels[i]) return i;
  }
  return kStatusCount - 2;  // "other"
}

void Fetcher::Impl::start_request(http::Request req, std::shared_ptr<http::Sink> sink,
                                  size_t origin) {
  auto finished = std::make_shared<std::atomic<bool>>(false);
  const int method = req.method == http::Request::Method::kHead ? 1 : 0;
  auto note = [this, origin, method](bool answered, http::Outcome o, long status) {
    stats.responses[method][FetcherStats::status_slot(answered ? status : 0)].fetch_add(
        1, std::memory_order_relaxed);
    note_outcome(origin, answered, o, status);
  };
  auto tracked = std::make_shared<TrackedSink>(std::move(sink), note, [this, finished](uint64_t id) {
    std::lock_guard lk(inflight_mu_);
    finished->store(true);
    if (id) inflight_ids_.erase(id);
    --inflight_;
    inflight_cv_.notify_all();
  });
  {
    std::lock_guard lk(inflight_mu_);
    ++inflight_;
  }
  const uint64_t id = client.start(std::move(req), tracked);
  std::lock_guard lk(inflight_mu_);
  tracked->id = id;
  if (!finished->load()) inflight_ids_.emplace(id, true);
}

void Fetcher::Impl::cancel_all_requests() {
  std::vector<uint64_t> ids;
  {
    std::lock_guard lk(inflight_mu_);
    for (auto& [id, unused] : inflight_ids_) ids.push_back(id);
  }
  for (uint64_t id : ids) client.cancel(id);
  std::unique_lock lk(inflight_mu_);
  if (!inflight_cv_.wait_for(lk, std::chrono::seconds(10), [this] { return inflight_ == 0; })) {
    log()->warn("{} upstream requests did not stop in time", inflight_);
  }
}

namespace {

class MemorySink : public http::Sink {
 public:
  using Done = std::function<void(http::Outcome, const http::Head&, std::string, std::string)>;
  explicit MemorySink(Done done) : done_(std::move(done)) {}
  bool on_head(const http::Head&) override { return true; }
  bool on_data(const char*, size_t) override { return true; }
  void on_done(http::Outcome o, const http::Head& h, std::string body,
               std::string detail) override {
    done_(o, h, std::move(body), std::move(detail));
  }

 private:
  Done done_;
};

}  // namespace

// --- Impl: upstream health -------------------------------------------------

void Fetcher::Impl::note_outcome(size_t origin, bool answered, http::Outcome raw, long status) {
  // Health: a transfer that stalls after the headers came from a live origin.
  const http::Outcome o = answered ? http::Outcome::kOk : raw;
  if (origins.size() > 1) {
    const int64_t now = now_ms();
    if (is_retryable(raw, raw == http::Outcome::kOk ? status : 0)) {
      if (int64_t d = origins.failed(origin, now)) {
        log()->warn("origin {}: {} {}: using the next origin for {} ms", origins.base(origin),
                    http::to_string(raw), status, d);
      }
    } else if (raw == http::Outcome::kOk && origins.succeeded(origin)) {
      log()->info("origin {} answers again", origins.base(origin));
    }
  }
  bool went_down = false, went_up = false;
  {
    std::lock_guard lk(health_mu_);
    if (o == http::Outcome::kOk) {
      conn_failures_ = 0;
      origin_failed_[origin] = false;
      went_up = down_.exchange(false);
    } else if (is_connection_failure(o)) {
      stats.upstream_failures++;
      ++conn_failures_;
      origin_failed_[origin] = true;
      // Down: no origin is left that could answer (requests in flight to
      // one failing origin do not make a working mirror "down").
      const bool all =
          std::all_of(origin_failed_.begin(), origin_failed_.end(), [](bool f) { return f; });
      if (opt.down_after > 0 && conn_failures_ >= opt.down_after && all && !down_.load()) {
        down_.store(true);
        went_down = true;
      }
    }
  }
  if (went_down) {
    stats.upstream_down_events++;
    log()->warn("upstream {} is down after {} connection failures: serving the cache only, "
                "probing every {} ms",
                opt.base_url, opt.down_after, opt.probe_interval.count());
    schedule_probe();
  }
  if (went_up) marked_up();
}

void Fetcher::Impl::marked_up() {
  log()->info("upstream {} is up again", opt.base_url);
  std::lock_guard lk(mu_);
  // Listings that failed while down (or on the way down) say nothing about
  // upstream's tree: fetch them again at the next lookup.
  for (auto& [path, ps] : states_) {
    if (ps->listing && !ps->listing->available && ps->listing->error == EIO &&
        !ps->listing_in_flight) {
      ps->listing.reset();
    }
  }
}

void Fetcher::Impl::schedule_probe() {
  schedule(now_ms() + std::max<int64_t>(50, opt.probe_interval.count()), [this] {
    std::lock_guard lk(mu_);
    if (stopping_ || !down()) return;
    stats.upstream_probes++;
    http::Request req;
    req.method = http::Request::Method::kHead;
    const size_t origin = probe_next_++ % origins.size();
    req.url = origins.base(origin);
    // Any HTTP answer marks upstream up (note_outcome, before this runs).
    start_request(std::move(req),
                  std::make_shared<MemorySink>(
                      [this](http::Outcome, const http::Head&, std::string, std::string) {
                        if (down()) schedule_probe();
                      }),
                  origin);
  });
}

std::optional<int64_t> Fetcher::Impl::retry_delay(int attempt, int64_t first_ms,
                                                  http::Outcome o, long status,
                                                  std::optional<int64_t> retry_after) {
  if (!is_retryable(o, status) || down()) return std::nullopt;
  static thread_local std::mt19937 rng{std::random_device{}()};
  const double jitter = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  return plan_retry(attempt, now_ms() - first_ms, opt.retry_timeout.count(), retry_after, jitter);
}

// --- Impl: threads ----------------------------------------------------------

void Fetcher::Impl::start_threads() {
  for (int i = 0; i < std::max(1, opt.completion_threads); ++i) {
    workers_.emplace_back([this] {
      std::unique_lock lk(work_mu_);
      for (;;) {
        work_cv_.wait(lk, [this] { return work_stop_ || !work_.empty(); });
        if (work_.empty()) return;  // stopping and drained
        auto fn = std::move(work_.front());
        work_.pop_front();
        lk.unlock();
        fn();
        lk.lock();
      }
    });
  }
  timer_thread_ = std::thread([this] { timer_loop(); });
}

void Fetcher::Impl::stop_threads() {
  {
    std::lock_guard lk(timer_mu_);
    timer_stop_ = true;
  }
  timer_cv_.notify_all();
  if (timer_thread_.joinable()) timer_thread_.join();
  {
    std::lock_guard lk(work_mu_);
    work_stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void Fetcher::Impl::post(std::function<void()> fn) {
  {
    std::lock_guard lk(work_mu_);
    if (!work_stop_) {
      work_.push_back(std::move(fn));
      work_cv_.notify_one();
      return;
    }
  }
  fn();  // shutting down: run inline rather than drop a completion
}

void Fetcher::Impl::schedule(int64_t due_ms, std::function<void()> fn) {
  {
    std::lock_guard lk(timer_mu_);
    timers_.emplace(due_ms, std::move(fn));
  }
  timer_cv_.notify_all();
}

void Fetcher::Impl::timer_loop() {
  const int64_t sweep_every =
      std::clamp<int64_t>(opt.read_stall_timeout.count() / 10, 20, 1000);
  int64_t next_sweep = now_ms() + sweep_every;
  int64_t next_flush = now_ms() + opt.access_flush_interval.count();
  std::unique_lock lk(timer_mu_);
  while (!timer_stop_) {
    int64_t due = std::min(next_sweep, next_flush);
    if (!timers_.empty()) due = std::min(due, timers_.begin()->first);
    int64_t wait = due - now_ms();
    if (wait > 0) {
      timer_cv_.wait_for(lk, std::chrono::milliseconds(wait));
      continue;
    }
    std::vector<std::function<void()>> run;
    const int64_t now = now_ms();
    while (!timers_.empty() && timers_.begin()->first <= now) {
      run.push_back(std::move(timers_.begin()->second));
      timers_.erase(timers_.begin());
    }
    lk.unlock();
    for (auto& fn : run) fn();
    if (now >= next_sweep) {
      sweep();
      next_sweep = now + sweep_every;
    }
    if (now >= next_flush) {
      if (auto r = index.flush_access(); !r) log()->warn("access times: {}", r.error().message);
      next_flush = now + opt.access_flush_interval.count();
    }
    lk.lock();
  }
}

void Fetcher::Impl::sweep() {
  std::vector<std::shared_ptr<Download>> live;
  {
    std::lock_guard lk(mu_);
    std::vector<std::weak_ptr<Download>> still;
    for (const auto& w : active_) {
      if (auto d = w.lock()) {
        live.push_back(std::move(d));
        still.push_back(w);
      }
    }
    active_.swap(still);
    // Forget paths that hold nothing but an expired negative entry.
    const int64_t now = now_ms();
    for (auto it = states_.begin(); it != states_.end();) {
      const PathState& ps = *it->second;
      if (!ps.current && !ps.pending && !ps.head_in_flight && ps.version_waiters.empty() &&
          !ps.listing && !ps.listing_in_flight && !ps.is_dir && ps.negative_until_ms < now) {
        it = states_.erase(it);
      } else {
        ++it;
      }
    }
  }
  const int64_t now = now_ms();
  for (auto& d : live) d->sweep(now, opt.read_stall_timeout.count());
}

// --- Impl: state ------------------------------------------------------------

Fetcher::PathState& Fetcher::Impl::state(const std::string& path) {
  auto it = states_.find(path);
  if (it == states_.end()) it = states_.emplace(path, std::make_unique<PathState>()).first;
  return *it.value();
}

void Fetcher::Impl::apply_invalidations(const std::string& path, PathState& ps) {
  for (const auto& [prefix, when] : invalidations_) {
    if (ps.validated_ms <= when && path_at_or_under(path, prefix)) {
      ps.validated_ms = 0;
      return;
    }
  }
}

void Fetcher::Impl::ensure_loaded(const std::string& path, PathState& ps) {
  if (ps.loaded) return;
  ps.loaded = true;
  struct Apply {
    Fetcher::Impl* self;
    const std::string& path;
    PathState& ps;
    ~Apply() { self->apply_invalidations(path, ps); }
  } apply{this, path, ps};
  auto e = index.get_path(path);
  if (!e) return;
  if (auto filter = filter_for(path)) {
    // Served through the filter: the stored output of this (blob, filter),
    // if any; otherwise it is derived on demand (start_derive).
    const std::string fp = filter->fingerprint();
    auto d = index.get_path(derived_key(fp, e->sha256));
    if (!d || blobs.blob_size(d->sha256) != d->size) {
      ps.underived = e;
      return;
    }
    auto v = make_version(path, d->size, e->last_modified, e->etag);
    v->sha256_ = d->sha256;
    v->source_sha256_ = e->sha256;
    v->filter_fp_ = fp;
    v->filter_note_ = d->etag;  // the derived entry keeps the filter's note there
    v->validator_etag_ = e->etag;
    v->validator_last_modified_ = e->last_modified;
    ps.current = std::move(v);
    ps.validated_ms = e->validated_at * 1000;
    return;
  }
  {
    auto v = make_version(path, e->size, e->last_modified, e->etag);
    v->sha256_ = e->sha256;
    v->validator_etag_ = e->etag;
    v->validator_last_modified_ = e->last_modified;
    ps.current = std::move(v);
    ps.validated_ms = e->validated_at * 1000;
  }
}

std::shared_ptr<FileVersion> Fetcher::Impl::make_version(const std::string& path, uint64_t size,
                                                         int64_t mtime, std::string etag) {
  return std::shared_ptr<FileVersion>(
      new FileVersion(next_version_id_++, path, size, mtime, std::move(etag)));
}

// --- Impl: lookup -----------------------------------------------------------

void Fetcher::Impl::lookup(const std::string& path, Fetcher::AttrCallback cb, LookupMode mode) {
  const bool peek = mode == LookupMode::kPeek;
  auto would_block = [&] { cb(Error{EWOULDBLOCK, "not known without asking upstream"}); };
  if (path.empty()) {
    cb(Attr{true, 0, 0, nullptr});
    return;
  }
  const std::string parent(http::parent_path(path));
  const std::string name(http::base_name(path));
  std::unique_lock lk(mu_);
  if (stopping_) {
    lk.unlock();
    cb(Error{EIO, "shutting down"});
    return;
  }
  PathState& ps = state(path);
  ensure_loaded(path, ps);
  const int64_t now = now_ms();
  const bool filtered = filter_for(path) != nullptr;
  // The served size of a filtered file is known only from its content.
  auto wait_for_version = [&](Fetcher::AttrCallback done) {
    ps.version_waiters.push_back([this, done = std::move(done)](auto r) mutable {
      if (!r) {
        done(r.error());
      } else if (!r.value()) {
        done(Attr{true, 0, 0, nullptr});
      } else {
        done(attr_of(r.value()));
      }
    });
  };
  if (filtered && !ps.current && (ps.underived || ps.deriving || ps.pending)) {
    if (peek) {
      lk.unlock();
      would_block();
      return;
    }
    wait_for_version(std::move(cb));
    if (ps.underived && !ps.deriving) {
      start_derive(path, ps);  // cached bytes, not yet through this filter
    } else {
      stats.coalesced++;
    }
    return;
  }
  if (ps.is_dir) {
    lk.unlock();
    cb(Attr{true, 0, 0, nullptr});
    return;
  }
  if (ps.current && (ps.current->download_ || now - ps.validated_ms < opt.revalidate.count())) {
    auto a = attr_of(ps.current);
    lk.unlock();
    cb(std::move(a));
    return;
  }
  if (ps.negative_until_ms > now) {
    int err = ps.negative_errno;
    lk.unlock();
    cb(Error{err, "cached negative entry"});
    return;
  }
  PathState& pps = state(parent);
  const bool listing_fresh =
      pps.listing && (mode == LookupMode::kListingFetched ||
                      now - pps.listing->fetched_ms < opt.listing_ttl.count());
  if (!listing_fresh) {
    if (ps.current) {
      // Answer from the cache at once; open revalidates anyway. Refresh the
      // listing in the background so that later lookups see upstream's view.
      auto a = attr_of(ps.current);
      if (!pps.listing_in_flight && !peek) fetch_listing(parent);
      lk.unlock();
      cb(std::move(a));
      return;
    }
    lk.unlock();
    if (peek) {
      would_block();
      return;
    }
    with_listing(parent, [this, path, cb = std::move(cb)]() mutable {
      lookup(path, cb, LookupMode::kListingFetched);
    });
    return;
  }
  const Listing& listing = *pps.listing;
  if (listing.available) {
    const ListingEntry* e = listing.find(name);
    if (!e && within_missing_grace(path, ps, now)) {
      stats.missing_served++;
      auto a = attr_of(ps.current);
      lk.unlock();
      cb(std::move(a));
      return;
    }
    // Only a listing fetched after the missing answer says it is back.
    if (e && listing.fetched_ms >= ps.missing_since_ms) ps.missing_since_ms = 0;
    if (!e) {
      const bool was_cached = ps.current && !ps.current->sha256_.empty();
      if (was_cached) post([this, path] { remove_cached(path); });
      ps.negative_until_ms = std::min(now + opt.negative_ttl.count(),
                                      listing.fetched_ms + opt.listing_ttl.count());
      ps.negative_errno = ENOENT;
      ps.current.reset();  // gone upstream
      lk.unlock();
      cb(Error{ENOENT, "not in the directory listing"});
      return;
    }
    if (e->is_dir) {
      ps.is_dir = true;
      lk.unlock();
      cb(Attr{true, 0, e->mtime.value_or(0), nullptr});
      return;
    }
    if (e->size && !filtered) {
      if (!ps.current || ps.current->size() != *e->size) {
        ps.current = make_version(path, *e->size, e->mtime.value_or(0), "");
        ps.validated_ms = 0;
      }
      auto a = attr_of(ps.current);
      lk.unlock();
      cb(std::move(a));
      return;
    }
  }
  if (ps.current) {
    auto a = attr_of(ps.current);
    lk.unlock();
    cb(std::move(a));
    return;
  }
  if (!listing.available && (listing.error == EIO || down()) &&
      !index.list_paths(path + "/", 1).empty()) {
    // Upstream cannot be asked, but the cache holds files below this name:
    // a directory (an offline or imported cache serves its whole tree).
    lk.unlock();
    cb(Attr{true, 0, 0, nullptr});
    return;
  }
  // No listing with an exact size: one HEAD per path, shared; a filtered
  // file is fetched whole instead (a boot menu is small).
  if (peek) {
    lk.unlock();
    would_block();
    return;
  }
  wait_for_version(std::move(cb));
  if (ps.head_in_flight || ps.pending) {
    stats.coalesced++;
  } else if (filtered) {
    start_download(path, ps, false);
  } else {
    start_head(path, ps);
  }
}

void Fetcher::Impl::with_listing(const std::string& dir, std::function<void()> then) {
  std::unique_lock lk(mu_);
  if (stopping_) {
    lk.unlock();
    then();  // the continuation sees stopping_ and fails
    return;
  }
  PathState& ps = state(dir);
  const int64_t now = now_ms();
  if (ps.listing && now - ps.listing->fetched_ms < opt.listing_ttl.count()) {
    lk.unlock();
    then();
    return;
  }
  ps.listing_waiters.push_back(std::move(then));
  if (!ps.listing_in_flight) {
    fetch_listing(dir);
  } else {
    stats.coalesced++;
  }
}


void Fetcher::Impl::fetch_listing(const std::string& dir) {  // mu_ held
  PathState& ps = state(dir);
  ps.listing_in_flight = true;
  send_listing(dir, 0, now_ms());
}

void Fetcher::Impl::send_listing(const std::string& dir, int attempt,
                                 int64_t first_ms) {  // mu_ held
  auto done = [this, dir, attempt, first_ms](http::Outcome o, const http::Head& h,
                                             std::string body, std::string detail) {
    if (o != http::Outcome::kOk || h.status != 200) {
      if (auto d = retry_delay(attempt, first_ms, o, h.status, h.retry_after)) {
        log()->debug("listing of '{}': {} {} {}, retry in {} ms", dir, http::to_string(o),
                     h.status, detail, *d);
        stats.retries++;
        schedule(now_ms() + *d, [this, dir, attempt, first_ms] {
          std::lock_guard lk(mu_);
          if (!stopping_) send_listing(dir, attempt + 1, first_ms);
        });
        return;
      }
    }
    auto listing = std::make_shared<Listing>();
    listing->fetched_ms = now_ms();
    if (o == http::Outcome::kOk && h.status == 200) {
      auto parsed = parse_listing(body, h.content_type);
      if (parsed) {
        listing->available = true;
        listing->entries = std::move(parsed).value();
        std::sort(listing->entries.begin(), listing->entries.end(),
                  [](const ListingEntry& a, const ListingEntry& b) { return a.name < b.name; });
      } else {
        log()->debug("listing of '{}' not understood: {}", dir, parsed.error().message);
      }
    } else {
      log()->debug("no listing for '{}': {} {} {}", dir, http::to_string(o), h.status, detail);
      listing->error = errno_for(o, h.status);
    }
    std::vector<std::function<void()>> waiters;
    {
      std::lock_guard lk(mu_);
      PathState& ps2 = state(dir);
      ps2.listing = std::move(listing);
      ps2.listing_in_flight = false;
      waiters.swap(ps2.listing_waiters);
    }
    for (auto& w : waiters) w();
  };
  if (down()) {  // no request: answered from a worker, never under mu_
    post([done] { done(http::Outcome::kConnectFailed, http::Head{}, "", "upstream is down"); });
    return;
  }
  stats.listings++;
  http::Request req;
  auto [origin, url] = pick_url(dir, true);
  req.url = std::move(url);
  req.body_in_memory = true;
  start_request(std::move(req), std::make_shared<MemorySink>(std::move(done)), origin);
}

void Fetcher::Impl::start_head(const std::string& path, PathState& ps) {  // mu_ held
  ps.head_in_flight = true;
  send_head(path, 0, now_ms());
}

void Fetcher::Impl::send_head(const std::string& path, int attempt,
                              int64_t first_ms) {  // mu_ held
  auto done = [this, path, attempt, first_ms](http::Outcome o, const http::Head& h, std::string,
                                              std::string detail) {
    std::unique_lock lk(mu_);
    PathState& ps2 = state(path);
    if (o != http::Outcome::kOk || h.status != 200) {
      if (auto d = retry_delay(attempt, first_ms, o, h.status, h.retry_after)) {
        log()->info("HEAD {}: {} {} {}, retry in {} ms", path, http::to_string(o), h.status,
                    detail, *d);
        stats.retries++;
        schedule(now_ms() + *d, [this, path, attempt, first_ms] {
          std::lock_guard lk2(mu_);
          if (!stopping_) send_head(path, attempt + 1, first_ms);
        });
        return;  // head_in_flight stays: its waiters wait for the retry
      }
    }
    ps2.head_in_flight = false;
    if (o == http::Outcome::kOk && h.status == 200) {
      ps2.missing_since_ms = 0;
      const std::string& eff = h.effective_url;
      if (!eff.empty() && eff.back() == '/') {  // redirected to "path/": a directory
        ps2.is_dir = true;
        auto waiters = std::move(ps2.version_waiters);
        ps2.version_waiters.clear();
        lk.unlock();
        for (auto& w : waiters) w(std::shared_ptr<FileVersion>());
        return;
      }
      if (h.content_length) {
        if (!ps2.current || ps2.current->size() != *h.content_length ||
            (!h.etag.empty() && !ps2.current->etag().empty() && ps2.current->etag() != h.etag)) {
          ps2.current = make_version(path, *h.content_length, h.last_modified.value_or(0), h.etag);
          ps2.validated_ms = 0;
        }
        auto v = ps2.current;
        lk.unlock();
        resolve(path, v);
        return;
      }
      // No size from HEAD: the only way to an exact size is the whole body.
      if (!ps2.pending) start_download(path, ps2, false);
      return;
    }
    const int err = errno_for(o, h.status);
    if (err == ENOENT || err == EACCES) {
      ps2.negative_until_ms = now_ms() + opt.negative_ttl.count();
      ps2.negative_errno = err;
    } else {
      log()->warn("HEAD {}: {} {} {}", path, http::to_string(o), h.status, detail);
    }
    lk.unlock();
    resolve(path, Error{err, "upstream HEAD failed"});
  };
  if (down()) {
    stats.down_fast_failures++;
    post([done] { done(http::Outcome::kConnectFailed, http::Head{}, "", "upstream is down"); });
    return;
  }
  stats.heads++;
  http::Request req;
  req.method = http::Request::Method::kHead;
  auto [origin, url] = pick_url(path);
  req.url = std::move(url);
  start_request(std::move(req), std::make_shared<MemorySink>(std::move(done)), origin);
}

void Fetcher::Impl::resolve(const std::string& path, Result<std::shared_ptr<FileVersion>> r) {
  std::vector<VersionCallback> waiters;
  {
    std::lock_guard lk(mu_);
    PathState& ps = state(path);
    if (ps.head_in_flight || ps.pending) {
      // Another request is still establishing the version; those that wait
      // for it will be answered by it. Only answer the HEAD's own waiters
      // when nothing else is pending.
      if (ps.pending) return;
    }
    waiters.swap(ps.version_waiters);
  }
  for (auto& w : waiters) w(r);
}

// --- Impl: open -------------------------------------------------------------

void Fetcher::Impl::open(const std::shared_ptr<FileVersion>& v, Fetcher::OpenCallback cb,
                         uint64_t max_rate) {
  const std::string& path = v->path();
  std::unique_lock lk(mu_);
  if (stopping_) {
    lk.unlock();
    cb(Error{EIO, "shutting down"});
    return;
  }
  PathState& ps = state(path);
  ensure_loaded(path, ps);
  if (ps.current != v) {
    lk.unlock();
    cb(Error{ESTALE, "a newer version exists"});
    return;
  }
  if (ps.pending) {  // a GET or revalidation is under way: wait for its verdict
    stats.coalesced++;
    ps.version_waiters.push_back([this, v, cb = std::move(cb)](auto r) mutable {
      open_resolved(v, std::move(r), std::move(cb));
    });
    return;
  }
  const int64_t now = now_ms();
  if (!v->sha256_.empty()) {
    if (plan_open(true, ps.validated_ms, now, opt.revalidate) == OpenPlan::kServeCached) {
      stats.hits++;
      lk.unlock();
      open_resolved(v, v, std::move(cb));
      return;
    }
    ps.version_waiters.push_back([this, v, cb = std::move(cb)](auto r) mutable {
      open_resolved(v, std::move(r), std::move(cb));
    });
    start_download(path, ps, true, max_rate);
    return;
  }
  if (v->download_) {
    std::unique_lock dlk(v->download_->mu_);
    const bool failed = v->download_->state_ == Download::State::kFailed;
    dlk.unlock();
    if (!failed) {
      stats.hits++;
      lk.unlock();
      open_resolved(v, v, std::move(cb));
      return;
    }
    v->download_.reset();  // a failed transfer: the next open starts anew
  }
  stats.misses++;
  ps.version_waiters.push_back([this, v, cb = std::move(cb)](auto r) mutable {
    open_resolved(v, std::move(r), std::move(cb));
  });
  // A HEAD in flight for this path answers nobody once the GET is pending:
  // the GET's response establishes the version for every waiter.
  start_download(path, ps, false, max_rate);
}

void Fetcher::Impl::open_resolved(const std::shared_ptr<FileVersion>& want,
                                  Result<std::shared_ptr<FileVersion>> got,
                                  Fetcher::OpenCallback cb) {
  if (!got) {
    cb(got.error());
    return;
  }
  if (got.value() != want) {
    cb(Error{ESTALE, "the file changed upstream"});
    return;
  }
  std::unique_ptr<OpenFile> of(new OpenFile());
  of->fetcher_ = self;
  of->version_ = want;
  of->progress_ = std::make_shared<std::atomic<int64_t>>(now_ms());
  std::string sha;
  std::shared_ptr<Download> dl;
  {
    std::lock_guard lk(mu_);
    sha = want->sha256_;
    dl = want->download_;
  }
  if (dl) {
    std::lock_guard dlk(dl->mu_);
    if (dl->state_ == Download::State::kComplete) dl.reset();  // serve the blob instead
  }
  if (dl) {
    dl->handles_.fetch_add(1);
    of->download_ = std::move(dl);
  } else if (sha.empty()) {
    cb(Error{EIO, "no content for this version"});
    return;
  } else {
    // Under gc_mu_: either the eviction sees this handle, or it has already
    // evicted the blob and made the version stale.
    std::shared_lock gc(gc_mu_);
    {
      std::lock_guard lk(mu_);
      if (evictor_.load() && state(want->path()).current != want) {
        gc.unlock();
        cb(Error{ESTALE, "evicted from the cache"});
        return;
      }
    }
    {
      std::lock_guard ulk(use_mu_);
      blob_users_[sha]++;
    }
    of->used_blob_ = sha;  // released by ~OpenFile
    auto fd = blobs.open_blob(sha);
    gc.unlock();
    if (!fd) {
      log()->error("{}: cached blob {} unreadable: {}", want->path(), sha, fd.error().message);
      remove_cached(want->path());
      cb(Error{EIO, "cached blob unreadable"});
      return;
    }
    of->fd_ = std::move(fd).value();
    index.note_access(sha, now_ms() / 1000);
  }
  cb(std::move(of));
}

void Fetcher::Impl::start_download(const std::string& path, PathState& ps, bool conditional,
                                   uint64_t max_rate) {  // mu_ held
  auto dl = std::make_shared<Download>(this, path);
  dl->max_rate_ = max_rate;
  dl->whole_ = filter_for(path) != nullptr;
  if (conditional && ps.current) {
    dl->conditional_ = true;
    dl->cond_etag_ = ps.current->validator_etag_;
    dl->cond_last_modified_ = ps.current->validator_last_modified_;
  }
  ps.pending = dl;
  active_.push_back(dl);
  dl->first_try_ms_ = now_ms();
  stats.downloads++;
  send_download(dl);
}

void Fetcher::Impl::send_download(const std::shared_ptr<Download>& dl) {  // mu_ held
  if (down()) {
    if (!dl->conditional_) stats.down_fast_failures++;
    post([this, dl] {
      on_download_early_failure(dl, http::Outcome::kConnectFailed, 0, std::nullopt,
                                "upstream is down");
    });
    return;
  }
  http::Request req;
  auto [origin, url] = pick_url(dl->path_);
  req.url = std::move(url);
  req.max_recv_speed = dl->max_rate_;
  {
    std::lock_guard dlk(dl->mu_);
    dl->origin_ = origin;
  }
  if (dl->conditional_) {
    if (!dl->cond_etag_.empty()) {
      req.if_none_match = dl->cond_etag_;
    } else if (dl->cond_last_modified_ > 0) {
      req.if_modified_since = dl->cond_last_modified_;
    }
  }
  start_request(std::move(req), dl, origin);
}

void Fetcher::Impl::on_download_head(const std::shared_ptr<Download>& dl) {
  uint64_t size;
  std::string etag;
  int64_t lm;
  size_t origin;
  {
    std::lock_guard dlk(dl->mu_);
    size = *dl->expected_size_;
    etag = dl->etag_;
    lm = dl->last_modified_;
    origin = dl->origin_;
  }
  std::string source = http::join_url(origins.base(origin), dl->path_);
  // Room for it before its bytes arrive (see cache/evictor.h): reserved
  // first, so a pass made for another download counts these bytes too.
  if (Evictor* ev = evictor_.load()) {
    auto reservation = ev->reserve(size);
    {
      std::lock_guard dlk(dl->mu_);
      dl->reservation_ = std::move(reservation);
    }
    (void)run_eviction(0);
  }
  std::shared_ptr<FileVersion> v;
  std::vector<VersionCallback> waiters;
  {
    std::lock_guard lk(mu_);
    PathState& ps = state(dl->path_);
    if (ps.pending != dl) return;  // superseded (cannot happen today; be safe)
    auto& cur = ps.current;
    if (cur && cur->sha256_.empty() && !cur->download_ && cur->size() == size &&
        (cur->etag().empty() || etag.empty() || cur->etag() == etag)) {
      v = cur;  // the version lookup announced: same size and validator
    } else {
      v = make_version(dl->path_, size, lm ? lm : (cur ? cur->mtime() : 0), etag);
      if (dl->conditional_) stats.revalidations_changed++;
    }
    v->download_ = dl;
    v->validator_etag_ = etag;
    v->validator_last_modified_ = lm;
    v->source_url_ = std::move(source);
    ps.current = v;
    ps.validated_ms = now_ms();
    ps.pending.reset();
    ps.negative_until_ms = 0;
    ps.missing_since_ms = 0;
    waiters.swap(ps.version_waiters);
  }
  {
    std::lock_guard dlk(dl->mu_);
    dl->version_ = v;
  }
  for (auto& w : waiters) w(v);
}

void Fetcher::Impl::on_not_modified(const std::shared_ptr<Download>& dl) {
  stats.revalidations_not_modified++;
  std::shared_ptr<FileVersion> v;
  std::vector<VersionCallback> waiters;
  const int64_t now = now_ms();
  {
    std::lock_guard lk(mu_);
    PathState& ps = state(dl->path_);
    ps.pending.reset();
    ps.validated_ms = now;
    if (ps.missing_since_ms) log()->info("{}: back upstream", dl->path_);
    ps.missing_since_ms = 0;
    v = ps.current;
    waiters.swap(ps.version_waiters);
  }
  post([this, path = dl->path_, now] {
    if (auto r = index.set_validated(path, now / 1000); !r) {
      log()->warn("{}: recording validation failed: {}", path, r.error().message);
    }
  });
  for (auto& w : waiters) w(v);
}

bool Fetcher::Impl::within_missing_grace(const std::string& path, PathState& ps,
                                         int64_t now) {  // mu_ held
  if (!ps.current || ps.current->sha256_.empty() || opt.missing_grace.count() <= 0) return false;
  if (ps.missing_since_ms == 0 || ps.missing_since_ms > now) {
    ps.missing_since_ms = now;
    log()->warn("{}: missing upstream; serving the cached copy for up to {} ms", path,
                opt.missing_grace.count());
  }
  if (now - ps.missing_since_ms < opt.missing_grace.count()) return true;
  log()->info("{}: still missing upstream after {} ms: removed from the cache", path,
              opt.missing_grace.count());
  stats.missing_removed++;
  ps.missing_since_ms = 0;
  return false;
}

void Fetcher::Impl::on_download_early_failure(const std::shared_ptr<Download>& dl,
                                              http::Outcome outcome, long status,
                                              std::optional<int64_t> retry_after,
                                              const std::string& detail) {
  Result<std::shared_ptr<FileVersion>> result = Error{EIO, "upstream failed"};
  std::vector<VersionCallback> waiters;
  bool forget_cached = false;
  {
    std::lock_guard lk(mu_);
    PathState& ps = state(dl->path_);
    int write_errno;
    {
      std::lock_guard dlk(dl->mu_);
      write_errno = dl->write_errno_;
    }
    // A miss (no size reported to anyone yet): send it again while that may
    // help. Revalidations serve the cached copy at once instead.
    if (!dl->conditional_ && write_errno == 0 && ps.pending == dl && !stopping_) {
      if (auto d = retry_delay(dl->attempts_, dl->first_try_ms_, outcome, status, retry_after)) {
        dl->attempts_++;
        stats.retries++;
        log()->info("GET {}: {} {} {}, retry {} in {} ms", dl->path_, http::to_string(outcome),
                    status, detail, dl->attempts_, *d);
        schedule(now_ms() + *d, [this, dl] {
          std::lock_guard lk2(mu_);
          if (stopping_ || state(dl->path_).pending != dl) return;
          send_download(dl);
        });
        return;  // pending stays: opens keep coalescing on this download
      }
    }
    if (ps.pending == dl) ps.pending.reset();
    {
      std::lock_guard dlk(dl->mu_);
      dl->state_ = Download::State::kFailed;
    }
    const int64_t now = now_ms();
    auto verdict = dl->conditional_ && write_errno == 0 ? judge_revalidation(outcome, status)
                                                        : RevalidationVerdict::kServeStale;
    if (dl->conditional_ && write_errno == 0 && verdict == RevalidationVerdict::kDeleted &&
        within_missing_grace(dl->path_, ps, now)) {
      stats.missing_served++;
      result = ps.current;
    } else if (dl->conditional_ && write_errno == 0) {
      switch (verdict) {
        case RevalidationVerdict::kServeStale:
          stats.stale_served++;
          if (down()) {
            log()->debug("{}: upstream down, serving the cached copy", dl->path_);
          } else {
            log()->warn("{}: revalidation failed ({} {} {}), serving the cached copy", dl->path_,
                        http::to_string(outcome), status, detail);
          }
          result = ps.current;
          break;
        case RevalidationVerdict::kDeleted:
          log()->info("{}: deleted upstream", dl->path_);
          ps.current.reset();
          ps.negative_until_ms = now_ms() + opt.negative_ttl.count();
          ps.negative_errno = ENOENT;
          forget_cached = true;
          result = Error{ENOENT, "deleted upstream"};
          break;
        case RevalidationVerdict::kDenied:
          result = Error{EACCES, "upstream denies access"};
          break;
        default:
          result = Error{EIO, "unexpected revalidation answer"};
      }
    } else {
      const int err = write_errno ? EIO : errno_for(outcome, status);
      if (err == ENOENT || err == EACCES) {
        ps.negative_until_ms = now + opt.negative_ttl.count();
        ps.negative_errno = err;
        ps.current.reset();
      } else {
        log()->warn("GET {}: {} {} {}", dl->path_, http::to_string(outcome), status, detail);
      }
      result = Error{err, "upstream GET failed"};
    }
    waiters.swap(ps.version_waiters);
  }
  if (forget_cached) post([this, path = dl->path_] { remove_cached(path); });
  for (auto& w : waiters) w(result);
}

void Fetcher::Impl::on_download_body_done(const std::shared_ptr<Download>& dl,
                                          http::Outcome outcome, const std::string& detail) {
  bool complete = false;
  bool unknown_size = false;
  int write_errno;
  bool refused;
  {
    std::lock_guard dlk(dl->mu_);
    write_errno = dl->write_errno_;
    refused = dl->resume_refused_;
    dl->resuming_ = false;
    if (outcome == http::Outcome::kOk && (dl->status_ == 200 || dl->status_ == 206)) {
      if (!dl->expected_size_) {
        unknown_size = true;
        complete = true;
      } else {
        complete = dl->frontier_ == *dl->expected_size_;
      }
    }
  }
  if (write_errno) {
    fail_download(dl, std::string("the cache could not be written: ") + std::strerror(write_errno),
                  true);
    return;
  }
  if (refused) {
    fail_download(dl, "changed upstream during the transfer");
    return;
  }
  if (complete) {
    if (unknown_size) {  // the size is known only now; publish() announces it
      std::lock_guard dlk(dl->mu_);
      dl->expected_size_ = dl->frontier_;
    }
    post([this, dl] { publish(dl); });
    return;
  }
  log()->warn("{}: transfer broken at {} bytes ({}: {})", dl->path_, dl->frontier_,
              http::to_string(outcome), detail);
  try_resume(dl);
}

void Fetcher::Impl::try_resume(const std::shared_ptr<Download>& dl) {
  int attempt;
  {
    std::lock_guard dlk(dl->mu_);
    const bool can = !dl->etag_.empty() && !is_weak_etag(dl->etag_) && dl->expected_size_;
    if (!can || now_ms() - dl->last_progress_ms_ >= opt.read_stall_timeout.count()) {
      dl->state_ = Download::State::kFailed;
      attempt = -1;
    } else {
      attempt = dl->resumes_++;
    }
  }
  if (attempt < 0) {
    fail_download(dl, "cannot resume");
    return;
  }
  // Capped exponential back-off with jitter: 0.2 s, 0.4 s, ... at most 5 s.
  static thread_local std::mt19937 rng{std::random_device{}()};
  const int64_t base = std::min<int64_t>(5000, 200LL << std::min(attempt, 5));
  int64_t delay = base / 2 + std::uniform_int_distribution<int64_t>(0, base / 2)(rng);
  {
    // A resume answered 503/429 with Retry-After: wait as asked, within the
    // read stall budget.
    std::lock_guard dlk(dl->mu_);
    if (dl->retry_after_ && *dl->retry_after_ > 0) {
      delay = std::max<int64_t>(
          delay, std::min<int64_t>(*dl->retry_after_ * 1000, opt.read_stall_timeout.count() / 2));
    }
    dl->retry_after_.reset();
  }
  schedule(now_ms() + delay, [this, dl] {
    http::Request req;
    // Any origin: If-Range makes one with other bytes answer 200.
    auto [origin, url] = pick_url(dl->path_);
    req.url = std::move(url);
    req.max_recv_speed = dl->max_rate_;
    {
      std::lock_guard dlk(dl->mu_);
      if (dl->state_ != Download::State::kStreaming) return;
      req.range_from = dl->frontier_;
      req.if_range = dl->etag_;
      dl->resuming_ = true;
      dl->origin_ = origin;
    }
    stats.resumes++;
    log()->info("{}: resuming at byte {} from {}", dl->path_, *req.range_from,
                origins.base(origin));
    start_request(std::move(req), dl, origin);
  });
}

void Fetcher::Impl::fail_download(const std::shared_ptr<Download>& dl, const std::string& why,
                                  bool fatal) {
  log()->error("{}: download failed: {}", dl->path_, why);
  {
    // The temp file stays until the Download is gone (the last handle that
    // holds it closes): readers still pread the bytes below the frontier
    // through its fd.
    std::lock_guard dlk(dl->mu_);
    dl->state_ = Download::State::kFailed;
    // Its temp file goes with the Download, soon; the bytes will not be
    // published.
    dl->reservation_.release();
  }
  if (fatal) stats.write_failures++;
  // Parked readers are not failed here, not even for a full disk: they wait
  // for read_stall_timeout (sweep fails them), so that a TFTP client sees a
  // timeout, never a short file. Through the page cache, an error for one
  // page after bytes of the pages before it reach read(2) as a short read,
  // which in.tftpd and atftpd send as the end of a complete file. New opens
  // start a new download.
  std::vector<VersionCallback> waiters;
  {
    std::lock_guard lk(mu_);
    PathState& ps = state(dl->path_);
    if (ps.current && ps.current->download_ == dl) ps.current->download_.reset();
    if (dl->whole_ && ps.pending == dl) {
      // Nobody was given a size yet: fail fast, like an error before the headers.
      ps.pending.reset();
      waiters.swap(ps.version_waiters);
    }
  }
  for (auto& w : waiters) w(Error{EIO, "download failed: " + why});
}

void Fetcher::Impl::publish(const std::shared_ptr<Download>& dl) {
  std::string sha;
  PathEntry entry;
  std::optional<PathEntry> before;
  std::vector<ReadWaiter> ready;
  int fd = -1;
  {
    // Held across the rename and the index update: a blob that a concurrent
    // collect_garbage() finds unreferenced must not be the one we point at.
    std::shared_lock gc(gc_mu_);
    auto r = blobs.publish(dl->tmp_);
    if (!r) {
      fail_download(dl, "publishing failed: " + r.error().message, true);
      return;
    }
    sha = r.value();
    {
      std::lock_guard dlk(dl->mu_);
      entry.sha256 = sha;
      entry.size = dl->frontier_;
      entry.etag = dl->etag_;
      entry.last_modified = dl->last_modified_;
      entry.validated_at = now_ms() / 1000;
    }
    before = index.get_path(dl->path_);
    if (auto w = index.put_path(dl->path_, entry); !w) {
      fail_download(dl, "index update failed: " + w.error().message, true);
      return;
    }
    // Its readers read it from the download: count that as its last use,
    // or eviction would take a file just fetched for "never read".
    index.note_access(sha, entry.validated_at);
    {
      // Its bytes are in the index's totals now; still under gc_mu_, so a
      // pass counts them either as reserved or as held, never as neither.
      std::lock_guard dlk(dl->mu_);
      dl->reservation_.release();
    }
    stats.download_seconds.observe(static_cast<double>(now_ms() - dl->started_ms_) / 1000.0);
    // Still under gc_mu_: once the eviction can look, the download is bound
    // to its blob (and so counts as using it).
    std::lock_guard lk(mu_);
    std::lock_guard dlk(dl->mu_);
    dl->sha256_ = sha;
    dl->state_ = Download::State::kComplete;
    ready.swap(dl->readers_);
    fd = dl->tmp_.fd();
    if (auto v = dl->version_.lock()) {
      v->sha256_ = sha;
      // From now on the blob serves new opens; handles that hold the
      // download keep reading through its fd.
      if (v->download_ == dl) v->download_.reset();
      PathState& ps = state(dl->path_);
      if (ps.current == v) ps.validated_ms = now_ms();
    }
  }
  log()->info("{}: downloaded {} bytes, sha256 {}", dl->path_, entry.size, sha.substr(0, 12));
  if (before && before->sha256 != sha) forget_derived(before->sha256);
  if (dl->whole_) {
    std::shared_ptr<const ContentFilter> filter;
    {
      std::lock_guard lk(mu_);
      filter = filter_for(dl->path_);
    }
    Result<Derived> derived = Derived{entry.sha256, entry.size, ""};
    if (filter) derived = derive(*filter, dl->path_, entry);
    install_version(dl->path_, entry, filter, derived, dl);
  }
  const uint64_t size = entry.size;
  for (auto& w : ready) {
    const uint64_t end = w.offset >= size ? w.offset : std::min<uint64_t>(w.offset + w.len, size);
    w.cb(Slice{fd, w.offset, static_cast<size_t>(end - w.offset)});
  }
  if (before && before->sha256 != sha) collect_garbage(before->sha256);
  queue_eviction();
}

// --- Impl: bounded cache ----------------------------------------------------

void Fetcher::Impl::release_blob(const std::string& sha) {
  bool last = false;
  {
    std::lock_guard lk(use_mu_);
    auto it = blob_users_.find(sha);
    if (it != blob_users_.end() && --it->second <= 0) {
      blob_users_.erase(it);
      last = true;
    }
  }
  if (last) queue_eviction();
}

std::unordered_set<std::string> Fetcher::Impl::blobs_in_use() {  // gc_mu_ held
  std::unordered_set<std::string> used;
  {
    std::lock_guard lk(mu_);
    for (const auto& w : active_) {
      auto d = w.lock();
      if (!d) continue;
      std::lock_guard dlk(d->mu_);
      if (!d->sha256_.empty() && d->handles_.load() > 0) used.insert(d->sha256_);  // their fd
    }
    for (const auto& [path, ps] : states_) {
      // A revalidation may answer 304 (the blob stays current); a rewrite
      // reads its source.
      if (ps->pending && ps->current && !ps->current->sha256_.empty()) {
        used.insert(ps->current->sha256_);
        if (!ps->current->source_sha256_.empty()) used.insert(ps->current->source_sha256_);
      }
      if (ps->deriving && ps->underived) used.insert(ps->underived->sha256);
    }
  }
  std::lock_guard lk(use_mu_);
  for (const auto& [sha, n] : blob_users_) used.insert(sha);
  return used;
}

void Fetcher::Impl::forget_evicted(const std::vector<std::string>& paths) {  // gc_mu_ held
  std::lock_guard lk(mu_);
  for (const auto& p : paths) {
    auto it = states_.find(p);
    if (it == states_.end()) continue;
    PathState& ps = *it->second;
    if (ps.pending) continue;  // its blob was in use: not evicted (shared bytes)
    // Not cached any more: the next lookup asks upstream, the next open of
    // the old version answers ESTALE.
    ps.current.reset();
    ps.loaded = false;
    ps.validated_ms = 0;
    ps.missing_since_ms = 0;
    ps.underived.reset();
  }
}

Result<EvictReport> Fetcher::Impl::run_eviction(uint64_t incoming) {
  Evictor* ev = evictor_.load();
  if (!ev) return Error{EINVAL, "no cache limit"};
  std::unique_lock gc(gc_mu_);  // enforce() calls blobs_in_use and forget_evicted
  auto r = ev->enforce(incoming);
  if (!r) log()->warn("eviction: {}", r.error().message);
  return r;
}

void Fetcher::Impl::queue_eviction() {
  // Every last close of a cached file comes here: below the watermark a
  // pass would find nothing, so no worker is woken for it.
  Evictor* ev = evictor_.load();
  if (!ev || !ev->over_high_watermark() || eviction_queued_.exchange(true)) return;
  post([this] {
    eviction_queued_ = false;
    (void)run_eviction(0);
  });
}

void Fetcher::Impl::collect_garbage(const std::string& sha) {
  std::unique_lock gc(gc_mu_);
  Removed unused;
  collect_blob(index, blobs, sha, unused);
}

void Fetcher::Impl::remove_cached(const std::string& path) {
  std::unique_lock gc(gc_mu_);
  auto r = remove_paths(index, blobs, {path});
  if (!r) log()->warn("{}: removing the index entry failed: {}", path, r.error().message);
}

// --- Impl: filtered files ---------------------------------------------------

Result<Fetcher::Impl::Derived> Fetcher::Impl::derive(const ContentFilter& filter,
                                                     const std::string& path,
                                                     const PathEntry& source) {
  const std::string fp = filter.fingerprint();
  const std::string key = derived_key(fp, source.sha256);
  if (auto d = index.get_path(key); d && blobs.blob_size(d->sha256) == d->size) {
    return Derived{d->sha256, d->size, d->etag};
  }
  ContentFilter::Output out;
  if (source.size > filter.max_input()) {
    out.note = "not rewritten: larger than " + std::to_string(filter.max_input()) + " bytes";
    out.warn = true;
  } else {
    auto fd = blobs.open_blob(source.sha256);
    if (!fd) return fd.error();
    std::string bytes(source.size, '\0');
    if (::pread(fd->get(), bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
      return Error{EIO, "reading " + path + " for the filter failed"};
    }
    out = filter.apply(path, bytes);
  }
  if (out.warn) log()->warn("{}: {}", path, out.note);
  if (!out.changed) return Derived{source.sha256, source.size, out.note};
  auto tmp = blobs.create_temp();
  if (!tmp) return tmp.error();
  if (auto r = tmp->append(out.bytes.data(), out.bytes.size()); !r) return r.error();
  std::shared_lock gc(gc_mu_);
  auto sha = blobs.publish(tmp.value());
  if (!sha) return sha.error();
  // The derived entry holds the output blob (a reference like a path's) and
  // keeps the filter's note where a path keeps its ETag.
  PathEntry d;
  d.sha256 = sha.value();
  d.size = out.bytes.size();
  d.etag = out.note;
  d.validated_at = now_ms() / 1000;
  if (auto r = index.put_path(key, d); !r) return r.error();
  log()->info("{}: {}", path, out.note);
  return Derived{d.sha256, d.size, out.note};
}

void Fetcher::Impl::start_derive(const std::string& path, PathState& ps) {  // mu_ held
  ps.deriving = true;
  const PathEntry source = *ps.underived;
  auto filter = filter_for(path);
  post([this, path, source, filter] {
    Result<Derived> derived = Derived{source.sha256, source.size, ""};
    if (filter) derived = derive(*filter, path, source);
    install_version(path, source, filter, derived, nullptr);
  });
}

void Fetcher::Impl::install_version(const std::string& path, const PathEntry& source,
                                    const std::shared_ptr<const ContentFilter>& filter,
                                    const Result<Derived>& derived,
                                    const std::shared_ptr<Download>& dl) {
  Result<std::shared_ptr<FileVersion>> result = Error{EIO, "filter failed"};
  std::vector<VersionCallback> waiters;
  {
    std::lock_guard lk(mu_);
    PathState& ps = state(path);
    if (dl && ps.pending == dl) ps.pending.reset();
    ps.deriving = false;
    ps.underived.reset();
    if (derived) {
      const std::string fp = filter ? filter->fingerprint() : std::string();
      const std::string src = filter ? source.sha256 : std::string();
      auto& cur = ps.current;
      if (cur && cur->sha256_ == derived->sha256 && cur->source_sha256_ == src &&
          cur->filter_fp_ == fp && cur->size() == derived->size) {
        result = cur;  // the same bytes served the same way: the same version
      } else if (cur && !filter && cur->sha256_.empty() && !cur->download_ &&
                 cur->size() == derived->size &&
                 (cur->etag().empty() || cur->etag() == source.etag)) {
        cur->sha256_ = derived->sha256;  // the version a listing announced, now with bytes
        result = cur;
      } else {
        auto v = make_version(path, derived->size, source.last_modified, source.etag);
        v->sha256_ = derived->sha256;
        v->source_sha256_ = src;
        v->filter_fp_ = fp;
        v->filter_note_ = derived->note;
        if (dl && dl->conditional_) stats.revalidations_changed++;
        result = v;
      }
      auto& v = result.value();
      v->validator_etag_ = source.etag;
      v->validator_last_modified_ = source.last_modified;
      ps.current = v;
      ps.validated_ms = source.validated_at ? source.validated_at * 1000 : now_ms();
      if (dl) ps.validated_ms = now_ms();
      ps.negative_until_ms = 0;
    } else {
      log()->error("{}: {}", path, derived.error().message);
      result = derived.error();
    }
    waiters.swap(ps.version_waiters);
  }
  for (auto& w : waiters) w(result);
}

void Fetcher::Impl::forget_derived(const std::string& old_source_sha) {
  // The outputs derived from a blob no path uses any more are garbage too,
  // whichever filter fingerprint made them.
  std::unique_lock gc(gc_mu_);
  Removed unused;
  drop_outputs_of(index, blobs, old_source_sha, unused);
}

void Fetcher::set_evictor(Evictor* evictor) {
  if (evictor) {
    // Both run inside run_eviction(), which holds gc_mu_.
    evictor->set_in_use([impl = impl_.get()] { return impl->blobs_in_use(); });
    evictor->set_on_evicted(
        [impl = impl_.get()](const std::vector<std::string>& p) { impl->forget_evicted(p); });
  }
  impl_->evictor_ = evictor;
  if (evictor) impl_->queue_eviction();
}

Result<EvictReport> Fetcher::enforce_limit() { return impl_->run_eviction(0); }

void Fetcher::set_filter(std::shared_ptr<const ContentFilter> filter) {
  std::lock_guard lk(impl_->mu_);
  impl_->filter_ = std::move(filter);
  // Versions served through another filter (or none) are replaced at their
  // next lookup; an open handle keeps its version.
  for (auto& [path, ps] : impl_->states_) {
    if (ps->pending || ps->deriving) continue;
    const bool was_filtered = ps->current && !ps->current->filter_fp_.empty();
    const bool is_filtered = impl_->filter_for(path) != nullptr;
    if (was_filtered || is_filtered || ps->underived) {
      ps->current.reset();
      ps->underived.reset();
      ps->loaded = false;
    }
  }
}

// --- Impl: directories ------------------------------------------------------

void Fetcher::Impl::list_dir(const std::string& path, Fetcher::ListCallback cb) {
  with_listing(path, [this, path, cb = std::move(cb)] {
    std::shared_ptr<const Listing> listing;
    {
      std::lock_guard lk(mu_);
      listing = state(path).listing;
    }
    std::map<std::string, bool> names;  // name -> is_dir
    if (listing && listing->available) {
      for (const auto& e : listing->entries) names.emplace(e.name, e.is_dir);
    }
    // What the cache holds below this directory (all of it when upstream
    // gives no listing; entries the listing lacks are shown too).
    const std::string prefix = path.empty() ? std::string() : path + "/";
    for (const auto& [p, entry] : index.list_paths(path)) {
      if (p.size() <= prefix.size() || p.compare(0, prefix.size(), prefix) != 0) continue;
      if (is_internal_key(p)) continue;  // internal entries (filter outputs)
      std::string_view rest(p);
      rest.remove_prefix(prefix.size());
      const auto slash = rest.find('/');
      if (slash == std::string_view::npos) {
        names.emplace(std::string(rest), false);
      } else {
        names.emplace(std::string(rest.substr(0, slash)), true);
      }
    }
    if (!path.empty() && names.empty() && !(listing && listing->available)) {
      // "Unreachable" must not read as "absent".
      const int err = listing && listing->error == EIO ? EIO : ENOENT;
      cb(Error{err, "no listing and nothing cached"});
      return;
    }
    std::vector<DirEntry> out;
    out.reserve(names.size());
    for (auto& [n, d] : names) out.push_back(DirEntry{n, d});
    cb(std::move(out));
  });
}

// --- Fetcher ----------------------------------------------------------------

Fetcher::Fetcher(FetcherOptions options, http::Client& client, Index& index, BlobStore& blobs)
    : options_(std::move(options)), impl_(std::make_unique<Impl>(this, client, index, blobs)) {
  impl_->start_threads();
}

Fetcher::~Fetcher() { shutdown(); }

void Fetcher::lookup(const std::string& path, AttrCallback cb) { impl_->lookup(path, std::move(cb)); }

Result<Attr> Fetcher::peek(const std::string& path) {
  std::optional<Result<Attr>> out;
  auto keep = [&out](Result<Attr> r) { out.emplace(std::move(r)); };
  impl_->lookup(path, keep, Impl::LookupMode::kPeek);
  // Every kPeek branch answers before lookup() returns.
  return std::move(out).value();
}

bool Fetcher::upstream_up() const { return !impl_->down(); }

const char* to_string(VersionInfo::State state) {
  switch (state) {
    case VersionInfo::State::kRemote: return "remote";
    case VersionInfo::State::kDownloading: return "downloading";
    case VersionInfo::State::kCached: return "cached";
    case VersionInfo::State::kStale: return "stale";
  }
  return "?";
}

VersionInfo Fetcher::describe(const std::shared_ptr<FileVersion>& v) const {
  VersionInfo info;
  info.size = v->size();
  std::lock_guard lk(impl_->mu_);
  // A version announced by a listing has no ETag of its own: the response
  // that delivered its bytes told the validator.
  info.etag = v->validator_etag_.empty() ? v->etag() : v->validator_etag_;
  info.sha256 = v->sha256_;
  info.upstream_sha256 = v->source_sha256_;
  info.rewritten = !v->source_sha256_.empty() && v->source_sha256_ != v->sha256_;
  info.source_url = v->source_url_.empty() ? http::join_url(options_.base_url, v->path())
                                           : v->source_url_;
  const PathState* ps = nullptr;
  if (auto it = impl_->states_.find(v->path()); it != impl_->states_.end()) {
    ps = it->second.get();
  }
  const bool current = ps && ps->current == v;
  if (current && ps->validated_ms > 0) info.validated_at = ps->validated_ms / 1000;
  if (!v->sha256_.empty()) {
    const bool stale = !current || impl_->down() || ps->missing_since_ms != 0;
    info.state = stale ? VersionInfo::State::kStale : VersionInfo::State::kCached;
  } else if (v->download_) {
    info.state = VersionInfo::State::kDownloading;
  }
  return info;
}

void Fetcher::list_dir(const std::string& path, ListCallback cb) {
  impl_->list_dir(path, std::move(cb));
}

void Fetcher::open(const std::shared_ptr<FileVersion>& version, OpenCallback cb) {
  impl_->open(version, std::move(cb));
}

void Fetcher::open(const std::shared_ptr<FileVersion>& version, uint64_t max_rate,
                   OpenCallback cb) {
  impl_->open(version, std::move(cb), max_rate);
}

bool path_at_or_under(std::string_view path, std::string_view prefix) {
  if (prefix.empty() || path == prefix) return true;
  return path.size() > prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
         path[prefix.size()] == '/';
}

InvalidateResult Fetcher::invalidate(const std::string& prefix) {
  InvalidateResult r;
  std::lock_guard lk(impl_->mu_);
  const int64_t now = now_ms();
  auto& inv = impl_->invalidations_;
  constexpr size_t kMaxInvalidations = 1024;
  if (prefix.empty() || inv.size() >= kMaxInvalidations) {
    inv.clear();
    inv.emplace_back("", now);  // everything: covers what was listed before
  } else {
    inv.emplace_back(prefix, now);
  }
  auto drop_listing = [&r](const std::string& path, PathState& ps) {
    if (!ps.listing || ps.listing_in_flight) return;
    ps.listing.reset();
    r.listings++;
    if (r.listing_paths.size() < InvalidateResult::kMaxReported) r.listing_paths.push_back(path);
  };
  // The parent's listing says whether prefix exists and what lies beside
  // it: kept, it would answer the lookups and readdirs the admin asked to
  // send upstream again, for as long as listing_ttl. The siblings' negative
  // entries go with it (a name absent from that listing is remembered as
  // missing), or `ls` would show a new file that a lookup still denies.
  const bool has_parent = !prefix.empty();
  const std::string parent(http::parent_path(prefix));
  for (auto& [path, ps] : impl_->states_) {
    const bool under = path_at_or_under(path, prefix);
    if (!under) {
      if (!has_parent) continue;
      if (path == parent) {
        drop_listing(path, *ps);
        continue;
      }
      if (path.empty() || http::parent_path(path) != parent) continue;
    }
    if (under && ps->current && ps->validated_ms != 0) {
      ps->validated_ms = 0;
      r.files++;
    }
    if (ps->negative_until_ms > now) {
      ps->negative_until_ms = 0;
      r.negatives++;
      if (r.negative_paths.size() < InvalidateResult::kMaxReported) r.negative_paths.push_back(path);
    }
    if (under) drop_listing(path, *ps);
  }
  return r;
}

void Fetcher::shutdown() {
  std::vector<VersionCallback> waiters;
  std::vector<std::function<void()>> listing_waiters;
  std::vector<std::shared_ptr<Download>> live;
  {
    std::lock_guard lk(impl_->mu_);
    if (impl_->stopping_) return;
    impl_->stopping_ = true;
    for (auto& [path, ps] : impl_->states_) {
      for (auto& w : ps->version_waiters) waiters.push_back(std::move(w));
      ps->version_waiters.clear();
      for (auto& w : ps->listing_waiters) listing_waiters.push_back(std::move(w));
      ps->listing_waiters.clear();
    }
    for (auto& w : impl_->active_) {
      if (auto d = w.lock()) live.push_back(std::move(d));
    }
  }
  size_t answered = waiters.size() + listing_waiters.size();
  for (auto& w : waiters) w(Error{EIO, "shutting down"});
  for (auto& w : listing_waiters) w();  // each continuation sees stopping_ and fails
  for (auto& d : live) answered += d->fail_all(EIO);
  if (answered) log()->info("shutdown: answered {} waiting requests", answered);
  // After this no sink callback runs, so the Client may outlive us or not.
  impl_->cancel_all_requests();
  for (auto& d : live) d->fail_all(EIO);  // readers parked by late callbacks
  impl_->stop_threads();
  if (auto r = impl_->index.flush_access(); !r) {
    log()->warn("access times not saved: {}", r.error().message);
  }
}

}  // namespace netbootfs::cache
