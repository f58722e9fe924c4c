#include "cache/origins.h"

#include <algorithm>

namespace netbootfs::cache {

Origins::Origins(std::vector<std::string> bases, Options options)
    : bases_(std::move(bases)), options_(options), states_(bases_.size()) {}

size_t Origins::pick(int64_t now_ms) const {
  std::lock_guard lk(mu_);
  size_t soonest = 0;
  for (size_t i = 0; i < states_.size(); ++i) {
    if (states_[i].until_ms <= now_ms) return i;
    if (states_[i].until_ms < states_[soonest].until_ms) soonest = i;
  }
  return soonest;
}

int64_t Origins::failed(size_t i, int64_t now_ms) {
  std::lock_guard lk(mu_);
  State& s = states_.at(i);
  if (s.until_ms > now_ms) return 0;
  const int shift = std::min(s.failures, 30);
  const int64_t initial = std::max<int64_t>(1, options_.backoff_initial_ms);
  const int64_t cap = std::max(initial, options_.backoff_max_ms);
  const int64_t delay = std::min(cap, initial << shift);
  ++s.failures;
  s.until_ms = now_ms + delay;
  return delay;
}

bool Origins::succeeded(size_t i) {
  std::lock_guard lk(mu_);
  State& s = states_.at(i);
  const bool had = s.failures > 0;
  s = State{};
  return had;
}

bool Origins::backing_off(size_t i, int64_t now_ms) const {
  std::lock_guard lk(mu_);
  return states_.at(i).until_ms > now_ms;
}

}  // namespace netbootfs::cache
