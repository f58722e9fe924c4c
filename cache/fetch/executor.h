// Executor: the fetcher's own threads. Completion workers run what may wait
// on the disk (fsync, rename, index commits, eviction passes, rewrites); one
// timer thread runs delayed retries and resumes and the periodic tasks
// (read-stall sweeps, access-time flushes).
//
// Contract
// - post(fn) runs fn on a worker, in order of posting per worker pool; after
//   stop() it runs fn inline on the caller (a completion is never dropped).
// - schedule(due_ms, fn) runs fn on the timer thread at or after due_ms
//   (system clock, ms); after stop() scheduled tasks never run.
// - every(interval_ms, fn), before start(): fn runs on the timer thread
//   every interval_ms.
// - Tasks run with no Executor lock held, so they may post and schedule.
// - Locks: work_mu_ and timer_mu_, leaves (nothing is called under them).
// - stop() drains the workers' queue and joins every thread; call it once,
//   from a thread that is not one of them.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace netbootfs::cache {

int64_t now_ms();  // system clock, ms since the epoch

class Executor {
 public:
  using Task = std::function<void()>;
  ~Executor() { stop(); }

  void every(int64_t interval_ms, Task fn);
  void start(int workers);
  void stop();
  void post(Task fn);
  void schedule(int64_t due_ms, Task fn);

 private:
  struct Periodic {
    int64_t interval_ms;
    int64_t next_ms;
    Task fn;
  };
  void timer_loop();
  void worker_loop();

  std::mutex work_mu_;
  std::condition_variable work_cv_;
  std::deque<Task> work_;
  std::vector<std::thread> workers_;
  bool work_stop_ = false;

  std::mutex timer_mu_;
  std::condition_variable timer_cv_;
  std::multimap<int64_t, Task> timers_;
  std::vector<Periodic> periodic_;
  std::thread timer_thread_;
  bool timer_stop_ = false;
};

}  // namespace netbootfs::cache
