#include "cache/fetch/executor.h"

#include <algorithm>
#include <chrono>

namespace netbootfs::cache {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void Executor::every(int64_t interval_ms, Task fn) {
  periodic_.push_back(Periodic{interval_ms, now_ms() + interval_ms, std::move(fn)});
}

void Executor::start(int workers) {
  for (int i = 0; i < std::max(1, workers); ++i) workers_.emplace_back([this] { worker_loop(); });
  timer_thread_ = std::thread([this] { timer_loop(); });
}

void Executor::worker_loop() {
  std::unique_lock lk(work_mu_);
  for (;;) {
    work_cv_.wait(lk, [this] { return work_stop_ || !work_.empty(); });
    if (work_.empty()) return;  // stopping and drained
    auto fn = std::move(work_.front());
    work_.pop_front();
    lk.unlock();
    fn();
    lk.lock();
  }
}

void Executor::stop() {
  {
    std::lock_guard lk(timer_mu_);
    timer_stop_ = true;
  }
  timer_cv_.notify_all();
  if (timer_thread_.joinable()) timer_thread_.join();
  {
    std::lock_guard lk(work_mu_);
    work_stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void Executor::post(Task fn) {
  {
    std::lock_guard lk(work_mu_);
    if (!work_stop_) {
      work_.push_back(std::move(fn));
      work_cv_.notify_one();
      return;
    }
  }
  fn();  // shutting down: run inline rather than drop a completion
}

void Executor::schedule(int64_t due_ms, Task fn) {
  {
    std::lock_guard lk(timer_mu_);
    timers_.emplace(due_ms, std::move(fn));
  }
  timer_cv_.notify_all();
}

void Executor::timer_loop() {
  std::unique_lock lk(timer_mu_);
  while (!timer_stop_) {
    int64_t due = INT64_MAX;
    for (const auto& p : periodic_) due = std::min(due, p.next_ms);
    if (!timers_.empty()) due = std::min(due, timers_.begin()->first);
    const int64_t wait = due == INT64_MAX ? 1000 : due - now_ms();
    if (wait > 0) {
      timer_cv_.wait_for(lk, std::chrono::milliseconds(wait));
      continue;
    }
    std::vector<Task> run;
    const int64_t now = now_ms();
    while (!timers_.empty() && timers_.begin()->first <= now) {
      run.push_back(std::move(timers_.begin()->second));
      timers_.erase(timers_.begin());
    }
    lk.unlock();
    for (auto& fn : run) fn();
    // periodic_ is fixed once started: only this thread touches next_ms.
    for (auto& p : periodic_) {
      if (now < p.next_ms) continue;
      p.fn();
      p.next_ms = now + p.interval_ms;
    }
    lk.lock();
  }
}

}  // namespace netbootfs::cache
