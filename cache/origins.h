// Origins: which upstream base URL (the main URL, then each mirror in the
// order given) a new request goes to, with a back-off per origin.
//
// Contract
// - pick() returns the earliest origin that is not backing off; when all
//   are, the one whose back-off ends first (so a request is always sent
//   somewhere: "all origins fail" is upstream health's business).
// - failed() starts a back-off for an origin that is not already backing
//   off: initial, then doubled at each consecutive failure, capped at max.
//   Failures of requests that were already in flight when the back-off
//   started do not lengthen it. succeeded() clears the origin's history, so
//   the preferred origin is used again as soon as its back-off has expired
//   and it answers.
// - Times are milliseconds from a clock the caller passes (tests inject it).
// - Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace netbootfs::cache {

class Origins {
 public:
  struct Options {
    int64_t backoff_initial_ms = 1000;
    int64_t backoff_max_ms = 30000;
  };
  // `bases` is non-empty; bases[0] is preferred.
  Origins(std::vector<std::string> bases, Options options);

  size_t size() const { return bases_.size(); }
  const std::string& base(size_t i) const { return bases_[i]; }

  size_t pick(int64_t now_ms) const;
  // The back-off started (ms), or 0 when the origin was already backing off.
  int64_t failed(size_t i, int64_t now_ms);
  // True when the origin had failed before (worth a log line).
  bool succeeded(size_t i);
  bool backing_off(size_t i, int64_t now_ms) const;

 private:
  struct State {
    int failures = 0;  // consecutive
    int64_t until_ms = 0;
  };
  const std::vector<std::string> bases_;
  const Options options_;
  mutable std::mutex mu_;
  std::vector<State> states_;
};

}  // namespace netbootfs::cache
