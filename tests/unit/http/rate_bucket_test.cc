// The WAN limits' state. The max_rate token bucket, driven by a clock the test
// sets: it starts empty, refills at the rate up to the burst, lets a chunk
// overdraw it and makes the debt wait, and hands back paused transfers in
// order once it has a token. The max_downloads slots and their line.
#include "cache/http/rate_bucket.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace netbootfs::http {
namespace {

using std::chrono::milliseconds;

const RateBucket::TimePoint kStart = RateBucket::TimePoint{} + std::chrono::hours(1);

struct Step {
  enum class Op { kTake, kPause, kResume };
  int at_ms;  // from kStart
  Op op;
  uint64_t arg;  // kTake: bytes; kPause: the transfer id
  // kTake: "yes" or "no"; kResume: the ids handed back ("7,3", "" for none).
  std::string want;
  double tokens_after;
};

std::string join(const std::vector<uint64_t>& ids) {
  std::string out;
  for (uint64_t id : ids) out += (out.empty() ? "" : ",") + std::to_string(id);
  return out;
}

void run_steps(RateBucket bucket, const std::vector<Step>& steps) {
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& s = steps[i];
    SCOPED_TRACE("step " + std::to_string(i) + " at " + std::to_string(s.at_ms) + " ms");
    const auto now = kStart + milliseconds(s.at_ms);
    switch (s.op) {
      case Step::Op::kTake:
        EXPECT_EQ(bucket.take(s.arg, now) ? "yes" : "no", s.want);
        break;
      case Step::Op::kPause:
        bucket.pause(s.arg);
        EXPECT_TRUE(bucket.has_paused());
        break;
      case Step::Op::kResume:
        EXPECT_EQ(join(bucket.resume(now)), s.want);
        break;
    }
    // Steps keep clear of the 0 boundary: the refill is floating-point.
    EXPECT_NEAR(bucket.tokens(), s.tokens_after, 1e-6);
  }
}

using Op = Step::Op;

TEST(RateBucket, Steps) {
  struct Case {
    const char* name;
    double rate;
    double burst;
    std::vector<Step> steps;
  };
  const std::vector<Case> cases = {
      {"starts empty, refills at the rate",
       1000,
       500,
       {
           {0, Op::kTake, 1, "no", 0},
           {1, Op::kTake, 100, "yes", -99},  // 1 token: the chunk may overdraw
           {50, Op::kTake, 1, "no", -50},    // the debt is paid back first
           {99, Op::kTake, 1, "no", -1},
           {101, Op::kTake, 1, "yes", 0},
       }},
      {"saves up to the burst while idle",
       1000,
       500,
       {
           {10000, Op::kTake, 400, "yes", 100},
           {10000, Op::kTake, 400, "yes", -300},
           {10000, Op::kTake, 1, "no", -300},
           {10200, Op::kTake, 1, "no", -100},
           {20000, Op::kTake, 1, "yes", 499},
       }},
      {"one big chunk, then a long wait",
       1000,
       65536,
       {
           {1, Op::kTake, 65536, "yes", -65535},
           {65000, Op::kTake, 1, "no", -536},
           {65537, Op::kTake, 1, "yes", 0},
       }},
      {"paused transfers come back in order, once",
       1000,
       500,
       {
           {0, Op::kPause, 7, "", 0},
           {0, Op::kPause, 3, "", 0},
           {0, Op::kResume, 0, "", 0},  // no token yet: they stay paused
           {10, Op::kResume, 0, "7,3", 10},
           {20, Op::kResume, 0, "", 10},  // forgotten; nothing paused: no refill either
           {30, Op::kTake, 50, "yes", -20},
           {30, Op::kPause, 9, "", -20},
           {40, Op::kResume, 0, "", -10},
           {60, Op::kResume, 0, "9", 10},
       }},
      {"a clock going back takes tokens away",
       1000,
       500,
       {
           {100, Op::kTake, 50, "yes", 50},
           {20, Op::kTake, 1, "no", -30},
       }},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    run_steps(RateBucket(c.rate, c.burst, kStart), c.steps);
  }
}

TEST(RateBucket, WithoutARateThereIsNoToken) {
  RateBucket bucket;
  EXPECT_FALSE(bucket.take(1, std::chrono::steady_clock::now()));
  bucket.pause(1);
  EXPECT_TRUE(bucket.resume(std::chrono::steady_clock::now()).empty());
  EXPECT_TRUE(bucket.has_paused());
}

// max_downloads: a slot when one is free, else the line, first come first
// served; a cancelled body leaves the line wherever it stands.
TEST(DownloadSlots, Steps) {
  struct Case {
    const char* name;
    int limit;
    // Each op: "+N" a body N arrives (runs or waits), "-" a running body ends,
    // "xN" body N is taken out of the line, "." the ready ones start.
    std::vector<std::string> ops;
    std::string want_running;  // the bodies started, in order
    size_t want_waiting;
  };
  const std::vector<Case> cases = {
      {"no limit", 0, {"+1", "+2", "+3"}, "1,2,3", 0},
      {"negative: no limit", -1, {"+1", "+2"}, "1,2", 0},
      {"over the limit: wait", 2, {"+1", "+2", "+3", "+4"}, "1,2", 2},
      {"a slot freed: first come first served", 2, {"+1", "+2", "+3", "+4", "-", "."}, "1,2,3", 1},
      {"without a free slot, nothing starts", 1, {"+1", "+2", ".", "."}, "1", 1},
      {"taken out of the line", 1, {"+1", "+2", "+3", "x2", "-", "."}, "1,3", 0},
      {"taking what does not wait", 1, {"+1", "+2", "x1", "x9"}, "1", 1},
      {"all ends, all start", 1, {"+1", "+2", "+3", "-", ".", "-", "."}, "1,2,3", 0},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    DownloadSlots<std::unique_ptr<int>> slots(c.limit);
    std::vector<uint64_t> started;
    auto start = [&](std::unique_ptr<int> body) {
      slots.acquire();
      started.push_back(static_cast<uint64_t>(*body));
    };
    for (const auto& op : c.ops) {
      const int n = op.size() > 1 ? std::stoi(op.substr(1)) : 0;
      if (op[0] == '+') {
        auto body = std::make_unique<int>(n);
        if (slots.has_free()) {
          start(std::move(body));
        } else {
          slots.wait(std::move(body));
        }
      } else if (op[0] == '-') {
        slots.release();
      } else if (op[0] == 'x') {
        auto taken = slots.take_if([n](const std::unique_ptr<int>& w) { return *w == n; });
        if (taken) {
          EXPECT_EQ(*taken, n);
        }
      } else {
        while (auto body = slots.next_ready()) start(std::move(body));
      }
    }
    EXPECT_EQ(join(started), c.want_running);
    EXPECT_EQ(slots.waiting(), c.want_waiting);
  }
}

TEST(DownloadSlots, TakeFirstEmptiesTheLineWhateverTheSlots) {
  DownloadSlots<std::unique_ptr<int>> slots(1);
  slots.acquire();
  slots.wait(std::make_unique<int>(1));
  slots.wait(std::make_unique<int>(2));
  EXPECT_FALSE(slots.next_ready());
  std::vector<uint64_t> drained;
  while (auto body = slots.take_first()) drained.push_back(static_cast<uint64_t>(*body));
  EXPECT_EQ(join(drained), "1,2");
  EXPECT_EQ(slots.waiting(), 0u);
}

}  // namespace
}  // namespace netbootfs::http
