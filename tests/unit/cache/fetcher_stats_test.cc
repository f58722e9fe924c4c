// The Fetcher's counters: responses by method and status, and every error
// site (netbootfs_errors_total{site}) where it arises.
#include "tests/unit/cache/fetcher_fixture.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <future>
#include <iterator>

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

TEST(FetcherErrorSites, EachSiteHasItsLabelAndItsOwnCounter) {
  using S = FetcherStats::ErrorSite;
  const std::pair<S, const char*> table[] = {
      {S::kReadStall, "read_stall"},   {S::kUpstreamDown, "upstream_down"},
      {S::kCacheWrite, "cache_write"}, {S::kUpstream, "upstream"},
      {S::kListing, "listing"},        {S::kDownload, "download"},
      {S::kNoContent, "no_content"},   {S::kBlobUnreadable, "blob_unreadable"},
      {S::kRevalidation, "revalidation"}, {S::kRewrite, "rewrite"},
      {S::kShutdown, "shutdown"},
  };
  ASSERT_EQ(FetcherStats::kErrorSiteCount, std::size(table));
  for (const auto& [site, label] : table) {
    const size_t i = static_cast<size_t>(site);
    EXPECT_STREQ(FetcherStats::kErrorSiteLabels[i], label);
    FetcherStats st;
    const Error e = st.count(site, Error{EIO, label});
    EXPECT_EQ(e.code, EIO);
    EXPECT_EQ(e.message, label);
    for (size_t j = 0; j < FetcherStats::kErrorSiteCount; ++j) {
      EXPECT_EQ(st.errors[j].load(), j == i ? 1u : 0u) << label << " counted at " << j;
    }
  }
  FetcherStats st;
  EXPECT_EQ(&st.read_stall_failures, &st.error_count(S::kReadStall));
  EXPECT_EQ(&st.down_fast_failures, &st.error_count(S::kUpstreamDown));
  EXPECT_EQ(&st.write_failures, &st.error_count(S::kCacheWrite));
}

TEST_F(FetcherTest, AReadWithoutProgressIsCountedAsReadStall) {
  restart(Opts().read_stall_timeout(1000ms));
  const std::string body = random_bytes(1 << 20, 6);
  serve("big", body);
  server_.cut("big", 300000, 1);
  auto reader = std::async(std::launch::async, [&] { return cat("big"); });
  // Once the first GET is answered, every resume fails: no progress past the cut.
  ASSERT_TRUE(server_.wait_for([](const auto& log) {
    return std::any_of(log.begin(), log.end(), [](const auto& r) { return r.path == "big"; });
  }));
  server_.fail_status("big", 503, -1);
  auto got = reader.get();
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, EIO);
  EXPECT_EQ(errors(FetcherStats::ErrorSite::kReadStall), 1u);
  server_.fail_status("big", 503, 0);
}

TEST_F(FetcherTest, A500AfterRetriesIsCountedAsUpstreamForGetAndHead) {
  restart(Opts().retry_timeout(300ms));
  serve("k", "kernel");
  server_.fail_status("k", 500, -1);
  auto got = cat("k");
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, EIO);
  EXPECT_GE(server_.count("GET", "k", 500), 2u) << "retried first";
  EXPECT_EQ(errors(FetcherStats::ErrorSite::kUpstream), 1u);
  server_.no_listing("nolist/");
  server_.put("nolist/f", "f");
  server_.fail_status("nolist/f", 500, -1);
  auto head = lookup("nolist/f");
  ASSERT_FALSE(head);
  EXPECT_EQ(head.error().code, EIO);
  EXPECT_GE(server_.count("HEAD", "nolist/f", 500), 2u);
  EXPECT_EQ(errors(FetcherStats::ErrorSite::kUpstream), 2u);
  EXPECT_EQ(errors(FetcherStats::ErrorSite::kUpstreamDown), 0u) << "HTTP answers: never down";
}

TEST_F(FetcherTest, AMissWhileUpstreamIsDownIsCountedAsUpstreamDown) {
  restart(Opts().revalidate(0ms).down_after(1).probe_interval(60s));
  const Attr a = serve({{"cached", "c"}, {"later", "bytes"}})[1];
  ASSERT_EQ(cat("cached").value(), "c");
  server_.stop();
  ASSERT_EQ(cat("cached").value(), "c");  // its revalidation is refused: down
  ASSERT_FALSE(fetcher_->upstream_up());
  const uint64_t before = errors(FetcherStats::ErrorSite::kUpstreamDown);
  auto miss = open(a.version);
  ASSERT_FALSE(miss);
  EXPECT_EQ(miss.error().code, EIO);
  EXPECT_EQ(errors(FetcherStats::ErrorSite::kUpstreamDown), before + 1);
}

TEST_F(FetcherTest, AListingThatFailsWithNothingCachedIsCountedAsListing) {
  restart(Opts().retry_timeout(0ms));
  server_.put("dir/f", "f");
  server_.fail_status("dir/", 500, -1);
  auto r = list_dir("dir");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_EQ(errors(FetcherStats::ErrorSite::kListing), 1u);
  server_.no_listing("absent/");
  auto absent = list_dir("absent");
  ASSERT_FALSE(absent);
  EXPECT_EQ(absent.error().code, ENOENT) << "upstream's word, not a failure of ours";
  EXPECT_EQ(errors(FetcherStats::ErrorSite::kListing), 1u);
}

TEST_F(FetcherTest, AnUnreadableCachedBlobIsCountedAsBlobUnreadable) {
  restart(Opts().revalidate(60s));
  server_.put("k", "kernel");
  ASSERT_EQ(cat("k").value(), "kernel");
  const auto entry = index_->get_path("k");
  ASSERT_TRUE(entry);
  ASSERT_TRUE(blobs_->remove(entry->sha256));
  auto got = cat("k");
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, EIO);
  EXPECT_EQ(errors(FetcherStats::ErrorSite::kBlobUnreadable), 1u);
  EXPECT_TRUE(eventually([&] { return !index_->get_path("k"); })) << "the path is forgotten";
}

TEST_F(FetcherTest, AFailedCacheWriteIsCountedAsCacheWrite) {
  const Attr a = serve("huge", random_bytes(3 << 20, 7));
  FileSizeLimit full(1 << 20);
  ASSERT_TRUE(full.set());
  auto of = open(a.version);
  ASSERT_TRUE(of) << of.error().message;
  EXPECT_TRUE(eventually([&] { return errors(FetcherStats::ErrorSite::kCacheWrite) == 1; }));
  full.lift();
  EXPECT_EQ(errors(FetcherStats::ErrorSite::kUpstream), 0u) << "not upstream's failure";
}

}  // namespace
}  // namespace netbootfs::cache
