// Origin selection: the preferred origin first, a per-origin capped back-off
// after failures, and the return to the preferred one once it expires.
#include "cache/origins.h"

#include <gtest/gtest.h>

namespace netbootfs::cache {
namespace {

Origins three() { return Origins({"http://a/", "http://b/", "http://c/"}, {1000, 8000}); }

TEST(Origins, PrefersTheFirstWhileNothingFailed) {
  auto o = three();
  EXPECT_EQ(o.pick(0), 0u);
  EXPECT_EQ(o.pick(1'000'000), 0u);
  EXPECT_EQ(o.base(2), "http://c/");
}

TEST(Origins, SkipsAFailedOriginForItsBackoff) {
  auto o = three();
  EXPECT_EQ(o.failed(0, 100), 1000);
  EXPECT_EQ(o.pick(100), 1u);
  EXPECT_EQ(o.pick(1099), 1u);
  EXPECT_TRUE(o.backing_off(0, 1099));
  // Expired: the preferred origin is tried again.
  EXPECT_EQ(o.pick(1100), 0u);
  EXPECT_FALSE(o.backing_off(0, 1100));
}

TEST(Origins, BackoffGrowsAndIsCapped) {
  auto o = three();
  struct Step {
    int64_t at, want_delay;
  };
  // Each failure after the previous back-off expired doubles it: 1, 2, 4, 8, 8 s.
  const Step steps[] = {{0, 1000}, {1000, 2000}, {3000, 4000}, {7000, 8000}, {15000, 8000}};
  for (const auto& s : steps) {
    EXPECT_EQ(o.failed(0, s.at), s.want_delay) << "at " << s.at;
    EXPECT_EQ(o.pick(s.at), 1u);
  }
  EXPECT_TRUE(o.succeeded(0));
  EXPECT_FALSE(o.succeeded(0));
  EXPECT_EQ(o.failed(0, 30000), 1000) << "a success starts over";
}

TEST(Origins, FailuresDuringTheBackoffDoNotLengthenIt) {
  auto o = three();
  EXPECT_EQ(o.failed(0, 0), 1000);
  EXPECT_EQ(o.failed(0, 10), 0);  // a request sent before the back-off started
  EXPECT_EQ(o.failed(0, 999), 0);
  EXPECT_EQ(o.pick(1000), 0u);
  EXPECT_EQ(o.failed(0, 1000), 2000);
}

TEST(Origins, AllBackingOffPicksTheOneThatEndsFirst) {
  auto o = three();
  o.failed(0, 0);     // until 1000
  o.failed(0, 1000);  // until 3000
  o.failed(1, 1500);  // until 2500
  o.failed(2, 1600);  // until 2600
  EXPECT_EQ(o.pick(1700), 1u);
  EXPECT_EQ(o.pick(2500), 1u);  // expired
  o.failed(1, 2500);            // until 4500
  EXPECT_EQ(o.pick(2550), 2u);
  EXPECT_EQ(o.pick(2600), 2u);
  EXPECT_EQ(o.pick(3000), 0u);
}

TEST(Origins, ASingleOriginIsAlwaysPicked) {
  Origins o({"http://only/"}, {});
  o.failed(0, 0);
  EXPECT_EQ(o.pick(1), 0u);
  EXPECT_EQ(o.size(), 1u);
}

}  // namespace
}  // namespace netbootfs::cache
