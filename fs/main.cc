// netbootfs: mounts an upstream HTTP(S) tree read-only with a local cache.
#include <fuse_lowlevel.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/sinks/systemd_sink.h>
#include <systemd/sd-daemon.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <thread>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include "cache/blob_store.h"
#include "cache/cache_lock.h"
#include "cache/evictor.h"
#include "cache/fetcher.h"
#include "cache/http/client.h"
#include "cache/http/settings_file.h"
#include "cache/index.h"
#include "cache/recovery.h"
#include "cache/util/log.h"
#include "cache/prefetch.h"
#include "fs/config_file.h"
#include "fs/control_socket.h"
#include "fs/daemon_metrics.h"
#include "fs/fuse_fs.h"
#include "fs/metrics.h"
#include "fs/mount_checks.h"
#include "fs/options.h"
#include "fs/rewrite_filter.h"

namespace {

using namespace netbootfs;
namespace fsys = std::filesystem;

std::chrono::milliseconds ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

void setup_logging(const fs::MountOptions& o, bool to_syslog) {
  spdlog::sink_ptr sink;
  if (std::getenv("JOURNAL_STREAM")) {
    // Under systemd: structured entries in the journal, with priorities.
    sink = std::make_shared<spdlog::sinks::systemd_sink_mt>("netbootfs");
  } else if (to_syslog) {
    sink = std::make_shared<spdlog::sinks::syslog_sink_mt>("netbootfs", LOG_PID, LOG_DAEMON, false);
  } else {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  }
  auto def = std::make_shared<spdlog::logger>("netbootfs", sink);
  def->set_level(spdlog::level::from_str(o.log_level));
  def->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  def->flush_on(spdlog::level::info);
  spdlog::set_default_logger(def);
}

void raise_nofile() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

Result<void> prepare_cache_dir(const std::string& dir) {
  std::error_code ec;
  fsys::create_directories(dir, ec);
  if (ec) return Error{ec.value(), "cannot create cache_dir " + dir + ": " + ec.message()};
  if (::access(dir.c_str(), R_OK | W_OK | X_OK) != 0) {
    return Error{errno, "cache_dir " + dir + " is not writable: " + std::strerror(errno)};
  }
  return {};
}

struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};

// Leaves the upstream URL and the HTTP settings used to reach it where
// `netbootfsctl prefetch` finds them when this cache is not mounted.
void record_upstream(const std::string& cache_dir, const std::string& url,
                     const http::Options& ho) {
  if (auto r = http::write_settings_file(cache_dir + "/" + http::kSettingsFileName, ho); !r) {
    logger("main")->warn("HTTP settings not recorded for netbootfsctl: {}", r.error().message);
  }
  if (auto r = http::replace_file(cache_dir + "/upstream", url + "\n", 0644); !r) {
    logger("main")->warn("upstream URL not recorded for netbootfsctl: {}", r.error().message);
  }
}

Result<std::vector<std::string>> request_paths(const nlohmann::json& req, bool allow_empty) {
  std::vector<std::string> out;
  if (req.contains("paths")) {
    if (!req["paths"].is_array()) return Error{EINVAL, "\"paths\" must be an array of strings"};
    for (const auto& p : req["paths"]) {
      if (!p.is_string()) return Error{EINVAL, "\"paths\" must be an array of strings"};
      auto n = fs::normalize_request_path(p.get<std::string>());
      if (!n) return n.error();
      out.push_back(std::move(n).value());
    }
  }
  if (out.empty() && !allow_empty) return Error{EINVAL, "no paths given"};
  return out;
}

std::map<std::string, fs::ControlSocket::Handler> control_handlers(
    const fs::MountOptions& opts, cache::Fetcher& fetcher, fs::FuseFs& fsimpl,
    const cache::Evictor& evictor, std::chrono::steady_clock::time_point started) {
  std::map<std::string, fs::ControlSocket::Handler> h;
  h["status"] = [&opts, &fetcher, &fsimpl, &evictor, started](const nlohmann::json&,
                                                    fs::ControlSocket::Reply&)
      -> Result<nlohmann::json> {
    const auto& st = fetcher.stats();
    const uint64_t hits = st.hits.load(), misses = st.misses.load();
    const double uptime =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return nlohmann::json{
        {"mountpoint", opts.mountpoint},
        {"url", opts.url},
        {"cache_dir", opts.cache_dir},
        {"pid", static_cast<int64_t>(::getpid())},
        {"uptime_seconds", uptime},
        {"upstream_up", fetcher.upstream_up()},
        {"hits", hits},
        {"misses", misses},
        {"hit_ratio", hits + misses ? static_cast<double>(hits) / static_cast<double>(hits + misses)
                                    : 0.0},
        {"downloads", st.downloads.load()},
        {"download_bytes", st.download_bytes.load()},
        {"stale_served", st.stale_served.load()},
        {"served_bytes", fsimpl.served_bytes()},
        {"cache_limit", evictor.options().limit},
        {"pins", evictor.options().pins},
        {"evictions", evictor.evictions.load()},
        {"version", NETBOOTFS_VERSION},
    };
  };
  // The mount's own limit and pins, enforced now (netbootfsctl gc).
  h["gc"] = [&fetcher, &evictor](const nlohmann::json&, fs::ControlSocket::Reply&)
      -> Result<nlohmann::json> {
    auto r = fetcher.enforce_limit();
    if (!r) return r.error();
    logger("control")->info("gc: evicted {} blobs ({} bytes); the cache holds {} bytes in {} blobs",
                            r->blobs, r->bytes, r->cache_bytes, r->cache_objects);
    return nlohmann::json{{"limit", evictor.options().limit}, {"evicted_blobs", r->blobs},
                          {"evicted_bytes", r->bytes},        {"removed_entries", r->entries},
                          {"bytes", r->cache_bytes},          {"objects", r->cache_objects}};
  };
  h["invalidate"] = [&fetcher, &fsimpl](const nlohmann::json& req, fs::ControlSocket::Reply&)
      -> Result<nlohmann::json> {
    const bool all = req.value("all", false);
    auto paths = request_paths(req, all);
    if (!paths) return paths.error();
    std::vector<std::string> prefixes = all ? std::vector<std::string>{""} : paths.value();
    size_t files = 0, negatives = 0, listings = 0, kernel = 0;
    for (const auto& prefix : prefixes) {
      auto r = fetcher.invalidate(prefix);
      files += r.files;
      negatives += r.negatives;
      listings += r.listings;
      std::vector<std::string> extra = std::move(r.negative_paths);
      extra.insert(extra.end(), r.listing_paths.begin(), r.listing_paths.end());
      kernel += fsimpl.invalidate_kernel(prefix, extra);
    }
    logger("control")->info("invalidated {}: {} files, {} negative entries, {} listings, {} kernel "
                            "notifications",
                            all ? std::string("everything") : nlohmann::json(prefixes).dump(),
                            files, negatives, listings, kernel);
    return nlohmann::json{{"files", files},
                          {"negatives", negatives},
                          {"listings", listings},
                          {"kernel_notifications", kernel}};
  };
  h["prefetch"] = [&fetcher](const nlohmann::json& req, fs::ControlSocket::Reply& out)
      -> Result<nlohmann::json> {
    auto paths = request_paths(req, true);
    if (!paths) return paths.error();
    if (paths->empty()) paths->push_back("");
    cache::PrefetchOptions po;
    po.recursive = req.value("recursive", false);
    po.jobs = req.value("jobs", 4);
    if (po.jobs < 1 || po.jobs > 64) return Error{EINVAL, "jobs must be 1..64"};
    po.max_rate = req.value("max_rate", uint64_t{0});
    auto log = logger("control");
    log->info("prefetch of {} path(s) (recursive: {}, jobs {}, max_rate {})", paths->size(),
              po.recursive, po.jobs, po.max_rate);
    auto last = std::chrono::steady_clock::now() - std::chrono::seconds(1);
    auto sum = cache::prefetch(
        fetcher, paths.value(), po,
        [&out, &last](const cache::PrefetchProgress& p) {
          // At most ten lines a second (called serialised by prefetch()).
          const auto now = std::chrono::steady_clock::now();
          if (now - last < std::chrono::milliseconds(100)) return;
          last = now;
          out.send({{"event", "progress"},
                    {"files", p.files},
                    {"failures", p.failures},
                    {"bytes", p.bytes},
                    {"queued", p.queued},
                    {"path", p.path}});
        },
        [&out] { return out.cancelled(); });
    log->info("prefetch: {} files, {} bytes, {} failures in {:.1f} s{}", sum.files, sum.bytes,
              sum.failures, sum.seconds, sum.cancelled ? " (cancelled)" : "");
    nlohmann::json failed = nlohmann::json::array();
    for (const auto& [p, why] : sum.failed) failed.push_back({{"path", p}, {"error", why}});
    return nlohmann::json{{"files", sum.files},   {"bytes", sum.bytes},
                          {"failures", sum.failures}, {"seconds", sum.seconds},
                          {"failed", failed},     {"cancelled", sum.cancelled}};
  };
  return h;
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "netbootfs: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  fs::MountOptions opts;
  fuse_args args{};
  // libfuse's own complaints become part of our one line.
  fs::FuseLogCapture fuse_log;
  auto parsed = fs::parse_mount_args(argc, argv, opts, args);
  if (!parsed) {
    fuse_opt_free_args(&args);
    std::string detail = fs::fuse_error_line(fuse_log.text(), "");
    return fail(parsed.error().message + (detail.empty() ? "" : ": " + detail));
  }
  if (opts.show_help) {
    std::fputs(fs::usage_text(), stdout);
    std::puts("\nFUSE options:");
    fuse_lowlevel_help();
    fuse_opt_free_args(&args);
    return 0;
  }
  if (opts.show_version) {
    std::printf("netbootfs %s\n", NETBOOTFS_VERSION);
    fuse_lowlevel_version();
    fuse_opt_free_args(&args);
    return 0;
  }
  setup_logging(opts, false);
  raise_nofile();
  // An empty directory nobody mounted on; a dead mount of ours is detached.
  if (auto r = fs::prepare_mountpoint(opts.mountpoint); !r) return fail(r.error().message);

  // The session parses the FUSE options: an unknown one fails here, before
  // anything touches the cache directory.
  fs::FuseFs fsimpl(opts);
  std::unique_ptr<fuse_session, SessionDeleter> se(
      fuse_session_new(&args, &fs::FuseFs::operations(), sizeof(fuse_lowlevel_ops), &fsimpl));
  fuse_opt_free_args(&args);
  if (!se) return fail(fs::fuse_error_line(fuse_log.text(), "invalid FUSE options"));
  fuse_log.release();

  auto filter = fs::load_rewrite_filter(opts);
  if (!filter) return fail(filter.error().message);
  if (!opts.config.empty()) {
    // Mirrors named in the config file come after those given as options.
    auto mirrors = fs::config_mirrors(opts.config);
    if (!mirrors) return fail(mirrors.error().message);
    opts.mirrors.insert(opts.mirrors.end(), mirrors->begin(), mirrors->end());
  }
  // Cache size (see cache/evictor.h): the command line wins over the config
  // file; pins add up.
  std::optional<uint64_t> configured_limit;
  if (opts.max_cache_size_given) configured_limit = opts.max_cache_size;
  std::vector<std::string> pins = opts.pins;
  if (!opts.config.empty()) {
    auto cc = fs::config_cache(opts.config);
    if (!cc) return fail(cc.error().message);
    if (!configured_limit) configured_limit = cc->max_cache_size;
    pins.insert(pins.end(), cc->pins.begin(), cc->pins.end());
    if (cc->max_rate && !opts.wan_limits_given[0]) opts.max_rate = *cc->max_rate;
    if (cc->max_downloads && !opts.wan_limits_given[1]) opts.max_downloads = *cc->max_downloads;
  }

  if (auto r = prepare_cache_dir(opts.cache_dir); !r) return fail(r.error().message);
  // One writer per cache: a second mount, or netbootfsctl import, on the
  // same cache_dir is refused instead of corrupting what this one serves.
  auto cache_lock = cache::CacheLock::acquire(opts.cache_dir);
  if (!cache_lock) return fail(cache_lock.error().message);
  // Bound now, served after daemonizing: an address in use is a start-up error.
  UniqueFd metrics_socket;
  if (!opts.metrics.empty()) {
    auto sock = fs::MetricsServer::listen_socket(opts.metrics);
    if (!sock) return fail(sock.error().message);
    metrics_socket = std::move(sock).value();
  }
  auto blobs = cache::BlobStore::open(opts.cache_dir);
  if (!blobs) return fail("cache_dir " + opts.cache_dir + ": " + blobs.error().message);
  cache::Index::Options io;
  io.map_size = opts.index_map_size;
  auto index = cache::Index::open(opts.cache_dir + "/index", io);
  if (!index) return fail("cache index: " + index.error().message);
  // After a clean stop, start-up removes only what a clean run can leave;
  // after anything else (a crash, a write by netbootfsctl or by an older
  // release), the full recovery runs.
  auto start = cache::recover_at_start(**index, **blobs);
  if (!start) return fail("cache recovery: " + start.error().message);
  const cache::RecoveryReport& rec = start->report;
  auto log = logger("main");
  log->debug("start-up: {}", start->after_clean_stop ? "after a clean stop" : "full recovery");
  if (rec.temp_files_removed || rec.entries_dropped || rec.blobs_removed) {
    log->warn("recovered the cache: {} temp files removed, {} entries dropped, {} blobs removed",
              rec.temp_files_removed, rec.entries_dropped, rec.blobs_removed);
  }
  if (!rec.derived_dropped.empty()) {
    // Garbage left by an older release (its source was removed without them).
    log->info("recovery: dropped {} rewritten outputs whose source is gone",
              rec.derived_dropped.size());
  }

  // A limit the filesystem cannot hold (counting what the cache holds) is
  // refused before mounting.
  struct statvfs sv {};
  if (::statvfs(opts.cache_dir.c_str(), &sv) != 0) {
    return fail("cache_dir " + opts.cache_dir + ": statvfs: " + std::strerror(errno));
  }
  const uint64_t fs_free = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
  const uint64_t held = (*index)->stats().blob_bytes;
  auto limit = cache::resolve_cache_limit(configured_limit, fs_free, held);
  if (!limit) return fail("cache_dir " + opts.cache_dir + ": " + limit.error().message);
  cache::EvictorOptions eo;
  eo.limit = limit.value();
  eo.watermarks = {opts.cache_high_watermark, opts.cache_low_watermark};
  eo.pins = pins;
  // Declared before the Fetcher: it outlives it.
  cache::Evictor evictor(eo, **index, **blobs);
  log->info("cache limit {}{}, holding {}; eviction from {}% down to {}%, {} pins",
            cache::format_size(eo.limit), configured_limit ? "" : " (default: 80% of free + held)",
            cache::format_size(held), opts.cache_high_watermark, opts.cache_low_watermark,
            pins.size());

  http::Options ho;
  ho.connect_timeout = ms(opts.connect_timeout);
  ho.request_timeout = ms(opts.request_timeout);
  ho.low_speed_time = std::chrono::seconds(static_cast<int64_t>(std::max(1.0, opts.low_speed_time)));
  ho.proxy = opts.proxy;
  ho.ca_file = opts.ca_file;
  ho.client_cert = opts.client_cert;
  ho.client_key = opts.client_key;
  ho.insecure = opts.insecure;
  ho.user_agent = std::string("netbootfs/") + NETBOOTFS_VERSION;
  ho.max_rate = opts.max_rate;
  ho.max_downloads = opts.max_downloads;
  if (opts.insecure) log->warn("TLS certificate verification is disabled (insecure)");
  {
    // One request before mounting: a certificate that does not verify is a
    // configuration error the admin must see now, not a stream of EIO later.
    // An unreachable upstream is not: cached files are served without it.
    http::Client probe_client(ho);
    http::Request probe;
    probe.url = opts.url;
    probe.body_in_memory = true;
    const auto r = probe_client.fetch(probe);
    if (r.outcome == http::Outcome::kTls) {
      return fail("TLS to " + opts.url + " failed: " + r.detail +
                  (opts.ca_file.empty() ? " (give ca_file= for a private CA)" : ""));
    }
    if (r.outcome != http::Outcome::kOk) {
      log->warn("upstream {} not reachable at start ({}: {}); serving what is cached", opts.url,
                http::to_string(r.outcome), r.detail);
    } else if (r.head.status >= 400 && r.head.status != 403 && r.head.status != 404) {
      log->warn("upstream {} answers {} at start", opts.url, r.head.status);
    }
  }

  cache::FetcherOptions fo;
  fo.base_url = opts.url;
  fo.revalidate = ms(opts.revalidate);
  fo.negative_ttl = ms(opts.negative_ttl);
  fo.listing_ttl = ms(opts.listing_ttl);
  fo.read_stall_timeout = ms(opts.read_stall_timeout);
  fo.retry_timeout = ms(opts.retry_timeout);
  fo.missing_grace = ms(opts.missing_grace);
  fo.down_after = static_cast<int>(opts.down_after);
  fo.probe_interval = ms(opts.probe_interval);
  fo.mirrors = opts.mirrors;  // normalised by parse_mount_args, like url
  fo.mirror_backoff_max = ms(opts.mirror_backoff);
  if (fuse_set_signal_handlers(se.get()) != 0) return fail("cannot install signal handlers");
  struct HandlersGuard {
    fuse_session* se;
    ~HandlersGuard() { fuse_remove_signal_handlers(se); }
  } handlers{se.get()};
  if (fuse_session_mount(se.get(), opts.mountpoint.c_str()) != 0) {
    return fail("cannot mount on " + opts.mountpoint);
  }
  log->info("mounted {} on {} (cache {})", opts.url, opts.mountpoint, opts.cache_dir);
  record_upstream(opts.cache_dir, opts.url, ho);
  fsimpl.set_session(se.get());
  if (!opts.foreground) {
    fuse_daemonize(0);
    cache_lock->note_holder();
    setup_logging(opts, true);
  }
  // Threads start only now: fuse_daemonize() forks, and a fork keeps only
  // the calling thread. The kernel sends no request before the loop runs.
  // SIGHUP re-reads the rewrite rules: blocked in every thread (they all
  // start below and inherit the mask) and taken by one that waits for it.
  sigset_t hup;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &hup, nullptr);
  http::Client client(ho);
  cache::Fetcher fetcher(fo, client, **index, **blobs);
  auto describe = [&log](const std::shared_ptr<const fs::RewriteFilter>& f) {
    if (!f) return log->info("no rewrite rules");
    for (const auto& r : f->rules().rules()) {
      std::string from;
      for (const auto& x : r.replace) from += (from.empty() ? "" : ", ") + x.from + " -> " + x.to;
      log->info("rewrite rule {}: {}", r.name, from);
    }
  };
  describe(filter.value());
  fetcher.set_filter(filter.value());
  fetcher.set_evictor(&evictor);
  fsimpl.attach(&fetcher);
  fs::MetricsRegistry metrics;
  fs::register_daemon_metrics(metrics, fetcher, fsimpl, **index);
  fs::register_eviction_metrics(metrics, evictor);
  fs::register_client_metrics(metrics, client);
  std::unique_ptr<fs::MetricsServer> metrics_server;
  if (metrics_socket.valid()) {
    // Mounted already: a failure here costs the metrics, not the mount.
    if (auto server = fs::MetricsServer::start(std::move(metrics_socket), metrics); server) {
      metrics_server = std::move(server).value();
      log->info("metrics on http://{}/metrics", metrics_server->address());
    } else {
      log->error("{}", server.error().message);
    }
  }
  std::unique_ptr<fs::MetricsFileWriter> metrics_file;
  if (!opts.metrics_file.empty()) {
    metrics_file = std::make_unique<fs::MetricsFileWriter>(opts.metrics_file,
                                                           ms(opts.metrics_interval), metrics);
  }
  // Started after daemonizing (it has threads); its handlers never run on a
  // FUSE worker. A failure to bind is logged and costs only netbootfsctl's
  // live commands, not the mount.
  std::unique_ptr<fs::ControlSocket> control;
  {
    fs::ControlSocket::Options co;
    co.path = opts.control_socket.empty() ? fs::default_control_socket(opts.cache_dir)
                                          : opts.control_socket;
    auto cs = fs::ControlSocket::start(
        co, control_handlers(opts, fetcher, fsimpl, evictor, std::chrono::steady_clock::now()));
    if (cs) {
      control = std::move(cs).value();
      log->info("control socket {}", control->path());
    } else {
      log->error("{}", cs.error().message);
    }
  }
  std::atomic<bool> stopping{false};
  std::thread reloader([&] {
    for (;;) {
      int sig = 0;
      if (sigwait(&hup, &sig) != 0 || stopping) return;
      auto fresh = fs::load_rewrite_filter(opts);
      if (!fresh) {
        log->error("SIGHUP: keeping the current rules: {}", fresh.error().message);
        continue;
      }
      sd_notify(0, "RELOADING=1");
      log->info("SIGHUP: rules reloaded");
      describe(fresh.value());
      fetcher.set_filter(fresh.value());
      sd_notify(0, "READY=1");
    }
  });

  // Type=notify units start the TFTP server only once the mount serves.
  sd_notifyf(0, "READY=1\nSTATUS=serving %s on %s", opts.url.c_str(), opts.mountpoint.c_str());
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, opts.max_threads);
  fuse_loop_cfg_set_idle_threads(cfg, 16);
  fuse_loop_cfg_set_clone_fd(cfg, opts.clone_fd);
  const int rc = fuse_session_loop_mt(se.get(), cfg);
  fuse_loop_cfg_destroy(cfg);

  sd_notify(0, "STOPPING=1");
  // A prefetch in progress is cancelled; the Fetcher's shutdown below answers
  // what it still waits for, and then its thread is joined.
  if (control) control->request_stop();
  stopping = true;
  pthread_kill(reloader.native_handle(), SIGHUP);
  reloader.join();
  // Answer what still waits before the kernel connection goes away.
  fetcher.shutdown();
  control.reset();
  if (size_t n = fsimpl.answer_all_pending(EIO)) log->info("answered {} pending requests", n);
  fuse_session_unmount(se.get());
  log->info("unmounted {}", opts.mountpoint);
  // libfuse reports the signal that ended the loop; stopping on one is clean.
  const bool clean_stop = rc == 0 || rc == SIGTERM || rc == SIGINT;
  // Last: the Fetcher's threads are joined, nothing writes the index after
  // this. A run whose cache writes failed leaves the full recovery to the
  // next start.
  if (clean_stop && fetcher.stats().write_failures.load() == 0) {
    if (auto r = (*index)->set_clean_mark(); !r) {
      log->warn("the next start will run the full recovery: {}", r.error().message);
    }
  }
  return clean_stop ? 0 : 1;
}
