// shutdown(): every waiter is answered, and what arrives after it fails.
#include "tests/unit/cache/fetcher_fixture.h"

#include <gtest/gtest.h>

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;

TEST_F(FetcherTest, ShutdownAnswersEveryWaiter) {
  const Attr a = serve("slow", "x");
  server_.hold("slow");
  auto f = open_async(a.version);
  ASSERT_TRUE(server_.wait_arrived("slow"));
  fetcher_->shutdown();
  auto r = await(f, 15s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EIO);
  server_.release();
}

TEST_F(FetcherTest, AWaiterAnsweredAtShutdownIsCountedAsShutdown) {
  const Attr a = serve("slow", "x");
  server_.hold("slow");
  auto f = open_async(a.version);
  ASSERT_TRUE(server_.wait_arrived("slow"));
  EXPECT_EQ(errors(FetcherStats::ErrorSite::kShutdown), 0u);
  fetcher_->shutdown();
  auto r = await(f, 15s);
  ASSERT_FALSE(r);
  EXPECT_EQ(errors(FetcherStats::ErrorSite::kShutdown), 1u);
  server_.release();
}

TEST_F(FetcherTest, CallsAfterShutdownFailWithEIOCountedAsShutdown) {
  const Attr a = serve("f", "bytes");
  fetcher_->shutdown();
  auto l = lookup("f");
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code, EIO);
  auto o = open(a.version);
  ASSERT_FALSE(o);
  EXPECT_EQ(o.error().code, EIO);
  EXPECT_EQ(errors(FetcherStats::ErrorSite::kShutdown), 2u);
  EXPECT_EQ(server_.count("GET", "f"), 0u) << "nothing asked upstream";
}

TEST_F(FetcherTest, AReadParkedOnADownloadIsAnsweredAtShutdown) {
  const Attr a = serve("big", random_bytes(1 << 20, 3));
  auto of = open(a.version, 64 * 1024);  // ~16 s for the whole file
  ASSERT_TRUE(of) << of.error().message;
  std::promise<Result<Slice>> p;
  auto f = p.get_future();
  of.value()->read(900 * 1024, 4096, [&p](Result<Slice> r) { p.set_value(std::move(r)); });
  std::this_thread::sleep_for(100ms);
  ASSERT_NE(f.wait_for(0ms), std::future_status::ready) << "the read was not parked";
  const auto t0 = std::chrono::steady_clock::now();
  fetcher_->shutdown();
  auto r = await(f, 2s);  // well before read_stall_timeout (3 s) or the download's end
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

}  // namespace
}  // namespace netbootfs::cache
