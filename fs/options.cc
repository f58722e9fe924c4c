#include "fs/options.h"

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "cache/evictor.h"
#include "cache/prefetch.h"
#include "cache/http/url.h"

namespace netbootfs::fs {
namespace {

// fuse_opt fills a plain struct; strings arrive malloc'd.
struct RawOptions {
  char* cache_dir = nullptr;
  char* proxy = nullptr;
  char* ca_file = nullptr;
  char* client_cert = nullptr;
  char* client_key = nullptr;
  char* log_level = nullptr;
  char* config = nullptr;
  char* proxy_host = nullptr;
  char* upstream_ip = nullptr;
  char* proxy_ip = nullptr;
  char* metrics = nullptr;
  char* metrics_file = nullptr;
  char* control_socket = nullptr;
  double metrics_interval = -1;
  int no_default_rewrite = 0;
  double revalidate = -1, negative_ttl = -1, listing_ttl = -1, read_stall_timeout = -1;
  double connect_timeout = -1, request_timeout = -1, low_speed_time = -1;
  double entry_timeout = -1, attr_timeout = -1;
  double retry_timeout = -1, missing_grace = -1, probe_interval = -1, mirror_backoff = -1;
  std::vector<std::string>* mirrors = nullptr;  // every mirror=, in order
  std::vector<std::string>* pins = nullptr;     // every pin=
  char* max_cache_size = nullptr;
  int cache_high_watermark = -1, cache_low_watermark = -1;
  int down_after = -1;
  char* max_rate = nullptr;
  int max_downloads = -1;
  int uid = -1, gid = -1, umask = -1, insecure = 0, max_threads = -1;
  int positional = 0;
  char* url = nullptr;
  char* mountpoint = nullptr;
  char* error = nullptr;
  // Whatever a step did not take (an early error return) is freed here.
  ~RawOptions() {
    for (char* p : {cache_dir, proxy, ca_file, client_cert, client_key, log_level, config,
                    proxy_host, upstream_ip, proxy_ip, metrics, metrics_file, control_socket,
                    max_cache_size, max_rate, url, mountpoint, error}) {
      free(p);
    }
  }
};

#define NBFS_OPT(t, field) {t, offsetof(RawOptions, field), 0}
#define NBFS_FLAG(t, field) {t, offsetof(RawOptions, field), 1}
// Repeatable options: "%s" would keep only the last one, so they reach
// process() under their key.
constexpr int kKeyMirror = 1;
constexpr int kKeyPin = 2;
const fuse_opt kOptions[] = {
    FUSE_OPT_KEY("mirror=", kKeyMirror),
    FUSE_OPT_KEY("pin=", kKeyPin),
    NBFS_OPT("max_cache_size=%s", max_cache_size),
    NBFS_OPT("cache_high_watermark=%d", cache_high_watermark),
    NBFS_OPT("cache_low_watermark=%d", cache_low_watermark),
    NBFS_OPT("mirror_backoff=%lf", mirror_backoff),
    NBFS_OPT("cache_dir=%s", cache_dir),
    NBFS_OPT("proxy=%s", proxy),
    NBFS_OPT("http_proxy=%s", proxy),
    NBFS_OPT("ca_file=%s", ca_file),
    NBFS_OPT("client_cert=%s", client_cert),
    NBFS_OPT("client_key=%s", client_key),
    NBFS_OPT("log_level=%s", log_level),
    NBFS_OPT("config=%s", config),
    NBFS_OPT("proxy_host=%s", proxy_host),
    NBFS_OPT("upstream_ip=%s", upstream_ip),
    NBFS_OPT("proxy_ip=%s", proxy_ip),
    NBFS_OPT("metrics=%s", metrics),
    NBFS_OPT("metrics_file=%s", metrics_file),
    NBFS_OPT("control_socket=%s", control_socket),
    NBFS_OPT("metrics_interval=%lf", metrics_interval),
    NBFS_FLAG("no_default_rewrite", no_default_rewrite),
    NBFS_OPT("revalidate=%lf", revalidate),
    NBFS_OPT("negative_ttl=%lf", negative_ttl),
    NBFS_OPT("listing_ttl=%lf", listing_ttl),
    NBFS_OPT("read_stall_timeout=%lf", read_stall_timeout),
    NBFS_OPT("connect_timeout=%lf", connect_timeout),
    NBFS_OPT("request_timeout=%lf", request_timeout),
    NBFS_OPT("low_speed_time=%lf", low_speed_time),
    NBFS_OPT("entry_timeout=%lf", entry_timeout),
    NBFS_OPT("attr_timeout=%lf", attr_timeout),
    NBFS_OPT("retry_timeout=%lf", retry_timeout),
    NBFS_OPT("missing_grace=%lf", missing_grace),
    NBFS_OPT("down_after=%d", down_after),
    NBFS_OPT("max_rate=%s", max_rate),
    NBFS_OPT("max_downloads=%d", max_downloads),
    NBFS_OPT("probe_interval=%lf", probe_interval),
    NBFS_OPT("uid=%d", uid),
    NBFS_OPT("gid=%d", gid),
    NBFS_OPT("umask=%o", umask),
    NBFS_FLAG("insecure", insecure),
    NBFS_OPT("max_threads=%d", max_threads),
    FUSE_OPT_END};
#undef NBFS_OPT
#undef NBFS_FLAG

// Options that mount(8), fstab and systemd pass along and that mean nothing
// here. "rw" is dropped too: the mount is read-only whatever is asked.
bool ignorable(std::string_view opt) {
  static constexpr std::string_view kIgnored[] = {"_netdev", "nofail", "defaults", "noauto",
                                                  "auto",    "user",   "users",    "nouser",
                                                  "rw",      "owner",  "group",    "comment"};
  for (auto i : kIgnored) {
    if (opt == i) return true;
  }
  return opt.rfind("x-", 0) == 0 || opt.rfind("comment=", 0) == 0;
}

int process(void* data, const char* arg, int key, fuse_args* /*outargs*/) {
  auto* raw = static_cast<RawOptions*>(data);
  if (key == kKeyMirror) {
    raw->mirrors->emplace_back(arg + std::strlen("mirror="));
    return 0;
  }
  if (key == kKeyPin) {
    raw->pins->emplace_back(arg + std::strlen("pin="));
    return 0;
  }
  if (key == FUSE_OPT_KEY_OPT) return ignorable(arg) ? 0 : 1;
  if (key == FUSE_OPT_KEY_NONOPT) {
    // Both positionals are ours: libfuse would check the mountpoint with a
    // message of its own; ours names the problem in one line.
    switch (raw->positional++) {
      case 0: raw->url = strdup(arg); return 0;
      case 1: raw->mountpoint = strdup(arg); return 0;
      default: return -1;
    }
  }
  return 1;
}

template <class T>
void set_if(T& dst, double v) {
  if (v >= 0) dst = static_cast<T>(v);
}

void take(std::string& dst, char*& src) {
  if (src) dst = src;
  free(src);
  src = nullptr;
}

// The steps of parse_mount_args, in its order. Each takes the fuse_opt
// strings it needs (take() frees and clears them); RawOptions frees the rest
// when an error returns early.

// fuse_opt over argv: our options into raw, the rest stays in args.
Result<void> run_fuse_opt(fuse_args& args, RawOptions& raw, MountOptions& opts) {
  if (fuse_opt_parse(&args, &raw, kOptions, process) != 0) {
    take(opts.url, raw.url);
    take(opts.mountpoint, raw.mountpoint);
    if (raw.positional > 2) return Error{EINVAL, "too many arguments (expected URL MOUNTPOINT)"};
    return Error{EINVAL, "invalid options"};
  }
  return {};
}

// libfuse's own flags (-f, -d, -h, -V, clone_fd).
Result<void> take_cmdline(fuse_args& args, MountOptions& opts) {
  fuse_cmdline_opts cmd{};
  if (fuse_parse_cmdline(&args, &cmd) != 0) return Error{EINVAL, "invalid command line"};
  opts.show_help = cmd.show_help;
  opts.show_version = cmd.show_version;
  opts.foreground = cmd.foreground;
  opts.debug = cmd.debug;
  opts.clone_fd = cmd.clone_fd;
  free(cmd.mountpoint);
  return {};
}

void take_strings(RawOptions& raw, MountOptions& opts) {
  take(opts.url, raw.url);
  take(opts.mountpoint, raw.mountpoint);
  take(opts.cache_dir, raw.cache_dir);
  take(opts.proxy, raw.proxy);
  take(opts.ca_file, raw.ca_file);
  take(opts.client_cert, raw.client_cert);
  take(opts.client_key, raw.client_key);
  take(opts.log_level, raw.log_level);
  take(opts.config, raw.config);
  take(opts.proxy_host, raw.proxy_host);
  take(opts.upstream_ip, raw.upstream_ip);
  take(opts.proxy_ip, raw.proxy_ip);
  take(opts.metrics, raw.metrics);
  take(opts.metrics_file, raw.metrics_file);
  take(opts.control_socket, raw.control_socket);
}

// Timeouts, TTLs and the upstream's failure handling; -1 in raw: not given.
void take_timings(const RawOptions& raw, MountOptions& opts) {
  set_if(opts.metrics_interval, raw.metrics_interval);
  opts.rewrite_default = raw.no_default_rewrite == 0;
  set_if(opts.revalidate, raw.revalidate);
  set_if(opts.negative_ttl, raw.negative_ttl);
  set_if(opts.listing_ttl, raw.listing_ttl);
  set_if(opts.read_stall_timeout, raw.read_stall_timeout);
  set_if(opts.connect_timeout, raw.connect_timeout);
  set_if(opts.request_timeout, raw.request_timeout);
  set_if(opts.low_speed_time, raw.low_speed_time);
  set_if(opts.entry_timeout, raw.entry_timeout);
  set_if(opts.attr_timeout, raw.attr_timeout);
  set_if(opts.retry_timeout, raw.retry_timeout);
  set_if(opts.missing_grace, raw.missing_grace);
  set_if(opts.down_after, raw.down_after);
  set_if(opts.probe_interval, raw.probe_interval);
  set_if(opts.mirror_backoff, raw.mirror_backoff);
}

// max_rate and max_downloads, checked here (before -h/-V) as they always were.
Result<void> take_wan_limits(RawOptions& raw, MountOptions& opts) {
  std::string max_rate;
  const bool max_rate_given = raw.max_rate != nullptr;
  take(max_rate, raw.max_rate);  // frees fuse_opt's copy before any error return
  if (max_rate_given) {
    auto rate = max_rate == "0" ? Result<uint64_t>(uint64_t{0}) : cache::parse_rate(max_rate);
    if (!rate) return Error{EINVAL, "max_rate: " + rate.error().message};
    opts.max_rate = *rate;
    opts.wan_limits_given[0] = true;
  }
  if (raw.max_downloads != -1) {
    if (raw.max_downloads < 0) return Error{EINVAL, "max_downloads must be 0 (no limit) or more"};
    opts.max_downloads = raw.max_downloads;
    opts.wan_limits_given[1] = true;
  }
  return {};
}

// Ownership, threads, TLS and the cache bound; max_cache_size is returned
// unparsed (parse errors wait until after -h/-V).
std::string take_files_and_cache(RawOptions& raw, const std::vector<std::string>& pins,
                                 MountOptions& opts) {
  set_if(opts.uid, raw.uid);
  set_if(opts.gid, raw.gid);
  set_if(opts.umask, raw.umask);
  if (raw.max_threads > 0) opts.max_threads = static_cast<unsigned>(raw.max_threads);
  opts.insecure = raw.insecure != 0;
  std::string max_cache_size;
  take(max_cache_size, raw.max_cache_size);
  set_if(opts.cache_high_watermark, raw.cache_high_watermark);
  set_if(opts.cache_low_watermark, raw.cache_low_watermark);
  opts.pins.insert(opts.pins.end(), pins.begin(), pins.end());
  return max_cache_size;
}

Result<void> check_cache_bounds(const std::string& max_cache_size, MountOptions& opts) {
  if (!max_cache_size.empty()) {
    auto size = cache::parse_size(max_cache_size);
    if (!size) return Error{EINVAL, "max_cache_size: " + size.error().message};
    opts.max_cache_size = size.value();
    opts.max_cache_size_given = true;
  }
  if (opts.cache_high_watermark < 1 || opts.cache_high_watermark > 100 ||
      opts.cache_low_watermark >= opts.cache_high_watermark) {
    return Error{EINVAL,
                 "cache watermarks must satisfy 0 <= cache_low_watermark < cache_high_watermark <= 100"};
  }
  for (const auto& g : opts.pins) {
    if (g.empty()) return Error{EINVAL, "pin= needs a glob"};
  }
  return {};
}

// The positionals, and url and every mirror= in their normal form.
Result<void> check_urls(const std::vector<std::string>& mirrors, MountOptions& opts) {
  if (opts.url.empty() || opts.mountpoint.empty()) {
    return Error{EINVAL, "missing argument: expected URL MOUNTPOINT"};
  }
  auto base = http::normalize_base_url(opts.url);
  if (!base) return Error{EINVAL, "bad upstream URL '" + opts.url + "': " + base.error().message};
  opts.url = base.value();
  opts.mirrors.clear();
  for (const auto& m : mirrors) {
    auto mb = http::normalize_base_url(m);
    if (!mb) return Error{EINVAL, "bad mirror URL '" + m + "': " + mb.error().message};
    opts.mirrors.push_back(mb.value());
  }
  return {};
}

Result<void> check_settings(const MountOptions& opts) {
  if (opts.mirror_backoff < 1) return Error{EINVAL, "mirror_backoff must be at least 1"};
  if (opts.cache_dir.empty()) return Error{EINVAL, "cache_dir must not be empty"};
  if (opts.probe_interval < 0.05) return Error{EINVAL, "probe_interval must be at least 0.05"};
  if (opts.metrics_interval < 0.1) return Error{EINVAL, "metrics_interval must be at least 0.1"};
  static constexpr std::string_view kLevels[] = {"trace", "debug",    "info", "warning",
                                                 "error", "critical", "off"};
  bool level_ok = false;
  for (auto l : kLevels) level_ok |= opts.log_level == l;
  if (!level_ok) return Error{EINVAL, "unknown log_level '" + opts.log_level + "'"};
  return {};
}

// What the kernel mount needs from us: read-only, the kernel checks modes,
// and /proc/mounts names the upstream.
void add_kernel_args(fuse_args& args, const MountOptions& opts) {
  const std::string fsname = "-ofsname=" + opts.url;
  for (const char* a : {"-oro", "-odefault_permissions", "-osubtype=netbootfs"}) {
    fuse_opt_add_arg(&args, a);
  }
  fuse_opt_add_arg(&args, fsname.c_str());
}

}  // namespace

const char* usage_text() {
  return "usage: netbootfs URL MOUNTPOINT [-f] [-d] [-o option[,option...]]\n"
         "\n"
         "Mounts the HTTP(S) tree at URL read-only at MOUNTPOINT, caching files in cache_dir.\n"
         "\n"
         "netbootfs options (times in seconds, decimals allowed):\n"
         "  cache_dir=DIR            cache directory (/var/cache/netbootfs)\n"
         "  revalidate=S             revalidate a cached file on open after S (1; 0 = always)\n"
         "  negative_ttl=S           remember a missing name for S (10)\n"
         "  listing_ttl=S            trust a directory listing for S (10)\n"
         "  read_stall_timeout=S     fail a read only after S without progress (150)\n"
         "  connect_timeout=S        upstream connect timeout (10)\n"
         "  request_timeout=S        total timeout of HEAD and listing requests (30)\n"
         "  low_speed_time=S         a body stalled for S is broken and resumed (30)\n"
         "  retry_timeout=S          retry transient upstream failures of uncached files for\n"
         "                           at most S in all (5; 0 = never retry)\n"
         "  missing_grace=S          keep serving a cached file gone upstream for S (60)\n"
         "  down_after=N             mark upstream down after N connection failures in a row\n"
         "                           (3; 0 = never): cache only, misses fail at once\n"
         "  probe_interval=S         probe a down upstream every S (5)\n"
         "  mirror=URL               a mirror of URL, tried on transient failures (repeatable,\n"
         "                           in order; the first origin that works is used)\n"
         "  mirror_backoff=S         a failed origin is skipped for 1 s, doubling up to S (30)\n"
         "  max_rate=RATE            total bandwidth of file downloads, bytes/s with an\n"
         "                           optional K, M or G (x1024): max_rate=20M (no limit)\n"
         "  max_downloads=N          file downloads at once; more wait in turn (no limit);\n"
         "                           HEADs and listings never wait\n"
         "  entry_timeout=S          kernel name cache timeout (1)\n"
         "  attr_timeout=S           kernel attribute cache timeout (3600)\n"
         "  uid=N,gid=N,umask=OCT    owner and mode of files (0, 0, 022)\n"
         "  proxy=URL                HTTP proxy (default: the *_proxy variables)\n"
         "  ca_file=FILE             CA bundle for https upstreams\n"
         "  client_cert=FILE         PEM client certificate (with client_key=FILE)\n"
         "  insecure                 do not verify TLS certificates\n"
         "  log_level=LEVEL          trace, debug, info, warning, error (info)\n"
         "  max_threads=N            FUSE worker threads (64)\n"
         "  config=FILE              TOML file with [[rewrite]] rules (re-read on SIGHUP)\n"
         "  proxy_host=NAME          what the upstream host becomes in boot menus (this FQDN)\n"
         "  upstream_ip=ADDR         also rewrite this address of the upstream server\n"
         "  proxy_ip=ADDR            what upstream_ip becomes (default: proxy_host)\n"
         "  no_default_rewrite       only the config file's rules\n"
         "  metrics=[ADDR:]PORT      Prometheus metrics at http://ADDR:PORT/metrics\n"
         "                           (ADDR 127.0.0.1 unless given; [::1]:PORT for IPv6)\n"
         "  metrics_file=FILE        also write them to FILE (node_exporter textfile)\n"
         "  metrics_interval=S       how often metrics_file is rewritten (15)\n"
         "  control_socket=PATH      netbootfsctl's socket (cache_dir/control.sock)\n"
         "  max_cache_size=SIZE      bound the cache: bytes, or with K, M, G, T (powers of 1024);\n"
         "                           default 80% of the cache filesystem's free space plus what\n"
         "                           the cache holds at mount; least recently read files go first\n"
         "  pin=GLOB                 never evict paths matching GLOB (fnmatch; repeatable)\n"
         "  cache_high_watermark=PCT background eviction starts past PCT% of the limit (90)\n"
         "  cache_low_watermark=PCT  and evicts down to PCT% (80)\n"
         "\n"
         "FUSE options such as allow_other and default_permissions are passed through.\n";
}

Result<void> parse_mount_args(int argc, char** argv, MountOptions& opts, fuse_args& args) {
  args = FUSE_ARGS_INIT(argc, argv);
  RawOptions raw;
  std::vector<std::string> mirrors;
  raw.mirrors = &mirrors;
  std::vector<std::string> pins;
  raw.pins = &pins;
  if (auto r = run_fuse_opt(args, raw, opts); !r) return r;
  if (auto r = take_cmdline(args, opts); !r) return r;
  take_strings(raw, opts);
  take_timings(raw, opts);
  if (auto r = take_wan_limits(raw, opts); !r) return r;
  const std::string max_cache_size = take_files_and_cache(raw, pins, opts);
  if (opts.show_help || opts.show_version) return {};
  if (auto r = check_cache_bounds(max_cache_size, opts); !r) return r;
  if (auto r = check_urls(mirrors, opts); !r) return r;
  if (auto r = check_settings(opts); !r) return r;
  add_kernel_args(args, opts);
  return {};
}

}  // namespace netbootfs::fs
