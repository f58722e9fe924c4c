// The Fetcher under a bounded cache (set_evictor): what goes first, what stays
// (open, pinned, in flight), reservations of announced sizes, and that a slow
// publish never stalls another download.
#include "tests/unit/cache/fetcher_fixture.h"

#include "cache/util/delay_point.h"

#include <gtest/gtest.h>

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;

TEST_F(FetcherEvictionTest, TheLeastRecentlyReadGoFirstAndComeBackByteIdentical) {
  limit(10000);  // high 9000, low 8000
  for (const char* f : {"a", "b", "c", "d"}) server_.put(f, random_bytes(2500, f[0]));
  auto old_b = lookup("b");
  ASSERT_EQ(cat("a").value(), random_bytes(2500, 'a'));
  // Access times are kept in seconds.
  std::this_thread::sleep_for(1100ms);
  ASSERT_EQ(cat("b").value(), random_bytes(2500, 'b'));
  std::this_thread::sleep_for(1100ms);
  ASSERT_EQ(cat("a").value(), random_bytes(2500, 'a'));  // a hit: a is recent again
  std::this_thread::sleep_for(1100ms);
  ASSERT_EQ(cat("c").value(), random_bytes(2500, 'c'));
  EXPECT_TRUE(cached("a") && cached("b") && cached("c"));
  // d's 2500 bytes would take the cache to 10000 > 9000: room is made first.
  ASSERT_EQ(cat("d").value(), random_bytes(2500, 'd'));
  ASSERT_TRUE(eventually([&] { return !cached("b"); }));
  EXPECT_TRUE(cached("a") && cached("c") && cached("d"));
  EXPECT_LE(cache_bytes(), 8000u);
  EXPECT_EQ(evictor_->evictions.load(), 1u);
  EXPECT_EQ(evictor_->evicted_bytes.load(), 2500u);
  // The version the kernel knew is stale; a fresh lookup downloads again.
  auto stale = open(old_b->version);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ESTALE);
  // The pass may still be forgetting b when the index already has it gone.
  ASSERT_EQ(cat_revalidating("b").value(), random_bytes(2500, 'b'));
  EXPECT_EQ(server_.count("GET", "b", 200), 2u);
  EXPECT_EQ(server_.count("GET", "a", 200), 1u);
  EXPECT_TRUE(cached("b"));
}

TEST_F(FetcherEvictionTest, AnOpenFileIsNeverEvictedAndStaysReadable) {
  limit(6000);  // high 5400, low 4800
  for (const char* f : {"a", "b", "c", "d"}) server_.put(f, random_bytes(2500, f[0]));
  auto va = lookup("a");
  auto ha = open(va->version);
  ASSERT_TRUE(ha);
  ASSERT_EQ(read_all(*ha.value()).value(), random_bytes(2500, 'a'));
  ASSERT_EQ(cat("b").value(), random_bytes(2500, 'b'));
  ASSERT_EQ(cat("c").value(), random_bytes(2500, 'c'));
  ASSERT_EQ(cat("d").value(), random_bytes(2500, 'd'));
  // a (in use) counts for nothing and stays; b and c made room for d.
  ASSERT_TRUE(eventually([&] { return !cached("b") && !cached("c"); }));
  EXPECT_TRUE(cached("a"));
  EXPECT_TRUE(cached("d"));
  EXPECT_EQ(read_all(*ha.value()).value(), random_bytes(2500, 'a'));
  ASSERT_EQ(cat("a").value(), random_bytes(2500, 'a'));
  EXPECT_EQ(server_.count("GET", "a", 200), 1u);
}

TEST_F(FetcherEvictionTest, AFileLargerThanTheLimitIsServedThenDroppedOnClose) {
  limit(1000);
  const std::string big = random_bytes(3000, 7);
  server_.put("big", big);
  auto v = lookup("big");
  auto h = open(v->version);
  ASSERT_TRUE(h);
  EXPECT_EQ(read_all(*h.value()).value(), big);
  // Published, open: kept.
  ASSERT_TRUE(eventually([&] { return cached("big"); }));
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(cached("big"));
  EXPECT_EQ(read_all(*h.value()).value(), big);
  h.value().reset();
  // The pass drops the path's record before the blob's: wait for both.
  ASSERT_TRUE(eventually([&] { return !cached("big") && cache_bytes() == 0; }));
  EXPECT_EQ(cache_bytes(), 0u);
  // The index drops the record before the pass forgets the version it
  // held in memory: a lookup in between returns the old version and its open
  // ESTALE, which the kernel answers with a fresh LOOKUP.
  ASSERT_EQ(cat_revalidating("big").value(), big);  // served again
}

TEST_F(FetcherEvictionTest, PinnedPathsStay) {
  limit(6000, {"boot/*"});
  server_.put("boot/pxelinux.0", random_bytes(2500, 1));
  for (const char* f : {"b", "c", "d"}) server_.put(f, random_bytes(2500, f[0]));
  ASSERT_EQ(cat("boot/pxelinux.0").value(), random_bytes(2500, 1));
  std::this_thread::sleep_for(1100ms);  // the oldest
  for (const char* f : {"b", "c", "d"}) ASSERT_EQ(cat(f).value(), random_bytes(2500, f[0]));
  ASSERT_TRUE(eventually([&] { return cache_bytes() <= 4800u + 2500u; }));
  EXPECT_TRUE(cached("boot/pxelinux.0"));
  EXPECT_TRUE(cached("d"));
  EXPECT_FALSE(cached("b") && cached("c"));
}

TEST_F(FetcherEvictionTest, ConcurrentReadersUnderATightLimit) {
  limit(20000);
  constexpr int kFiles = 24;
  for (int i = 0; i < kFiles; ++i) server_.put("f" + std::to_string(i), random_bytes(3000, i));
  std::vector<std::thread> readers;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      for (int k = 0; k < kFiles; ++k) {
        const int i = (k * 7 + t * 5) % kFiles;
        // An eviction between lookup and open sends the caller back to lookup.
        auto r = cat_revalidating("f" + std::to_string(i));
        if (!r || r.value() != random_bytes(3000, i)) bad++;
      }
    });
  }
  for (auto& r : readers) r.join();
  EXPECT_EQ(bad.load(), 0);
  ASSERT_TRUE(eventually([&] { return cache_bytes() <= 20000u * 9 / 10; }));
  EXPECT_EQ(evictor_->reserved(), 0u) << "every download released its reservation";
  const auto totals = index_->check_totals();
  EXPECT_EQ(totals.kept.blob_bytes, totals.counted.blob_bytes);
  for (const auto& [p, e] : index_->list_paths()) {
    EXPECT_TRUE(std::filesystem::exists(blobs_->blob_path(e.sha256))) << p;
  }
}

TEST_F(FetcherEvictionTest, DownloadsInFlightReserveTheirAnnouncedSizesTogether) {
  limit(10u << 20);  // high 9 MiB, low 8 MiB
  server_.put("old", random_bytes(4 << 20, 'o'));
  server_.put("x", random_bytes(3 << 20, 'x'));
  server_.put("y", random_bytes(3 << 20, 'y'));
  ASSERT_EQ(cat("old").value(), random_bytes(4 << 20, 'o'));
  auto ax = lookup("x");
  auto ay = lookup("y");
  ASSERT_TRUE(ax && ay);
  // Two slow downloads at once: 4 + 3 fits under 9 MiB for each alone, but
  // 4 + 3 + 3 does not, so "old" must go before their bytes arrive.
  auto hx = open(ax->version, 1 << 20);
  auto hy = open(ay->version, 1 << 20);
  ASSERT_TRUE(hx && hy);
  // Both sizes are announced (the opens were answered) and neither file is
  // complete (3 MiB at 1 MiB/s): both are reserved, and "old" is gone.
  EXPECT_EQ(evictor_->reserved(), uint64_t{6} << 20);
  EXPECT_FALSE(cached("old"));
  EXPECT_FALSE(cached("x") || cached("y"));
  ASSERT_EQ(read_all(*hx.value()).value(), random_bytes(3 << 20, 'x'));
  ASSERT_EQ(read_all(*hy.value()).value(), random_bytes(3 << 20, 'y'));
  // Published: the bytes are in the index, the reservations released.
  ASSERT_TRUE(eventually([&] { return evictor_->reserved() == 0; }));
  EXPECT_TRUE(cached("x") && cached("y"));
  EXPECT_EQ(cache_bytes(), uint64_t{6} << 20);
}

// A publish that waits on the disk (its fsync, under the gc lock) must not
// stop another download: the eviction pass that download's size calls for
// runs on a worker, never on the HTTP thread, which keeps receiving bytes.
TEST_F(FetcherEvictionTest, ASlowPublishDoesNotStallAnotherDownload) {
  limit(10u << 20);  // high 9 MiB
  server_.put("old", random_bytes(4 << 20, 'o'));
  server_.put("small", random_bytes(1000, 's'));
  server_.put("big", random_bytes(6 << 20, 'b'));
  ASSERT_EQ(cat("old").value(), random_bytes(4 << 20, 'o'));
  auto small = lookup("small");
  auto big = lookup("big");
  ASSERT_TRUE(small && big);
  arm_delay_point(DelayPoint::kPublishLocked, 2000);
  auto small_read = std::async(std::launch::async, [&] {
    auto of = open(small->version);
    return of ? read_all(*of.value()) : Result<std::string>(of.error());
  });
  ASSERT_TRUE(eventually([] { return delay_point_hits() == 1; }));
  // 4 + 6 MiB is over the high watermark: "big" calls for a pass, which
  // waits for the gc lock that the slow publish holds.
  std::promise<Result<std::unique_ptr<OpenFile>>> opened;
  auto big_open = opened.get_future();
  const uint64_t before = fetcher_->stats().download_bytes.load();
  fetcher_->open(big->version, 2 << 20, [&opened](Result<std::unique_ptr<OpenFile>> r) {
    opened.set_value(std::move(r));
  });
  std::this_thread::sleep_for(1000ms);
  const uint64_t during = fetcher_->stats().download_bytes.load() - before;
  EXPECT_GE(during, uint64_t{512} << 10) << "the HTTP thread stopped while a publish was slow";
  EXPECT_EQ(delay_point_hits(), 1u);
  ASSERT_EQ(small_read.wait_for(10s), std::future_status::ready) << "the slow publish never ended";
  EXPECT_EQ(small_read.get().value(), random_bytes(1000, 's'));
  auto hb = await(big_open);
  ASSERT_TRUE(hb) << hb.error().message;
  EXPECT_FALSE(cached("old")) << "the pass made room before the size was announced";
  EXPECT_EQ(read_all(*hb.value()).value(), random_bytes(6 << 20, 'b'));
}

TEST_F(FetcherEvictionTest, AFailedDownloadReleasesItsReservation) {
  limit(64u << 20);
  const std::string body = random_bytes(3 << 20, 7);
  const Attr a = serve("huge", body);
  // Writes past 1 MiB fail: the download fails after announcing its size.
  FileSizeLimit full(1 << 20);
  ASSERT_TRUE(full.set());
  {
    auto of = open(a.version);
    ASSERT_TRUE(of) << of.error().message;
    ASSERT_TRUE(eventually([&] { return fetcher_->stats().write_failures.load() == 1; }));
    full.lift();
    EXPECT_EQ(evictor_->reserved(), 0u);
  }
  EXPECT_FALSE(cached("huge"));
}

}  // namespace
}  // namespace netbootfs::cache
