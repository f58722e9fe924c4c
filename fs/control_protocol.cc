#include "fs/control_protocol.h"

#include <cerrno>

namespace netbootfs::fs {

Result<std::string> normalize_request_path(std::string_view path) {
  if (path.find('\0') != std::string_view::npos) {
    return Error{EINVAL, "a path must not contain a NUL byte"};
  }
  std::string out;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    const std::string_view part = path.substr(i, j - i);
    if (part == "..") {
      return Error{EINVAL, "'" + std::string(path) + "': '..' would leave the tree"};
    }
    if (!part.empty() && part != ".") {
      if (!out.empty()) out += '/';
      out += part;
    }
    i = j + 1;
  }
  return out;
}

std::string default_control_socket(const std::string& cache_dir) {
  return cache_dir + "/control.sock";
}

namespace control {
namespace {

nlohmann::json command(const char* name) { return {{kCmd, name}}; }

// The request's "paths", each normalised; EINVAL when none and !allow_empty.
Result<std::vector<std::string>> request_paths(const nlohmann::json& req, bool allow_empty) {
  std::vector<std::string> out;
  if (req.contains(kPaths)) {
    const auto& paths = req[kPaths];
    if (!paths.is_array()) return Error{EINVAL, "\"paths\" must be an array of strings"};
    for (const auto& p : paths) {
      if (!p.is_string()) return Error{EINVAL, "\"paths\" must be an array of strings"};
      auto n = normalize_request_path(p.get<std::string>());
      if (!n) return n.error();
      out.push_back(std::move(n).value());
    }
  }
  if (out.empty() && !allow_empty) return Error{EINVAL, "no paths given"};
  return out;
}

}  // namespace

nlohmann::json status_request() { return command(kStatus); }
nlohmann::json gc_request() { return command(kGc); }

nlohmann::json make_request(const InvalidateRequest& r) {
  nlohmann::json j = command(kInvalidate);
  j[kAll] = r.all;
  j[kPaths] = r.paths;
  return j;
}

Result<InvalidateRequest> parse_invalidate_request(const nlohmann::json& req) {
  InvalidateRequest r;
  r.all = req.value(kAll, false);
  auto paths = request_paths(req, r.all);
  if (!paths) return paths.error();
  r.paths = std::move(paths).value();
  return r;
}

nlohmann::json make_request(const PrefetchRequest& r) {
  nlohmann::json j = command(kPrefetch);
  j[kPaths] = r.paths;
  j[kRecursive] = r.recursive;
  j[kJobs] = r.jobs;
  j[kMaxRate] = r.max_rate;
  return j;
}

Result<PrefetchRequest> parse_prefetch_request(const nlohmann::json& req) {
  PrefetchRequest r;
  auto paths = request_paths(req, true);
  if (!paths) return paths.error();
  r.paths = std::move(paths).value();
  if (r.paths.empty()) r.paths.push_back("");
  r.recursive = req.value(kRecursive, false);
  r.jobs = req.value(kJobs, 4);
  if (r.jobs < 1 || r.jobs > 64) return Error{EINVAL, "jobs must be 1..64"};
  r.max_rate = req.value(kMaxRate, uint64_t{0});
  return r;
}

nlohmann::json status_reply(const StatusReply& s) {
  const uint64_t asked = s.hits + s.misses;
  return {
      {kMountpoint, s.mountpoint},
      {kUrl, s.url},
      {kCacheDir, s.cache_dir},
      {kPid, s.pid},
      {kUptimeSeconds, s.uptime_seconds},
      {kUpstreamUp, s.upstream_up},
      {kHits, s.hits},
      {kMisses, s.misses},
      {kHitRatio, asked ? static_cast<double>(s.hits) / static_cast<double>(asked) : 0.0},
      {kDownloads, s.downloads},
      {kDownloadBytes, s.download_bytes},
      {kStaleServed, s.stale_served},
      {kServedBytes, s.served_bytes},
      {kCacheLimit, s.cache_limit},
      {kPins, s.pins},
      {kEvictions, s.evictions},
      {kVersion, s.version},
  };
}

std::optional<std::vector<std::string>> status_pins(const nlohmann::json& reply) {
  if (!reply.contains(kPins)) return std::nullopt;
  return reply[kPins].get<std::vector<std::string>>();
}

nlohmann::json gc_reply(uint64_t limit, const cache::EvictReport& r) {
  return {{kLimit, limit},          {kEvictedBlobs, r.blobs},
          {kEvictedBytes, r.bytes}, {kRemovedEntries, r.entries},
          {kBytes, r.cache_bytes},  {kObjects, r.cache_objects}};
}

nlohmann::json invalidate_reply(const InvalidateReply& r) {
  return {{kFiles, r.files},
          {kNegatives, r.negatives},
          {kListings, r.listings},
          {kKernelNotifications, r.kernel_notifications}};
}

nlohmann::json prefetch_progress_event(const cache::PrefetchProgress& p) {
  return {{kEvent, kProgress}, {kFiles, p.files},   {kFailures, p.failures},
          {kBytes, p.bytes},   {kQueued, p.queued}, {kPath, p.path}};
}

nlohmann::json prefetch_reply(const cache::PrefetchSummary& s) {
  nlohmann::json failed = nlohmann::json::array();
  for (const auto& [path, why] : s.failed) failed.push_back({{kPath, path}, {kError, why}});
  return {{kFiles, s.files},     {kBytes, s.bytes}, {kFailures, s.failures},
          {kSeconds, s.seconds}, {kFailed, failed}, {kCancelled, s.cancelled}};
}

PrefetchCounts prefetch_counts(const nlohmann::json& line) {
  return {count(line, kFiles), count(line, kFailures), count(line, kBytes), count(line, kQueued)};
}

uint64_t count(const nlohmann::json& reply, const char* field) {
  return reply.value(field, uint64_t{0});
}

}  // namespace control
}  // namespace netbootfs::fs
