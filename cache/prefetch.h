// Prefetch: warms the cache with upstream files through a Fetcher, so that
// it shares the Fetcher's downloads (a reader of the mount and the prefetch
// asking for the same file cause one upstream GET).
//
// Contract
// - Each path is looked up; a file is opened and read to its last byte (the
//   read that touches it returns once the file is published in the cache); a
//   directory's listing is walked: its files are fetched, its subdirectories
//   only with `recursive`. Paths are relative, already normalised.
// - At most `jobs` files are in flight. With max_rate > 0, every download the
//   prefetch itself starts is capped at max_rate / jobs bytes per second, so
//   the prefetch's transfers together stay under max_rate; a download that
//   a mount reader started first is joined as it is.
// - Blocking: runs on the caller's thread plus `jobs` workers, and returns
//   when every path was tried or `cancelled()` said so (checked between
//   files). progress() is called from the workers, serialised, after each
//   file.
// - A failure (missing file, upstream error) is counted and reported with
//   its path; it never stops the rest.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "cache/fetcher.h"

namespace netbootfs::cache {

struct PrefetchOptions {
  bool recursive = false;
  int jobs = 4;
  uint64_t max_rate = 0;  // bytes per second over all jobs; 0: unlimited
};

struct PrefetchProgress {
  uint64_t files = 0;      // fetched (or already cached)
  uint64_t failures = 0;
  uint64_t bytes = 0;      // size of the files fetched
  uint64_t queued = 0;     // paths known but not yet done
  std::string path;        // the file just finished
};

struct PrefetchSummary {
  uint64_t files = 0;
  uint64_t failures = 0;
  uint64_t bytes = 0;
  double seconds = 0;
  bool cancelled = false;
  std::vector<std::pair<std::string, std::string>> failed;  // path, reason (first 100)
};

// Parses "10M", "512K", "1.5G", "2000" (bytes per second; K = 1024, as
// parse_size in cache/evictor.h, which it uses). EINVAL otherwise (0 included).
Result<uint64_t> parse_rate(const std::string& text);

PrefetchSummary prefetch(Fetcher& fetcher, const std::vector<std::string>& paths,
                         const PrefetchOptions& options,
                         const std::function<void(const PrefetchProgress&)>& progress,
                         const std::function<bool()>& cancelled);

}  // namespace netbootfs::cache
