// Named crash points: test hooks that kill the daemon at a chosen instant.
//
// Contract
// - NETBOOTFS_CRASH_AT=<name>[:<n>] in the environment arms one point: the
//   n-th time (default 1st) execution reaches it, the process sends itself
//   SIGKILL (a real kill -9: no destructors, no atexit, no buffered log
//   flushed). One line naming the point is written straight to stderr first.
// - The environment is read once, before main() (static initialisation). A
//   spec that does not parse arms nothing; crash_point_warn_if_armed() logs
//   either case at warning level and is called at start-up.
// - Unarmed cost: one relaxed atomic load and a compare per reached point.
// - Thread safety: crash_point() may be reached from any thread; the count is
//   a relaxed atomic, so exactly one thread makes the n-th hit.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace netbootfs::cache {

// 0 is "none" so that the zero-initialised global is disarmed before (and
// whatever the order of) static initialisation.
enum class CrashPoint : int {
  kNone = 0,
  kTempSynced,         // temp file fsynced, not yet renamed
  kBlobRenamed,        // renamed into blobs/ and the directory fsynced; index not updated
  kIndexBeforeCommit,  // a write transaction filled, not committed
  kIndexAfterCommit,   // a write transaction committed, nothing else done yet
};

std::string_view crash_point_name(CrashPoint p);

struct CrashSpec {
  CrashPoint point = CrashPoint::kNone;
  uint64_t nth = 1;
};
// "<name>" or "<name>:<n>" with n >= 1; nullopt for anything else.
std::optional<CrashSpec> parse_crash_spec(std::string_view spec);

namespace detail {
extern std::atomic<int> g_crash_armed;  // a CrashPoint; kNone when disarmed
void crash_point_reached(CrashPoint p);
}  // namespace detail

inline void crash_point(CrashPoint p) {
  if (detail::g_crash_armed.load(std::memory_order_relaxed) == static_cast<int>(p)) {
    detail::crash_point_reached(p);
  }
}

// Logs at warning level that a crash point is armed (or that the variable is
// set but does not parse). Once per process; a no-op when unset.
void crash_point_warn_if_armed();

// Tests: arms `spec` (resetting the count) or disarms with kNone. Returns how
// many times the armed point has been reached since.
void arm_crash_point(CrashSpec spec);
uint64_t crash_point_hits();

}  // namespace netbootfs::cache
