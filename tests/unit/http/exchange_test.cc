// Exchange, the Sink side of a transfer without libcurl: which head the sink
// sees (once, the final one), which bytes reach it, and how each way of
// ending becomes an Outcome. The transport is played by the test.
#include "cache/http/exchange.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace netbootfs::http {
namespace {

// Records what the sink was told: "H<status>" for a head, "D<bytes>" for data.
class RecordingSink : public Sink {
 public:
  bool refuse_head = false;
  bool refuse_data = false;
  std::string events;

  bool on_head(const Head& head) override {
    events += "H" + std::to_string(head.status) + " ";
    return !refuse_head;
  }
  bool on_data(const char* /*data*/, size_t len) override {
    events += "D" + std::to_string(len) + " ";
    return !refuse_data;
  }
  void on_done(Outcome, const Head&, std::string, std::string) override {
    ADD_FAILURE() << "an Exchange never calls on_done";
  }
};

// The transport's side: header lines, then body chunks, then how the
// transport ended. play() returns the sink's events, what the exchange told
// the transport, and "= outcome: detail".
struct Script {
  std::vector<std::string> lines;
  std::vector<size_t> chunks;
  Outcome transport = Outcome::kOk;
  bool aborted = false;
  bool out_of_memory = false;
};

std::string play(Exchange& x, const Script& script) {
  const HeaderContext context{1700000000, nullptr};
  std::string told;
  for (const auto& line : script.lines) {
    if (!x.on_header_line(line, context)) {
      told += "stop ";
      break;
    }
  }
  const std::string chunk(64, 'x');
  for (size_t len : script.chunks) {
    const auto body = x.on_body_bytes(chunk.data(), len, RateBucket::TimePoint{});
    if (body == Exchange::Body::kRefused) {
      told += "refused ";
      break;
    }
    if (body == Exchange::Body::kPause) told += "pause ";
  }
  const Outcome outcome =
      x.settle(script.transport, script.aborted, /*shut_down=*/false, script.out_of_memory);
  auto* sink = static_cast<RecordingSink*>(x.sink.get());
  return sink->events + told + "= " + to_string(outcome) + (x.detail.empty() ? "" : ": ") +
         x.detail;
}

TEST(Exchange, WhatTheSinkSeesAndHowItEnds) {
  struct Case {
    const char* name;
    Script script;
    std::string want;
    bool in_memory = false;
    bool refuse_head = false;
    bool refuse_data = false;
  };
  const std::vector<Case> cases = {
      {"a plain 200", {{"HTTP/1.1 200 OK\r\n", "\r\n"}, {10, 5}}, "H200 D10 D5 = ok"},
      {"a followed redirect is skipped",
       {{"HTTP/1.1 301 Moved\r\n", "Location: /b\r\n", "\r\n", "HTTP/1.1 200 OK\r\n", "\r\n"}, {3}},
       "H200 D3 = ok"},
      {"1xx is skipped",
       {{"HTTP/1.1 100 Continue\r\n", "\r\n", "HTTP/1.1 206 Partial\r\n", "\r\n"}, {}},
       "H206 = ok"},
      {"an error page: the head, not the bytes",
       {{"HTTP/1.1 404 Not Found\r\n", "Content-Encoding: gzip\r\n", "\r\n"}, {20}},
       "H404 = ok"},
      {"an encoded 2xx is refused before the sink sees it",
       {{"HTTP/1.1 200 OK\r\n", "Content-Encoding: gzip\r\n", "\r\n"}, {}},
       "stop = protocol: refused Content-Encoding: gzip"},
      {"trailers after the head change nothing",
       {{"HTTP/1.1 200 OK\r\n", "\r\n", "Content-Encoding: gzip\r\n"}, {}},
       "H200 = ok"},
      {"a redirect libcurl did not follow is the response",
       {{"HTTP/1.1 302 Found\r\n", "Location: /b\r\n", "\r\n"}, {}},
       "H302 = ok"},
      {"a 304 with a Location is final",
       {{"HTTP/1.1 304 Not Modified\r\n", "Location: /b\r\n", "\r\n"}, {}},
       "H304 = ok"},
      {"no blank line: delivered at the end", {{"HTTP/1.1 200 OK\r\n"}, {}}, "H200 = ok"},
      {"no final response",
       {{"HTTP/1.1 100 Continue\r\n", "\r\n"}, {}},
       "= protocol: no final response"},
      {"the sink refuses the head",
       {{"HTTP/1.1 200 OK\r\n", "\r\n"}, {}},
       "H200 stop = aborted: the sink refused the response head",
       false,
       true},
      {"the sink refuses the body",
       {{"HTTP/1.1 200 OK\r\n", "\r\n"}, {1, 2}},
       "H200 D1 refused = aborted: the sink refused the body",
       false,
       false,
       true},
      {"in memory: collected, not streamed",
       {{"HTTP/1.1 200 OK\r\n", "\r\n"}, {8, 8}},
       "H200 = ok",
       true},
      {"in memory: over the limit",
       {{"HTTP/1.1 200 OK\r\n", "\r\n"}, {8, 9}},
       "H200 refused = protocol: response body larger than 16 bytes",
       true},
      {"a transport failure passes through",
       {{"HTTP/1.1 200 OK\r\n", "\r\n"}, {1}, Outcome::kTransferBroken},
       "H200 D1 = transfer-broken"},
      {"aborted",
       {{"HTTP/1.1 200 OK\r\n", "\r\n"}, {}, Outcome::kOk, true},
       "H200 = aborted: cancelled"},
      {"headers over libcurl's limit",
       {{"HTTP/1.1 200 OK\r\n"}, {}, Outcome::kLocal, false, true},
       "= protocol: response headers too large"},
      {"out of memory before any status line", {{}, {}, Outcome::kLocal, false, true}, "= local"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto sink = std::make_shared<RecordingSink>();
    sink->refuse_head = c.refuse_head;
    sink->refuse_data = c.refuse_data;
    Exchange x;
    x.sink = sink;
    x.req.body_in_memory = c.in_memory;
    x.req.max_memory_body = 16;
    EXPECT_EQ(play(x, c.script), c.want);
  }
}

TEST(Exchange, CancelledRefusesEverything) {
  auto sink = std::make_shared<RecordingSink>();
  Exchange x;
  x.sink = sink;
  x.cancelled = true;
  EXPECT_FALSE(x.on_header_line("HTTP/1.1 200 OK\r\n", HeaderContext{}));
  EXPECT_EQ(x.on_body_bytes("x", 1, RateBucket::TimePoint{}), Exchange::Body::kRefused);
  EXPECT_EQ(x.settle(Outcome::kOk, false, /*shut_down=*/true, false), Outcome::kAborted);
  EXPECT_EQ(x.detail, "the HTTP client is shut down");
  EXPECT_EQ(sink->events, "");
}

TEST(Exchange, PausesWithoutTokens) {
  auto sink = std::make_shared<RecordingSink>();
  RateBucket bucket(1000, 500, RateBucket::TimePoint{});
  Exchange x;
  x.id = 7;
  x.sink = sink;
  x.bucket = &bucket;
  ASSERT_TRUE(x.on_header_line("HTTP/1.1 200 OK\r\n", HeaderContext{}));
  ASSERT_TRUE(x.on_header_line("\r\n", HeaderContext{}));
  EXPECT_EQ(x.on_body_bytes("abc", 3, RateBucket::TimePoint{}), Exchange::Body::kPause);
  EXPECT_TRUE(x.paused);
  const auto later = RateBucket::TimePoint{} + std::chrono::milliseconds(10);
  EXPECT_EQ(bucket.resume(later), std::vector<uint64_t>{7});
  EXPECT_EQ(x.on_body_bytes("abc", 3, later), Exchange::Body::kTaken);
  EXPECT_EQ(sink->events, "H200 D3 ");
}

TEST(Exchange, IdleTooLong) {
  struct Step {
    int at_ms;
    int64_t received;
    bool want;
  };
  const std::vector<Step> steps = {
      {0, 0, false},                                           // the first count starts the clock
      {999, 0, false},   {1000, 0, true},  {1500, 10, false},  // a byte: the clock starts again
      {2499, 10, false}, {2500, 10, true},
  };
  Exchange x;
  x.idle_limit = std::chrono::milliseconds(1000);
  for (const auto& s : steps) {
    SCOPED_TRACE(s.at_ms);
    EXPECT_EQ(
        x.idle_too_long(s.received, RateBucket::TimePoint{} + std::chrono::milliseconds(s.at_ms)),
        s.want);
  }
  Exchange unlimited;  // idle_limit 0: never
  EXPECT_FALSE(unlimited.idle_too_long(-1, RateBucket::TimePoint{} + std::chrono::hours(1)));
}

}  // namespace
}  // namespace netbootfs::http
