// Opens: single flight, revalidation and versions (ESTALE for a replaced one,
// old handles keep their bytes), the size without Content-Length, a restart,
// missing_grace, and describe()'s snapshots.
#include "tests/unit/cache/fetcher_fixture.h"

#include <gtest/gtest.h>

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;

TEST_F(FetcherTest, ConcurrentOpensOfAColdFileShareOneDownload) {
  const std::string body = random_bytes(3 << 20, 1);
  const Attr a = serve("images/initrd", body);
  server_.hold("images/initrd");
  constexpr int kReaders = 24;
  std::vector<std::future<std::string>> readers;
  for (int i = 0; i < kReaders; ++i) {
    readers.push_back(std::async(std::launch::async, [&, i] {
      auto of = open(a.version);
      if (!of) return std::string("open failed: ") + of.error().message;
      auto data = read_all(*of.value(), 4096 << (i % 6));
      return data ? data.value() : "read failed: " + data.error().message;
    }));
  }
  ASSERT_TRUE(server_.wait_arrived("images/initrd"));
  std::this_thread::sleep_for(100ms);  // let the other opens park behind the held response
  server_.release();
  for (auto& r : readers) {
    const std::string got = r.get();
    ASSERT_EQ(got.size(), body.size()) << got.substr(0, 80);
    EXPECT_TRUE(got == body);
  }
  EXPECT_EQ(server_.count("GET", "images/initrd"), 1u);
  // Published: the index points at a blob of the right size.
  auto e = index_->get_path("images/initrd");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->size, body.size());
}

TEST_F(FetcherTest, RevalidationAnswers304WhileUnchanged) {
  restart(Opts().revalidate(0ms));
  server_.put("grub/grub.cfg", "menuentry x {}\n");
  ASSERT_EQ(cat("grub/grub.cfg").value(), "menuentry x {}\n");
  ASSERT_EQ(cat("grub/grub.cfg").value(), "menuentry x {}\n");
  ASSERT_EQ(cat("grub/grub.cfg").value(), "menuentry x {}\n");
  EXPECT_EQ(server_.count("GET", "grub/grub.cfg", 200), 1u);
  EXPECT_EQ(server_.count("GET", "grub/grub.cfg", 304), 2u);
}

TEST_F(FetcherTest, WithinTheRevalidateWindowOpensAskNothing) {
  restart(Opts().revalidate(60s));
  server_.put("k", "kernel");
  for (int i = 0; i < 20; ++i) ASSERT_EQ(cat("k").value(), "kernel");
  EXPECT_EQ(server_.count("GET", "k"), 1u);
}

TEST_F(FetcherTest, AChangedFileIsANewVersionAndOldHandlesKeepTheirBytes) {
  restart(Opts().revalidate(0ms));
  const Attr v1 = serve("initrd", "old bytes");
  auto h1 = open(v1.version);
  ASSERT_TRUE(h1);
  ASSERT_EQ(read_all(*h1.value()).value(), "old bytes");

  server_.put("initrd", "new bytes, longer");
  auto again = open(v1.version);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ESTALE) << "open must send the kernel back to LOOKUP";
  auto v2 = lookup("initrd");
  ASSERT_TRUE(v2);
  EXPECT_NE(v2->version, v1.version);
  EXPECT_EQ(v2->size, 17u);
  auto h2 = open(v2->version);
  ASSERT_TRUE(h2) << h2.error().message;
  EXPECT_EQ(read_all(*h2.value()).value(), "new bytes, longer");
  // The snapshot: the first handle still reads the version it opened.
  EXPECT_EQ(read_all(*h1.value()).value(), "old bytes");
}

TEST_F(FetcherTest, WithoutContentLengthTheSizeComesFromTheWholeBody) {
  const std::string body = random_bytes(700000, 3);
  server_.put("dir/dynamic", body);
  server_.no_length("dir/dynamic");
  auto a = lookup("dir/dynamic");  // the listing has the size, but upstream's GET has none
  ASSERT_TRUE(a);
  auto of = open(a->version);
  ASSERT_TRUE(of) << of.error().message << ": the same size is the same version";
  EXPECT_TRUE(read_all(*of.value()).value() == body);
  server_.put("nolist/dynamic", body);
  server_.no_length("nolist/dynamic");
  server_.no_listing("nolist/");
  auto b = lookup("nolist/dynamic");  // HEAD without length: fetched whole before answering
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(b->size, body.size());
  EXPECT_TRUE(index_->get_path("nolist/dynamic")) << "complete before lookup answered";
  auto got = cat("nolist/dynamic");
  ASSERT_TRUE(got);
  EXPECT_TRUE(got.value() == body);
}

TEST_F(FetcherTest, TheCacheSurvivesARestart) {
  server_.put("boot/ldlinux.c32", "ldlinux");
  ASSERT_EQ(cat("boot/ldlinux.c32").value(), "ldlinux");
  restart(FetcherOptions{});
  server_.stop();
  // Upstream is gone: lookup and open are served from the index and the blob.
  auto got = cat("boot/ldlinux.c32");
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got.value(), "ldlinux");
}

// --- missing_grace ------------------------------------------------------------

TEST_F(FetcherTest, ACachedFileGoneUpstreamIsServedUntilMissingGraceEnds) {
  restart(Opts().revalidate(0ms).missing_grace(1500ms));
  server_.put("boot/menu", "menu v1");
  ASSERT_EQ(cat("boot/menu").value(), "menu v1");
  server_.remove("boot/menu");
  for (int i = 0; i < 3; ++i) {
    auto got = cat("boot/menu");
    ASSERT_TRUE(got) << got.error().message;
    EXPECT_EQ(got.value(), "menu v1");
  }
  EXPECT_GE(fetcher_->stats().missing_served.load(), 3u);
  std::this_thread::sleep_for(1600ms);
  auto gone = cat("boot/menu");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ENOENT);
  EXPECT_TRUE(server_.wait_for([&](const auto&) { return !index_->get_path("boot/menu"); }, 2s))
      << "removed from the cache after the grace";
  EXPECT_EQ(fetcher_->stats().missing_removed.load(), 1u);
  auto again = lookup("boot/menu");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ENOENT);
}

TEST_F(FetcherTest, AnAnswerInTheGraceWindowClearsIt) {
  restart(Opts().revalidate(0ms).missing_grace(1200ms));
  server_.put("cfg", "same");
  ASSERT_EQ(cat("cfg").value(), "same");
  server_.fail_status("cfg", 404, 1);  // a sync deleting and recreating the tree
  ASSERT_EQ(cat("cfg").value(), "same");
  ASSERT_EQ(cat("cfg").value(), "same");  // 304: the window is cleared
  std::this_thread::sleep_for(800ms);
  server_.fail_status("cfg", 410, 1);  // a new window starts now
  std::this_thread::sleep_for(600ms);  // 1.4 s after the first 404
  auto got = cat("cfg");
  ASSERT_TRUE(got) << got.error().message << ": the first window should have been cleared";
  EXPECT_EQ(got.value(), "same");
}

TEST_F(FetcherTest, ACachedFileAbsentFromAFreshListingIsServedThroughTheGrace) {
  restart(Opts().listing_ttl(400ms).revalidate(0ms).missing_grace(1000ms));
  server_.put("d/a", "aaa");
  server_.put("d/b", "bbb");
  ASSERT_EQ(cat("d/a").value(), "aaa");
  server_.remove("d/a");
  // A lookup past listing_ttl answers from the cache and refreshes the
  // listing; the next one judges the fresh listing.
  auto refreshed_lookup = [&](size_t listings) {
    std::this_thread::sleep_for(450ms);
    EXPECT_TRUE(lookup("d/a"));
    EXPECT_TRUE(server_.wait_for([&](const auto& log) {
      return static_cast<size_t>(std::count_if(log.begin(), log.end(), [](const auto& r) {
               return r.method == "GET" && r.path == "d/";
             })) >= listings;
    }));
    std::this_thread::sleep_for(50ms);
    return lookup("d/a");
  };
  auto a = refreshed_lookup(2);
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->size, 3u);
  EXPECT_EQ(fetcher_->stats().missing_served.load(), 1u);
  std::this_thread::sleep_for(600ms);
  auto gone = refreshed_lookup(3);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ENOENT);
  ASSERT_TRUE(server_.wait_for([&](const auto&) { return !index_->get_path("d/a"); }, 2s))
      << "removed from the cache";
  EXPECT_EQ(cat("d/b").value(), "bbb") << "its neighbours are not affected";
}

TEST_F(FetcherTest, AnUncachedFileThat404sIsENOENTAtOnce) {
  serve("x/y", "z");
  server_.fail_status("x/y", 404, -1);
  auto r = cat("x/y");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_EQ(fetcher_->stats().missing_served.load(), 0u);
}

TEST_F(FetcherTest, DescribeFollowsAFileFromRemoteToCachedToStaleWithoutRequests) {
  restart(Opts().revalidate(0ms).down_after(1).probe_interval(60s));
  const std::string body = "kernel bytes";
  server_.put("boot/vmlinuz", body);
  auto a = lookup("boot/vmlinuz");
  ASSERT_TRUE(a) << a.error().message;
  const size_t before = server_.requests().size();
  VersionInfo info = fetcher_->describe(a->version);
  EXPECT_EQ(info.state, VersionInfo::State::kRemote);
  EXPECT_TRUE(info.sha256.empty());
  EXPECT_EQ(info.validated_at, 0);
  EXPECT_EQ(info.source_url, server_.url() + "boot/vmlinuz");
  EXPECT_EQ(server_.requests().size(), before) << "describe never asks upstream";

  const int64_t t0 = ::time(nullptr);
  ASSERT_EQ(cat("boot/vmlinuz").value(), body);
  a = lookup("boot/vmlinuz");
  ASSERT_TRUE(a);
  info = fetcher_->describe(a->version);
  EXPECT_EQ(info.state, VersionInfo::State::kCached);
  const auto entry = index_->get_path("boot/vmlinuz");
  ASSERT_TRUE(entry);
  EXPECT_EQ(info.sha256, entry->sha256);
  EXPECT_EQ(info.etag, entry->etag);
  EXPECT_TRUE(blobs_->blob_size(info.sha256).has_value());
  EXPECT_FALSE(info.etag.empty());
  EXPECT_EQ(info.etag.front(), '"');
  EXPECT_GE(info.validated_at, t0 - 1);
  EXPECT_LE(info.validated_at, ::time(nullptr) + 1);
  EXPECT_FALSE(info.rewritten);
  EXPECT_TRUE(info.upstream_sha256.empty());

  server_.stop();
  ASSERT_EQ(cat("boot/vmlinuz").value(), body);  // marks upstream down, served stale
  ASSERT_FALSE(fetcher_->upstream_up());
  info = fetcher_->describe(a->version);
  EXPECT_EQ(info.state, VersionInfo::State::kStale);
  EXPECT_EQ(info.sha256.size(), 64u);
}

TEST_F(FetcherTest, DescribeNamesTheMirrorABodyCameFrom) {
  auto& mirror = add_mirror();
  put_on_both("images/initrd", "initrd bytes");
  auto a = lookup("images/initrd");
  ASSERT_TRUE(a);
  server_.stop();
  ASSERT_EQ(cat("images/initrd").value(), "initrd bytes");
  auto b = lookup("images/initrd");
  ASSERT_TRUE(b);
  const VersionInfo info = fetcher_->describe(b->version);
  EXPECT_EQ(info.source_url, mirror.url() + "images/initrd");
  EXPECT_EQ(info.state, VersionInfo::State::kCached);
}

}  // namespace
}  // namespace netbootfs::cache
