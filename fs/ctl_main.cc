// netbootfsctl: inspects a netbootfs cache directory, mounted or not.
//
// The index is opened read-only: LMDB lets the mount and this tool use the
// same environment at the same time, so nothing here disturbs a live mount.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <sys/statvfs.h>
#include <string>

#include "cache/blob_store.h"
#include "cache/bundle.h"
#include "cache/cache_lock.h"
#include "cache/evictor.h"
#include "cache/http/url.h"
#include "cache/index.h"
#include "cache/recovery.h"

namespace {

using namespace netbootfs;

std::string iso_time(int64_t t) {
  if (t <= 0) return "-";
  std::time_t tt = t;
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "netbootfsctl: %s\n", msg.c_str());
  return 2;
}

Result<std::unique_ptr<cache::Index>> open_index(const std::string& dir) {
  if (!std::filesystem::exists(dir + "/index")) {
    return Error{ENOENT, "no cache at " + dir + " (no index/ directory)"};
  }
  cache::Index::Options o;
  o.read_only = true;
  return cache::Index::open(dir + "/index", o);
}

// The cache opened for a command that changes it: the lock first, so that
// nothing is written under a running mount.
struct WritableCache {
  cache::CacheLock lock;
  std::unique_ptr<cache::BlobStore> blobs;
  std::unique_ptr<cache::Index> index;
};

Result<WritableCache> open_for_write(const std::string& dir) {
  auto lock = cache::CacheLock::acquire(dir);
  if (!lock) return Error{lock.error().code, lock.error().message + "; unmount it first"};
  auto blobs = cache::BlobStore::open(dir);
  if (!blobs) return blobs.error();
  auto index = cache::Index::open(dir + "/index", cache::Index::Options{});
  if (!index) return index.error();
  return WritableCache{std::move(lock).value(), std::move(blobs).value(),
                       std::move(index).value()};
}

// "VERB N entries (B blobs, X bytes<inside>)<after>"
void print_summary(const char* verb, const cache::BundleSummary& r, const std::string& inside,
                   const std::string& after) {
  std::printf("%s %llu entries (%llu blobs, %llu bytes%s)%s\n", verb,
              static_cast<unsigned long long>(r.entries), static_cast<unsigned long long>(r.blobs),
              static_cast<unsigned long long>(r.bytes), inside.c_str(), after.c_str());
}

int cmd_ls(const std::string& dir, const std::string& path, bool json) {
  auto index = open_index(dir);
  if (!index) return fail(index.error().message);
  std::string prefix;
  if (!path.empty()) {
    auto p = http::normalize_rel_path(path);
    if (!p) return fail("bad path '" + path + "': " + p.error().message);
    prefix = p.value();
  }
  auto entries = (*index)->list_paths(prefix);
  // Internal entries (rewritten outputs, keyed "\x01...") are not paths of the tree.
  entries.erase(std::remove_if(entries.begin(), entries.end(),
                               [](const auto& e) { return !e.first.empty() && e.first[0] == '\x01'; }),
                entries.end());
  if (json) {
    auto out = nlohmann::json::array();
    for (const auto& [p, e] : entries) {
      auto blob = (*index)->get_blob(e.sha256);
      out.push_back({{"path", p},
                     {"size", e.size},
                     {"sha256", e.sha256},
                     {"etag", e.etag},
                     {"last_modified", e.last_modified},
                     {"validated_at", e.validated_at},
                     {"last_access", blob ? blob->last_access : 0}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  for (const auto& [p, e] : entries) {
    auto blob = (*index)->get_blob(e.sha256);
    std::printf("%-40s %12llu %.12s %-24s validated %s accessed %s\n", p.c_str(),
                static_cast<unsigned long long>(e.size), e.sha256.c_str(),
                e.etag.empty() ? "-" : e.etag.c_str(), iso_time(e.validated_at).c_str(),
                iso_time(blob ? blob->last_access : 0).c_str());
  }
  return 0;
}

int cmd_status(const std::string& dir, bool json) {
  auto index = open_index(dir);
  if (!index) return fail(index.error().message);
  auto st = (*index)->stats();
  for (const auto& [p, e] : (*index)->list_paths()) {
    if (!p.empty() && p[0] == '\x01') st.paths--;  // rewritten outputs: internal
  }
  size_t tmp_files = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir + "/tmp", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++tmp_files;
  }
  if (json) {
    nlohmann::json out = {{"cache_dir", dir},
                          {"paths", st.paths},
                          {"blobs", st.blobs},
                          {"bytes", st.blob_bytes},
                          {"temp_files", tmp_files},
                          {"schema_version", cache::Index::kSchemaVersion}};
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf("cache_dir:  %s\npaths:      %llu\nblobs:      %llu\nbytes:      %llu\n"
              "temp files: %zu\n",
              dir.c_str(), static_cast<unsigned long long>(st.paths),
              static_cast<unsigned long long>(st.blobs),
              static_cast<unsigned long long>(st.blob_bytes), tmp_files);
  return 0;
}

int cmd_verify(const std::string& dir, bool json) {
  auto index = open_index(dir);
  if (!index) return fail(index.error().message);
  auto blobs = cache::BlobStore::open(dir);
  if (!blobs) return fail(blobs.error().message);
  auto problems = cache::verify(**index, **blobs);
  if (json) {
    std::cout << nlohmann::json{{"consistent", problems.empty()}, {"problems", problems}}.dump(2)
              << "\n";
  } else {
    for (const auto& p : problems) std::printf("%s\n", p.c_str());
    std::printf("%s\n", problems.empty() ? "consistent" : "INCONSISTENT");
  }
  return problems.empty() ? 0 : 1;
}

// "--since" values: unix seconds ("@1700000000" or "1700000000"), a UTC date
// ("2026-11-30") or a UTC time ("2026-11-30T12:00:00Z").
Result<int64_t> parse_time(const std::string& s) {
  std::string digits = !s.empty() && s[0] == '@' ? s.substr(1) : s;
  if (!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos) {
    return static_cast<int64_t>(std::stoll(digits));
  }
  for (const char* fmt : {"%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"}) {
    std::tm tm{};
    const char* end = strptime(s.c_str(), fmt, &tm);
    if (end && *end == '\0') return static_cast<int64_t>(timegm(&tm));
  }
  return Error{EINVAL, "bad time '" + s + "' (unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)"};
}

nlohmann::json summary_json(const cache::BundleSummary& s) {
  return {{"entries", s.entries}, {"blobs", s.blobs}, {"bytes", s.bytes},
          {"blobs_present", s.blobs_present}};
}

int cmd_export(const std::string& dir, const std::string& since_text, const std::string& file,
               bool json) {
  int64_t since = 0;
  if (!since_text.empty()) {
    auto t = parse_time(since_text);
    if (!t) return fail(t.error().message);
    since = *t;
  }
  auto index = open_index(dir);
  if (!index) return fail(index.error().message);
  auto blobs = cache::BlobStore::open(dir);
  if (!blobs) return fail(blobs.error().message);
  auto r = cache::export_bundle(**index, **blobs, since, file);
  if (!r) return fail(r.error().message);
  if (json) {
    std::cout << summary_json(*r).dump(2) << "\n";
  } else {
    print_summary("exported", *r, "", " to " + file);
  }
  return 0;
}

int cmd_import(const std::string& dir, const std::string& file, bool json) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return fail("cannot create " + dir + ": " + ec.message());
  // Changing the cache under a running mount would leave it serving from a
  // view of the index it no longer has: one writer at a time.
  auto c = open_for_write(dir);
  if (!c) return fail(c.error().message);
  auto r = cache::import_bundle(*c->index, *c->blobs, file);
  if (!r) return fail(r.error().message);
  if (json) {
    std::cout << summary_json(*r).dump(2) << "\n";
  } else {
    print_summary("imported", *r, "; " + std::to_string(r->blobs_present) + " blobs already cached",
                  "");
  }
  return 0;
}

// "--older-than" values: seconds, or a number with s, m, h or d.
Result<int64_t> parse_duration(const std::string& s) {
  size_t used = 0;
  double n = 0;
  try {
    n = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = s.substr(used);
  int64_t mul = 0;
  if (unit.empty() || unit == "s") mul = 1;
  if (unit == "m") mul = 60;
  if (unit == "h") mul = 3600;
  if (unit == "d") mul = 86400;
  if (used == 0 || mul == 0 || n < 0) {
    return Error{EINVAL, "bad duration '" + s + "' (e.g. 3600, 30m, 12h, 7d)"};
  }
  return static_cast<int64_t>(n * static_cast<double>(mul));
}

int cmd_stat(const std::string& dir, const std::string& path, bool json) {
  auto index = open_index(dir);
  if (!index) return fail(index.error().message);
  auto p = http::normalize_rel_path(path);
  if (!p) return fail("bad path '" + path + "': " + p.error().message);
  auto e = (*index)->get_path(p.value());
  if (!e) {
    std::fprintf(stderr, "netbootfsctl: %s is not cached\n", p.value().c_str());
    return 1;
  }
  auto blob = (*index)->get_blob(e->sha256);
  if (json) {
    std::cout << nlohmann::json{{"path", p.value()},
                                {"size", e->size},
                                {"sha256", e->sha256},
                                {"etag", e->etag},
                                {"last_modified", e->last_modified},
                                {"validated_at", e->validated_at},
                                {"last_access", blob ? blob->last_access : 0},
                                {"blob_refs", blob ? blob->refs : 0}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::printf("path:          %s\nsize:          %llu\nsha256:        %s\netag:          %s\n"
              "last-modified: %s\nvalidated:     %s\naccessed:      %s\nshared by:     %u path(s)\n",
              p.value().c_str(), static_cast<unsigned long long>(e->size), e->sha256.c_str(),
              e->etag.empty() ? "-" : e->etag.c_str(), iso_time(e->last_modified).c_str(),
              iso_time(e->validated_at).c_str(), iso_time(blob ? blob->last_access : 0).c_str(),
              blob ? blob->refs : 0u);
  return 0;
}

// Removes entries from an unmounted cache, then the blobs (and the rewritten
// outputs derived from them) that nothing refers to any more.
int cmd_evict(const std::string& dir, const std::vector<std::string>& paths, bool all,
              const std::string& older_than, bool json) {
  int64_t cutoff = 0;
  if (!older_than.empty()) {
    auto d = parse_duration(older_than);
    if (!d) return fail(d.error().message);
    cutoff = ::time(nullptr) - *d;
  }
  if (paths.empty() && !all && older_than.empty()) return fail("evict: name PATHs, --all or --older-than");
  auto c = open_for_write(dir);
  if (!c) return fail(c.error().message);
  auto& ix = *c->index;

  std::vector<std::string> victims;
  std::vector<std::string> prefixes;
  for (const auto& raw : paths) {
    auto p = http::normalize_rel_path(raw);
    if (!p) return fail("bad path '" + raw + "': " + p.error().message);
    prefixes.push_back(p.value());
  }
  for (const auto& [p, e] : ix.list_paths()) {
    if (!p.empty() && p[0] == '\x01') continue;  // internal: follows its source
    bool hit = all;
    for (const auto& pre : prefixes) {
      if (p == pre || (p.size() > pre.size() && p.compare(0, pre.size(), pre) == 0 &&
                       p[pre.size()] == '/')) {
        hit = true;
      }
    }
    if (!hit && cutoff > 0) {
      auto b = ix.get_blob(e.sha256);
      hit = !b || b->last_access < cutoff;
    }
    if (hit) victims.push_back(p);
  }
  uint64_t bytes = 0, removed_blobs = 0;
  std::vector<std::string> touched;
  for (const auto& p : victims) {
    auto e = ix.get_path(p);
    if (!e) continue;
    if (auto r = ix.remove_path(p); !r) return fail(r.error().message);
    touched.push_back(e->sha256);
  }
  // Rewritten outputs of a source blob that is gone are garbage too.
  for (const auto& [key, e] : ix.list_paths("\x01filtered")) {
    const auto slash = key.rfind('/');
    const std::string source = key.substr(slash + 1);
    auto b = ix.get_blob(source);
    if (!b || b->refs == 0) {
      if (ix.remove_path(key)) touched.push_back(e.sha256);
    }
  }
  for (const auto& sha : touched) {
    auto b = ix.get_blob(sha);
    if (b && b->refs > 0) continue;
    if (b && !ix.remove_blob(sha)) continue;
    if (auto size = c->blobs->blob_size(sha); size && c->blobs->remove(sha)) {
      bytes += *size;
      removed_blobs++;
    }
  }
  if (json) {
    std::cout << nlohmann::json{{"entries", victims.size()}, {"blobs", removed_blobs}, {"bytes", bytes}}
                     .dump(2)
              << "\n";
  } else {
    std::printf("evicted %zu entries (%llu blobs, %llu bytes freed)\n", victims.size(),
                static_cast<unsigned long long>(removed_blobs), static_cast<unsigned long long>(bytes));
  }
  return 0;
}

// Enforces the limit now on an unmounted cache: what a mount's eviction
// would do (cache/evictor.h), with the same default when no size is given.
int cmd_gc(const std::string& dir, const std::string& size_text,
           const std::vector<std::string>& pins, bool json) {
  std::optional<uint64_t> configured;
  if (!size_text.empty()) {
    auto s = cache::parse_size(size_text);
    if (!s) return fail("--max-cache-size: " + s.error().message);
    configured = s.value();
  }
  if (!std::filesystem::exists(dir + "/index")) return fail("no cache at " + dir + " (no index/ directory)");
  auto c = open_for_write(dir);
  if (!c) {
    // Mounted: the mount enforces its own limit (gc through it is to come).
    return fail("gc: " + c.error().message);
  }
  struct statvfs sv {};
  if (::statvfs(dir.c_str(), &sv) != 0) return fail("statvfs " + dir + ": " + std::strerror(errno));
  const cache::IndexStats before = c->index->stats();
  auto limit = cache::resolve_cache_limit(
      configured, static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize, before.blob_bytes);
  if (!limit) return fail(limit.error().message);
  cache::EvictorOptions eo;
  eo.limit = limit.value();
  eo.pins = pins;
  // Down to the low watermark whenever over the limit's high one, like the mount.
  cache::Evictor ev(eo, *c->index, *c->blobs);
  auto r = ev.enforce();
  if (!r) return fail("gc: " + r.error().message);
  if (json) {
    std::cout << nlohmann::json{{"limit", eo.limit},
                                {"bytes_before", before.blob_bytes},
                                {"objects_before", before.blobs},
                                {"evicted_blobs", r->blobs},
                                {"evicted_bytes", r->bytes},
                                {"removed_entries", r->entries},
                                {"bytes", r->cache_bytes},
                                {"objects", r->cache_objects}}
                     .dump(2)
              << "\n";
  } else {
    std::printf("gc: limit %s; evicted %llu blobs (%llu bytes, %llu entries); cache holds %s in %llu blobs\n",
                cache::format_size(eo.limit).c_str(), static_cast<unsigned long long>(r->blobs),
                static_cast<unsigned long long>(r->bytes), static_cast<unsigned long long>(r->entries),
                cache::format_size(r->cache_bytes).c_str(),
                static_cast<unsigned long long>(r->cache_objects));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Library logs go to stderr, warnings and worse only: stdout is the
  // command's output (and --json must stay parseable).
  auto log = std::make_shared<spdlog::logger>("netbootfsctl",
                                              std::make_shared<spdlog::sinks::stderr_sink_mt>());
  log->set_level(spdlog::level::warn);
  log->set_pattern("netbootfsctl: %l: %v");
  spdlog::set_default_logger(log);
  CLI::App app{"Inspect a netbootfs cache directory, mounted or not.\n"
               "Exit codes: 0 success, 1 an inconsistency was found, 2 usage or I/O error."};
  std::string dir = "/var/cache/netbootfs";
  bool json = false;
  app.add_option("--cache-dir", dir, "cache directory")->capture_default_str();
  app.add_flag("--json", json, "machine-readable output");
  app.require_subcommand(1);
  app.fallthrough();  // --json and --cache-dir also after the command

  std::string ls_path;
  auto* ls = app.add_subcommand("ls", "list cached entries (path, size, sha256, etag, times)");
  ls->add_option("PATH", ls_path, "only entries at or below PATH");
  auto* status = app.add_subcommand("status", "print cache totals");
  auto* verify = app.add_subcommand("verify", "re-hash every blob and check index <-> blobs");
  std::string export_file, export_since;
  bool export_all = false;
  auto* exp = app.add_subcommand(
      "export", "write cached entries to a bundle (tar) for a site without a link to the server");
  exp->add_option("FILE", export_file, "the bundle to write")->required();
  auto* since_opt = exp->add_option(
      "--since", export_since,
      "only entries fetched or revalidated since TIME (unix seconds, YYYY-MM-DD[THH:MM:SSZ])");
  auto* all_opt = exp->add_flag("--all", export_all, "every entry");
  since_opt->excludes(all_opt);
  exp->callback([&] {
    if (export_since.empty() && !export_all) throw CLI::RequiredError("--since TIME or --all");
  });
  std::string stat_path;
  auto* stat = app.add_subcommand("stat", "one cached entry: size, sha256, etag, times, sharing");
  stat->add_option("PATH", stat_path, "a path of the tree")->required();
  std::vector<std::string> evict_paths;
  bool evict_all = false;
  std::string evict_older;
  auto* evict = app.add_subcommand(
      "evict", "drop entries (and blobs nothing else uses) from an unmounted cache");
  evict->add_option("PATH", evict_paths, "entries at or below PATH");
  evict->add_flag("--all", evict_all, "every entry");
  evict->add_option("--older-than", evict_older, "entries not read for this long (30m, 12h, 7d)");
  std::string gc_size;
  std::vector<std::string> gc_pins;
  auto* gc = app.add_subcommand(
      "gc", "evict least recently used blobs until an unmounted cache fits its limit");
  gc->add_option("--max-cache-size", gc_size,
                 "the limit (20G, 512M, bytes); default 80% of free space + what the cache holds");
  gc->add_option("--pin", gc_pins, "never evict paths matching GLOB (repeatable)");
  std::string import_file;
  auto* imp = app.add_subcommand(
      "import", "add a bundle's entries to the cache, all or nothing (the cache must not be mounted)");
  imp->add_option("FILE", import_file, "the bundle to read")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (*ls) return cmd_ls(dir, ls_path, json);
  if (*status) return cmd_status(dir, json);
  if (*verify) return cmd_verify(dir, json);
  if (*stat) return cmd_stat(dir, stat_path, json);
  if (*evict) return cmd_evict(dir, evict_paths, evict_all, evict_older, json);
  if (*exp) return cmd_export(dir, export_since, export_file, json);
  if (*imp) return cmd_import(dir, import_file, json);
  if (*gc) return cmd_gc(dir, gc_size, gc_pins, json);
  return 2;
}
