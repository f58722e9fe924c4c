#include "cache/util/crash_point.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>

#include "cache/util/log.h"

namespace netbootfs::cache {
namespace {

constexpr std::string_view kNames[] = {"", "temp_synced", "blob_renamed", "index_before_commit",
                                       "index_after_commit"};
constexpr int kCount = static_cast<int>(sizeof kNames / sizeof kNames[0]);

std::atomic<uint64_t> g_hits{0};
std::atomic<uint64_t> g_nth{1};

// Parsed before main(): no thread exists yet, and the daemon's hot paths then
// only ever load the armed point.
struct FromEnv {
  const char* raw = nullptr;
  std::optional<CrashSpec> spec;
  FromEnv() {
    raw = std::getenv("NETBOOTFS_CRASH_AT");
    if (!raw) return;
    spec = parse_crash_spec(raw);
    if (spec) arm_crash_point(*spec);
  }
};
const FromEnv& from_env() {
  static const FromEnv e;
  return e;
}
// Forces the parse at static-initialisation time.
[[maybe_unused]] const FromEnv& g_from_env = from_env();

}  // namespace

namespace detail {
std::atomic<int> g_crash_armed{0};

void crash_point_reached(CrashPoint p) {
  const uint64_t n = g_hits.fetch_add(1, std::memory_order_relaxed) + 1;
  if (n != g_nth.load(std::memory_order_relaxed)) return;
  // Straight to the fd: the logger may buffer, and nothing may run after us.
  const std::string_view name = crash_point_name(p);
  char line[128];
  size_t len = 0;
  for (std::string_view part : {std::string_view("netbootfs: crash point "), name,
                                std::string_view(" reached, SIGKILL\n")}) {
    for (char c : part) {
      if (len < sizeof line) line[len++] = c;
    }
  }
  (void)!::write(STDERR_FILENO, line, len);
  ::kill(::getpid(), SIGKILL);
  for (;;) ::pause();  // SIGKILL cannot be caught: never returns
}
}  // namespace detail

std::string_view crash_point_name(CrashPoint p) {
  const int i = static_cast<int>(p);
  return i > 0 && i < kCount ? kNames[i] : std::string_view("none");
}

std::optional<CrashSpec> parse_crash_spec(std::string_view spec) {
  CrashSpec out;
  std::string_view name = spec;
  if (const size_t colon = spec.find(':'); colon != std::string_view::npos) {
    name = spec.substr(0, colon);
    const std::string_view num = spec.substr(colon + 1);
    if (num.empty() || num.size() > 18) return std::nullopt;
    uint64_t n = 0;
    for (char c : num) {
      if (c < '0' || c > '9') return std::nullopt;
      n = n * 10 + static_cast<uint64_t>(c - '0');
    }
    if (n == 0) return std::nullopt;
    out.nth = n;
  }
  for (int i = 1; i < kCount; ++i) {
    if (name == kNames[i]) {
      out.point = static_cast<CrashPoint>(i);
      return out;
    }
  }
  return std::nullopt;
}

void crash_point_warn_if_armed() {
  static std::once_flag once;
  std::call_once(once, [] {
    const FromEnv& e = from_env();
    if (!e.raw) return;
    auto log = logger("cache");
    if (!e.spec) {
      log->warn("NETBOOTFS_CRASH_AT='{}' is not <point>[:<n>] with a known point; ignored", e.raw);
      return;
    }
    log->warn("NETBOOTFS_CRASH_AT: this process kills itself (SIGKILL) at hit {} of crash point {}",
              e.spec->nth, crash_point_name(e.spec->point));
  });
}

void arm_crash_point(CrashSpec spec) {
  detail::g_crash_armed.store(0, std::memory_order_relaxed);
  g_hits.store(0, std::memory_order_relaxed);
  g_nth.store(spec.nth, std::memory_order_relaxed);
  detail::g_crash_armed.store(static_cast<int>(spec.point), std::memory_order_relaxed);
}

uint64_t crash_point_hits() { return g_hits.load(std::memory_order_relaxed); }

}  // namespace netbootfs::cache
