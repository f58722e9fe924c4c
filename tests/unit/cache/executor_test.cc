// Executor (cache/fetch/executor.h): workers, the timer, periodic tasks and
// what happens to work posted after stop().
#include "cache/fetch/executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;

TEST(Executor, PostedWorkRunsOnAWorkerAndStopDrainsIt) {
  Executor ex;
  ex.start(2);
  std::atomic<int> ran{0};
  const auto caller = std::this_thread::get_id();
  std::atomic<bool> other_thread{true};
  for (int i = 0; i < 100; ++i) {
    ex.post([&] {
      if (std::this_thread::get_id() == caller) other_thread = false;
      ran++;
    });
  }
  ex.stop();
  EXPECT_EQ(ran.load(), 100);
  EXPECT_TRUE(other_thread.load());
  // After stop: inline, never dropped.
  bool inline_ran = false;
  ex.post([&] { inline_ran = true; });
  EXPECT_TRUE(inline_ran);
}

TEST(Executor, ScheduledTasksRunInOrderOfTheirDueTimes) {
  Executor ex;
  ex.start(1);
  std::mutex mu;
  std::vector<int> order;
  std::promise<void> done;
  const int64_t now = now_ms();
  ex.schedule(now + 60, [&] {
    std::lock_guard lk(mu);
    order.push_back(2);
    done.set_value();
  });
  ex.schedule(now + 20, [&] {
    std::lock_guard lk(mu);
    order.push_back(1);
  });
  ex.schedule(now - 1000, [&] {  // already due
    std::lock_guard lk(mu);
    order.push_back(0);
  });
  ASSERT_EQ(done.get_future().wait_for(5s), std::future_status::ready);
  ex.stop();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
}

TEST(Executor, PeriodicTasksRunUntilStopAndScheduledOnesNotAfter) {
  Executor ex;
  std::atomic<int> ticks{0};
  ex.every(10, [&] { ticks++; });
  ex.start(1);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (ticks.load() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_GE(ticks.load(), 3);
  std::atomic<bool> late{false};
  ex.schedule(now_ms() + 200, [&] { late = true; });
  ex.stop();
  const int after = ticks.load();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(ticks.load(), after);
  EXPECT_FALSE(late.load());
}

}  // namespace
}  // namespace netbootfs::cache
