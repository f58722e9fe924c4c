// netbootfsctl: inspects a netbootfs cache directory, mounted or not.
//
// The index is opened read-only: LMDB lets the mount and this tool use the
// same environment at the same time, so nothing here disturbs a live mount.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>
#include <set>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <cstring>
#include <sys/statvfs.h>
#include <string>

#include "cache/blob_store.h"
#include "cache/bundle.h"
#include "cache/cache_lock.h"
#include "cache/derived_keys.h"
#include "cache/fetcher.h"
#include "cache/http/client.h"
#include "cache/http/settings_file.h"
#include "cache/prefetch.h"
#include "cache/evictor.h"
#include "cache/http/url.h"
#include "cache/index.h"
#include "cache/maintenance.h"
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

// --- The mount's control socket (fs/control_socket.h) -------------------------

struct Control {
  UniqueFd fd;
  std::string buf;
};

// ENOENT/ECONNREFUSED when no mount listens there (not mounted, or a
// leftover of a crashed one).
Result<Control> control_connect(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof(a.sun_path)) return Error{ENAMETOOLONG, "socket path too long"};
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Error{errno, std::strerror(errno)};
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    return Error{errno, path + ": " + std::strerror(errno)};
  }
  return Control{std::move(fd), {}};
}

// Sends one request; `on_event` sees the lines before the final one, which
// is returned (ok false: the mount's error message in "error").
Result<nlohmann::json> control_call(Control& c, const nlohmann::json& req,
                                    const std::function<void(const nlohmann::json&)>& on_event,
                                    int timeout_ms = 30000) {
  const std::string line = req.dump() + "\n";
  if (::send(c.fd.get(), line.data(), line.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(line.size())) {
    return Error{errno, std::string("control socket: ") + std::strerror(errno)};
  }
  char chunk[4096];
  for (;;) {
    for (size_t nl; (nl = c.buf.find('\n')) != std::string::npos;) {
      auto j = nlohmann::json::parse(c.buf.substr(0, nl), nullptr, false);
      c.buf.erase(0, nl + 1);
      if (j.is_discarded() || !j.is_object()) return Error{EPROTO, "bad reply from the mount"};
      if (j.contains("ok")) return j;
      if (on_event) on_event(j);
    }
    pollfd p{c.fd.get(), POLLIN, 0};
    const int n = ::poll(&p, 1, timeout_ms);
    if (n == 0) return Error{ETIMEDOUT, "the mount did not answer"};
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error{errno, std::strerror(errno)};
    }
    const ssize_t got = ::recv(c.fd.get(), chunk, sizeof chunk, 0);
    if (got <= 0) return Error{EPIPE, "the mount closed the control connection"};
    c.buf.append(chunk, static_cast<size_t>(got));
  }
}

bool not_listening(const Error& e) { return e.code == ENOENT || e.code == ECONNREFUSED; }

// "VERB N entries (B blobs, X bytes<inside>)<after>"
void print_summary(const char* verb, const cache::BundleSummary& r, const std::string& inside,
                   const std::string& after) {
  std::printf("%s %llu entries (%llu blobs, %llu bytes%s)%s\n", verb,
              static_cast<unsigned long long>(r.entries), static_cast<unsigned long long>(r.blobs),
              static_cast<unsigned long long>(r.bytes), inside.c_str(), after.c_str());
}

// Plain: one path a line. `long_format`: a table. --json: every field.
// The pins that decide the "pinned" column: the running mount's (asked
// through its control socket) when it answers, else those given with --pin.
std::vector<std::string> effective_pins(const std::string& socket,
                                        const std::vector<std::string>& given) {
  if (!given.empty()) return given;
  auto c = control_connect(socket);
  if (!c) return {};
  auto r = control_call(*c, nlohmann::json{{"cmd", "status"}}, nullptr);
  if (!r || !r->value("ok", false) || !r->contains("pins")) return {};
  return (*r)["pins"].get<std::vector<std::string>>();
}

int cmd_ls(const std::string& dir, const std::string& socket, const std::string& path,
           bool long_format, const std::vector<std::string>& pin_args, bool json) {
  auto index = open_index(dir);
  if (!index) return fail(index.error().message);
  const std::vector<std::string> pins =
      json || long_format ? effective_pins(socket, pin_args) : std::vector<std::string>{};
  std::string prefix;
  if (!path.empty()) {
    auto p = http::normalize_rel_path(path);
    if (!p) return fail("bad path '" + path + "': " + p.error().message);
    prefix = p.value();
  }
  auto entries = (*index)->list_paths(prefix);
  // Internal entries (rewritten outputs, cache/derived_keys.h) are not paths
  // of the tree; they say which blobs have a rewritten output.
  std::set<std::string> rewritten;
  for (const auto& [key, e] : (*index)->list_paths(cache::kDerivedPrefix)) {
    if (auto source = cache::derived_source(key)) rewritten.insert(*source);
  }
  entries.erase(std::remove_if(entries.begin(), entries.end(),
                               [](const auto& e) { return cache::is_internal_key(e.first); }),
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
                     {"last_access", blob ? blob->last_access : 0},
                     {"shared_by", blob ? blob->refs : 0},
                     {"rewritten", rewritten.count(e.sha256) > 0},
                     {"pinned", cache::matches_pin(pins, p)}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (!long_format) {
    for (const auto& [p, e] : entries) std::printf("%s\n", p.c_str());
    return 0;
  }
  std::printf("%-40s %12s %-12s %-24s %-20s %-20s %-9s %s\n", "PATH", "SIZE", "SHA256", "ETAG",
              "VALIDATED", "ACCESSED", "REWRITTEN", "PINNED");
  for (const auto& [p, e] : entries) {
    auto blob = (*index)->get_blob(e.sha256);
    std::printf("%-40s %12llu %.12s %-24s %-20s %-20s %-9s %s\n", p.c_str(),
                static_cast<unsigned long long>(e.size), e.sha256.c_str(),
                e.etag.empty() ? "-" : e.etag.c_str(), iso_time(e.validated_at).c_str(),
                iso_time(blob ? blob->last_access : 0).c_str(),
                rewritten.count(e.sha256) ? "yes" : "no",
                cache::matches_pin(pins, p) ? "yes" : "no");
  }
  return 0;
}

int cmd_status(const std::string& dir, const std::string& socket, bool json) {
  auto index = open_index(dir);
  if (!index) return fail(index.error().message);
  // The live mount's view, when one answers.
  nlohmann::json live;
  std::string live_error;
  if (auto c = control_connect(socket); c) {
    auto r = control_call(*c, {{"cmd", "status"}}, nullptr, 5000);
    if (r && r->value("ok", false)) {
      live = std::move(r).value();
      live.erase("ok");
    } else {
      live_error = r ? r->value("error", "?") : r.error().message;
    }
  } else if (!not_listening(c.error())) {
    live_error = c.error().message;
  }
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
                          {"mounted", !live.is_null()}};
    if (!live.is_null()) out["mount"] = live;
    if (!live_error.empty()) out["mount_error"] = live_error;
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (!live.is_null()) {
    std::printf("mount:      live at %s, pid %lld, up %.0f s\n"
                "upstream:   %s (%s)\n"
                "hits:       %llu\nmisses:     %llu\nhit ratio:  %.3f\n"
                "downloads:  %llu (%llu bytes)\n",
                live.value("mountpoint", "?").c_str(),
                static_cast<long long>(live.value("pid", int64_t{0})),
                live.value("uptime_seconds", 0.0), live.value("url", "?").c_str(),
                live.value("upstream_up", false) ? "up" : "down",
                static_cast<unsigned long long>(live.value("hits", uint64_t{0})),
                static_cast<unsigned long long>(live.value("misses", uint64_t{0})),
                live.value("hit_ratio", 0.0),
                static_cast<unsigned long long>(live.value("downloads", uint64_t{0})),
                static_cast<unsigned long long>(live.value("download_bytes", uint64_t{0})));
    if (live.contains("cache_limit")) {
      std::printf("limit:      %s (%llu evictions)\n",
                  cache::format_size(live.value("cache_limit", uint64_t{0})).c_str(),
                  static_cast<unsigned long long>(live.value("evictions", uint64_t{0})));
    }
  } else if (!live_error.empty()) {
    std::printf("mount:      control socket %s: %s\n", socket.c_str(), live_error.c_str());
  } else {
    std::printf("mount:      not mounted\n");
  }
  std::printf("cache_dir:  %s\npaths:      %llu\nblobs:      %llu\nbytes:      %llu\n"
              "temp files: %zu\n",
              dir.c_str(), static_cast<unsigned long long>(st.paths),
              static_cast<unsigned long long>(st.blobs),
              static_cast<unsigned long long>(st.blob_bytes), tmp_files);
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
      std::cout << nlohmann::json{{"corrupt_blobs_removed", r->corrupt_blobs_removed},
                                  {"entries_dropped", r->entries_dropped},
                                  {"orphan_blobs_removed", r->orphan_blobs_removed},
                                  {"temp_files_removed", r->temp_files_removed},
                                  {"actions", r->actions},
                                  {"consistent", problems.empty()},
                                  {"problems", problems}}
                       .dump(2)
                << "\n";
    } else {
      for (const auto& a : r->actions) std::printf("%s\n", a.c_str());
      for (const auto& p : problems) std::printf("%s\n", p.c_str());
      std::printf("%s\n", !problems.empty()      ? "INCONSISTENT after repair"
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
    if (cache::is_internal_key(p)) continue;  // internal: follows its source
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
  auto removed = cache::remove_paths(ix, *c->blobs, victims);
  if (!removed) return fail(removed.error().message);
  const uint64_t bytes = removed->bytes, removed_blobs = removed->blobs;
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

// Paths from the command line (and --from FILE, one per line, # comments).
Result<std::vector<std::string>> gather_paths(const std::vector<std::string>& args,
                                              const std::string& from) {
  std::vector<std::string> raw = args;
  if (!from.empty()) {
    std::ifstream in(from);
    if (!in) return Error{errno, "cannot read " + from + ": " + std::strerror(errno)};
    for (std::string line; std::getline(in, line);) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (line.empty() || line[0] == '#') continue;
      raw.push_back(line);
    }
  }
  std::vector<std::string> out;
  for (const auto& r : raw) {
    if (r.empty() || r == "/" || r == ".") {
      out.push_back("");
      continue;
    }
    auto p = http::normalize_rel_path(r);
    if (!p) return Error{EINVAL, "bad path '" + r + "': " + p.error().message};
    out.push_back(p.value());
  }
  return out;
}

// Exit codes of invalidate: 0 done, 2 usage, not mounted or the mount refused.
int cmd_invalidate(const std::string& socket, const std::vector<std::string>& args, bool all,
                   bool json) {
  if (args.empty() && !all) return fail("invalidate: name PATHs or --all");
  auto paths = gather_paths(args, "");
  if (!paths) return fail(paths.error().message);
  auto c = control_connect(socket);
  if (!c) {
    if (not_listening(c.error())) {
      return fail("not mounted (no mount answers on " + socket +
                  "): nothing to invalidate, the next mount revalidates anyway");
    }
    return fail(c.error().message);
  }
  nlohmann::json req = {{"cmd", "invalidate"}, {"all", all}, {"paths", paths.value()}};
  auto r = control_call(*c, req, nullptr);
  if (!r) return fail(r.error().message);
  if (!r->value("ok", false)) return fail("the mount refused: " + r->value("error", "?"));
  r->erase("ok");
  if (json) {
    std::cout << r->dump(2) << "\n";
  } else {
    std::printf("invalidated: %llu cached files will revalidate, %llu negative entries and %llu "
                "listings dropped (%llu kernel notifications)\n",
                static_cast<unsigned long long>(r->value("files", uint64_t{0})),
                static_cast<unsigned long long>(r->value("negatives", uint64_t{0})),
                static_cast<unsigned long long>(r->value("listings", uint64_t{0})),
                static_cast<unsigned long long>(r->value("kernel_notifications", uint64_t{0})));
  }
  return 0;
}

void print_gc(const nlohmann::json& r, bool json) {
  if (json) {
    std::cout << r.dump(2) << "\n";
    return;
  }
  std::printf("gc: limit %s; evicted %llu blobs (%llu bytes, %llu entries); cache holds %s in %llu blobs\n",
              cache::format_size(r.value("limit", uint64_t{0})).c_str(),
              static_cast<unsigned long long>(r.value("evicted_blobs", uint64_t{0})),
              static_cast<unsigned long long>(r.value("evicted_bytes", uint64_t{0})),
              static_cast<unsigned long long>(r.value("removed_entries", uint64_t{0})),
              cache::format_size(r.value("bytes", uint64_t{0})).c_str(),
              static_cast<unsigned long long>(r.value("objects", uint64_t{0})));
}

// A mounted cache: the mount enforces its own limit and pins now.
int gc_through_mount(Control& c, bool json) {
  auto r = control_call(c, nlohmann::json{{"cmd", "gc"}}, nullptr);
  if (!r) return fail(r.error().message);
  if (!r->value("ok", false)) return fail("the mount refused: " + r->value("error", "?"));
  r->erase("ok");
  print_gc(*r, json);
  return 0;
}

// Enforces the limit now: through the mount when one answers on the control
// socket (its max_cache_size and pins), else on the unmounted cache what a
// mount's eviction would do (cache/evictor.h), with the same default when no
// size is given.
int cmd_gc(const std::string& dir, const std::string& socket, const std::string& size_text,
           const std::vector<std::string>& pins, bool json) {
  if (auto c = control_connect(socket)) {
    if (!size_text.empty() || !pins.empty()) {
      return fail("gc: the cache is mounted and enforces its own max_cache_size and pins; "
                  "drop --max-cache-size/--pin (or unmount)");
    }
    return gc_through_mount(*c, json);
  } else if (!not_listening(c.error())) {
    return fail(c.error().message);
  }
  std::optional<uint64_t> configured;
  if (!size_text.empty()) {
    auto s = cache::parse_size(size_text);
    if (!s) return fail("--max-cache-size: " + s.error().message);
    configured = s.value();
  }
  if (!std::filesystem::exists(dir + "/index")) return fail("no cache at " + dir + " (no index/ directory)");
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
  print_gc(nlohmann::json{{"limit", eo.limit},
                          {"bytes_before", before.blob_bytes},
                          {"objects_before", before.blobs},
                          {"evicted_blobs", r->blobs},
                          {"evicted_bytes", r->bytes},
                          {"removed_entries", r->entries},
                          {"bytes", r->cache_bytes},
                          {"objects", r->cache_objects}},
           json);
  return 0;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    u++;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", b, units[u]);
  return buf;
}

void draw_progress(uint64_t files, uint64_t failures, uint64_t bytes, uint64_t queued,
                   double secs) {
  const uint64_t total = files + failures + queued;
  const int width = 30;
  const int filled = total ? static_cast<int>(width * (files + failures) / total) : 0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stdout, "\r[%s] %llu/%llu files, %s, %llu failed, %.0f s ", bar.c_str(),
               static_cast<unsigned long long>(files + failures),
               static_cast<unsigned long long>(total), human_bytes(static_cast<double>(bytes)).c_str(),
               static_cast<unsigned long long>(failures), secs);
  std::fflush(stdout);
}

// The HTTP flags of an unmounted prefetch: each given one wins over what the
// last mount recorded (http::kSettingsFileName in the cache directory).
struct HttpFlags {
  std::string proxy, ca_file, client_cert, client_key;
  bool insecure = false;
  double connect_timeout = -1, request_timeout = -1;  // seconds; < 0: not given
  bool given() const {
    return !proxy.empty() || !ca_file.empty() || !client_cert.empty() || !client_key.empty() ||
           insecure || connect_timeout >= 0 || request_timeout >= 0;
  }
};

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

// Exit codes of prefetch: 0 every file fetched, 1 some failed, 2 usage,
// upstream unknown or the mount unreachable.
int cmd_prefetch(const std::string& dir, const std::string& socket,
                 const std::vector<std::string>& args, const std::string& from, bool recursive,
                 int jobs, const std::string& rate_text, const std::string& url_override,
                 const HttpFlags& hf, bool json) {
  auto paths = gather_paths(args, from);
  if (!paths) return fail(paths.error().message);
  if (paths->empty()) paths->push_back("");
  if (jobs < 1 || jobs > 64) return fail("--jobs must be 1..64");
  uint64_t rate = 0;
  if (!rate_text.empty()) {
    auto r = cache::parse_rate(rate_text);
    if (!r) return fail(r.error().message);
    rate = *r;
  }
  const bool tty = !json && ::isatty(STDOUT_FILENO);
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  nlohmann::json result;
  std::string where;
  auto c = control_connect(socket);
  if (c && url_override.empty() && !hf.given()) {
    where = "through the mount";
    nlohmann::json req = {{"cmd", "prefetch"}, {"paths", paths.value()}, {"recursive", recursive},
                          {"jobs", jobs},       {"max_rate", rate}};
    auto r = control_call(
        *c, req,
        [&](const nlohmann::json& ev) {
          if (tty) {
            draw_progress(ev.value("files", uint64_t{0}), ev.value("failures", uint64_t{0}),
                          ev.value("bytes", uint64_t{0}), ev.value("queued", uint64_t{0}),
                          elapsed());
          }
        },
        24 * 3600 * 1000);
    if (!r || !r->value("ok", false)) {
      if (tty) std::printf("\n");
      if (!r) return fail(r.error().message);
      return fail("the mount refused: " + r->value("error", "?"));
    }
    result = std::move(r).value();
    result.erase("ok");
    if (tty) {
      // The mount sends at most ten progress lines a second, so the last
      // file's may have been skipped: the bar ends on the totals.
      draw_progress(result.value("files", uint64_t{0}), result.value("failures", uint64_t{0}),
                    result.value("bytes", uint64_t{0}), 0, elapsed());
      std::printf("\n");
    }
  } else {
    if (!c && !not_listening(c.error())) return fail(c.error().message);
    if (c) {
      // The mount fetches with its own settings: a flag here would be ignored.
      return fail(std::string(url_override.empty() ? "the HTTP options (--proxy, ...) are"
                                                   : "--url is") +
                  " for an unmounted cache; this one is mounted (" + socket + ")");
    }
    // Not mounted: fetch into the cache directly, as the mount would.
    std::string url = url_override;
    if (url.empty()) {
      std::ifstream in(dir + "/upstream");
      std::getline(in, url);
    }
    if (url.empty()) {
      return fail("not mounted and no upstream known for " + dir +
                  " (mount it once, or give --url URL)");
    }
    auto base = http::normalize_base_url(url);
    if (!base) return fail("bad --url '" + url + "': " + base.error().message);
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
    auto ho = unmounted_http_options(dir, hf);
    if (!ho) return fail(ho.error().message);
    where = "directly from " + base.value();
    if (!ho->proxy.empty()) where += " via proxy " + http::strip_userinfo(ho->proxy);
    if (ho->insecure) {
      spdlog::warn("TLS certificate verification is disabled ({})",
                   hf.insecure ? "--insecure" : "the last mount's insecure");
    }
    http::Client client(ho.value());
    cache::FetcherOptions fo;
    fo.base_url = base.value();
    fo.down_after = 1;  // an unreachable upstream fails the rest at once
    cache::Fetcher fetcher(fo, client, *wc->index, *wc->blobs);
    cache::PrefetchOptions po;
    po.recursive = recursive;
    po.jobs = jobs;
    po.max_rate = rate;
    auto sum = cache::prefetch(
        fetcher, paths.value(), po,
        [&](const cache::PrefetchProgress& p) {
          if (tty) draw_progress(p.files, p.failures, p.bytes, p.queued, elapsed());
        },
        nullptr);
    if (tty) std::printf("\n");
    fetcher.shutdown();
    if (fetcher.stats().write_failures.load() == 0) {
      if (auto r = wc->index->set_clean_mark(); !r) {
        spdlog::warn("the next start will run the full recovery: {}", r.error().message);
      }
    }
    nlohmann::json failed = nlohmann::json::array();
    for (const auto& [p, why] : sum.failed) failed.push_back({{"path", p}, {"error", why}});
    result = {{"files", sum.files},       {"bytes", sum.bytes},   {"failures", sum.failures},
              {"seconds", sum.seconds},   {"failed", failed},     {"cancelled", sum.cancelled}};
    if (sum.files == 0 && sum.failures > 0 && !fetcher.upstream_up()) {
      return fail("upstream " + base.value() + " unreachable: nothing fetched");
    }
  }
  const uint64_t failures = result.value("failures", uint64_t{0});
  if (json) {
    result["via"] = where;
    std::cout << result.dump(2) << "\n";
  } else {
    for (const auto& f : result.value("failed", nlohmann::json::array())) {
      std::fprintf(stderr, "netbootfsctl: %s: %s\n", f.value("path", "").c_str(),
                   f.value("error", "").c_str());
    }
    std::printf("prefetched %llu files (%s), %llu failed, in %.1f s, %s\n",
                static_cast<unsigned long long>(result.value("files", uint64_t{0})),
                human_bytes(static_cast<double>(result.value("bytes", uint64_t{0}))).c_str(),
                static_cast<unsigned long long>(failures), result.value("seconds", 0.0),
                where.c_str());
  }
  return failures ? 1 : 0;
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
               "Exit codes: 0 success, 1 an inconsistency was found (verify) or some files\n"
               "failed (prefetch), 2 usage or I/O error, not mounted (invalidate) or\n"
               "upstream unknown or unreachable (prefetch)."};
  std::string dir = "/var/cache/netbootfs";
  std::string socket;
  bool json = false;
  app.add_option("--cache-dir", dir, "cache directory")->capture_default_str();
  app.add_flag("--json", json, "machine-readable output");
  app.add_option("--socket", socket, "the mount's control socket (CACHE_DIR/control.sock)");
  app.require_subcommand(1);
  app.fallthrough();  // --json and --cache-dir also after the command

  std::string ls_path;
  bool ls_long = false;
  auto* ls = app.add_subcommand(
      "ls", "list cached paths; -l: size, sha256, etag, validated and accessed times, rewritten");
  ls->add_option("PATH", ls_path, "only entries at or below PATH");
  ls->add_flag("-l,--long", ls_long, "one table row per entry");
  std::vector<std::string> ls_pins;
  ls->add_option("--pin", ls_pins,
                 "the pin globs for the PINNED column (default: the running mount's)");
  auto* status = app.add_subcommand("status", "print cache totals");
  bool verify_repair = false;
  auto* verify = app.add_subcommand(
      "verify", "re-hash every blob and check index <-> blobs (exit 1 when a problem is found)");
  verify->add_flag("--repair", verify_repair,
                   "on an unmounted cache: drop entries whose blob is missing or corrupt, delete "
                   "corrupt and orphan blobs and temp files, rebuild refcounts");
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
      "gc", "evict least recently used blobs until the cache fits its limit (through the mount "
            "when mounted)");
  gc->add_option("--max-cache-size", gc_size,
                 "the limit (20G, 512M, bytes); default 80% of free space + what the cache holds");
  gc->add_option("--pin", gc_pins, "never evict paths matching GLOB (repeatable)");
  std::string import_file;
  auto* imp = app.add_subcommand(
      "import", "add a bundle's entries to the cache, all or nothing (the cache must not be mounted)");
  imp->add_option("FILE", import_file, "the bundle to read")->required();

  std::vector<std::string> inv_paths;
  bool inv_all = false;
  auto* inv = app.add_subcommand(
      "invalidate", "make the live mount ask upstream again for PATHs (at or below them) now");
  inv->add_option("PATH", inv_paths, "paths of the tree");
  inv->add_flag("--all", inv_all, "the whole tree");
  std::vector<std::string> pf_paths;
  bool pf_recursive = false;
  int pf_jobs = 4;
  std::string pf_from, pf_rate, pf_url;
  auto* pf = app.add_subcommand(
      "prefetch", "fetch PATHs (default: the root) into the cache, through the mount if mounted");
  pf->add_option("PATH", pf_paths, "files or directories of the tree");
  pf->add_flag("--recursive,-r", pf_recursive, "descend into subdirectories");
  pf->add_option("--from", pf_from, "read more paths from FILE (one a line)");
  pf->add_option("--jobs,-j", pf_jobs, "files in flight at once (1..64)")->capture_default_str();
  pf->add_option("--max-rate", pf_rate, "cap the prefetch's transfers (bytes/s, K/M/G suffixes)");
  pf->add_option("--url", pf_url, "upstream URL for an unmounted cache (default: the last mount's)");
  // Unmounted, the last mount's HTTP settings apply (recorded in the cache
  // directory); these override them one by one.
  HttpFlags pf_http;
  pf->add_option("--proxy", pf_http.proxy, "unmounted: HTTP proxy URL (default: the mount's proxy=)");
  pf->add_option("--ca-file", pf_http.ca_file, "unmounted: CA bundle (default: the mount's ca_file=)");
  pf->add_option("--client-cert", pf_http.client_cert,
                 "unmounted: PEM client certificate (default: the mount's client_cert=)");
  pf->add_option("--client-key", pf_http.client_key,
                 "unmounted: its key (default: the mount's client_key=)");
  pf->add_flag("--insecure", pf_http.insecure, "unmounted: do not verify TLS certificates");
  pf->add_option("--connect-timeout", pf_http.connect_timeout,
                 "unmounted: seconds (default: the mount's connect_timeout=, else 10)")
      ->check(CLI::NonNegativeNumber);
  pf->add_option("--request-timeout", pf_http.request_timeout,
                 "unmounted: seconds for listings (default: the mount's request_timeout=, else 30)")
      ->check(CLI::NonNegativeNumber);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (socket.empty()) socket = dir + "/control.sock";
  if (*ls) return cmd_ls(dir, socket, ls_path, ls_long, ls_pins, json);
  if (*status) return cmd_status(dir, socket, json);
  if (*inv) return cmd_invalidate(socket, inv_paths, inv_all, json);
  if (*pf) {
    return cmd_prefetch(dir, socket, pf_paths, pf_from, pf_recursive, pf_jobs, pf_rate, pf_url,
                        pf_http, json);
  }
  if (*verify) return cmd_verify(dir, verify_repair, json);
  if (*stat) return cmd_stat(dir, stat_path, json);
  if (*evict) return cmd_evict(dir, evict_paths, evict_all, evict_older, json);
  if (*exp) return cmd_export(dir, export_since, export_file, json);
  if (*imp) return cmd_import(dir, import_file, json);
  if (*gc) return cmd_gc(dir, socket, gc_size, gc_pins, json);
  return 2;
}
