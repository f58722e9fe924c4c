#include "cache/util/delay_point.h"

#include <chrono>
#include <thread>

namespace netbootfs::cache {
namespace {

std::atomic<int64_t> g_ms{0};
std::atomic<int64_t> g_left{0};
std::atomic<uint64_t> g_hits{0};

}  // namespace

namespace detail {
std::atomic<int> g_delay_armed{0};

void delay_point_reached(DelayPoint) {
  if (g_left.fetch_sub(1) <= 0) {
    g_left.fetch_add(1);
    return;
  }
  if (g_left.load() <= 0) g_delay_armed.store(0);
  g_hits.fetch_add(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(g_ms.load()));
}
}  // namespace detail

void arm_delay_point(DelayPoint p, int64_t ms, uint64_t times) {
  detail::g_delay_armed.store(0);
  g_ms.store(ms);
  g_left.store(static_cast<int64_t>(times));
  g_hits.store(0);
  detail::g_delay_armed.store(static_cast<int>(p));
}

uint64_t delay_point_hits() { return g_hits.load(); }

}  // namespace netbootfs::cache
