// The daemon's metrics: which counters of which layer are exported under
// which names (see README "Monitoring"). Registration only: the values are
// read from the layers' own atomics at every scrape.
#pragma once

#include "cache/evictor.h"
#include "cache/fetcher.h"
#include "cache/index.h"
#include "fs/fuse_fs.h"
#include "fs/metrics.h"

namespace netbootfs::fs {

// The objects must outlive every render() of the registry.
void register_daemon_metrics(MetricsRegistry& r, const cache::Fetcher& fetcher,
                             const FuseFs& fuse, const cache::Index& index);
// The bounded cache: its limit and what eviction removed (see cache/evictor.h).
void register_eviction_metrics(MetricsRegistry& r, const cache::Evictor& evictor);
// The HTTP client's own series (max_downloads queue).
void register_client_metrics(MetricsRegistry& r, const http::Client& client);

}  // namespace netbootfs::fs
