// Fetcher::Impl: the path table and the fetch path's state machine, behind
// the Fetcher facade (cache/fetcher.h). Internal to cache/fetch/: nothing
// outside the fetcher includes this header.
//
// Parts, one file each (each part's own state lives in its own class where
// it has one):
// | file                | job                                                       |
// |---------------------|-----------------------------------------------------------|
// | path_table.cc       | per-path state, versions, invalidation, sweep, describe    |
// | lookup.cc           | lookup and peek, HEADs (coalesced per path), resolve       |
// | listings.cc         | directory listings (coalesced) and list_dir's merge        |
// | transfers.cc        | open, GET / conditional GET, retries, resumes, failures    |
// | publish.cc          | publication of a download, what eviction sees and forgets  |
// | derived.cc          | rewritten outputs (ContentFilter) and set_filter           |
// | download.{h,cc}     | the sink of one transfer: temp blob, frontier, parked reads|
// | blob_lifecycle.{h,cc} | gc lock, open-handle users, eviction passes               |
// | upstream_health.{h,cc}| down/up and origin choice                                 |
// | requests.{h,cc}     | request start, counting, in-flight set, cancel             |
// | executor.{h,cc}     | completion workers and the timer                           |
// | policy.{h,cc}       | pure decisions                                             |
//
// Lock order for the whole fetch path (never the other way round):
//   BlobLifecycle::gc_mu_ -> Evictor's mutex -> Impl::mu_ (the path table)
//   -> Download::mu_ -> BlobLifecycle::use_mu_;
//   UpstreamHealth, Requests and Executor locks are leaves, and so are the
//   Index's and the HTTP client's. No lock is held across a callback of the
//   Fetcher's API, a kernel reply or a curl call; the HTTP worker thread
//   takes only mu_ and Download::mu_, never gc_mu_, and no lock it takes is
//   held across an fsync.
// A function that needs the path table's lock takes its token (PathLock);
// the mutable binding of a FileVersion is reached only through one.
#pragma once

#include <tsl/robin_map.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cache/fetch/blob_lifecycle.h"
#include "cache/fetch/download.h"
#include "cache/fetch/executor.h"
#include "cache/fetch/policy.h"
#include "cache/fetch/requests.h"
#include "cache/fetch/upstream_health.h"
#include "cache/fetcher.h"
#include "cache/listing.h"
#include "cache/util/log.h"

namespace netbootfs::cache {

using VersionCallback = std::function<void(Result<std::shared_ptr<FileVersion>>)>;

// The path table's lock as a token: every function that reads or writes
// per-path state or a version's binding takes one (or makes one), so that
// holding the lock is checked by the compiler rather than said in a comment.
class PathLock {
 public:
  explicit PathLock(std::mutex& mu) : lk_(mu) {}
  void unlock() { lk_.unlock(); }
  void lock() { lk_.lock(); }

 private:
  std::unique_lock<std::mutex> lk_;
};

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

  bool negative(int64_t now) const { return negative_until_ms > now; }
  void set_negative(int err, int64_t until_ms) {
    negative_until_ms = until_ms;
    negative_errno = err;
  }
  void clear_negative() { negative_until_ms = 0; }
};

struct Fetcher::Listing {
  bool available = false;
  int error = 0;  // when not available: ENOENT/EACCES (upstream said so) or EIO (unreachable)
  int64_t fetched_ms = 0;
  std::vector<ListingEntry> entries;  // sorted by name
  const ListingEntry* find(std::string_view name) const {
    auto it =
        std::lower_bound(entries.begin(), entries.end(), name,
                         [](const ListingEntry& e, std::string_view n) { return e.name < n; });
    return it != entries.end() && it->name == name ? &*it : nullptr;
  }
};

struct Fetcher::Impl : DownloadEvents {
  Impl(Fetcher* owner, http::Client& c, Index& i, BlobStore& b);

  Fetcher* self;
  const FetcherOptions& opt;
  FetcherStats& stats;
  Index& index;
  BlobStore& blobs;
  UpstreamHealth health;
  Executor executor;
  Requests requests;
  BlobLifecycle lifecycle;

  bool down() const { return health.down(); }
  void post(std::function<void()> fn) { executor.post(std::move(fn)); }
  void schedule(int64_t due_ms, std::function<void()> fn) {
    executor.schedule(due_ms, std::move(fn));
  }
  void start_request(http::Request req, std::shared_ptr<http::Sink> sink, size_t origin) {
    requests.start(std::move(req), std::move(sink), origin);
  }
  std::pair<size_t, std::string> pick_url(const std::string& rel, bool directory = false) {
    return health.pick_url(rel, directory, now_ms());
  }

  // --- the path table (path_table.cc) ---
  std::mutex mu_;  // guards states_, PathState, FileVersion bindings, filter_ (PathLock)
  std::shared_ptr<const ContentFilter> filter_;
  tsl::robin_map<std::string, std::unique_ptr<PathState>> states_;
  uint64_t next_version_id_ = 1;
  bool stopping_ = false;
  // invalidate(): (prefix, when) for paths not loaded yet; bounded (an
  // overflow collapses into "" = everything, which only over-invalidates).
  std::vector<std::pair<std::string, int64_t>> invalidations_;
  std::vector<std::weak_ptr<Download>> active_;  // downloads that may hold parked readers

  PathState& state(const PathLock& lk, const std::string& path);
  void ensure_loaded(const PathLock& lk, const std::string& path, PathState& ps);

  std::shared_ptr<FileVersion> make_version(const PathLock& lk, const std::string& path,
                                            uint64_t size, int64_t mtime, std::string etag);
  Attr attr_of(const std::shared_ptr<FileVersion>& v) const {
    return Attr{false, v->size(), v->mtime(), v};
  }
  void apply_invalidations(const PathLock& lk, const std::string& path, PathState& ps);
  InvalidateResult invalidate(const std::string& prefix);
  // missing_grace: true while the cached `current` may still be served
  // although upstream says it is gone.
  bool within_missing_grace(const PathLock& lk, const std::string& path, PathState& ps,
                            int64_t now);
  void sweep();  // the timer's: stalled reads, forgotten paths
  VersionInfo describe(const std::shared_ptr<FileVersion>& v);

  // --- lookups (lookup.cc) ---
  // kListingFetched: the parent's listing was fetched for this lookup, so
  // it is used whatever its age (with listing_ttl=0 it is never "fresh").
  // kPeek: answer only what is known now (Fetcher::peek): where the lookup
  // would send a request or wait for one, EWOULDBLOCK instead.
  enum class LookupMode { kAsk, kListingFetched, kPeek };
  void lookup(const std::string& path, Fetcher::AttrCallback cb,
              LookupMode mode = LookupMode::kAsk);
  // The parts of lookup() (each answers `cb` or hands it on, and
  // unlocks `lk` before any callback).
  void lookup_in_listing(const std::string& path, PathState& ps, const Listing& listing,
                         bool filtered, PathLock& lk, Fetcher::AttrCallback& cb, LookupMode mode);
  void lookup_by_name(const std::string& path, PathState& ps, bool filtered, bool listing_down,
                      PathLock& lk, Fetcher::AttrCallback& cb, LookupMode mode);
  void wait_for_version(const PathLock& lk, PathState& ps, Fetcher::AttrCallback cb);
  void start_head(const PathLock& lk, const std::string& path, PathState& ps);
  void send_head(const PathLock& lk, const std::string& path, int attempt, int64_t first_ms);
  void on_head_answer(const std::string& path, const std::string& url, int attempt,
                      int64_t first_ms, http::Outcome o, const http::Head& h,
                      const std::string& detail);
  void resolve(const std::string& path, Result<std::shared_ptr<FileVersion>> r);

  // --- listings (listings.cc) ---
  void with_listing(const std::string& dir, std::function<void()> then);
  void fetch_listing(const PathLock& lk, const std::string& dir);
  void send_listing(const PathLock& lk, const std::string& dir, int attempt, int64_t first_ms);
  void on_listing_answer(const std::string& dir, int attempt, int64_t first_ms, http::Outcome o,
                         const http::Head& h, std::string body, const std::string& detail);
  void list_dir(const std::string& path, Fetcher::ListCallback cb);
  void marked_up();  // upstream answers again: forget listings that failed
  void schedule_probe();

  // --- transfers (transfers.cc) ---
  void open(const std::shared_ptr<FileVersion>& v, Fetcher::OpenCallback cb, uint64_t max_rate = 0);
  void open_resolved(const std::shared_ptr<FileVersion>& want,
                     Result<std::shared_ptr<FileVersion>> got, Fetcher::OpenCallback cb);
  void open_blob(const std::shared_ptr<FileVersion>& want, const std::string& sha,
                 std::unique_ptr<OpenFile> of, Fetcher::OpenCallback cb);
  void start_download(const PathLock& lk, const std::string& path, PathState& ps, bool conditional,
                      uint64_t max_rate = 0);
  void send_download(const PathLock& lk, const std::shared_ptr<Download>& dl);
  // The delay before the next attempt of a request first sent at
  // `first_ms`, or nullopt when it must fail now (never while down).
  std::optional<int64_t> retry_delay(int attempt, int64_t first_ms, http::Outcome o, long status,
                                     std::optional<int64_t> retry_after);
  void on_download_head(const std::shared_ptr<Download>& dl) override;
  void on_not_modified(const std::shared_ptr<Download>& dl) override;
  void on_download_early_failure(const std::shared_ptr<Download>& dl, http::Outcome outcome,
                                 long status, std::optional<int64_t> retry_after,
                                 const std::string& detail) override;
  void on_download_body_done(const std::shared_ptr<Download>& dl, http::Outcome outcome,
                             const std::string& detail) override;
  // The verdict of a failed (or 304-less) conditional GET.
  Result<std::shared_ptr<FileVersion>> revalidation_failed(const PathLock& lk,
                                                           const std::shared_ptr<Download>& dl,
                                                           PathState& ps, http::Outcome outcome,
                                                           long status, const std::string& detail,
                                                           bool& forget_cached);
  // `fatal`: the cache could not be written (counted apart).
  void fail_download(const std::shared_ptr<Download>& dl, const std::string& why,
                     bool fatal = false);
  void try_resume(const std::shared_ptr<Download>& dl);

  // --- publication and eviction (publish.cc) ---
  void publish(const std::shared_ptr<Download>& dl);
  std::unordered_set<std::string> blobs_in_use();              // gc_mu_ held
  void forget_evicted(const std::vector<std::string>& paths);  // gc_mu_ held

  // --- rewritten files (derived.cc) ---
  std::shared_ptr<const ContentFilter> filter_for(const PathLock&, const std::string& path) const {
    return filter_ && filter_->matches(path) ? filter_ : nullptr;
  }
  struct Derived {
    std::string sha256;
    uint64_t size = 0;
    std::string note;
  };
  Result<Derived> derive(const ContentFilter& filter, const std::string& path,
                         const PathEntry& source);
  void start_derive(const PathLock& lk, const std::string& path, PathState& ps);
  void install_version(const std::string& path, const PathEntry& source,
                       const std::shared_ptr<const ContentFilter>& filter,
                       const Result<Derived>& derived, const std::shared_ptr<Download>& dl);
  void set_filter(std::shared_ptr<const ContentFilter> filter);
};

}  // namespace netbootfs::cache
