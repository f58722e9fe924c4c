// prefetch() through a Fetcher (cache/prefetch.h): the walk, the rate, the
// failures it counts, cancellation, and sharing the mount's downloads.
#include "tests/unit/cache/fetcher_fixture.h"

#include "cache/prefetch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <set>

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;

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

// What the header promises beyond the walk and the rate.
class PrefetchTest : public FetcherTest {
 protected:
  PrefetchSummary run(const std::vector<std::string>& paths, int jobs = 2,
                      const std::function<bool()>& cancelled = nullptr) {
    PrefetchOptions po;
    po.jobs = jobs;
    return prefetch(*fetcher_, paths, po, [this](const PrefetchProgress& p) { seen_.push_back(p); },
                    cancelled);
  }
  static std::set<std::string> failed_paths(const PrefetchSummary& s) {
    std::set<std::string> out;
    for (const auto& f : s.failed) out.insert(f.first);
    return out;
  }
  std::vector<PrefetchProgress> seen_;  // progress() calls are serialised
};

TEST_F(PrefetchTest, FailuresAreCountedWithTheirPathsAndNeverStopTheRest) {
  restart(Opts().retry_timeout(0ms));  // the 500 fails at once
  for (const char* f : {"ok1", "ok2", "broken"}) server_.put(f, f);
  server_.fail_status("broken", 500, -1);
  const auto s = run({"ok1", "missing1", "broken", "missing2", "ok2"});
  EXPECT_EQ(s.files, 2u);
  EXPECT_EQ(s.bytes, 6u);
  EXPECT_EQ(s.failures, 3u);
  EXPECT_EQ(failed_paths(s), (std::set<std::string>{"missing1", "broken", "missing2"}));
  EXPECT_FALSE(s.cancelled);
  EXPECT_TRUE(index_->get_path("ok1") && index_->get_path("ok2"));
  EXPECT_FALSE(index_->get_path("broken"));
  ASSERT_EQ(seen_.size(), 5u) << "progress after every path tried, failed or not";
  EXPECT_EQ(seen_.back().failures, 3u);
}

TEST_F(PrefetchTest, TheFailedListKeepsTheFirst100AndCountsThemAll) {
  server_.put("present", "p");
  std::vector<std::string> paths;
  for (int i = 0; i < 120; ++i) paths.push_back("missing" + std::to_string(i));
  const auto s = run(paths, 4);
  EXPECT_EQ(s.failures, 120u);
  EXPECT_EQ(s.failed.size(), 100u);
  EXPECT_EQ(s.files, 0u);
  for (const auto& [path, reason] : s.failed) EXPECT_FALSE(reason.empty()) << path;
}

TEST_F(PrefetchTest, ADirectoryWithoutAListingIsAFailureOfItsOwn) {
  server_.no_listing("plain/");
  server_.put("plain/kernel", "k");
  server_.put("top", "t");
  const auto s = run({"plain", "top"});
  EXPECT_EQ(s.files, 1u);
  EXPECT_EQ(s.failures, 1u);
  EXPECT_EQ(failed_paths(s), std::set<std::string>{"plain"});
  EXPECT_EQ(server_.count("GET", "plain/kernel"), 0u);
}

TEST_F(PrefetchTest, ProgressNamesEachFileOnceAndEndsWithNothingQueued) {
  for (const char* f : {"d/a", "d/b", "d/c", "d/e", "top"}) server_.put(f, std::string(100, 'x'));
  const auto s = run({"d", "top"}, 3);
  ASSERT_EQ(s.files, 5u);
  ASSERT_EQ(seen_.size(), 5u);
  std::set<std::string> named;
  for (size_t i = 0; i < seen_.size(); ++i) {
    named.insert(seen_[i].path);
    EXPECT_EQ(seen_[i].files, i + 1) << "serialised: each call sees one more file";
    EXPECT_EQ(seen_[i].bytes, (i + 1) * 100);
  }
  EXPECT_EQ(named, (std::set<std::string>{"d/a", "d/b", "d/c", "d/e", "top"}));
  EXPECT_EQ(seen_.back().queued, 0u);
  EXPECT_EQ(s.bytes, 500u);
}

TEST_F(PrefetchTest, CancelledIsCheckedBetweenFiles) {
  for (const char* f : {"a", "b", "c", "d"}) server_.put(f, f);
  const auto s = run({"a", "b", "c", "d"}, 1, [this] { return seen_.size() >= 2; });
  EXPECT_TRUE(s.cancelled);
  EXPECT_EQ(s.files, 2u);
  EXPECT_EQ(server_.count("GET", "c") + server_.count("GET", "d"), 0u);
}

TEST_F(PrefetchTest, AtMostJobsFilesAreInFlight) {
  for (const char* f : {"f0", "f1", "f2", "f3"}) {
    server_.put(f, f);
    server_.hold(f);
  }
  auto done = std::async(std::launch::async, [&] { return run({"f0", "f1", "f2", "f3"}, 2); });
  ASSERT_TRUE(server_.wait_arrived("f0"));
  ASSERT_TRUE(server_.wait_arrived("f1"));
  EXPECT_FALSE(server_.wait_arrived("f2", 300ms)) << "a third file while two are held";
  EXPECT_FALSE(server_.wait_arrived("f3", 10ms));
  server_.release();
  ASSERT_EQ(done.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(done.get().files, 4u);
}

TEST_F(PrefetchTest, AFileAMountReaderIsFetchingIsJoinedNotFetchedAgain) {
  const std::string body = random_bytes(200000, 9);
  const Attr a = serve("initrd", body);
  server_.hold("initrd");
  auto reader = std::async(std::launch::async, [&] {
    auto of = open(a.version);
    return of ? read_all(*of.value()) : Result<std::string>(of.error());
  });
  ASSERT_TRUE(server_.wait_arrived("initrd"));
  const uint64_t coalesced = fetcher_->stats().coalesced.load();
  auto done = std::async(std::launch::async, [&] { return run({"initrd"}); });
  ASSERT_TRUE(eventually([&] { return fetcher_->stats().coalesced.load() > coalesced; }));
  server_.release();
  ASSERT_EQ(done.wait_for(10s), std::future_status::ready);
  const auto s = done.get();
  EXPECT_EQ(s.files, 1u);
  EXPECT_EQ(s.bytes, body.size());
  EXPECT_EQ(reader.get().value(), body);
  EXPECT_EQ(server_.count("GET", "initrd"), 1u);
}

TEST_F(PrefetchTest, ACachedFileCountsWithoutARequest) {
  restart(Opts().revalidate(60s));
  server_.put("k", "kernel");
  ASSERT_EQ(cat("k").value(), "kernel");
  const auto s = run({"k"});
  EXPECT_EQ(s.files, 1u);
  EXPECT_EQ(s.bytes, 6u);
  EXPECT_EQ(server_.count("GET", "k"), 1u);
}

}  // namespace
}  // namespace netbootfs::cache
