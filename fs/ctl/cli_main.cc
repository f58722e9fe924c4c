// netbootfsctl: inspects a netbootfs cache directory, mounted or not.
//
// This file is the command line (CLI11) and its dispatch; the commands are
// fs/ctl/offline_commands.h (on the cache directory) and
// fs/ctl/mount_commands.h (through a running mount's control socket).
//
// The index is opened read-only where nothing is changed: LMDB lets the
// mount and this tool use the same environment at the same time, so reading
// commands do not disturb a live mount.
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "fs/control_protocol.h"
#include "fs/ctl/mount_commands.h"
#include "fs/ctl/offline_commands.h"

namespace {

using namespace netbootfs::fs::ctl;

// Every value the command line sets.
struct Args {
  std::string dir = "/var/cache/netbootfs";
  std::string socket;  // empty: CACHE_DIR/control.sock
  bool json = false;
  std::string ls_path;
  bool ls_long = false;
  std::vector<std::string> ls_pins;
  bool verify_repair = false;
  std::string export_file, export_since;
  bool export_all = false;
  std::string stat_path;
  std::vector<std::string> evict_paths;
  bool evict_all = false;
  std::string evict_older;
  std::string gc_size;
  std::vector<std::string> gc_pins;
  std::string import_file;
  std::vector<std::string> inv_paths;
  bool inv_all = false;
  PrefetchArgs pf;
};

// Library logs go to stderr, warnings and worse only: stdout is the
// command's output (and --json must stay parseable).
void setup_logging() {
  auto log = std::make_shared<spdlog::logger>("netbootfsctl",
                                              std::make_shared<spdlog::sinks::stderr_sink_mt>());
  log->set_level(spdlog::level::warn);
  log->set_pattern("netbootfsctl: %l: %v");
  spdlog::set_default_logger(log);
}

void add_global_options(CLI::App& app, Args& a) {
  app.add_option("--cache-dir", a.dir, "cache directory")->capture_default_str();
  app.add_flag("--json", a.json, "machine-readable output");
  app.add_option("--socket", a.socket, "the mount's control socket (CACHE_DIR/control.sock)");
  app.require_subcommand(1);
  app.fallthrough();  // --json and --cache-dir also after the command
}

// The commands that read the cache: ls, status, verify, export, stat.
void add_reading_commands(CLI::App& app, Args& a) {
  auto* ls = app.add_subcommand(
      "ls", "list cached paths; -l: size, sha256, etag, validated and accessed times, rewritten");
  ls->add_option("PATH", a.ls_path, "only entries at or below PATH");
  ls->add_flag("-l,--long", a.ls_long, "one table row per entry");
  ls->add_option("--pin", a.ls_pins,
                 "the pin globs for the PINNED column (default: the running mount's)");
  app.add_subcommand("status", "print cache totals");
  auto* verify = app.add_subcommand(
      "verify", "re-hash every blob and check index <-> blobs (exit 1 when a problem is found)");
  verify->add_flag("--repair", a.verify_repair,
                   "on an unmounted cache: drop entries whose blob is missing or corrupt, delete "
                   "corrupt and orphan blobs and temp files, rebuild refcounts");
  auto* exp = app.add_subcommand(
      "export", "write cached entries to a bundle (tar) for a site without a link to the server");
  exp->add_option("FILE", a.export_file, "the bundle to write")->required();
  auto* since_opt = exp->add_option(
      "--since", a.export_since,
      "only entries fetched or revalidated since TIME (unix seconds, YYYY-MM-DD[THH:MM:SSZ])");
  auto* all_opt = exp->add_flag("--all", a.export_all, "every entry");
  since_opt->excludes(all_opt);
  exp->callback([&a] {
    if (a.export_since.empty() && !a.export_all) throw CLI::RequiredError("--since TIME or --all");
  });
  auto* stat = app.add_subcommand("stat", "one cached entry: size, sha256, etag, times, sharing");
  stat->add_option("PATH", a.stat_path, "a path of the tree")->required();
}

// The commands that change the cache: evict, gc, import.
void add_changing_commands(CLI::App& app, Args& a) {
  auto* evict = app.add_subcommand(
      "evict", "drop entries (and blobs nothing else uses) from an unmounted cache");
  evict->add_option("PATH", a.evict_paths, "entries at or below PATH");
  evict->add_flag("--all", a.evict_all, "every entry");
  evict->add_option("--older-than", a.evict_older, "entries not read for this long (30m, 12h, 7d)");
  auto* gc = app.add_subcommand(
      "gc",
      "evict least recently used blobs until the cache fits its limit (through the mount "
      "when mounted)");
  gc->add_option("--max-cache-size", a.gc_size,
                 "the limit (20G, 512M, bytes); default 80% of free space + what the cache holds");
  gc->add_option("--pin", a.gc_pins, "never evict paths matching GLOB (repeatable)");
  auto* imp = app.add_subcommand(
      "import",
      "add a bundle's entries to the cache, all or nothing (the cache must not be mounted)");
  imp->add_option("FILE", a.import_file, "the bundle to read")->required();
}

// The commands for a live mount: invalidate, prefetch (also unmounted).
void add_mount_commands(CLI::App& app, Args& a) {
  auto* inv = app.add_subcommand(
      "invalidate", "make the live mount ask upstream again for PATHs (at or below them) now");
  inv->add_option("PATH", a.inv_paths, "paths of the tree");
  inv->add_flag("--all", a.inv_all, "the whole tree");
  PrefetchArgs& p = a.pf;
  auto* pf = app.add_subcommand(
      "prefetch", "fetch PATHs (default: the root) into the cache, through the mount if mounted");
  pf->add_option("PATH", p.paths, "files or directories of the tree");
  pf->add_flag("--recursive,-r", p.recursive, "descend into subdirectories");
  pf->add_option("--from", p.from, "read more paths from FILE (one a line)");
  pf->add_option("--jobs,-j", p.jobs, "files in flight at once (1..64)")->capture_default_str();
  pf->add_option("--max-rate", p.max_rate,
                 "cap the prefetch's transfers (bytes/s, K/M/G suffixes)");
  pf->add_option("--url", p.url, "upstream URL for an unmounted cache (default: the last mount's)");
  // Unmounted, the last mount's HTTP settings apply (recorded in the cache
  // directory); these override them one by one.
  HttpFlags& h = p.http;
  pf->add_option("--proxy", h.proxy, "unmounted: HTTP proxy URL (default: the mount's proxy=)");
  pf->add_option("--ca-file", h.ca_file, "unmounted: CA bundle (default: the mount's ca_file=)");
  pf->add_option("--client-cert", h.client_cert,
                 "unmounted: PEM client certificate (default: the mount's client_cert=)");
  pf->add_option("--client-key", h.client_key,
                 "unmounted: its key (default: the mount's client_key=)");
  pf->add_flag("--insecure", h.insecure, "unmounted: do not verify TLS certificates");
  pf->add_option("--connect-timeout", h.connect_timeout,
                 "unmounted: seconds (default: the mount's connect_timeout=, else 10)")
      ->check(CLI::NonNegativeNumber);
  pf->add_option("--request-timeout", h.request_timeout,
                 "unmounted: seconds for listings (default: the mount's request_timeout=, else 30)")
      ->check(CLI::NonNegativeNumber);
}

int dispatch(const CLI::App& app, const Args& a) {
  const std::string& dir = a.dir;
  const std::string socket =
      a.socket.empty() ? netbootfs::fs::default_control_socket(dir) : a.socket;
  const bool json = a.json;
  if (app.got_subcommand("ls")) return cmd_ls(dir, socket, a.ls_path, a.ls_long, a.ls_pins, json);
  if (app.got_subcommand("status")) return cmd_status(dir, socket, json);
  if (app.got_subcommand("invalidate")) return cmd_invalidate(socket, a.inv_paths, a.inv_all, json);
  if (app.got_subcommand("prefetch")) return cmd_prefetch(dir, socket, a.pf, json);
  if (app.got_subcommand("verify")) return cmd_verify(dir, a.verify_repair, json);
  if (app.got_subcommand("stat")) return cmd_stat(dir, a.stat_path, json);
  if (app.got_subcommand("evict")) {
    return cmd_evict(dir, a.evict_paths, a.evict_all, a.evict_older, json);
  }
  if (app.got_subcommand("export")) return cmd_export(dir, a.export_since, a.export_file, json);
  if (app.got_subcommand("import")) return cmd_import(dir, a.import_file, json);
  if (app.got_subcommand("gc")) return cmd_gc(dir, socket, a.gc_size, a.gc_pins, json);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  setup_logging();
  CLI::App app{
      "Inspect a netbootfs cache directory, mounted or not.\n"
      "Exit codes: 0 success, 1 an inconsistency was found (verify) or some files\n"
      "failed (prefetch), 2 usage or I/O error, not mounted (invalidate) or\n"
      "upstream unknown or unreachable (prefetch)."};
  Args a;
  add_global_options(app, a);
  add_reading_commands(app, a);
  add_changing_commands(app, a);
  add_mount_commands(app, a);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  return dispatch(app, a);
}
