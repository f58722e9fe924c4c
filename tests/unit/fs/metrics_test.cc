#include "fs/metrics.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "cache/http/client.h"

namespace netbootfs::fs {
namespace {

TEST(MetricsRegistry, RendersFamiliesOnceWithTheirSeries) {
  MetricsRegistry r;
  std::atomic<uint64_t> hits{3};
  r.counter("netbootfs_open_total", "Opens by outcome.", {{"outcome", "hit"}},
            [&] { return double(hits.load()); });
  r.gauge("netbootfs_upstream_up", "1 while upstream answers.", {}, [] { return 1.0; });
  r.counter("netbootfs_open_total", "ignored: the family has its help", {{"outcome", "miss"}},
            [] { return 7.0; });
  hits = 5;
  EXPECT_EQ(r.render(),
            "# HELP netbootfs_open_total Opens by outcome.\n"
            "# TYPE netbootfs_open_total counter\n"
            "netbootfs_open_total{outcome=\"hit\"} 5\n"
            "netbootfs_open_total{outcome=\"miss\"} 7\n"
            "# HELP netbootfs_upstream_up 1 while upstream answers.\n"
            "# TYPE netbootfs_upstream_up gauge\n"
            "netbootfs_upstream_up 1\n");
}

TEST(MetricsRegistry, EscapesLabelValuesAndHelp) {
  MetricsRegistry r;
  r.gauge("netbootfs_x", "a \\ b\nc", {{"path", "a\"b\\c\nd"}}, [] { return 0.5; });
  EXPECT_EQ(r.render(),
            "# HELP netbootfs_x a \\\\ b\\nc\n"
            "# TYPE netbootfs_x gauge\n"
            "netbootfs_x{path=\"a\\\"b\\\\c\\nd\"} 0.5\n");
}

TEST(MetricsRegistry, HistogramBucketsAreCumulative) {
  Histogram h({0.1, 1, 10});
  for (double v : {0.05, 0.1, 0.5, 2.0, 20.0, 30.0}) h.observe(v);
  MetricsRegistry r;
  r.histogram("netbootfs_download_seconds", "Download durations.", {{"kind", "body"}}, &h);
  const std::string text = r.render();
  EXPECT_NE(text.find("# TYPE netbootfs_download_seconds histogram\n"), std::string::npos);
  // 0.1 falls in le="0.1": bucket bounds are inclusive upper bounds.
  EXPECT_NE(text.find("netbootfs_download_seconds_bucket{kind=\"body\",le=\"0.10000000000000001\"} 2\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("netbootfs_download_seconds_bucket{kind=\"body\",le=\"1\"} 3\n"),
            std::string::npos);
  EXPECT_NE(text.find("netbootfs_download_seconds_bucket{kind=\"body\",le=\"10\"} 4\n"),
            std::string::npos);
  EXPECT_NE(text.find("netbootfs_download_seconds_bucket{kind=\"body\",le=\"+Inf\"} 6\n"),
            std::string::npos);
  EXPECT_NE(text.find("netbootfs_download_seconds_count{kind=\"body\"} 6\n"), std::string::npos);
  EXPECT_NE(text.find("netbootfs_download_seconds_sum{kind=\"body\"} 52.649999999999999\n"),
            std::string::npos)
      << text;
}

TEST(Histogram, ConcurrentObservationsAreAllCounted) {
  Histogram h({1, 2});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) h.observe(i % 3);
    });
  }
  for (auto& t : threads) t.join();
  const auto s = h.snapshot();
  EXPECT_EQ(s.count, 40000u);
  EXPECT_EQ(s.cumulative.back(), 40000u);
  EXPECT_DOUBLE_EQ(s.sum, 4 * (3333 * 1 + 3333 * 2 + 0.0));
}

struct ListenCase {
  const char* spec;
  bool ok;
  const char* text;
};

class ParseListen : public ::testing::TestWithParam<ListenCase> {};

TEST_P(ParseListen, Table) {
  const auto& c = GetParam();
  auto r = parse_listen(c.spec);
  ASSERT_EQ(r.ok(), c.ok) << c.spec;
  if (c.ok) {
    EXPECT_EQ(r->text, c.text);
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, ParseListen,
    ::testing::Values(ListenCase{"9555", true, "127.0.0.1:9555"},  // a bare port stays on loopback
                      ListenCase{"127.0.0.1:0", true, "127.0.0.1:0"},
                      ListenCase{"0.0.0.0:9555", true, "0.0.0.0:9555"},
                      ListenCase{"[::1]:9555", true, "[::1]:9555"},
                      ListenCase{"::1:9555", false, ""},  // IPv6 needs brackets
                      ListenCase{"localhost:9555", false, ""},
                      ListenCase{"127.0.0.1:", false, ""}, ListenCase{"127.0.0.1:65536", false, ""},
                      ListenCase{"127.0.0.1:95a5", false, ""}, ListenCase{"", false, ""},
                      ListenCase{"[::1]9555", false, ""}));

TEST(MetricsServer, ServesTheRegistryOnLoopback) {
  MetricsRegistry r;
  std::atomic<int> n{0};
  r.counter("netbootfs_scrapes_total", "Scrapes.", {}, [&] { return double(++n); });
  auto s = MetricsServer::start("127.0.0.1:0", r);
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_NE((*s)->port(), 0);
  const std::string base = "http://127.0.0.1:" + std::to_string((*s)->port());
  http::Client client(http::Options{});

  http::Request get;
  get.url = base + "/metrics";
  get.body_in_memory = true;
  auto a = client.fetch(get);
  ASSERT_EQ(a.outcome, http::Outcome::kOk) << a.detail;
  EXPECT_EQ(a.head.status, 200);
  EXPECT_EQ(a.head.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(a.body.find("netbootfs_scrapes_total 1\n"), std::string::npos) << a.body;
  auto b = client.fetch(get);  // rendered anew on every scrape
  EXPECT_NE(b.body.find("netbootfs_scrapes_total 2\n"), std::string::npos) << b.body;

  http::Request other;
  other.url = base + "/";
  other.body_in_memory = true;
  EXPECT_EQ(client.fetch(other).head.status, 404);
}

TEST(MetricsServer, RefusesAnAddressInUseWithOneLine) {
  MetricsRegistry r;
  auto first = MetricsServer::start("127.0.0.1:0", r);
  ASSERT_TRUE(first.ok());
  auto second = MetricsServer::start("127.0.0.1:" + std::to_string((*first)->port()), r);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.error().message.find("127.0.0.1:"), std::string::npos);
  EXPECT_EQ(second.error().message.find('\n'), std::string::npos);
}

TEST(MetricsFileWriter, WritesAtomicallyAndOnceMoreAtStop) {
  char tmpl[] = "/tmp/netbootfs-metrics-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/netbootfs.prom";
  MetricsRegistry r;
  std::atomic<int> v{1};
  r.gauge("netbootfs_v", "v", {}, [&] { return double(v.load()); });
  {
    MetricsFileWriter w(path, std::chrono::hours(1), r);
    ASSERT_TRUE(w.write_now().ok());
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    EXPECT_NE(ss.str().find("netbootfs_v 1\n"), std::string::npos);
    v = 2;
  }
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_NE(ss.str().find("netbootfs_v 2\n"), std::string::npos) << "the final write at stop";
  struct stat st {};
  EXPECT_NE(::stat((path + ".tmp").c_str(), &st), 0) << "no temp file left";
  std::system(("rm -rf " + std::string(tmpl)).c_str());
}

TEST(MetricsFileWriter, ReportsAnUnwritableDirectory) {
  MetricsRegistry r;
  MetricsFileWriter w("/nonexistent-dir/netbootfs.prom", std::chrono::hours(1), r);
  auto res = w.write_now();
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code, ENOENT);
}

}  // namespace
}  // namespace netbootfs::fs
