// prefetch() through a Fetcher (cache/prefetch.h): the walk, the rate, the
// failures it counts, cancellation, and sharing the mount's downloads.
#include "tests/unit/cache/fetcher_fixture.h"

#include "cache/prefetch.h"

#include <gtest/gtest.h>

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;

// --- prefetch ---------------------------------------------------------------------

TEST(ParseRate, Table) {
  EXPECT_EQ(parse_rate("2000").value(), 2000u);
  EXPECT_EQ(parse_rate("512K").value(), 512u * 1024);
  EXPECT_EQ(parse_rate("10M").value(), 10u << 20);
  EXPECT_EQ(parse_rate("1G").value(), 1u << 30);
  EXPECT_EQ(parse_rate("1.5M").value(), 3u << 19);
  EXPECT_FALSE(parse_rate(""));
  EXPECT_FALSE(parse_rate("fast"));
  EXPECT_FALSE(parse_rate("10X"));
  EXPECT_FALSE(parse_rate("-1"));
  EXPECT_FALSE(parse_rate("0"));
}

TEST_F(FetcherTest, PrefetchWalksTheTreeAndFetchesEachFileOnce) {
  server_.put("a/one", random_bytes(300000, 3));
  server_.put("a/b/two", "two");
  server_.put("a/b/c/three", "three");
  server_.put("top", "t");
  PrefetchOptions po;
  po.recursive = true;
  po.jobs = 3;
  std::atomic<int> calls{0};
  auto s = prefetch(*fetcher_, {"", "missing"}, po, [&](const PrefetchProgress&) { calls++; },
                    [] { return false; });
  EXPECT_EQ(s.files, 4u);
  EXPECT_EQ(s.failures, 1u) << "the missing path";
  ASSERT_EQ(s.failed.size(), 1u);
  EXPECT_EQ(s.failed[0].first, "missing");
  EXPECT_EQ(s.bytes, 300000u + 3 + 5 + 1);
  EXPECT_EQ(calls.load(), 5);
  for (const char* p : {"a/one", "a/b/two", "a/b/c/three", "top"}) {
    EXPECT_TRUE(index_->get_path(p)) << p << " not cached";
    EXPECT_EQ(server_.count("GET", p), 1u) << p;
  }
  // Without recursive only the named directory's files.
  restart(FetcherOptions{});
  server_.put("d/f", "f");
  server_.put("d/sub/g", "g");
  s = prefetch(*fetcher_, {"d"}, PrefetchOptions{}, nullptr, nullptr);
  EXPECT_EQ(s.files, 1u);
  EXPECT_EQ(server_.count("GET", "d/sub/g"), 0u);
}

TEST_F(FetcherTest, PrefetchWithAMaxRateTakesAtLeastSizeOverRate) {
  // Large enough that libcurl cannot take it in one read loop before pacing.
  const std::string body = random_bytes(4 << 20, 4);
  server_.put("slow", body);
  PrefetchOptions po;
  po.jobs = 1;
  po.max_rate = 2 << 20;
  const auto t0 = std::chrono::steady_clock::now();
  auto s = prefetch(*fetcher_, {"slow"}, po, nullptr, nullptr);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(s.files, 1u);
  EXPECT_GE(secs, 0.8 * 2) << "4 MiB at 2 MiB/s";
}

}  // namespace
}  // namespace netbootfs::cache
