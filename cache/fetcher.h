// Fetcher: decides where the bytes and attributes of every path come from
// (index, listing, HEAD, download) and makes sure each upstream exchange for a
// path happens once however many callers ask at the same moment.
//
// Contract
// - Every asynchronous call takes a callback that is called exactly once:
//   either before the call returns (a hit) or later from another thread (the
//   HTTP worker, a completion worker or the timer). Callbacks are never
//   called with a Fetcher lock held, so they may reply to the kernel and call
//   back into the Fetcher.
// - A FileVersion is one version of one path: its size and identity never
//   change. It may start "remote" (known from a listing or HEAD, no bytes
//   yet), gain a Download, and end up published in a blob. open() of a
//   version that is no longer the path's current one answers ESTALE: the
//   caller must look the name up again.
// - Errors carry errno: ENOENT (404/410), EACCES (403), EIO (transport,
//   timeouts, 5xx, verification), ESTALE (see above), EINTR is never produced
//   here (interrupts are the caller's business).
// - Failure timing: before any size was reported (a GET for a miss, a HEAD, a
//   listing), transient failures (connect, timeout, broken transfer, 5xx,
//   429) are retried with capped exponential back-off (plan_retry) for at most
//   retry_timeout in total, still one request at a time per path; 404, 403,
//   410, 401 and other answers are reported at once. After, a read past the
//   downloaded bytes waits while the download retries and resumes (Range +
//   If-Range) and fails with EIO only when neither it nor the download made
//   progress for read_stall_timeout.
//   A cache write that fails (ENOSPC, EIO, publish) fails the download the
//   same way: its readers wait out read_stall_timeout (a short read would
//   reach a TFTP client as a complete file), the next open starts over.
// - Upstream health: after down_after consecutive connection-level failures
//   (connect, timeout, TLS) upstream is "down": cached files are served
//   without asking it (counted as stale), misses fail with EIO at once, and a
//   HEAD of the base URL every probe_interval (or any HTTP answer) brings it
//   back up.
// - Mirrors: every request (listing, HEAD, GET, resume) goes to the origin
//   Origins::pick() names: the base URL, else the first mirror not backing
//   off. A transient failure (what is_retryable() says) puts that origin in
//   back-off, so the retry goes to the next one; any other answer (404
//   included) is an answer about the file and is final. A resume may go to
//   another origin: If-Range turns different bytes into a 200 (start over).
//   Upstream is down after down_after connection failures in a row when
//   every origin's last answer was one; probes go to the origins in turn.
//   With retry_timeout=0 nothing is retried, so no mirror is tried either.
// - A cached file that upstream reports missing (404/410 on revalidation, or
//   absent from a fresh listing) is still served for missing_grace after the
//   first such answer (a 200/304 clears it), then removed (ENOENT).
// - A read is answered with the whole requested range (clamped to the size)
//   or an error, never a short slice; the read that touches the last byte is
//   held until the download is verified and published.
// - invalidate(prefix): every path at or under prefix is treated as never
//   validated: the next open of a cached file sends a conditional request
//   whatever the revalidate window says, and negative entries and directory
//   listings there are dropped, so a lookup asks upstream again; so are the
//   listing of prefix's parent directory (it names prefix and what lies
//   beside it, and would answer for them until listing_ttl) and the negative
//   entries of prefix's siblings. Paths the
//   Fetcher has not loaded yet are covered too (checked when loaded).
//   Downloads in flight are left alone: they already ask upstream.
// - open() with a max_rate starts its download (if it starts one) with that
//   speed limit; readers that share the download share the limit.
// - Bounded cache (set_evictor, see cache/evictor.h): a download whose size
//   is announced first makes room for it (synchronous eviction), every
//   publish and every last close of a blob queues a background pass. Blobs
//   that an OpenFile reads, a download serves, a revalidation or a rewrite
//   works on are in use and never evicted. An evicted path goes back to "not
//   cached": its old version answers ESTALE at its next open (the kernel
//   looks the name up again and the next open downloads it again); handles
//   open on it keep reading their fd.
// - shutdown() answers every waiting callback (EIO) and stops the threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/blob_store.h"
#include "cache/content_filter.h"
#include "cache/evictor.h"
#include "cache/fetch/policy.h"
#include "cache/file_version.h"
#include "cache/http/client.h"
#include "cache/index.h"
#include "cache/util/histogram.h"
#include "cache/util/result.h"
#include "cache/util/unique_fd.h"

namespace netbootfs::cache {

struct FetcherOptions {
  std::string base_url;                           // normalised, with a trailing slash
  std::chrono::milliseconds revalidate{1000};     // 0: every open revalidates
  std::chrono::milliseconds negative_ttl{10000};  // how long a 404 is remembered
  std::chrono::milliseconds listing_ttl{10000};   // how long a directory listing is trusted
  std::chrono::milliseconds read_stall_timeout{150000};
  std::chrono::milliseconds access_flush_interval{30000};
  int completion_threads = 2;  // fsync + rename + index commit run here
  // Total time a request that reported no size yet is retried for; 0: never.
  std::chrono::milliseconds retry_timeout{5000};
  std::chrono::milliseconds missing_grace{60000};  // 0: a 404 removes at once
  int down_after = 3;  // consecutive connection-level failures; 0: never down
  std::chrono::milliseconds probe_interval{5000};
  // Tried after base_url, in order (normalised, with a trailing slash).
  std::vector<std::string> mirrors;
  std::chrono::milliseconds mirror_backoff{1000};       // first back-off of a failed origin
  std::chrono::milliseconds mirror_backoff_max{30000};  // its cap
};

// One open handle of one version. Holds what keeps the bytes readable (the
// blob fd or the download) until it is destroyed.
class OpenFile {
 public:
  const std::shared_ptr<FileVersion>& version() const { return version_; }
  uint64_t size() const { return version_->size(); }
  // Published bytes: read straight from this fd; -1 while downloading.
  int fd() const { return fd_.get(); }
  // Answers at once when the bytes are there, else when they arrive.
  void read(uint64_t offset, size_t len, ReadCallback cb);
  ~OpenFile();

 private:
  friend class Fetcher;
  OpenFile() = default;
  Fetcher* fetcher_ = nullptr;
  std::shared_ptr<FileVersion> version_;
  std::shared_ptr<Download> download_;
  UniqueFd fd_;
  // When this handle last got bytes (ms): a read stalls only if neither the
  // handle nor the download made progress for read_stall_timeout, so the
  // kernel's retries after a failed read do not restart the clock.
  std::shared_ptr<std::atomic<int64_t>> progress_;
  std::string used_blob_;  // the blob fd_ reads, counted as in use by the Fetcher
};

struct InvalidateResult {
  size_t files = 0;      // cached versions that will revalidate at their next open
  size_t negatives = 0;  // negative entries dropped
  size_t listings = 0;   // directory listings dropped
  // The paths of the dropped negative entries and listings (for the
  // kernel's caches of the same), at most kMaxReported of them.
  std::vector<std::string> negative_paths;
  std::vector<std::string> listing_paths;
  static constexpr size_t kMaxReported = 4096;
};

// True when `path` is `prefix` or below it ("" covers everything).
bool path_at_or_under(std::string_view path, std::string_view prefix);

struct FetcherStats {
  std::atomic<uint64_t> hits{0};
  std::atomic<uint64_t> misses{0};
  std::atomic<uint64_t> revalidations_not_modified{0};
  std::atomic<uint64_t> revalidations_changed{0};
  std::atomic<uint64_t> stale_served{0};
  std::atomic<uint64_t> coalesced{0};
  std::atomic<uint64_t> downloads{0};
  std::atomic<uint64_t> download_bytes{0};
  std::atomic<uint64_t> resumes{0};
  std::atomic<uint64_t> heads{0};
  std::atomic<uint64_t> listings{0};
  std::atomic<uint64_t> retries{0};            // requests sent again after a transient failure
  std::atomic<uint64_t> missing_served{0};     // opens/lookups served within missing_grace
  std::atomic<uint64_t> missing_removed{0};    // cached files removed after missing_grace
  std::atomic<uint64_t> upstream_failures{0};  // connection-level failures
  std::atomic<uint64_t> upstream_down_events{0};
  std::atomic<uint64_t> upstream_probes{0};
  // Every place a client can be answered EIO (or another failure of ours,
  // not upstream's word about the file) counts here by where it arose:
  // netbootfs_errors_total{site=...}. Lock-free: one relaxed increment each.
  enum class ErrorSite : size_t {
    kReadStall,       // a read waited read_stall_timeout without progress
    kUpstreamDown,    // a miss failed at once while upstream is down
    kCacheWrite,      // a download failed by the cache's disk
    kUpstream,        // upstream failed a GET or HEAD (5xx, transport) after retries
    kListing,         // a directory with no listing and nothing cached below it
    kDownload,        // a whole-file download (a rewritten menu) failed
    kNoContent,       // a version with neither bytes nor a download
    kBlobUnreadable,  // a cached blob could not be opened
    kRevalidation,    // a revalidation answer that means nothing we know
    kRewrite,         // a rewritten output could not be made
    kShutdown,        // answered while the daemon stops
  };
  static constexpr const char* kErrorSiteLabels[] = {
      "read_stall", "upstream_down",   "cache_write",  "upstream", "listing", "download",
      "no_content", "blob_unreadable", "revalidation", "rewrite",  "shutdown"};
  static constexpr size_t kErrorSiteCount = sizeof(kErrorSiteLabels) / sizeof(kErrorSiteLabels[0]);
  std::atomic<uint64_t> errors[kErrorSiteCount] = {};
  std::atomic<uint64_t>& error_count(ErrorSite site) { return errors[static_cast<size_t>(site)]; }
  // Counts a failure at `site` and returns it.
  Error count(ErrorSite site, Error e) {
    error_count(site).fetch_add(1, std::memory_order_relaxed);
    return e;
  }
  // The sites by their old names.
  std::atomic<uint64_t>& read_stall_failures = error_count(ErrorSite::kReadStall);
  std::atomic<uint64_t>& down_fast_failures = error_count(ErrorSite::kUpstreamDown);
  std::atomic<uint64_t>& write_failures = error_count(ErrorSite::kCacheWrite);
  // Upstream exchanges by method (0 GET, 1 HEAD) and answer: the HTTP status
  // when one arrived (in the buckets of kStatusLabels), "error" when none did
  // (connect, timeout, TLS, ...). Lock-free: one relaxed increment each.
  static constexpr const char* kStatusLabels[] = {"200", "206", "304",   "401",  "403",
                                                  "404", "410", "429",   "500",  "502",
                                                  "503", "504", "other", "error"};
  static constexpr size_t kStatusCount = sizeof(kStatusLabels) / sizeof(kStatusLabels[0]);
  static size_t status_slot(long status);  // 0: "error"
  std::atomic<uint64_t> responses[2][kStatusCount] = {};
  // Seconds from the request to the published blob, per completed download.
  Histogram download_seconds{{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}};
};

class Fetcher {
 public:
  Fetcher(FetcherOptions options, http::Client& client, Index& index, BlobStore& blobs);
  ~Fetcher();
  Fetcher(const Fetcher&) = delete;
  Fetcher& operator=(const Fetcher&) = delete;

  using AttrCallback = std::function<void(Result<Attr>)>;
  using ListCallback = std::function<void(Result<std::vector<DirEntry>>)>;
  using OpenCallback = std::function<void(Result<std::unique_ptr<OpenFile>>)>;

  // Attributes of a relative path ("" is the root).
  void lookup(const std::string& path, AttrCallback cb);
  // lookup() answered from what is known now, without a request and without
  // waiting (attributes for a directory listing's entries, READDIRPLUS):
  // EWOULDBLOCK where lookup() would ask upstream or wait for an answer.
  // Otherwise the same answer and the same effects as lookup().
  Result<Attr> peek(const std::string& path);
  // The entries of a directory: its upstream listing merged with what the
  // cache holds below it (the cache alone when upstream gives no listing).
  void list_dir(const std::string& path, ListCallback cb);
  // Opens one version for reading; ESTALE when it is no longer current.
  void open(const std::shared_ptr<FileVersion>& version, OpenCallback cb);
  // As open(); a download it starts is capped at max_rate bytes/s (0: none).
  void open(const std::shared_ptr<FileVersion>& version, uint64_t max_rate, OpenCallback cb);

  // See the contract. `prefix` is a normalised relative path ("" = all).
  InvalidateResult invalidate(const std::string& prefix);

  // Installs (or, with nullptr, removes) the content filter. Versions derived
  // with another fingerprint are replaced at their next lookup; open handles
  // keep what they opened.
  void set_filter(std::shared_ptr<const ContentFilter> filter);

  // The snapshot of `version` (see VersionInfo). Never blocks on the network.
  VersionInfo describe(const std::shared_ptr<FileVersion>& version) const;
  // Keeps the cache under the evictor's limit (see the contract). Call
  // before the first request; the evictor must outlive the Fetcher's
  // threads (shutdown()). nullptr: no limit.
  void set_evictor(Evictor* evictor);
  // One eviction pass now (what a control socket's gc runs); the outcome of
  // Evictor::enforce(). EINVAL without an evictor.
  Result<EvictReport> enforce_limit();

  void shutdown();
  const FetcherStats& stats() const { return stats_; }
  // False while upstream is considered down (see the contract).
  bool upstream_up() const;
  const FetcherOptions& options() const { return options_; }

 private:
  friend class Download;
  friend class OpenFile;
  struct PathState;
  struct Listing;
  struct Impl;
  FetcherOptions options_;
  FetcherStats stats_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace netbootfs::cache
