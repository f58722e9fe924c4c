// Transfers: resumes of broken transfers, retries of transient failures
// (GET and HEAD, coalesced, bounded by retry_timeout), answers never retried,
// and a cache write that fails.
#include "tests/unit/cache/fetcher_fixture.h"

#include <gtest/gtest.h>

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;

TEST_F(FetcherTest, ABrokenTransferResumesWithRange) {
  const std::string body = random_bytes(1 << 20, 2);
  server_.put("linux", body);
  server_.cut("linux", 300000, 1);
  auto got = cat("linux");
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_TRUE(got.value() == body);
  bool ranged = false;
  for (const auto& r : server_.requests()) {
    if (r.path == "linux" && r.range == "bytes=300000-") {
      ranged = true;
      EXPECT_EQ(r.status, 206);
      EXPECT_FALSE(r.if_range.empty());
    }
  }
  EXPECT_TRUE(ranged);
}

// --- Retries of transient failures -----------------------------------------

TEST_F(FetcherTest, AMissIsRetriedThrough503sAndHonoursRetryAfter) {
  const std::string body = random_bytes(200000, 4);
  const Attr a = serve("images/linux", body);
  server_.fail_status("images/linux", 503, 2, 1);
  const auto t0 = std::chrono::steady_clock::now();
  auto got = cat("images/linux");
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_TRUE(got.value() == body);
  EXPECT_EQ(server_.count("GET", "images/linux"), 3u);
  EXPECT_EQ(server_.count("GET", "images/linux", 503), 2u);
  EXPECT_GE(took, 1900ms) << "Retry-After: 1 was not honoured";
  EXPECT_EQ(fetcher_->stats().retries.load(), 2u);
  EXPECT_TRUE(index_->get_path("images/linux"));
}

TEST_F(FetcherTest, CoalescedOpensWaitForTheOneRetriedRequest) {
  const std::string body = random_bytes(300000, 5);
  const Attr a = serve("initrd", body);
  server_.fail_status("initrd", 502, 3);
  std::vector<std::future<std::string>> readers;
  for (int i = 0; i < 8; ++i) {
    readers.push_back(std::async(std::launch::async, [&] {
      auto of = open(a.version);
      if (!of) return "open failed: " + of.error().message;
      auto data = read_all(*of.value());
      return data ? data.value() : "read failed: " + data.error().message;
    }));
  }
  for (auto& r : readers) {
    const std::string got = r.get();
    ASSERT_EQ(got.size(), body.size()) << got.substr(0, 80);
    EXPECT_TRUE(got == body);
  }
  EXPECT_EQ(server_.count("GET", "initrd"), 4u) << "one request at a time for the path";
}

TEST_F(FetcherTest, NotFoundAndForbiddenAreNeverRetried) {
  serve({{"gone", "x"}, {"denied", "y"}});
  server_.fail_status("gone", 404, -1);
  server_.fail_status("denied", 403, -1);
  auto g = cat("gone");
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().code, ENOENT);
  auto d = cat("denied");
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, EACCES);
  EXPECT_EQ(server_.count("GET", "gone"), 1u);
  EXPECT_EQ(server_.count("GET", "denied"), 1u);
  EXPECT_EQ(fetcher_->stats().retries.load(), 0u);
}

TEST_F(FetcherTest, AnUpstreamThatKeepsFailingFailsWithinRetryTimeout) {
  restart(Opts().retry_timeout(1500ms));
  serve("k", "kernel");
  server_.fail_status("k", 503, -1);
  const auto t0 = std::chrono::steady_clock::now();
  auto got = cat("k");
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, EIO);
  EXPECT_LT(took, 1500ms + 1500ms);
  EXPECT_GE(server_.count("GET", "k"), 3u);
  EXPECT_FALSE(index_->get_path("k")) << "nothing cached";
  EXPECT_TRUE(fetcher_->upstream_up()) << "HTTP answers are not connection failures";
}

TEST_F(FetcherTest, AHeadIsRetried) {
  server_.put("nolist/f", "abc");
  server_.no_listing("nolist/");
  server_.fail_status("nolist/f", 504, 1);
  auto a = lookup("nolist/f");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->size, 3u);
  EXPECT_EQ(server_.count("HEAD", "nolist/f"), 2u);
}

TEST_F(FetcherTest, AFailedRevalidationServesStaleWithoutRetrying) {
  restart(Opts().revalidate(0ms));
  server_.put("menu", "m");
  ASSERT_EQ(cat("menu").value(), "m");
  server_.fail_status("menu", 503, -1);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(cat("menu").value(), "m");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(server_.count("GET", "menu"), 2u);
  EXPECT_EQ(fetcher_->stats().stale_served.load(), 1u);
}

TEST_F(FetcherTest, AResumeAnswered503IsResumedAgain) {
  const std::string body = random_bytes(1 << 20, 6);
  serve("big", body);
  server_.cut("big", 300000, 1);
  auto reader = std::async(std::launch::async, [&] { return cat("big"); });
  // The resume comes after a back-off of at least 100 ms: fail it once.
  ASSERT_TRUE(server_.wait_for([](const auto& log) { return !log.empty(); }));
  ASSERT_TRUE(server_.wait_for([](const auto& log) {
    return std::count_if(log.begin(), log.end(), [](auto& r) { return r.path == "big"; }) >= 1;
  }));
  server_.fail_status("big", 503, 1);
  auto got = reader.get();
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_TRUE(got.value() == body);
  EXPECT_EQ(server_.count("GET", "big", 503), 1u);
  EXPECT_EQ(server_.count("GET", "big", 206), 1u) << "resumed after the 503, not restarted";
  EXPECT_EQ(server_.count("GET", "big", 200), 1u);
}

// --- Cache write failures -------------------------------------------------------

TEST_F(FetcherTest, AFailedCacheWriteFailsReadersAfterTheStallTimeoutAndTheNextOpenStartsOver) {
  restart(Opts().read_stall_timeout(1500ms));
  const std::string body = random_bytes(3 << 20, 7);
  const Attr a = serve("huge", body);
  // A full disk, as far as this process is concerned: writes past 1 MiB fail.
  FileSizeLimit full(1 << 20);
  ASSERT_TRUE(full.set());
  const auto t0 = std::chrono::steady_clock::now();
  {
    auto of = open(a.version);
    ASSERT_TRUE(of) << of.error().message;
    auto got = read_all(*of.value(), 1 << 20);
    full.lift();
    ASSERT_FALSE(got);
    EXPECT_EQ(got.error().code, EIO);
    // Not before the stall timeout: a TFTP client must see a timeout, not
    // the short read an early error becomes in the page cache.
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 1400ms);
    // A read of missing bytes on the same handle, which already stalled,
    // fails at once.
    auto r = read_at(*of.value(), 2 << 20, 4096, 2s);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EIO);
  }
  full.lift();
  EXPECT_EQ(fetcher_->stats().write_failures.load(), 1u);
  // The handle is gone: so is the temp file (once the HTTP thread has let
  // go of the failed transfer, a moment after the readers were answered).
  auto temps = [&] {
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator(dir_ + "/tmp")) {
      n += e.path().filename().string().rfind("dl-", 0) == 0;
    }
    return n;
  };
  for (int i = 0; i < 100 && temps() > 0; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(temps(), 0u);
  auto again = cat("huge");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_TRUE(again.value() == body);
  EXPECT_EQ(server_.count("GET", "huge"), 2u);
}

}  // namespace
}  // namespace netbootfs::cache
