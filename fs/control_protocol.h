// control_protocol: the messages netbootfsctl and the mount exchange over the
// control socket (fs/control_socket.h carries them), named once for both sides.
//
// Contract
// - Framing: one JSON object per line. A request is {"cmd": NAME, ...}; the
//   mount answers with zero or more event lines ({"event": "progress", ...}
//   during a prefetch) and then one final line holding "ok": true with the
//   reply's fields, or false with "error".
// - These names are the wire format. netbootfsctl binaries of other releases
//   and the e2e tests speak it: a name is added, never renamed or removed.
//   Objects are nlohmann::json (keys sorted), so a message's bytes depend only
//   on its fields, not on the order they are set in.
// - The mount's side: parse_*_request() check a request. A path goes through
//   normalize_request_path() (EINVAL for '..' or a NUL byte); a field of the
//   wrong JSON type throws nlohmann::json::type_error, which ControlSocket
//   answers as "bad request: ...". The *_reply() builders make the final
//   line's fields (ControlSocket adds "ok").
// - The client's side: readers take a missing field as 0 (an older mount may
//   not send it).
// - Pure: no I/O, no state; safe from any thread.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/evictor.h"
#include "cache/prefetch.h"
#include "cache/util/result.h"

namespace netbootfs::fs {

// A path from a request as a relative path inside the tree: leading '/'
// stripped, "." and empty components dropped; "", "/" and "." are the root
// (""). EINVAL for '..' components and NUL bytes.
Result<std::string> normalize_request_path(std::string_view path);

// Where the mount listens and netbootfsctl connects unless told otherwise
// (control_socket= and --socket): CACHE_DIR/control.sock.
std::string default_control_socket(const std::string& cache_dir);

namespace control {

// Framing (every request and reply).
inline constexpr char kCmd[] = "cmd";
inline constexpr char kOk[] = "ok";
inline constexpr char kError[] = "error";
inline constexpr char kEvent[] = "event";

// Commands.
inline constexpr char kStatus[] = "status";
inline constexpr char kGc[] = "gc";
inline constexpr char kInvalidate[] = "invalidate";
inline constexpr char kPrefetch[] = "prefetch";

// Events.
inline constexpr char kProgress[] = "progress";

// Request fields.
inline constexpr char kPaths[] = "paths";
inline constexpr char kAll[] = "all";
inline constexpr char kRecursive[] = "recursive";
inline constexpr char kJobs[] = "jobs";
inline constexpr char kMaxRate[] = "max_rate";

// Reply fields of status.
inline constexpr char kMountpoint[] = "mountpoint";
inline constexpr char kUrl[] = "url";
inline constexpr char kCacheDir[] = "cache_dir";
inline constexpr char kPid[] = "pid";
inline constexpr char kUptimeSeconds[] = "uptime_seconds";
inline constexpr char kUpstreamUp[] = "upstream_up";
inline constexpr char kHits[] = "hits";
inline constexpr char kMisses[] = "misses";
inline constexpr char kHitRatio[] = "hit_ratio";
inline constexpr char kDownloads[] = "downloads";
inline constexpr char kDownloadBytes[] = "download_bytes";
inline constexpr char kStaleServed[] = "stale_served";
inline constexpr char kServedBytes[] = "served_bytes";
inline constexpr char kCacheLimit[] = "cache_limit";
inline constexpr char kPins[] = "pins";
inline constexpr char kEvictions[] = "evictions";
inline constexpr char kVersion[] = "version";

// Reply fields of gc.
inline constexpr char kLimit[] = "limit";
inline constexpr char kEvictedBlobs[] = "evicted_blobs";
inline constexpr char kEvictedBytes[] = "evicted_bytes";
inline constexpr char kRemovedEntries[] = "removed_entries";
inline constexpr char kObjects[] = "objects";

// Reply fields of invalidate.
inline constexpr char kNegatives[] = "negatives";
inline constexpr char kListings[] = "listings";
inline constexpr char kKernelNotifications[] = "kernel_notifications";

// Fields of prefetch's progress events and reply ("files" and "bytes" also
// in other replies); "failed" is a list of {"path", "error"}.
inline constexpr char kFiles[] = "files";
inline constexpr char kFailures[] = "failures";
inline constexpr char kBytes[] = "bytes";
inline constexpr char kQueued[] = "queued";
inline constexpr char kPath[] = "path";
inline constexpr char kSeconds[] = "seconds";
inline constexpr char kFailed[] = "failed";
inline constexpr char kCancelled[] = "cancelled";

// --- Requests ----------------------------------------------------------------

nlohmann::json status_request();
nlohmann::json gc_request();

struct InvalidateRequest {
  bool all = false;  // the whole tree; paths may then be empty
  std::vector<std::string> paths;
};
nlohmann::json make_request(const InvalidateRequest& r);
// EINVAL: no paths without "all", or a path that is not an array of strings
// or leaves the tree.
Result<InvalidateRequest> parse_invalidate_request(const nlohmann::json& req);

struct PrefetchRequest {
  std::vector<std::string> paths;  // "" is the root
  bool recursive = false;
  int jobs = 4;
  uint64_t max_rate = 0;  // bytes per second; 0: unlimited
};
nlohmann::json make_request(const PrefetchRequest& r);
// No paths is the root. EINVAL: bad paths, jobs outside 1..64.
Result<PrefetchRequest> parse_prefetch_request(const nlohmann::json& req);

// --- Replies (the final line's fields, without "ok") --------------------------

struct StatusReply {
  std::string mountpoint, url, cache_dir;
  int64_t pid = 0;
  double uptime_seconds = 0;
  bool upstream_up = false;
  uint64_t hits = 0, misses = 0;
  uint64_t downloads = 0, download_bytes = 0, stale_served = 0, served_bytes = 0;
  uint64_t cache_limit = 0;
  std::vector<std::string> pins;
  uint64_t evictions = 0;
  std::string version;
};
// hit_ratio is derived: hits / (hits + misses), 0 before any request.
nlohmann::json status_reply(const StatusReply& s);
// The pins of a status reply; nullopt when it has none (an older mount).
std::optional<std::vector<std::string>> status_pins(const nlohmann::json& reply);

// Also what netbootfsctl prints for a gc of an unmounted cache (with more).
nlohmann::json gc_reply(uint64_t limit, const cache::EvictReport& r);

struct InvalidateReply {
  uint64_t files = 0, negatives = 0, listings = 0, kernel_notifications = 0;
};
nlohmann::json invalidate_reply(const InvalidateReply& r);

nlohmann::json prefetch_progress_event(const cache::PrefetchProgress& p);
// Also what netbootfsctl prints for a prefetch into an unmounted cache.
nlohmann::json prefetch_reply(const cache::PrefetchSummary& s);

// The counters of a progress event or of prefetch's reply (queued: 0 there).
struct PrefetchCounts {
  uint64_t files = 0, failures = 0, bytes = 0, queued = 0;
};
PrefetchCounts prefetch_counts(const nlohmann::json& line);

// An unsigned field of a reply, 0 when absent.
uint64_t count(const nlohmann::json& reply, const char* field);

}  // namespace control
}  // namespace netbootfs::fs
