// Upstream health and mirrors: stale-if-error, down after connection
// failures and up at a probe's answer, and which origin each request goes to.
#include "tests/unit/cache/fetcher_fixture.h"

#include <gtest/gtest.h>

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;

TEST_F(FetcherTest, CachedFilesAreServedWhenUpstreamIsGoneAndMissesFailFast) {
  restart(Opts().revalidate(0ms));
  server_.put("pxelinux.0", "bootloader");
  server_.put("other", "never read");
  ASSERT_EQ(cat("pxelinux.0").value(), "bootloader");
  auto other = lookup("other");  // known from the listing, never downloaded
  ASSERT_TRUE(other);
  server_.stop();
  ASSERT_EQ(cat("pxelinux.0").value(), "bootloader") << "stale-if-error";
  EXPECT_EQ(fetcher_->stats().stale_served.load(), 1u);
  const auto t0 = std::chrono::steady_clock::now();
  auto miss = open(other->version);
  ASSERT_FALSE(miss);
  EXPECT_EQ(miss.error().code, EIO);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

// --- Upstream health ------------------------------------------------------------

TEST_F(FetcherTest, AfterConnectionFailuresUpstreamIsDownUntilAProbeAnswers) {
  restart(Opts().revalidate(0ms).down_after(2).probe_interval(200ms));
  server_.put("cached", "cached bytes");
  server_.put("later", "later bytes");
  ASSERT_EQ(cat("cached").value(), "cached bytes");
  auto later = lookup("later");
  ASSERT_TRUE(later);
  const int port = server_.port();
  server_.stop();
  // Revalidations fail (connection refused) and serve the cache.
  ASSERT_EQ(cat("cached").value(), "cached bytes");
  ASSERT_EQ(cat("cached").value(), "cached bytes");
  EXPECT_FALSE(fetcher_->upstream_up());
  EXPECT_EQ(fetcher_->stats().upstream_down_events.load(), 1u);
  const uint64_t failures = fetcher_->stats().upstream_failures.load();
  // While down: no request at all, cached files served, misses fail at once.
  for (int i = 0; i < 5; ++i) ASSERT_EQ(cat("cached").value(), "cached bytes");
  auto miss = open(later->version);
  ASSERT_FALSE(miss);
  EXPECT_EQ(miss.error().code, EIO);
  EXPECT_GE(fetcher_->stats().down_fast_failures.load(), 1u);
  EXPECT_LE(fetcher_->stats().upstream_failures.load(), failures + 3) << "only probes ask";
  // Upstream comes back on the same port: a probe flips it up.
  testing::TestHttpServer back(port);
  back.put("later", "later bytes");
  back.put("cached", "cached bytes");
  ASSERT_TRUE(wait_until_up());
  EXPECT_GE(back.count("HEAD", ""), 1u) << "the probe is a HEAD of the base URL";
  auto later_bytes = cat("later");
  ASSERT_TRUE(later_bytes) << later_bytes.error().message;
  EXPECT_EQ(later_bytes.value(), "later bytes");
}

TEST_F(FetcherTest, ZeroDownAfterNeverMarksDown) {
  restart(Opts().down_after(0).retry_timeout(0ms));
  serve("f", "x");
  server_.stop();
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(cat("g" + std::to_string(i)));
  EXPECT_TRUE(fetcher_->upstream_up());
}

// --- Mirrors --------------------------------------------------------------------

TEST_F(FetcherTest, APrimaryRefusingConnectionsIsReplacedByTheMirrorInOneOpen) {
  auto& mirror = add_mirror();
  const std::string body = random_bytes(600 * 1024, 7);
  put_on_both("images/kernel", body);
  put_on_both("images/initrd", "initrd bytes");
  auto a = lookup("images/kernel");  // the listing comes from the primary
  ASSERT_TRUE(a) << a.error().message;
  server_.stop();
  auto of = open(a->version);
  ASSERT_TRUE(of) << of.error().message;
  EXPECT_EQ(read_all(*of.value()).value(), body);
  EXPECT_EQ(mirror.count("GET", "images/kernel", 200), 1u);
  EXPECT_TRUE(fetcher_->upstream_up()) << "a working mirror keeps upstream up";
  // The primary is backing off: the next miss goes straight to the mirror.
  const uint64_t retries = fetcher_->stats().retries.load();
  ASSERT_EQ(cat("images/initrd").value(), "initrd bytes");
  EXPECT_EQ(mirror.count("GET", "images/initrd", 200), 1u);
  EXPECT_EQ(fetcher_->stats().retries.load(), retries) << "no attempt at the primary";
  EXPECT_EQ(fetcher_->stats().upstream_down_events.load(), 0u);
}

TEST_F(FetcherTest, APrimaryAnswering503IsReplacedByTheMirror) {
  auto& mirror = add_mirror();
  put_on_both("f", "the bytes");
  server_.fail_status("f", 503, -1);
  ASSERT_EQ(cat("f").value(), "the bytes");
  EXPECT_GE(server_.count("GET", "f", 503), 1u);
  EXPECT_EQ(mirror.count("GET", "f", 200), 1u);
}

TEST_F(FetcherTest, APrimaryAnswering404IsFinalAndTheMirrorIsNotAsked) {
  auto& mirror = add_mirror();
  put_on_both("f", "the bytes");
  auto a = lookup("f");
  ASSERT_TRUE(a);
  server_.fail_status("f", 404, -1);
  auto of = open(a->version);
  ASSERT_FALSE(of);
  EXPECT_EQ(of.error().code, ENOENT);
  EXPECT_EQ(server_.count("GET", "f", 404), 1u);
  EXPECT_TRUE(mirror.requests().empty()) << "a 404 is an answer about the file";
}

TEST_F(FetcherTest, AfterItsBackoffTheHealthyPrimaryIsUsedAgain) {
  auto& mirror = add_mirror(Opts().mirror_backoff(300ms).mirror_backoff_max(300ms));
  const int port = server_.port();
  server_.stop();
  mirror.put("a", "a bytes");
  mirror.put("b", "b bytes");
  ASSERT_EQ(cat("a").value(), "a bytes");  // listing and GET from the mirror
  EXPECT_EQ(mirror.count("GET", "a", 200), 1u);
  testing::TestHttpServer back(port);
  back.put("a", "a bytes");
  back.put("b", "b bytes");
  std::this_thread::sleep_for(600ms);
  ASSERT_EQ(cat("b").value(), "b bytes");
  EXPECT_EQ(back.count("GET", "b", 200), 1u) << "the preferred origin again";
  EXPECT_EQ(mirror.count("GET", "b"), 0u);
}

TEST_F(FetcherTest, ABrokenDownloadMayResumeAtTheMirror) {
  auto& mirror = add_mirror();
  const std::string body = random_bytes(900 * 1024, 11);
  put_on_both("big", body);  // the same bytes, the same ETag ("v1") on both
  server_.cut("big", 300 * 1024);
  ASSERT_EQ(cat("big").value(), body);
  const auto reqs = mirror.requests();
  const bool resumed = std::any_of(reqs.begin(), reqs.end(), [](const auto& r) {
    return r.method == "GET" && r.path == "big" && !r.range.empty() && r.if_range == "\"v1\"";
  });
  EXPECT_TRUE(resumed) << "the resume (Range + If-Range) went to the mirror";
  EXPECT_EQ(server_.count("GET", "big"), 1u);
  EXPECT_GE(fetcher_->stats().resumes.load(), 1u);
}

// The primary's back-off outlasts a retry's delay (100 to 200 ms first), so
// a retry goes to the mirror whenever the machine is slow: with 50 ms it went
// back to the dead primary unless a new request happened to follow a failure
// within 50 ms (a CI run failed that way).
TEST_F(FetcherTest, UpstreamIsDownOnlyWhenEveryOriginFails) {
  auto& mirror = add_mirror(Opts()
                                .down_after(2)
                                .mirror_backoff(300ms)
                                .mirror_backoff_max(300ms)
                                .retry_timeout(1000ms)
                                .probe_interval(100ms));
  server_.stop();
  const int mirror_port = mirror.port();
  mirror.put("m", "m bytes");
  for (int i = 0; i < 6; ++i) mirror.put("x" + std::to_string(i), "x");
  // Failed connections to the primary, but the mirror answers: up.
  ASSERT_EQ(cat("m").value(), "m bytes");
  EXPECT_TRUE(fetcher_->upstream_up());
  EXPECT_GE(fetcher_->stats().upstream_failures.load(), 1u);
  mirror.stop();
  for (int i = 0; i < 6 && fetcher_->upstream_up(); ++i) {
    auto r = cat("x" + std::to_string(i));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EIO);
  }
  EXPECT_FALSE(fetcher_->upstream_up());
  EXPECT_EQ(fetcher_->stats().upstream_down_events.load(), 1u);
  // Probes ask the origins in turn: the mirror alone coming back is enough.
  testing::TestHttpServer back(mirror_port);
  back.put("x5", "x5 bytes");
  ASSERT_TRUE(wait_until_up());
  EXPECT_GE(back.count("HEAD", ""), 1u);
  // The listing the mirror gave before it stopped says x5 has 1 byte: the
  // open finds 8 and answers ESTALE, and the kernel looks the name up again.
  auto x5 = cat_revalidating("x5");
  ASSERT_TRUE(x5) << x5.error().message;
  EXPECT_EQ(x5.value(), "x5 bytes");
}

}  // namespace
}  // namespace netbootfs::cache
