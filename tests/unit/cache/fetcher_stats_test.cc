// The Fetcher's counters: responses by method and status, and every error
// site (netbootfs_errors_total{site}) where it arises.
#include "tests/unit/cache/fetcher_fixture.h"

#include <gtest/gtest.h>

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;

TEST_F(FetcherTest, ResponsesAreCountedByMethodAndStatus) {
  restart(Opts().retry_timeout(0ms));
  server_.put("a", "aaa");
  server_.no_listing("");
  ASSERT_EQ(cat("a").value(), "aaa");
  auto missing = lookup("nope");
  ASSERT_FALSE(missing);
  const auto& st = fetcher_->stats();
  auto n = [&](int m, const char* label) {
    for (size_t i = 0; i < FetcherStats::kStatusCount; ++i) {
      if (std::string(FetcherStats::kStatusLabels[i]) == label) return st.responses[m][i].load();
    }
    ADD_FAILURE() << "no label " << label;
    return uint64_t{0};
  };
  EXPECT_EQ(n(0, "200"), server_.count("GET", "", 200) + server_.count("GET", "a", 200));
  EXPECT_GE(n(0, "200"), 1u);
  EXPECT_EQ(n(1, "404"), server_.count("HEAD", "nope", 404));
  EXPECT_GE(n(1, "404"), 1u);
  EXPECT_EQ(n(0, "error"), 0u);
  server_.stop();
  auto down = lookup("other");
  ASSERT_FALSE(down);
  EXPECT_GE(n(1, "error") + n(0, "error"), 1u) << "a refused connection counts as error";
  EXPECT_EQ(FetcherStats::status_slot(418), FetcherStats::kStatusCount - 2);
  EXPECT_EQ(FetcherStats::status_slot(0), FetcherStats::kStatusCount - 1);
}

}  // namespace
}  // namespace netbootfs::cache
