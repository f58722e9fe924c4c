// The state of the WAN limits of client.h, which apply to body transfers only:
// http::RateBucket, the token bucket behind Options::max_rate, one shared by
// every body transfer of a Client; and http::DownloadSlots, the bodies running
// under Options::max_downloads and the line of those waiting for a slot.
//
// RateBucket contract
// - The write callback takes tokens for the bytes it is handed. With none left
//   take() says no and the caller pauses the transfer (libcurl keeps the bytes
//   and hands them again once unpaused) and records it with pause(); resume()
//   hands back the paused transfers once the bucket has refilled.
// - Work-conserving and exact over time: a chunk may overdraw the bucket
//   (tokens go negative), and the debt is paid back before the next byte.
//   Tokens saved up while idle are capped at `burst`.
// - Time is passed in, never read: the caller's clock drives the refill, so
//   tests can run it without sleeping. A time earlier than the last one seen
//   takes tokens away rather than adding them, as steady_clock never does.
// - Owns only numbers and transfer ids; it neither knows nor touches a
//   transfer. Not thread-safe: the Client's worker thread alone uses it.
//
// Why not CURLOPT_MAX_RECV_SPEED_LARGE split per transfer: a share left unused
// by a slow transfer is lost (the sum stays below the limit), the split has to
// change as transfers come and go, and libcurl does not reliably apply a new
// value to a running transfer.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <utility>
#include <vector>

namespace netbootfs::http {

class RateBucket {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  RateBucket() = default;  // rate 0: never has a token (unused without max_rate)
  // Starts empty at `now`: the first bytes wait for the refill.
  RateBucket(double bytes_per_second, double burst, TimePoint now);

  // Tokens for `len` bytes at `now`. False: none left, pause the transfer.
  bool take(size_t len, TimePoint now);

  // Records a transfer paused for want of tokens, in the order they paused.
  void pause(uint64_t id);
  bool has_paused() const { return !paused_.empty(); }
  // At `now`: all the paused transfers, in the order they paused, once the
  // bucket has a token again (they are forgotten here); none before.
  std::vector<uint64_t> resume(TimePoint now);

  double tokens() const { return tokens_; }

 private:
  void refill(TimePoint now);

  double rate_ = 0;   // bytes per second
  double burst_ = 0;  // at most this many tokens saved up
  double tokens_ = 0;
  TimePoint at_{};  // of the last refill
  std::vector<uint64_t> paused_;
};

// DownloadSlots contract
// - A body takes a slot when one is free, else waits in the line, first come
//   first served; each slot taken is released once, when its body ends.
// - Item is what waits (a transfer's owner): movable, default-constructible,
//   and false when empty, as a unique_ptr. The line owns what waits in it.
// - Worker thread only, except waiting(), which any thread may read.
template <typename Item>
class DownloadSlots {
 public:
  explicit DownloadSlots(int limit) : limit_(limit) {}  // limit <= 0: no limit

  bool has_free() const { return limit_ <= 0 || running_ < limit_; }
  void acquire() { running_++; }
  void release() { running_--; }

  // To the back of the line.
  void wait(Item item) {
    line_.push_back(std::move(item));
    publish();
  }
  // The first in line when a slot is free (the caller acquires it), else empty.
  Item next_ready() { return has_free() ? take_first() : Item{}; }
  // The first in line whatever the slots (a shutdown), empty when none waits.
  Item take_first() {
    if (line_.empty()) return Item{};
    Item item = std::move(line_.front());
    line_.pop_front();
    publish();
    return item;
  }
  // The first waiting item `match` accepts, out of the line; empty when none.
  template <typename Match>
  Item take_if(Match match) {
    for (auto it = line_.begin(); it != line_.end(); ++it) {
      if (!match(*it)) continue;
      Item item = std::move(*it);
      line_.erase(it);
      publish();
      return item;
    }
    return Item{};
  }

  // How many wait; safe from any thread.
  size_t waiting() const { return waiting_.load(std::memory_order_relaxed); }

 private:
  void publish() { waiting_.store(line_.size(), std::memory_order_relaxed); }

  const int limit_;
  int running_ = 0;  // slots held
  std::deque<Item> line_;
  std::atomic<size_t> waiting_{0};  // line_.size(), for any thread
};

}  // namespace netbootfs::http
