// shutdown(): every waiter is answered, and what arrives after it fails.
#include "tests/unit/cache/fetcher_fixture.h"

#include <gtest/gtest.h>

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;

TEST_F(FetcherTest, ShutdownAnswersEveryWaiter) {
  const Attr a = serve("slow", "x");
  server_.hold("slow");
  std::promise<Result<std::unique_ptr<OpenFile>>> p;
  auto f = p.get_future();
  fetcher_->open(a.version, [&p](auto r) { p.set_value(std::move(r)); });
  ASSERT_TRUE(server_.wait_arrived("slow"));
  fetcher_->shutdown();
  auto r = await(f, 15s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EIO);
  server_.release();
}

}  // namespace
}  // namespace netbootfs::cache
