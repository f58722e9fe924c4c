#include "fs/ctl/offline_commands.h"

#include <spdlog/spdlog.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

#include "cache/blob_store.h"
#include "cache/bundle.h"
#include "cache/cache_lock.h"
#include "cache/derived_keys.h"
#include "cache/evictor.h"
#include "cache/fetcher.h"
#include "cache/http/client.h"
#include "cache/http/settings_file.h"
#include "cache/http/url.h"
#include "cache/index.h"
#include "cache/maintenance.h"
#include "cache/prefetch.h"
#include "cache/recovery.h"
#include "fs/control_protocol.h"
#include "fs/ctl/args.h"
#include "fs/ctl/format.h"
#include "fs/ctl/mount_commands.h"

namespace netbootfs::fs::ctl {
namespace {

unsigned long long ull(uint64_t v) { return static_cast<unsigned long long>(v); }

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
  return WritableCache{std::move(lock).value(), std::move(blobs).value(), std::move(index).value()};
}

// --- ls -------------------------------------------------------------------------

using Entries = std::vector<std::pair<std::string, cache::PathEntry>>;

// What ls shows of one listing: the entries of the tree, and the blobs that
// have a rewritten output (internal entries, cache/derived_keys.h).
struct Listing {
  Entries entries;
  std::set<std::string> rewritten;
};

Listing list(cache::Index& index, const std::string& prefix) {
  Listing l;
  l.entries = index.list_paths(prefix);
  for (const auto& [key, e] : index.list_paths(cache::kDerivedPrefix)) {
    if (auto source = cache::derived_source(key)) l.rewritten.insert(*source);
  }
  l.entries.erase(std::remove_if(l.entries.begin(), l.entries.end(),
                                 [](const auto& e) { return cache::is_internal_key(e.first); }),
                  l.entries.end());
  return l;
}

nlohmann::json ls_json(cache::Index& index, const Listing& l,
                       const std::vector<std::string>& pins) {
  auto out = nlohmann::json::array();
  for (const auto& [p, e] : l.entries) {
    auto blob = index.get_blob(e.sha256);
    out.push_back({{"path", p},
                   {"size", e.size},
                   {"sha256", e.sha256},
                   {"etag", e.etag},
                   {"last_modified", e.last_modified},
                   {"validated_at", e.validated_at},
                   {"last_access", blob ? blob->last_access : 0},
                   {"shared_by", blob ? blob->refs : 0},
                   {"rewritten", l.rewritten.count(e.sha256) > 0},
                   {"pinned", cache::matches_pin(pins, p)}});
  }
  return out;
}

void print_ls_table(cache::Index& index, const Listing& l, const std::vector<std::string>& pins) {
  std::printf("%-40s %12s %-12s %-24s %-20s %-20s %-9s %s\n", "PATH", "SIZE", "SHA256", "ETAG",
              "VALIDATED", "ACCESSED", "REWRITTEN", "PINNED");
  for (const auto& [p, e] : l.entries) {
    auto blob = index.get_blob(e.sha256);
    std::printf("%-40s %12llu %.12s %-24s %-20s %-20s %-9s %s\n", p.c_str(), ull(e.size),
                e.sha256.c_str(), e.etag.empty() ? "-" : e.etag.c_str(),
                iso_time(e.validated_at).c_str(), iso_time(blob ? blob->last_access : 0).c_str(),
                l.rewritten.count(e.sha256) ? "yes" : "no",
                cache::matches_pin(pins, p) ? "yes" : "no");
  }
}

// --- prefetch into an unmounted cache -------------------------------------------

// The mount's recorded settings with the flags applied over them.
Result<http::Options> unmounted_http_options(const std::string& dir, const HttpFlags& hf) {
  http::Options base;
  base.user_agent = "netbootfsctl";
  auto rec = http::read_settings_file(dir + "/" + http::kSettingsFileName, base);
  if (!rec) return rec.error();
  http::Options ho = std::move(rec->options);
  if (!hf.proxy.empty()) ho.proxy = hf.proxy;
  if (!hf.ca_file.empty()) ho.ca_file = hf.ca_file;
  if (!hf.client_cert.empty()) ho.client_cert = hf.client_cert;
  if (!hf.client_key.empty()) ho.client_key = hf.client_key;
  if (hf.insecure) ho.insecure = true;
  auto ms = [](double s) { return std::chrono::milliseconds(static_cast<int64_t>(s * 1000)); };
  if (hf.connect_timeout >= 0) ho.connect_timeout = ms(hf.connect_timeout);
  if (hf.request_timeout >= 0) ho.request_timeout = ms(hf.request_timeout);
  return ho;
}

// --url, else the URL the last mount recorded, normalised.
Result<std::string> upstream_of(const std::string& dir, const std::string& url_override) {
  std::string url = url_override;
  if (url.empty()) {
    std::ifstream in(dir + "/upstream");
    std::getline(in, url);
  }
  if (url.empty()) {
    return Error{ENOENT, "not mounted and no upstream known for " + dir +
                             " (mount it once, or give --url URL)"};
  }
  auto base = http::normalize_base_url(url);
  if (!base) return Error{EINVAL, "bad --url '" + url + "': " + base.error().message};
  return base;
}

// Fetches into the cache directly, as the mount would.
int prefetch_directly(const std::string& dir, const control::PrefetchRequest& req,
                      const PrefetchArgs& args, const ProgressBar& bar, bool json) {
  auto base = upstream_of(dir, args.url);
  if (!base) return fail(base.error().message);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  auto wc = open_for_write(dir);
  if (!wc) return fail(wc.error().message);
  // As the mount does: the full recovery unless the last writer stopped
  // cleanly, and a clean stop marked for the next start (a mount after a
  // prefetch of a large cache then starts without walking it).
  if (auto rec = cache::recover_at_start(*wc->index, *wc->blobs); !rec) {
    return fail("cache recovery: " + rec.error().message);
  }
  auto ho = unmounted_http_options(dir, args.http);
  if (!ho) return fail(ho.error().message);
  std::string via = "directly from " + base.value();
  if (!ho->proxy.empty()) via += " via proxy " + http::strip_userinfo(ho->proxy);
  if (ho->insecure) {
    spdlog::warn("TLS certificate verification is disabled ({})",
                 args.http.insecure ? "--insecure" : "the last mount's insecure");
  }
  http::Client client(ho.value());
  cache::FetcherOptions fo;
  fo.base_url = base.value();
  fo.down_after = 1;  // an unreachable upstream fails the rest at once
  cache::Fetcher fetcher(fo, client, *wc->index, *wc->blobs);
  cache::PrefetchOptions po;
  po.recursive = req.recursive;
  po.jobs = req.jobs;
  po.max_rate = req.max_rate;
  auto sum = cache::prefetch(
      fetcher, req.paths, po,
      [&bar](const cache::PrefetchProgress& p) {
        bar.draw({p.files, p.failures, p.bytes, p.queued});
      },
      nullptr);
  bar.end();
  fetcher.shutdown();
  if (fetcher.stats().write_failures.load() == 0) {
    if (auto r = wc->index->set_clean_mark(); !r) {
      spdlog::warn("the next start will run the full recovery: {}", r.error().message);
    }
  }
  if (sum.files == 0 && sum.failures > 0 && !fetcher.upstream_up()) {
    return fail("upstream " + base.value() + " unreachable: nothing fetched");
  }
  return report_prefetch(control::prefetch_reply(sum), via, json);
}

}  // namespace

// Plain: one path a line. `long_format`: a table. --json: every field.
// The pins that decide the "pinned" column: those given with --pin, else
// the running mount's.
int cmd_ls(const std::string& dir, const std::string& socket, const std::string& path,
           bool long_format, const std::vector<std::string>& pin_args, bool json) {
  auto index = open_index(dir);
  if (!index) return fail(index.error().message);
  std::vector<std::string> pins;
  if (json || long_format) pins = pin_args.empty() ? mount_pins(socket) : pin_args;
  std::string prefix;
  if (!path.empty()) {
    auto p = http::normalize_rel_path(path);
    if (!p) return fail("bad path '" + path + "': " + p.error().message);
    prefix = p.value();
  }
  const Listing l = list(**index, prefix);
  if (json) {
    print_json(ls_json(**index, l, pins));
  } else if (long_format) {
    print_ls_table(**index, l, pins);
  } else {
    for (const auto& [p, e] : l.entries) std::printf("%s\n", p.c_str());
  }
  return 0;
}

int cmd_status(const std::string& dir, const std::string& socket, bool json) {
  auto index = open_index(dir);
  if (!index) return fail(index.error().message);
  // The live mount's view, when one answers.
  const LiveStatus live = mount_status(socket);
  // The index's running totals: no walk of the blob table. Rewritten
  // outputs are internal entries; only they are walked, to leave them out.
  auto st = (*index)->stats();
  st.paths -= std::min<uint64_t>(st.paths, (*index)->list_paths(cache::kDerivedPrefix).size());
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
                          {"schema_version", cache::Index::kSchemaVersion},
                          {"mounted", !live.reply.is_null()}};
    if (!live.reply.is_null()) out["mount"] = live.reply;
    if (!live.error.empty()) out["mount_error"] = live.error;
    print_json(out);
    return 0;
  }
  if (!live.reply.is_null()) {
    std::fputs(live_status_text(live.reply).c_str(), stdout);
  } else if (!live.error.empty()) {
    std::printf("mount:      control socket %s: %s\n", socket.c_str(), live.error.c_str());
  } else {
    std::printf("mount:      not mounted\n");
  }
  std::printf(
      "cache_dir:  %s\npaths:      %llu\nblobs:      %llu\nbytes:      %llu\n"
      "temp files: %zu\n",
      dir.c_str(), ull(st.paths), ull(st.blobs), ull(st.blob_bytes), tmp_files);
  return 0;
}

// Exit codes: 0 consistent (with --repair: consistent after the repair), 1
// problems found (left), 2 usage or I/O error (a mounted cache for --repair).
int cmd_verify(const std::string& dir, bool do_repair, bool json) {
  if (do_repair) {
    auto c = open_for_write(dir);
    if (!c) return fail(c.error().message);
    auto r = cache::repair(*c->index, *c->blobs);
    if (!r) return fail("repair failed: " + r.error().message);
    auto problems = cache::verify(*c->index, *c->blobs);
    if (json) {
      print_json({{"corrupt_blobs_removed", r->corrupt_blobs_removed},
                  {"entries_dropped", r->entries_dropped},
                  {"orphan_blobs_removed", r->orphan_blobs_removed},
                  {"temp_files_removed", r->temp_files_removed},
                  {"actions", r->actions},
                  {"consistent", problems.empty()},
                  {"problems", problems}});
    } else {
      for (const auto& a : r->actions) std::printf("%s\n", a.c_str());
      for (const auto& p : problems) std::printf("%s\n", p.c_str());
      std::printf("%s\n", !problems.empty()    ? "INCONSISTENT after repair"
                          : r->actions.empty() ? "consistent, nothing to repair"
                                               : "repaired, consistent");
    }
    return problems.empty() ? 0 : 1;
  }
  auto index = open_index(dir);
  if (!index) return fail(index.error().message);
  auto blobs = cache::BlobStore::open(dir);
  if (!blobs) return fail(blobs.error().message);
  auto problems = cache::verify(**index, **blobs);
  if (json) {
    print_json({{"consistent", problems.empty()}, {"problems", problems}});
  } else {
    for (const auto& p : problems) std::printf("%s\n", p.c_str());
    std::printf("%s\n", problems.empty() ? "consistent" : "INCONSISTENT");
  }
  return problems.empty() ? 0 : 1;
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
    print_json(summary_json(*r));
  } else {
    std::printf("%s\n", summary_line("exported", *r, "", " to " + file).c_str());
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
    print_json(summary_json(*r));
  } else {
    const std::string present = "; " + std::to_string(r->blobs_present) + " blobs already cached";
    std::printf("%s\n", summary_line("imported", *r, present, "").c_str());
  }
  return 0;
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
    print_json({{"path", p.value()},
                {"size", e->size},
                {"sha256", e->sha256},
                {"etag", e->etag},
                {"last_modified", e->last_modified},
                {"validated_at", e->validated_at},
                {"last_access", blob ? blob->last_access : 0},
                {"blob_refs", blob ? blob->refs : 0}});
    return 0;
  }
  std::printf(
      "path:          %s\nsize:          %llu\nsha256:        %s\netag:          %s\n"
      "last-modified: %s\nvalidated:     %s\naccessed:      %s\nshared by:     %u path(s)\n",
      p.value().c_str(), ull(e->size), e->sha256.c_str(), e->etag.empty() ? "-" : e->etag.c_str(),
      iso_time(e->last_modified).c_str(), iso_time(e->validated_at).c_str(),
      iso_time(blob ? blob->last_access : 0).c_str(), blob ? blob->refs : 0u);
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
  if (paths.empty() && !all && older_than.empty()) {
    return fail("evict: name PATHs, --all or --older-than");
  }
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
    if (cache::is_internal_key(p)) continue;  // internal: follows its source
    bool hit = all;
    for (const auto& pre : prefixes) {
      if (p == pre ||
          (p.size() > pre.size() && p.compare(0, pre.size(), pre) == 0 && p[pre.size()] == '/')) {
        hit = true;
      }
    }
    if (!hit && cutoff > 0) {
      auto b = ix.get_blob(e.sha256);
      hit = !b || b->last_access < cutoff;
    }
    if (hit) victims.push_back(p);
  }
  auto removed = cache::remove_paths(ix, *c->blobs, victims);
  if (!removed) return fail(removed.error().message);
  if (json) {
    print_json({{"entries", victims.size()}, {"blobs", removed->blobs}, {"bytes", removed->bytes}});
  } else {
    std::printf("evicted %zu entries (%llu blobs, %llu bytes freed)\n", victims.size(),
                ull(removed->blobs), ull(removed->bytes));
  }
  return 0;
}

// Enforces the limit now: through the mount when one answers on the control
// socket (its max_cache_size and pins), else on the unmounted cache what a
// mount's eviction would do (cache/evictor.h), with the same default when no
// size is given.
int cmd_gc(const std::string& dir, const std::string& socket, const std::string& size_text,
           const std::vector<std::string>& pins, bool json) {
  if (auto rc = gc_through_mount(socket, !size_text.empty() || !pins.empty(), json)) return *rc;
  std::optional<uint64_t> configured;
  if (!size_text.empty()) {
    auto s = cache::parse_size(size_text);
    if (!s) return fail("--max-cache-size: " + s.error().message);
    configured = s.value();
  }
  if (!std::filesystem::exists(dir + "/index")) {
    return fail("no cache at " + dir + " (no index/ directory)");
  }
  auto c = open_for_write(dir);
  if (!c) return fail("gc: " + c.error().message);
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
  nlohmann::json out = control::gc_reply(eo.limit, r.value());
  out["bytes_before"] = before.blob_bytes;
  out["objects_before"] = before.blobs;
  print_gc(out, json);
  return 0;
}

bool HttpFlags::given() const {
  return !proxy.empty() || !ca_file.empty() || !client_cert.empty() || !client_key.empty() ||
         insecure || connect_timeout >= 0 || request_timeout >= 0;
}

// Exit codes of prefetch: 0 every file fetched, 1 some failed, 2 usage,
// upstream unknown or the mount unreachable.
int cmd_prefetch(const std::string& dir, const std::string& socket, const PrefetchArgs& args,
                 bool json) {
  auto paths = gather_paths(args.paths, args.from);
  if (!paths) return fail(paths.error().message);
  control::PrefetchRequest req;
  req.paths = std::move(paths).value();
  if (req.paths.empty()) req.paths.push_back("");
  if (args.jobs < 1 || args.jobs > 64) return fail("--jobs must be 1..64");
  req.jobs = args.jobs;
  req.recursive = args.recursive;
  if (!args.max_rate.empty()) {
    auto r = cache::parse_rate(args.max_rate);
    if (!r) return fail(r.error().message);
    req.max_rate = *r;
  }
  const ProgressBar bar(!json && ::isatty(STDOUT_FILENO));
  const std::string unmounted_only = !args.url.empty()   ? "--url is"
                                     : args.http.given() ? "the HTTP options (--proxy, ...) are"
                                                         : "";
  if (auto rc = prefetch_through_mount(socket, req, unmounted_only, bar, json)) return *rc;
  return prefetch_directly(dir, req, args, bar, json);
}

}  // namespace netbootfs::fs::ctl
