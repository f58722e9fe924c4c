// Mount options: parsed from the FUSE `-o` form so that the command line,
// fstab and mount units (through mount.fuse3) all work the same way.
//
// Contract: parse_mount_args() consumes netbootfs's own options and the
// mount(8)/fstab/systemd options that mean nothing to a FUSE filesystem
// (`_netdev`, `nofail`, `defaults`, `x-systemd.*`, ...), forces `ro`, and
// leaves the rest (allow_other, default_permissions, fsname, ...) in `args`
// for fuse_session_new(), which rejects what it does not know. Errors are one
// line, meant for the admin.
#pragma once

#include <fuse_lowlevel.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cache/util/result.h"

namespace netbootfs::fs {

struct MountOptions {
  std::string url;         // upstream base URL (first positional argument)
  std::string mountpoint;  // second positional argument
  std::string cache_dir = "/var/cache/netbootfs";
  double revalidate = 1;             // seconds; 0 = every open
  double negative_ttl = 10;          // seconds a missing name is remembered
  double listing_ttl = 10;           // seconds a directory listing is trusted
  double read_stall_timeout = 150;   // seconds a read may wait without progress
  double connect_timeout = 10;
  double request_timeout = 30;       // HEAD and listings
  double low_speed_time = 30;        // a body transfer stalled this long is broken
  double retry_timeout = 5;          // total retry time of a request that reported no size
  double missing_grace = 60;         // a cached file gone upstream is served this long
  unsigned down_after = 3;           // connection failures in a row that mark upstream down
  double probe_interval = 5;         // how often a down upstream is probed
  std::vector<std::string> mirrors;  // mirror=URL, repeatable, tried in order after url
  double mirror_backoff = 30;        // cap of a failed origin's back-off (from 1 s, doubling)
  uint64_t max_rate = 0;             // bytes/s of all body downloads together; 0 = no limit
  int max_downloads = 0;             // body downloads at once (more wait, FIFO); 0 = no limit
  bool wan_limits_given[2] = {false, false};  // max_rate, max_downloads on the command line
  double entry_timeout = 1;          // kernel name cache
  double attr_timeout = 3600;        // an inode's attributes never change
  unsigned uid = 0;
  unsigned gid = 0;
  unsigned umask = 0022;
  std::string proxy;
  std::string ca_file;
  std::string client_cert;  // PEM certificate for TLS client authentication
  std::string client_key;   // its key
  bool insecure = false;
  std::string log_level = "info";
  // Hostname rewriting (see rewrite/rewrite.h and README).
  std::string config;        // TOML file with [[rewrite]] rules
  std::string proxy_host;    // replaces the upstream host; default: this machine's FQDN
  std::string upstream_ip;   // also replaced, when boot menus name the server by address
  std::string proxy_ip;      // what upstream_ip becomes (default: proxy_host)
  bool rewrite_default = true;  // the default rule (off with no_default_rewrite)
  // Monitoring (see fs/metrics.h).
  std::string metrics;           // [ADDR:]PORT of the Prometheus listener; empty: none
  std::string metrics_file;      // textfile collector output; empty: none
  double metrics_interval = 15;  // seconds between rewrites of metrics_file
  // netbootfsctl's socket (fs/control_socket.h); empty: <cache_dir>/control.sock.
  std::string control_socket;
  // Cache size (see cache/evictor.h).
  uint64_t max_cache_size = 0;         // bytes; 0: not given (kDefaultFractionPct of the room)
  bool max_cache_size_given = false;   // on the command line (it wins over the config file)
  std::vector<std::string> pins;       // pin=GLOB, repeatable: paths never evicted
  unsigned cache_high_watermark = 90;  // % of the limit where background eviction starts
  unsigned cache_low_watermark = 80;   // % it evicts down to
  unsigned max_threads = 64;
  size_t index_map_size = size_t{1} << 30;
  bool foreground = false;
  bool debug = false;
  bool clone_fd = false;
  bool show_help = false;
  bool show_version = false;
};

// Parses argv into `opts`; `args` keeps what fuse_session_new() must see.
Result<void> parse_mount_args(int argc, char** argv, MountOptions& opts, fuse_args& args);

const char* usage_text();

}  // namespace netbootfs::fs
