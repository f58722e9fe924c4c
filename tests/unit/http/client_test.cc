// The HTTP client against an in-process upstream: callback order, validators,
// ranges, refused responses, failures, cancellation and connection reuse.
#include "cache/http/client.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <future>
#include <thread>

#include "tests/unit/support/test_http_server.h"

namespace netbootfs::http {
namespace {

using namespace std::chrono_literals;
using netbootfs::testing::TestHttpServer;

Options fast() {
  Options o;
  o.connect_timeout = 2s;
  o.request_timeout = 3s;
  o.low_speed_time = 1s;
  return o;
}

Request get(std::string url) {
  Request r;
  r.url = std::move(url);
  return r;
}

// Records the callback sequence to check the contract's order.
class RecordingSink : public Sink {
 public:
  bool on_head(const Head& h) override {
    std::lock_guard lk(mu_);
    events_ += "H";
    head_ = h;
    return !refuse_head_;
  }
  bool on_data(const char* d, size_t n) override {
    std::lock_guard lk(mu_);
    if (events_.empty() || events_.back() != 'D') events_ += "D";
    body_.append(d, n);
    return body_.size() < abort_after_;
  }
  void on_done(Outcome o, const Head& h, std::string body, std::string detail) override {
    {
      std::lock_guard lk(mu_);
      events_ += "E";
      done_count_++;
      outcome_ = o;
      final_head_ = h;
      memory_ = std::move(body);
      detail_ = std::move(detail);
    }
    done_.set_value();
  }
  void wait() { ASSERT_EQ(done_.get_future().wait_for(10s), std::future_status::ready); }

  std::mutex mu_;
  std::string events_, body_, memory_, detail_;
  Head head_, final_head_;
  Outcome outcome_ = Outcome::kLocal;
  int done_count_ = 0;
  bool refuse_head_ = false;
  size_t abort_after_ = SIZE_MAX;
  std::promise<void> done_;
};

TEST(Client, StreamsABodyAfterItsHead) {
  TestHttpServer server;
  std::string body(300000, 'k');
  server.put("images/linux", body);
  Client c(fast());
  auto s = std::make_shared<RecordingSink>();
  c.start(get(server.url() + "images/linux"), s);
  s->wait();
  EXPECT_EQ(s->events_, "HDE");
  EXPECT_EQ(s->outcome_, Outcome::kOk);
  EXPECT_EQ(s->head_.status, 200);
  EXPECT_EQ(s->head_.content_length, body.size());
  EXPECT_FALSE(s->head_.etag.empty());
  ASSERT_TRUE(s->head_.last_modified);
  EXPECT_EQ(*s->head_.last_modified, 1700000000);
  EXPECT_EQ(s->body_, body);
}

TEST(Client, HeadGivesTheSizeWithoutABody) {
  TestHttpServer server;
  server.put("k", "12345");
  Client c(fast());
  Request r = get(server.url() + "k");
  r.method = Request::Method::kHead;
  auto resp = c.fetch(r);
  EXPECT_EQ(resp.outcome, Outcome::kOk);
  EXPECT_EQ(resp.head.status, 200);
  EXPECT_EQ(resp.head.content_length, 5u);
  EXPECT_TRUE(resp.body.empty());
  EXPECT_EQ(server.count("HEAD", "k"), 1u);
}

TEST(Client, ConditionalGetIsAnswered304) {
  TestHttpServer server;
  server.put("menu", "DEFAULT x\n");
  Client c(fast());
  auto first = c.fetch(get(server.url() + "menu"));
  ASSERT_EQ(first.head.status, 200);
  Request r = get(server.url() + "menu");
  r.if_none_match = first.head.etag;
  auto again = c.fetch(r);
  EXPECT_EQ(again.outcome, Outcome::kOk);
  EXPECT_EQ(again.head.status, 304);
  EXPECT_TRUE(again.body.empty());
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[1].if_none_match, first.head.etag);
}

TEST(Client, RangeWithIfRange) {
  TestHttpServer server;
  server.put("initrd", "0123456789");
  Client c(fast());
  auto full = c.fetch(get(server.url() + "initrd"));
  Request r = get(server.url() + "initrd");
  r.range_from = 4;
  r.if_range = full.head.etag;
  auto part = c.fetch(r);
  EXPECT_EQ(part.head.status, 206);
  EXPECT_EQ(part.head.range_start, 4u);
  EXPECT_EQ(part.head.range_total, 10u);
  EXPECT_EQ(part.body, "456789");
  auto reqs = server.requests();
  EXPECT_EQ(reqs.back().range, "bytes=4-");
  EXPECT_EQ(reqs.back().if_range, full.head.etag);
  // A stale validator: the server sends the whole new file instead.
  r.if_range = "\"old\"";
  auto whole = c.fetch(r);
  EXPECT_EQ(whole.head.status, 200);
  EXPECT_EQ(whole.body, "0123456789");
}

TEST(Client, ErrorStatusesAreReportedNotStreamed) {
  TestHttpServer server;
  Client c(fast());
  auto s = std::make_shared<RecordingSink>();
  c.start(get(server.url() + "missing"), s);
  s->wait();
  EXPECT_EQ(s->outcome_, Outcome::kOk);
  EXPECT_EQ(s->final_head_.status, 404);
  EXPECT_TRUE(s->body_.empty()) << "an error page is not the file";
  EXPECT_EQ(s->done_count_, 1);
}

TEST(Client, ABodyCutShortIsATransferBroken) {
  TestHttpServer server;
  server.put("big", std::string(200000, 'x'));
  server.cut("big", 50000);
  Client c(fast());
  auto s = std::make_shared<RecordingSink>();
  c.start(get(server.url() + "big"), s);
  s->wait();
  EXPECT_EQ(s->outcome_, Outcome::kTransferBroken);
  EXPECT_TRUE(is_transient(s->outcome_));
  EXPECT_EQ(s->body_.size(), 50000u);
}

TEST(Client, ConnectionRefusedFailsFast) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  ::close(fd);  // nothing listens there now
  Client c(fast());
  const auto t0 = std::chrono::steady_clock::now();
  auto r = c.fetch(get("http://127.0.0.1:" + std::to_string(port) + "/x"));
  EXPECT_EQ(r.outcome, Outcome::kConnectFailed);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

TEST(Client, AStalledHeadTimesOut) {
  TestHttpServer server;
  server.put("slow", "x");
  server.hold("slow");
  Client c(fast());
  Request r = get(server.url() + "slow");
  r.method = Request::Method::kHead;
  const auto t0 = std::chrono::steady_clock::now();
  auto resp = c.fetch(r);
  EXPECT_EQ(resp.outcome, Outcome::kTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 6s);
  server.release();
}

TEST(Client, CancelEndsARequestOnce) {
  TestHttpServer server;
  server.put("slow", "x");
  server.hold("slow");
  Client c(fast());
  auto s = std::make_shared<RecordingSink>();
  const uint64_t id = c.start(get(server.url() + "slow"), s);
  ASSERT_TRUE(server.wait_arrived("slow"));
  c.cancel(id);
  s->wait();
  EXPECT_EQ(s->outcome_, Outcome::kAborted);
  c.cancel(id);  // already finished: nothing happens
  server.release();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(s->done_count_, 1);
}

TEST(Client, ASinkThatRefusesAborts) {
  TestHttpServer server;
  server.put("f", std::string(500000, 'y'));
  Client c(fast());
  auto s = std::make_shared<RecordingSink>();
  s->abort_after_ = 1000;
  c.start(get(server.url() + "f"), s);
  s->wait();
  EXPECT_EQ(s->outcome_, Outcome::kAborted);
  EXPECT_EQ(s->done_count_, 1);
}

TEST(Client, InMemoryBodiesAndRedirectsToOtherSchemes) {
  TestHttpServer server;
  server.put("dir/a", "1");
  Client c(fast());
  Request r = get(server.url() + "dir/");
  r.body_in_memory = true;
  auto listing = c.fetch(r);
  EXPECT_EQ(listing.head.status, 200);
  EXPECT_NE(listing.body.find("\"name\":\"a\""), std::string::npos);
  auto bad = c.fetch(get("file:///etc/passwd"));
  EXPECT_EQ(bad.outcome, Outcome::kProtocol);
}

TEST(Client, AContentEncodingIsRefused) {
  TestHttpServer server;
  server.put("initrd", "compressed?");
  server.add_header("initrd", "Content-Encoding: gzip");
  Client c(fast());
  auto s = std::make_shared<RecordingSink>();
  c.start(get(server.url() + "initrd"), s);
  s->wait();
  EXPECT_EQ(s->outcome_, Outcome::kProtocol) << s->detail_;
  EXPECT_TRUE(s->body_.empty()) << "no byte of an encoded body reaches the sink";
}

TEST(Client, RedirectsAreFollowedWithinHttp) {
  TestHttpServer server;
  server.put("real/pxelinux.0", "boot");
  server.redirect("pxelinux.0", server.url() + "real/pxelinux.0");
  server.redirect("elsewhere", "ftp://127.0.0.1/pxelinux.0");
  Client c(fast());
  auto r = c.fetch(get(server.url() + "pxelinux.0"));
  EXPECT_EQ(r.head.status, 200);
  EXPECT_EQ(r.body, "boot");
  EXPECT_EQ(r.head.effective_url, server.url() + "real/pxelinux.0");
  auto bad = c.fetch(get(server.url() + "elsewhere"));
  EXPECT_EQ(bad.outcome, Outcome::kProtocol) << "a redirect may not leave http(s)";
}

TEST(Client, ManyConcurrentRequestsReuseConnections) {
  TestHttpServer server;
  for (int i = 0; i < 50; ++i) server.put("f" + std::to_string(i), std::to_string(i));
  Client c(fast());
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int i = 0; i < 50; ++i) {
    sinks.push_back(std::make_shared<RecordingSink>());
    c.start(get(server.url() + "f" + std::to_string(i)), sinks.back());
  }
  for (int i = 0; i < 50; ++i) {
    sinks[i]->wait();
    EXPECT_EQ(sinks[i]->body_, std::to_string(i));
  }
  // Sequential requests ride on one kept-alive connection.
  for (int i = 0; i < 5; ++i) c.fetch(get(server.url() + "f1"));
  EXPECT_EQ(server.count("GET", "f1"), 6u);
}

TEST(Client, DestructionAbortsWhatIsInFlight) {
  TestHttpServer server;
  server.put("slow", "x");
  server.hold("slow");
  auto s = std::make_shared<RecordingSink>();
  {
    Client c(fast());
    c.start(get(server.url() + "slow"), s);
    ASSERT_TRUE(server.wait_arrived("slow"));
  }
  s->wait();
  EXPECT_EQ(s->outcome_, Outcome::kAborted);
  EXPECT_EQ(s->done_count_, 1);
  server.release();
}

}  // namespace
}  // namespace netbootfs::http
