#include "fs/daemon_metrics.h"

#include <chrono>
#include <mutex>

namespace netbootfs::fs {
namespace {

using Labels = MetricsRegistry::Labels;

double value(const std::atomic<uint64_t>& a) { return static_cast<double>(a.load()); }

// Index::stats() is one read transaction (the index keeps running totals);
// the three cache gauges still share one per scrape (at most every 100 ms)
// so that they describe the same moment.
class CacheTotals {
 public:
  explicit CacheTotals(const cache::Index& index) : index_(index) {}
  cache::IndexStats get() {
    std::lock_guard lk(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (now - at_ > std::chrono::milliseconds(100)) {
      stats_ = index_.stats();
      at_ = now;
    }
    return stats_;
  }

 private:
  const cache::Index& index_;
  std::mutex mu_;
  cache::IndexStats stats_;
  std::chrono::steady_clock::time_point at_{};
};

// The groups of register_daemon_metrics, in their order of registration
// (which is the order of the families in the scrape).

void register_fuse_metrics(MetricsRegistry& r, const FuseFs& fuse) {
  for (size_t i = 0; i < FuseFs::kOpCount; ++i) {
    const auto op = static_cast<FuseFs::Op>(i);
    r.counter("netbootfs_fuse_requests_total", "Requests from the kernel, by operation.",
              Labels{{"op", FuseFs::op_name(op)}}, [&fuse, op] { return double(fuse.op_count(op)); });
  }
  r.counter("netbootfs_served_bytes_total", "Bytes answered to read requests.", {},
            [&fuse] { return double(fuse.served_bytes()); });
}

// How opens were served: cache hits, revalidations, stale and missing files.
void register_open_metrics(MetricsRegistry& r, const cache::FetcherStats& s) {
  r.counter("netbootfs_opens_total", "Opens of files, by how they were served.",
            Labels{{"outcome", "hit"}}, [&s] { return value(s.hits); });
  r.counter("netbootfs_opens_total", "", Labels{{"outcome", "miss"}},
            [&s] { return value(s.misses); });
  r.counter("netbootfs_revalidations_total", "Conditional requests for cached files, by answer.",
            Labels{{"outcome", "not_modified"}}, [&s] { return value(s.revalidations_not_modified); });
  r.counter("netbootfs_revalidations_total", "", Labels{{"outcome", "changed"}},
            [&s] { return value(s.revalidations_changed); });
  r.counter("netbootfs_stale_served_total",
            "Cached files served because upstream could not be asked (stale-if-error, down).", {},
            [&s] { return value(s.stale_served); });
  r.counter("netbootfs_missing_served_total",
            "Cached files served within missing_grace after upstream reported them missing.", {},
            [&s] { return value(s.missing_served); });
  r.counter("netbootfs_missing_removed_total", "Cached files removed after missing_grace.", {},
            [&s] { return value(s.missing_removed); });
  r.counter("netbootfs_coalesced_total",
            "Requests that joined an upstream exchange already in flight for the same path.", {},
            [&s] { return value(s.coalesced); });
}

void register_upstream_metrics(MetricsRegistry& r, const cache::Fetcher& fetcher,
                               const cache::FetcherStats& s) {
  const std::pair<const char*, const std::atomic<uint64_t>*> kinds[] = {
      {"get", &s.downloads},  {"head", &s.heads},     {"listing", &s.listings},
      {"resume", &s.resumes}, {"retry", &s.retries},  {"probe", &s.upstream_probes}};
  for (const auto& [kind, counter] : kinds) {
    r.counter("netbootfs_upstream_requests_total", "Requests sent upstream, by kind.",
              Labels{{"kind", kind}}, [counter] { return value(*counter); });
  }
  // Not netbootfs_upstream_requests_total: that family is labelled by kind,
  // and one family with two label sets would double count under sum().
  for (int m = 0; m < 2; ++m) {
    for (size_t i = 0; i < cache::FetcherStats::kStatusCount; ++i) {
      r.counter("netbootfs_upstream_responses_total",
                m == 0 && i == 0 ? "Upstream exchanges by method and HTTP status "
                                   "(\"error\": no answer: connect, timeout, TLS)."
                                 : "",
                Labels{{"method", m ? "HEAD" : "GET"},
                       {"status", cache::FetcherStats::kStatusLabels[i]}},
                [&s, m, i] { return value(s.responses[m][i]); });
    }
  }
  r.counter("netbootfs_upstream_bytes_total", "Body bytes received from upstream.", {},
            [&s] { return value(s.download_bytes); });
  r.counter("netbootfs_upstream_failures_total",
            "Connection-level upstream failures (connect, timeout, TLS).", {},
            [&s] { return value(s.upstream_failures); });
  r.counter("netbootfs_upstream_down_total", "Times upstream was marked down.", {},
            [&s] { return value(s.upstream_down_events); });
  r.gauge("netbootfs_upstream_up", "1 while upstream is considered reachable, 0 while down.", {},
          [&fetcher] { return fetcher.upstream_up() ? 1.0 : 0.0; });
}

void register_error_metrics(MetricsRegistry& r, const cache::FetcherStats& s) {
  for (size_t i = 0; i < cache::FetcherStats::kErrorSiteCount; ++i) {
    r.counter("netbootfs_errors_total", i == 0 ? "Failures served to clients, by where they arose." : "",
              Labels{{"site", cache::FetcherStats::kErrorSiteLabels[i]}},
              [&s, i] { return value(s.errors[i]); });
  }
}

void register_cache_gauges(MetricsRegistry& r, const cache::Index& index) {
  auto totals = std::make_shared<CacheTotals>(index);
  r.gauge("netbootfs_cache_bytes", "Bytes of the blobs in the cache.", {},
          [totals] { return double(totals->get().blob_bytes); });
  r.gauge("netbootfs_cache_objects", "Blobs in the cache.", {},
          [totals] { return double(totals->get().blobs); });
  r.gauge("netbootfs_cache_paths", "Index entries (paths and rewritten outputs).", {},
          [totals] { return double(totals->get().paths); });
}

}  // namespace

void register_daemon_metrics(MetricsRegistry& r, const cache::Fetcher& fetcher,
                             const FuseFs& fuse, const cache::Index& index) {
  const cache::FetcherStats& s = fetcher.stats();
  register_fuse_metrics(r, fuse);
  register_open_metrics(r, s);
  register_upstream_metrics(r, fetcher, s);
  register_error_metrics(r, s);
  r.histogram("netbootfs_download_seconds", "Duration of completed downloads (headers to publish).",
              {}, &s.download_seconds);
  register_cache_gauges(r, index);
}

void register_eviction_metrics(MetricsRegistry& r, const cache::Evictor& evictor) {
  const cache::Evictor* e = &evictor;
  r.gauge("netbootfs_cache_limit_bytes", "max_cache_size: the bound on the cache's blob bytes.", {},
          [e] { return double(e->options().limit); });
  r.gauge("netbootfs_cache_reserved_bytes",
          "Bytes announced by downloads in flight, counted against the limit before they arrive.",
          {}, [e] { return double(e->reserved()); });
  r.counter("netbootfs_evictions_total", "Blobs evicted to keep the cache under its limit.", {},
            [e] { return value(e->evictions); });
  r.counter("netbootfs_evicted_bytes_total", "Bytes of the blobs evicted.", {},
            [e] { return value(e->evicted_bytes); });
}

void register_client_metrics(MetricsRegistry& r, const http::Client& client) {
  r.gauge("netbootfs_upstream_queued_downloads",
          "File downloads waiting for a max_downloads slot.", {},
          [&client] { return double(client.queued_bodies()); });
}

}  // namespace netbootfs::fs
