// Delay points: test hooks that make one step slow (a slow disk, a slow
// commit) at a chosen instant, so that a test can show what else keeps
// moving meanwhile. Unit tests arm them; nothing in the daemon or its
// configuration does.
//
// Contract
// - arm_delay_point(p, ms, times): the next `times` arrivals at p sleep ms
//   each (on the thread that arrives), then the point disarms itself.
//   kNone disarms. Arming resets the hit count.
// - Unarmed cost: one relaxed atomic load and a compare per reached point.
// - Thread safety: any thread; exactly `times` arrivals sleep.
#pragma once

#include <atomic>
#include <cstdint>

namespace netbootfs::cache {

enum class DelayPoint : int {
  kNone = 0,
  kPublishLocked,  // a download's publish, holding the gc lock, before its fsync and rename
};

namespace detail {
extern std::atomic<int> g_delay_armed;  // a DelayPoint
void delay_point_reached(DelayPoint p);
}  // namespace detail

inline void delay_point(DelayPoint p) {
  if (detail::g_delay_armed.load(std::memory_order_relaxed) == static_cast<int>(p)) {
    detail::delay_point_reached(p);
  }
}

void arm_delay_point(DelayPoint p, int64_t ms, uint64_t times = 1);
// Arrivals at the armed point that slept since it was armed.
uint64_t delay_point_hits();

}  // namespace netbootfs::cache
