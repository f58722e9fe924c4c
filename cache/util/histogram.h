// Histogram: counts of observed values in fixed buckets, for the metrics
// exporter (download durations, sizes).
//
// Contract: the bounds are fixed at construction (ascending, each an upper
// bound; +Inf is implicit). observe() is lock-free and may be called from any
// thread; snapshot() may run concurrently with it and returns cumulative
// counts that never decrease between snapshots (a snapshot taken during an
// observe() may miss that one observation in some buckets, never count it
// twice).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace netbootfs {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds)
      : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
    std::sort(bounds_.begin(), bounds_.end());
    for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
  }
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void observe(double v) {
    const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    double sum = sum_.load(std::memory_order_relaxed);
    while (!sum_.compare_exchange_weak(sum, sum + v, std::memory_order_relaxed)) {
    }
    count_.fetch_add(1, std::memory_order_relaxed);
  }

  struct Snapshot {
    std::vector<double> bounds;       // upper bounds, without +Inf
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const {
    Snapshot s;
    s.bounds = bounds_;
    s.cumulative.resize(bounds_.size() + 1);
    uint64_t acc = 0;
    for (size_t i = 0; i <= bounds_.size(); ++i) {
      acc += buckets_[i].load(std::memory_order_relaxed);
      s.cumulative[i] = acc;
    }
    s.count = acc;  // consistent with the buckets, unlike count_ read apart
    s.sum = sum_.load(std::memory_order_relaxed);
    return s;
  }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<double> sum_{0};
  std::atomic<uint64_t> count_{0};
};

}  // namespace netbootfs
