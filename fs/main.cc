// netbootfs: mounts an upstream HTTP(S) tree read-only with a local cache.
//
// main() takes the start-up steps below in order (options, FUSE session,
// settings, cache and recovery, limit, upstream probe, mount), then serve()
// runs the threads and the session until a clean stop. What the control
// socket answers is fs/control_handlers.cc.
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
#include "fs/config_file.h"
#include "fs/control_handlers.h"
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
  // The module loggers made before (and their copies of the old sink).
  use_sink_everywhere(sink);
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

int fail(const std::string& msg) {
  std::fprintf(stderr, "netbootfs: %s\n", msg.c_str());
  return 1;
}

// --- The start-up steps, in the order main() takes them ----------------------

// An exit code when there is nothing to mount: --help, --version, or a
// command line that does not parse. `args` is freed then.
std::optional<int> parse_options(int argc, char** argv, fs::MountOptions& opts, fuse_args& args,
                                 const fs::FuseLogCapture& fuse_log) {
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
  return std::nullopt;
}

using Session = std::unique_ptr<fuse_session, SessionDeleter>;

// The session parses the FUSE options: an unknown one fails here, before
// anything touches the cache directory. `args` is freed.
Result<Session> new_session(fuse_args& args, fs::FuseFs& fsimpl, fs::FuseLogCapture& fuse_log) {
  Session se(
      fuse_session_new(&args, &fs::FuseFs::operations(), sizeof(fuse_lowlevel_ops), &fsimpl));
  fuse_opt_free_args(&args);
  if (!se) return Error{EINVAL, fs::fuse_error_line(fuse_log.text(), "invalid FUSE options")};
  fuse_log.release();
  return se;
}

// What the config file adds to the command line.
struct Settings {
  std::shared_ptr<const fs::RewriteFilter> filter;
  std::optional<uint64_t> configured_limit;  // max_cache_size; none: the default
  std::vector<std::string> pins;
};

// The rewrite rules; the config file's mirrors, cache size, pins and WAN
// limits (into `opts` where they are options).
Result<Settings> load_settings(fs::MountOptions& opts) {
  auto filter = fs::load_rewrite_filter(opts);
  if (!filter) return filter.error();
  if (!opts.config.empty()) {
    // Mirrors named in the config file come after those given as options.
    auto mirrors = fs::config_mirrors(opts.config);
    if (!mirrors) return mirrors.error();
    opts.mirrors.insert(opts.mirrors.end(), mirrors->begin(), mirrors->end());
  }
  // Cache size (see cache/evictor.h): the command line wins over the config
  // file; pins add up.
  Settings s{filter.value(), std::nullopt, opts.pins};
  if (opts.max_cache_size_given) s.configured_limit = opts.max_cache_size;
  if (opts.config.empty()) return s;
  auto cc = fs::config_cache(opts.config);
  if (!cc) return cc.error();
  if (!s.configured_limit) s.configured_limit = cc->max_cache_size;
  s.pins.insert(s.pins.end(), cc->pins.begin(), cc->pins.end());
  if (cc->max_rate && !opts.wan_limits_given[0]) opts.max_rate = *cc->max_rate;
  if (cc->max_downloads && !opts.wan_limits_given[1]) opts.max_downloads = *cc->max_downloads;
  return s;
}

// Bound now, served after daemonizing: an address in use is a start-up error.
// An invalid fd when no metrics= was given.
Result<UniqueFd> bind_metrics(const fs::MountOptions& opts) {
  if (opts.metrics.empty()) return UniqueFd();
  return fs::MetricsServer::listen_socket(opts.metrics);
}

struct Cache {
  std::unique_ptr<cache::BlobStore> blobs;
  std::unique_ptr<cache::Index> index;
};

// After a clean stop, start-up removes only what a clean run can leave;
// after anything else (a crash, a write by netbootfsctl or by an older
// release), the full recovery runs.
Result<Cache> open_cache(const fs::MountOptions& opts) {
  auto blobs = cache::BlobStore::open(opts.cache_dir);
  if (!blobs) {
    return Error{blobs.error().code, "cache_dir " + opts.cache_dir + ": " + blobs.error().message};
  }
  cache::Index::Options io;
  io.map_size = opts.index_map_size;
  auto index = cache::Index::open(opts.cache_dir + "/index", io);
  if (!index) return Error{index.error().code, "cache index: " + index.error().message};
  auto start = cache::recover_at_start(**index, **blobs);
  if (!start) return Error{start.error().code, "cache recovery: " + start.error().message};
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
  return Cache{std::move(blobs).value(), std::move(index).value()};
}

// A limit the filesystem cannot hold (counting what the cache holds) is
// refused before mounting.
Result<cache::EvictorOptions> evictor_options(const fs::MountOptions& opts, const Settings& s,
                                              const cache::Index& index) {
  struct statvfs sv {};
  if (::statvfs(opts.cache_dir.c_str(), &sv) != 0) {
    return Error{errno, "cache_dir " + opts.cache_dir + ": statvfs: " + std::strerror(errno)};
  }
  const uint64_t fs_free = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
  const uint64_t held = index.stats().blob_bytes;
  auto limit = cache::resolve_cache_limit(s.configured_limit, fs_free, held);
  if (!limit) {
    return Error{limit.error().code, "cache_dir " + opts.cache_dir + ": " + limit.error().message};
  }
  cache::EvictorOptions eo;
  eo.limit = limit.value();
  eo.watermarks = {opts.cache_high_watermark, opts.cache_low_watermark};
  eo.pins = s.pins;
  logger("main")->info("cache limit {}{}, holding {}; eviction from {}% down to {}%, {} pins",
                       cache::format_size(eo.limit),
                       s.configured_limit ? "" : " (default: 80% of free + held)",
                       cache::format_size(held), opts.cache_high_watermark,
                       opts.cache_low_watermark, s.pins.size());
  return eo;
}

http::Options http_options(const fs::MountOptions& opts) {
  http::Options ho;
  ho.connect_timeout = ms(opts.connect_timeout);
  ho.request_timeout = ms(opts.request_timeout);
  ho.low_speed_time =
      std::chrono::seconds(static_cast<int64_t>(std::max(1.0, opts.low_speed_time)));
  ho.proxy = opts.proxy;
  ho.ca_file = opts.ca_file;
  ho.client_cert = opts.client_cert;
  ho.client_key = opts.client_key;
  ho.insecure = opts.insecure;
  ho.user_agent = std::string("netbootfs/") + NETBOOTFS_VERSION;
  ho.max_rate = opts.max_rate;
  ho.max_downloads = opts.max_downloads;
  return ho;
}

// One request before mounting: a certificate that does not verify is a
// configuration error the admin must see now, not a stream of EIO later.
// An unreachable upstream is not: cached files are served without it.
Result<void> probe_upstream(const fs::MountOptions& opts, const http::Options& ho) {
  auto log = logger("main");
  if (opts.insecure) log->warn("TLS certificate verification is disabled (insecure)");
  http::Client probe_client(ho);
  http::Request probe;
  probe.url = opts.url;
  probe.body_in_memory = true;
  const auto r = probe_client.fetch(probe);
  if (r.outcome == http::Outcome::kTls) {
    return Error{EPROTO, "TLS to " + opts.url + " failed: " + r.detail +
                             (opts.ca_file.empty() ? " (give ca_file= for a private CA)" : "")};
  }
  if (r.outcome != http::Outcome::kOk) {
    log->warn("upstream {} not reachable at start ({}: {}); serving what is cached", opts.url,
              http::to_string(r.outcome), r.detail);
  } else if (r.head.status >= 400 && r.head.status != 403 && r.head.status != 404) {
    log->warn("upstream {} answers {} at start", opts.url, r.head.status);
  }
  return {};
}

cache::FetcherOptions fetcher_options(const fs::MountOptions& opts) {
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
  return fo;
}

// Mounts, then (without -f) detaches from the terminal.
Result<void> mount_and_detach(fuse_session* se, const fs::MountOptions& opts,
                              const http::Options& ho, fs::FuseFs& fsimpl,
                              cache::CacheLock& cache_lock) {
  if (fuse_session_mount(se, opts.mountpoint.c_str()) != 0) {
    return Error{EIO, "cannot mount on " + opts.mountpoint};
  }
  logger("main")->info("mounted {} on {} (cache {})", opts.url, opts.mountpoint, opts.cache_dir);
  record_upstream(opts.cache_dir, opts.url, ho);
  fsimpl.set_session(se);
  if (!opts.foreground) {
    fuse_daemonize(0);
    cache_lock.note_holder();
    setup_logging(opts, true);
  }
  return {};
}

// --- Serving: threads start only now ------------------------------------------
// fuse_daemonize() forks, and a fork keeps only the calling thread. The
// kernel sends no request before the loop runs.

void describe_rules(const std::shared_ptr<const fs::RewriteFilter>& f) {
  auto log = logger("main");
  if (!f) return log->info("no rewrite rules");
  for (const auto& r : f->rules().rules()) {
    std::string from;
    for (const auto& x : r.replace) from += (from.empty() ? "" : ", ") + x.from + " -> " + x.to;
    log->info("rewrite rule {}: {}", r.name, from);
  }
}

// SIGHUP re-reads the rewrite rules: blocked in every thread (they all
// start after block_sighup() and inherit the mask) and taken by this one.
sigset_t block_sighup() {
  sigset_t hup;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &hup, nullptr);
  return hup;
}

class SighupReloader {
 public:
  SighupReloader(sigset_t hup, const fs::MountOptions& opts, cache::Fetcher& fetcher)
      : thread_([this, hup, &opts, &fetcher] { run(hup, opts, fetcher); }) {}
  ~SighupReloader() { stop(); }
  SighupReloader(const SighupReloader&) = delete;
  SighupReloader& operator=(const SighupReloader&) = delete;

  void stop() {
    if (!thread_.joinable()) return;
    stopping_ = true;
    pthread_kill(thread_.native_handle(), SIGHUP);
    thread_.join();
  }

 private:
  void run(sigset_t hup, const fs::MountOptions& opts, cache::Fetcher& fetcher) {
    auto log = logger("main");
    for (;;) {
      int sig = 0;
      if (sigwait(&hup, &sig) != 0 || stopping_) return;
      auto fresh = fs::load_rewrite_filter(opts);
      if (!fresh) {
        log->error("SIGHUP: keeping the current rules: {}", fresh.error().message);
        continue;
      }
      sd_notify(0, "RELOADING=1");
      log->info("SIGHUP: rules reloaded");
      describe_rules(fresh.value());
      fetcher.set_filter(fresh.value());
      sd_notify(0, "READY=1");
    }
  }

  std::atomic<bool> stopping_{false};
  std::thread thread_;  // last: starts once stopping_ exists
};

struct MetricsOutputs {
  std::unique_ptr<fs::MetricsServer> server;
  std::unique_ptr<fs::MetricsFileWriter> file;
};

MetricsOutputs start_metrics(const fs::MountOptions& opts, fs::MetricsRegistry& metrics,
                             UniqueFd socket) {
  MetricsOutputs out;
  auto log = logger("main");
  if (socket.valid()) {
    // Mounted already: a failure here costs the metrics, not the mount.
    if (auto server = fs::MetricsServer::start(std::move(socket), metrics); server) {
      out.server = std::move(server).value();
      log->info("metrics on http://{}/metrics", out.server->address());
    } else {
      log->error("{}", server.error().message);
    }
  }
  if (!opts.metrics_file.empty()) {
    out.file = std::make_unique<fs::MetricsFileWriter>(opts.metrics_file,
                                                       ms(opts.metrics_interval), metrics);
  }
  return out;
}

// Its handlers never run on a FUSE worker. A failure to bind is logged and
// costs only netbootfsctl's live commands, not the mount.
std::unique_ptr<fs::ControlSocket> start_control(const fs::ControlContext& ctx) {
  fs::ControlSocket::Options co;
  co.path = ctx.opts.control_socket.empty() ? fs::default_control_socket(ctx.opts.cache_dir)
                                            : ctx.opts.control_socket;
  auto cs = fs::ControlSocket::start(co, fs::control_handlers(ctx));
  if (!cs) {
    logger("main")->error("{}", cs.error().message);
    return nullptr;
  }
  logger("main")->info("control socket {}", (*cs)->path());
  return std::move(cs).value();
}

// Serves until unmounted or signalled; the FUSE loop's return code.
int run_session(fuse_session* se, const fs::MountOptions& opts) {
  // Type=notify units start the TFTP server only once the mount serves.
  sd_notifyf(0, "READY=1\nSTATUS=serving %s on %s", opts.url.c_str(), opts.mountpoint.c_str());
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, opts.max_threads);
  fuse_loop_cfg_set_idle_threads(cfg, 16);
  fuse_loop_cfg_set_clone_fd(cfg, opts.clone_fd);
  const int rc = fuse_session_loop_mt(se, cfg);
  fuse_loop_cfg_destroy(cfg);
  return rc;
}

// What serving runs on, all built (and the session mounted) before it.
struct Mounted {
  const fs::MountOptions& opts;
  fuse_session* se;
  fs::FuseFs& fsimpl;
  Cache& cache;
  cache::Evictor& evictor;
  const http::Options& ho;
  const cache::FetcherOptions& fo;
};

// The clean stop, in this order: a prefetch in progress is cancelled; the
// Fetcher's shutdown answers what it still waits for, and then its thread is
// joined; what still waits is answered before the kernel connection goes
// away. The exit code of the process.
int stop_cleanly(const Mounted& m, int loop_rc, cache::Fetcher& fetcher,
         std::unique_ptr<fs::ControlSocket>& control, SighupReloader& reloader) {
  auto log = logger("main");
  sd_notify(0, "STOPPING=1");
  if (control) control->request_stop();
  reloader.stop();
  fetcher.shutdown();
  control.reset();
  if (size_t n = m.fsimpl.answer_all_pending(EIO)) log->info("answered {} pending requests", n);
  fuse_session_unmount(m.se);
  log->info("unmounted {}", m.opts.mountpoint);
  // libfuse reports the signal that ended the loop; stopping on one is clean.
  const bool clean_stop = loop_rc == 0 || loop_rc == SIGTERM || loop_rc == SIGINT;
  // Last: the Fetcher's threads are joined, nothing writes the index after
  // this. A run whose cache writes failed leaves the full recovery to the
  // next start.
  if (clean_stop && fetcher.stats().write_failures.load() == 0) {
    if (auto r = m.cache.index->set_clean_mark(); !r) {
      log->warn("the next start will run the full recovery: {}", r.error().message);
    }
  }
  return clean_stop ? 0 : 1;
}

int serve(const Mounted& m, const Settings& settings, UniqueFd metrics_socket) {
  const sigset_t hup = block_sighup();
  http::Client client(m.ho);
  cache::Fetcher fetcher(m.fo, client, *m.cache.index, *m.cache.blobs);
  describe_rules(settings.filter);
  fetcher.set_filter(settings.filter);
  fetcher.set_evictor(&m.evictor);
  m.fsimpl.attach(&fetcher);
  fs::MetricsRegistry metrics;
  fs::register_daemon_metrics(metrics, fetcher, m.fsimpl, *m.cache.index);
  fs::register_eviction_metrics(metrics, m.evictor);
  fs::register_client_metrics(metrics, client);
  const MetricsOutputs outputs = start_metrics(m.opts, metrics, std::move(metrics_socket));
  // After daemonizing: it has threads.
  auto control = start_control(
      {m.opts, fetcher, m.fsimpl, m.evictor, std::chrono::steady_clock::now(), NETBOOTFS_VERSION});
  SighupReloader reloader(hup, m.opts, fetcher);
  const int rc = run_session(m.se, m.opts);
  return stop_cleanly(m, rc, fetcher, control, reloader);
}

}  // namespace

int main(int argc, char** argv) {
  fs::MountOptions opts;
  fuse_args args{};
  // libfuse's own complaints become part of our one line.
  fs::FuseLogCapture fuse_log;
  if (auto rc = parse_options(argc, argv, opts, args, fuse_log)) return *rc;
  setup_logging(opts, false);
  raise_nofile();
  // An empty directory nobody mounted on; a dead mount of ours is detached.
  if (auto r = fs::prepare_mountpoint(opts.mountpoint); !r) return fail(r.error().message);
  fs::FuseFs fsimpl(opts);
  auto se = new_session(args, fsimpl, fuse_log);
  if (!se) return fail(se.error().message);
  auto settings = load_settings(opts);
  if (!settings) return fail(settings.error().message);

  if (auto r = prepare_cache_dir(opts.cache_dir); !r) return fail(r.error().message);
  // One writer per cache: a second mount, or netbootfsctl import, on the
  // same cache_dir is refused instead of corrupting what this one serves.
  auto cache_lock = cache::CacheLock::acquire(opts.cache_dir);
  if (!cache_lock) return fail(cache_lock.error().message);
  auto metrics_socket = bind_metrics(opts);
  if (!metrics_socket) return fail(metrics_socket.error().message);
  auto cache = open_cache(opts);
  if (!cache) return fail(cache.error().message);
  auto eo = evictor_options(opts, *settings, *cache->index);
  if (!eo) return fail(eo.error().message);
  // Declared before the Fetcher (in serve()): it outlives it.
  cache::Evictor evictor(*eo, *cache->index, *cache->blobs);

  const http::Options ho = http_options(opts);
  if (auto r = probe_upstream(opts, ho); !r) return fail(r.error().message);
  const cache::FetcherOptions fo = fetcher_options(opts);
  if (fuse_set_signal_handlers(se->get()) != 0) return fail("cannot install signal handlers");
  struct HandlersGuard {
    fuse_session* se;
    ~HandlersGuard() { fuse_remove_signal_handlers(se); }
  } handlers{se->get()};
  if (auto r = mount_and_detach(se->get(), opts, ho, fsimpl, *cache_lock); !r) {
    return fail(r.error().message);
  }
  return serve({opts, se->get(), fsimpl, *cache, evictor, ho, fo}, *settings,
               std::move(metrics_socket).value());
}
