#include "cache/http/rate_bucket.h"

#include <algorithm>

namespace netbootfs::http {

RateBucket::RateBucket(double bytes_per_second, double burst, TimePoint now)
    : rate_(bytes_per_second), burst_(burst), at_(now) {}

void RateBucket::refill(TimePoint now) {
  tokens_ = std::min(burst_, tokens_ + rate_ * std::chrono::duration<double>(now - at_).count());
  at_ = now;
}

bool RateBucket::take(size_t len, TimePoint now) {
  refill(now);
  if (tokens_ <= 0) return false;
  tokens_ -= static_cast<double>(len);
  return true;
}

void RateBucket::pause(uint64_t id) { paused_.push_back(id); }

std::vector<uint64_t> RateBucket::resume(TimePoint now) {
  std::vector<uint64_t> ids;
  if (paused_.empty()) return ids;
  refill(now);
  if (tokens_ <= 0) return ids;
  ids.swap(paused_);
  return ids;
}

}  // namespace netbootfs::http
