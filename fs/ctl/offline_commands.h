// offline_commands: netbootfsctl's commands on the cache directory itself:
// ls, status, verify, stat, evict, export, import, and gc and prefetch of an
// unmounted cache.
//
// Contract
// - `dir` is the cache directory (--cache-dir). Reading commands (ls,
//   status, verify, stat, export) open the index read-only: LMDB lets a live
//   mount and these share it. Writing commands (verify --repair, evict,
//   import, gc and prefetch when unmounted) take the cache lock first and
//   fail (exit 2) under a running mount.
// - gc and prefetch go through the mount when one answers on `socket`
//   (fs/ctl/mount_commands.h) and work here only when none does; status and
//   ls -l add what the mount answers (its counters, its pins) when it does.
// - Exit codes: 0 success; 1 verify found a problem (left), stat's path is
//   not cached, some prefetched files failed; 2 usage or I/O error, a mounted
//   cache for a writing command, an unknown or unreachable upstream.
// - Output: the human form on stdout, errors on stderr ("netbootfsctl: ..."),
//   every field as one JSON document with --json.
#pragma once

#include <string>
#include <vector>

namespace netbootfs::fs::ctl {

int cmd_ls(const std::string& dir, const std::string& socket, const std::string& path,
           bool long_format, const std::vector<std::string>& pins, bool json);
int cmd_status(const std::string& dir, const std::string& socket, bool json);
int cmd_verify(const std::string& dir, bool repair, bool json);
int cmd_stat(const std::string& dir, const std::string& path, bool json);
// Entries at or below `paths`, every one, or those not read for
// `older_than`; then the blobs (and rewritten outputs) nothing refers to.
int cmd_evict(const std::string& dir, const std::vector<std::string>& paths, bool all,
              const std::string& older_than, bool json);
// Entries fetched or revalidated since `since` (every entry when empty).
int cmd_export(const std::string& dir, const std::string& since, const std::string& file,
               bool json);
int cmd_import(const std::string& dir, const std::string& file, bool json);
// Unmounted: what the mount's eviction would do, with `size` (default 80%
// of free space + what the cache holds) and `pins`.
int cmd_gc(const std::string& dir, const std::string& socket, const std::string& size,
           const std::vector<std::string>& pins, bool json);

// The HTTP flags of an unmounted prefetch: each given one wins over what the
// last mount recorded (http::kSettingsFileName in the cache directory).
struct HttpFlags {
  std::string proxy, ca_file, client_cert, client_key;
  bool insecure = false;
  double connect_timeout = -1, request_timeout = -1;  // seconds; < 0: not given
  bool given() const;
};

struct PrefetchArgs {
  std::vector<std::string> paths;  // none: the root
  std::string from;                // more paths from this file
  bool recursive = false;
  int jobs = 4;          // 1..64
  std::string max_rate;  // "10M"; empty: unlimited
  std::string url;       // unmounted: the upstream (default: the last mount's)
  HttpFlags http;
};
int cmd_prefetch(const std::string& dir, const std::string& socket, const PrefetchArgs& args,
                 bool json);

}  // namespace netbootfs::fs::ctl
