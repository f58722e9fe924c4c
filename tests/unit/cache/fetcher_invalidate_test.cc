// invalidate(prefix): what it drops (validation, listings, negative entries),
// for paths loaded now and later.
#include "tests/unit/cache/fetcher_fixture.h"

#include <gtest/gtest.h>

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;

// --- invalidate -------------------------------------------------------------------

TEST_F(FetcherTest, InsideTheRevalidateWindowAnInvalidatedFileRevalidatesAtItsNextOpen) {
  restart(Opts().revalidate(3600s).listing_ttl(3600s));
  server_.put("boot/initrd", "old bytes");
  server_.put("other", "x");
  ASSERT_EQ(cat("boot/initrd").value(), "old bytes");
  ASSERT_EQ(cat("other").value(), "x");
  server_.put("boot/initrd", "new bytes, longer");
  EXPECT_EQ(cat("boot/initrd").value(), "old bytes") << "inside the window nothing is asked";
  const auto r = fetcher_->invalidate("boot");
  EXPECT_EQ(r.files, 1u);
  EXPECT_EQ(r.listings, 2u) << "the listings of boot/ and of its parent, the root";
  EXPECT_NE(std::find(r.listing_paths.begin(), r.listing_paths.end(), "boot"),
            r.listing_paths.end());
  EXPECT_NE(std::find(r.listing_paths.begin(), r.listing_paths.end(), ""), r.listing_paths.end());
  auto got = cat_revalidating("boot/initrd");
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got.value(), "new bytes, longer");
  // The other path was not under the prefix: still not asked again.
  EXPECT_EQ(cat("other").value(), "x");
  EXPECT_EQ(server_.count("GET", "other"), 1u);
}

TEST_F(FetcherTest, InvalidatingOneFileDropsItsDirectorysListing) {
  restart(Opts().listing_ttl(3600s).negative_ttl(3600s));
  server_.put("pxelinux.cfg/default", "d");
  ASSERT_EQ(cat("pxelinux.cfg/default").value(), "d");
  auto m = lookup("pxelinux.cfg/01-aa");
  ASSERT_FALSE(m) << "absent from the listing";
  server_.put("pxelinux.cfg/01-aa", "host");
  ASSERT_FALSE(lookup("pxelinux.cfg/01-aa")) << "the listing is trusted for an hour";
  const size_t listed = server_.count("GET", "pxelinux.cfg/");
  // Not the new file itself: a file beside it, as an admin would after a sync.
  const auto r = fetcher_->invalidate("pxelinux.cfg/default");
  EXPECT_EQ(r.listings, 1u) << "the listing of pxelinux.cfg/";
  ASSERT_EQ(r.listing_paths.size(), 1u);
  EXPECT_EQ(r.listing_paths[0], "pxelinux.cfg");
  EXPECT_EQ(cat("pxelinux.cfg/01-aa").value(), "host");
  EXPECT_EQ(server_.count("GET", "pxelinux.cfg/"), listed + 1);
}

TEST_F(FetcherTest, AnInvalidatedUnchangedFileSendsAConditionalRequest) {
  restart(Opts().revalidate(3600s));
  server_.put("k", "kernel");
  ASSERT_EQ(cat("k").value(), "kernel");
  ASSERT_EQ(cat("k").value(), "kernel");
  EXPECT_EQ(server_.count("GET", "k"), 1u);
  EXPECT_EQ(fetcher_->invalidate("").files, 1u);
  ASSERT_EQ(cat("k").value(), "kernel");
  EXPECT_EQ(server_.count("GET", "k", 200), 1u);
  EXPECT_EQ(server_.count("GET", "k", 304), 1u) << "a conditional GET, answered 304";
  ASSERT_EQ(cat("k").value(), "kernel");
  EXPECT_EQ(server_.count("GET", "k"), 2u) << "validated again: the window applies again";
}

TEST_F(FetcherTest, InvalidateCoversPathsLoadedFromTheIndexLater) {
  const FetcherOptions o = Opts().revalidate(3600s);
  restart(o);
  server_.put("a/b", "one");
  ASSERT_EQ(cat("a/b").value(), "one");
  restart(o);  // a fresh Fetcher: the path is in the index only
  EXPECT_EQ(fetcher_->invalidate("a").files, 0u);
  ASSERT_EQ(cat("a/b").value(), "one");
  EXPECT_EQ(server_.count("GET", "a/b", 304), 1u);
}

TEST_F(FetcherTest, InvalidateDropsNegativeEntries) {
  restart(Opts().negative_ttl(3600s).listing_ttl(3600s));
  server_.put("pxelinux.cfg/default", "d");
  auto m = lookup("pxelinux.cfg/01-aa");
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, ENOENT);
  server_.put("pxelinux.cfg/01-aa", "host");
  ASSERT_FALSE(lookup("pxelinux.cfg/01-aa")) << "remembered as missing";
  const auto r = fetcher_->invalidate("");
  EXPECT_EQ(r.negatives, 1u);
  ASSERT_EQ(r.negative_paths.size(), 1u);
  EXPECT_EQ(r.negative_paths[0], "pxelinux.cfg/01-aa");
  EXPECT_EQ(cat("pxelinux.cfg/01-aa").value(), "host");
}

TEST(PathAtOrUnder, Table) {
  EXPECT_TRUE(path_at_or_under("a/b", ""));
  EXPECT_TRUE(path_at_or_under("a/b", "a"));
  EXPECT_TRUE(path_at_or_under("a/b", "a/b"));
  EXPECT_FALSE(path_at_or_under("ab/c", "a"));
  EXPECT_FALSE(path_at_or_under("a", "a/b"));
  EXPECT_FALSE(path_at_or_under("b", "a"));
}

}  // namespace
}  // namespace netbootfs::cache
