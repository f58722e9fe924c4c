// http::RateBucket: the token bucket behind Options::max_rate, one shared by
// every body transfer of a Client.
//
// Contract
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

#include <chrono>
#include <cstddef>
#include <cstdint>
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

}  // namespace netbootfs::http
