// Response header parsing: what each line of a response makes of http::Head,
// with malformed values as no information. Dates come from a fake grammar and
// the time is pinned, so that every case is exact.
#include "cache/http/header_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace netbootfs::http {
namespace {

constexpr int64_t kNow = 1700000000;  // Tue, 14 Nov 2023 22:13:20 GMT
constexpr int64_t k1994 = 784111777;  // Sun, 06 Nov 1994 08:49:37 GMT

// The dates the fake grammar knows; anything else is not a date.
std::optional<int64_t> fake_date(std::string_view text) {
  if (text == "Sun, 06 Nov 1994 08:49:37 GMT") return k1994;
  if (text == "Sunday, 06-Nov-94 08:49:37 GMT") return k1994;
  if (text == "Sun Nov  6 08:49:37 1994") return k1994;
  if (text == "Tue, 14 Nov 2023 22:13:20 GMT") return kNow;
  if (text == "Tue, 14 Nov 2023 22:15:00 GMT") return kNow + 100;
  return std::nullopt;
}

const HeaderContext kContext{kNow, fake_date};

// The fields that were set, in a fixed order, for compact expectations.
std::string describe(const ResponseHead& r) {
  const Head& h = r.head;
  std::string out;
  auto add = [&out](const std::string& field) { out += (out.empty() ? "" : " ") + field; };
  if (h.status != 0) add("status=" + std::to_string(h.status));
  if (h.content_length) add("length=" + std::to_string(*h.content_length));
  if (!h.etag.empty()) add("etag=" + h.etag);
  if (h.last_modified) add("modified=" + std::to_string(*h.last_modified));
  if (h.range_start) add("start=" + std::to_string(*h.range_start));
  if (h.range_total) add("total=" + std::to_string(*h.range_total));
  if (!h.content_type.empty()) add("type=" + h.content_type);
  if (h.retry_after) add("retry=" + std::to_string(*h.retry_after));
  if (!h.effective_url.empty()) add("url=" + h.effective_url);
  if (!r.content_encoding.empty()) add("encoding=" + r.content_encoding);
  if (r.has_location) add("location");
  return out;
}

std::string parse_lines(const std::vector<std::string>& lines) {
  ResponseHead response;
  for (const auto& line : lines) parse_header_line(line, kContext, &response);
  return describe(response);
}

TEST(HeaderParser, LinesIntoHeadFields) {
  struct Case {
    std::vector<std::string> lines;
    std::string want;
  };
  const Case cases[] = {
      // Status lines, with and without CRLF.
      {{"HTTP/1.1 200 OK\r\n"}, "status=200"},
      {{"HTTP/2 404\r\n"}, "status=404"},
      {{"HTTP/1.0 503"}, "status=503"},
      {{"HTTP/1.1 abc\r\n"}, ""},
      {{"HTTP/1.1\r\n"}, ""},
      {{"HTTP/1.1 20 OK\r\n"}, ""},
      {{"http/1.1 200 OK\r\n"}, ""},  // not a status line (case matters there)
      // Names in any case, values trimmed of blanks, CRLF or LF or neither.
      {{"Content-Length: 42\r\n"}, "length=42"},
      {{"content-length: 42\n"}, "length=42"},
      {{"CONTENT-LENGTH:42"}, "length=42"},
      {{"  Content-Length \t:\t 42 \t\r\n"}, "length=42"},
      {{"etag:   W/\"weak\"  \r\n"}, "etag=W/\"weak\""},
      {{"ETag: \"a:b\"\r\n"}, "etag=\"a:b\""},
      {{"Content-Type: text/plain; charset=utf-8\r\n"}, "type=text/plain; charset=utf-8"},
      {{"X-Unknown: 1\r\n", "garbage without a colon\r\n"}, ""},
      // Malformed numbers are no information.
      {{"Content-Length: -5"}, ""},
      {{"Content-Length: +5"}, ""},
      {{"Content-Length: 5 5"}, ""},
      {{"Content-Length: 0x10"}, ""},
      {{"Content-Length: 12abc"}, ""},
      {{"Content-Length:"}, ""},
      {{"Content-Length: 18446744073709551616"}, ""},  // 2^64
      {{"Content-Length: 18446744073709551615"}, ""},  // fits, but 20 digits
      {{"Content-Length: 9999999999999999999"}, "length=9999999999999999999"},
      {{"Content-Length: 0042"}, "length=42"},
      // Repeated fields: the last one counts...
      {{"Content-Length: 5", "Content-Length: 7"}, "length=7"},
      {{"ETag: \"a\"", "ETag: \"b\""}, "etag=\"b\""},
      {{"Content-Length: 5", "Content-Length: junk"}, ""},
      {{"Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT", "Last-Modified: yesterday"}, ""},
      // ... except codings, which add up, and a junk Retry-After, which is skipped.
      {{"Content-Encoding: gzip", "content-encoding: br"}, "encoding=gzip, br"},
      {{"Content-Encoding: identity", "Content-Encoding: IDENTITY", "Content-Encoding:"}, ""},
      {{"Content-Encoding: identity", "Content-Encoding: gzip"}, "encoding=gzip"},
      {{"Retry-After: 5", "Retry-After: soon"}, "retry=5"},
      // Dates, in each form the grammar knows; a date that does not parse is none.
      {{"Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT"}, "modified=784111777"},
      {{"Last-Modified: Sunday, 06-Nov-94 08:49:37 GMT"}, "modified=784111777"},
      {{"Last-Modified: Sun Nov  6 08:49:37 1994\r\n"}, "modified=784111777"},
      {{"Last-Modified: yesterday"}, ""},
      {{"Last-Modified: Sun, 32 Nov 1994 08:49:37 GMT"}, ""},
      {{"Last-Modified: 784111777"}, ""},
      {{"Last-Modified:"}, ""},
      // Content-Range.
      {{"Content-Range: bytes 100-199/200"}, "start=100 total=200"},
      {{"content-range: BYTES 0-0/123456789012"}, "start=0 total=123456789012"},
      {{"Content-Range: bytes */200"}, "total=200"},
      {{"Content-Range: bytes 4-9/*"}, "start=4"},
      {{"Content-Range: bytes junk"}, ""},
      {{"Content-Range: items 1-2/3"}, ""},
      {{"Content-Range: bytes x-y/z"}, ""},
      // A status line starts a new response: nothing of the one before is kept.
      {{"HTTP/1.1 301 Moved\r\n", "Location: /x\r\n", "ETag: \"old\"\r\n",
        "Content-Encoding: gzip\r\n", "Retry-After: 3\r\n", "\r\n", "HTTP/1.1 200 OK\r\n",
        "Content-Length: 3\r\n"},
       "status=200 length=3"},
      {{"HTTP/1.1 100 Continue\r\n", "\r\n", "HTTP/1.1 206 Partial\r\n",
        "Content-Range: bytes 1-2/3\r\n", "\r\n"},
       "status=206 start=1 total=3"},
      {{"Location: http://host:8080/x\r\n"}, "location"},
      {{"Location:  \r\n"}, ""},
      {{"Location: /x\r\n", "Location:\r\n"}, ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.lines.front());
    EXPECT_EQ(parse_lines(c.lines), c.want);
  }
}

TEST(HeaderParser, TellsWhatEachLineWas) {
  struct Case {
    const char* line;
    HeaderLine want;
  };
  const Case cases[] = {
      {"HTTP/1.1 200 OK\r\n", HeaderLine::kStatus},
      {"HTTP/1.1 junk\r\n", HeaderLine::kStatus},
      {"HTTP/", HeaderLine::kStatus},
      {"\r\n", HeaderLine::kEndOfHead},
      {"\n", HeaderLine::kEndOfHead},
      {"", HeaderLine::kEndOfHead},
      {" \t\r\n", HeaderLine::kEndOfHead},
      {"ETag: x\r\n", HeaderLine::kField},
      {"X-Anything:\r\n", HeaderLine::kField},
      {": no name\r\n", HeaderLine::kField},
      {"no colon\r\n", HeaderLine::kIgnored},
      {"HTTP\r\n", HeaderLine::kIgnored},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.line);
    ResponseHead response;
    EXPECT_EQ(parse_header_line(c.line, kContext, &response), c.want);
  }
}

TEST(HeaderParser, InterimAndFollowedResponses) {
  struct Case {
    std::vector<std::string> lines;
    bool follow;
    bool interim;
  };
  const Case cases[] = {
      {{"HTTP/1.1 100 Continue"}, false, true},
      {{"HTTP/1.1 103 Early Hints", "Location: /x"}, false, true},
      {{"HTTP/1.1 200 OK"}, false, false},
      {{"HTTP/1.1 200 OK", "Location: /x"}, false, false},
      {{"HTTP/1.1 300 Choices", "Location: /x"}, true, true},
      {{"HTTP/1.1 301 Moved", "Location: /x"}, true, true},
      {{"HTTP/1.1 302 Found", "location: /x"}, true, true},
      {{"HTTP/1.1 303 See Other", "Location: /x"}, true, true},
      {{"HTTP/1.1 307 Temporary", "Location: /x"}, true, true},
      {{"HTTP/1.1 308 Permanent", "Location: /x"}, true, true},
      {{"HTTP/1.1 301 Moved"}, false, false},  // nowhere to go: the response is final
      {{"HTTP/1.1 301 Moved", "Location:"}, false, false},
      {{"HTTP/1.1 304 Not Modified", "Location: /x"}, false, false},
      {{"HTTP/1.1 305 Use Proxy", "Location: /x"}, false, false},
      {{"HTTP/1.1 404 Not Found", "Location: /x"}, false, false},
      {{"HTTP/1.1 junk", "Location: /x"}, false, true},  // status 0: never final
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.lines.front());
    ResponseHead response;
    for (const auto& line : c.lines) parse_header_line(line, kContext, &response);
    EXPECT_EQ(response.will_follow(), c.follow);
    EXPECT_EQ(response.is_interim(), c.interim);
  }
}

TEST(HeaderParser, Decimal) {
  struct Case {
    const char* text;
    std::optional<uint64_t> want;
  };
  const Case cases[] = {
      {"0", 0u},
      {"7", 7u},
      {"007", 7u},
      {"9999999999999999999", 9999999999999999999u},
      {"10000000000000000000", std::nullopt},  // 20 digits
      {"99999999999999999999999", std::nullopt},
      {"", std::nullopt},
      {"-1", std::nullopt},
      {"+1", std::nullopt},
      {" 1", std::nullopt},  // the callers trim
      {"1 ", std::nullopt},
      {"1.5", std::nullopt},
      {"1e3", std::nullopt},
      {"abc", std::nullopt},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    EXPECT_EQ(parse_decimal(c.text), c.want);
  }
}

// Over an earlier field: without "bytes " and a '/' the field changes
// nothing; with them the start is replaced only when a '-' precedes the '/'.
TEST(HeaderParser, ContentRange) {
  struct Case {
    const char* value;
    std::optional<uint64_t> start;
    std::optional<uint64_t> total;
    const char* before = nullptr;  // an earlier Content-Range of the response
  };
  const Case cases[] = {
      {"bytes 100-199/200", 100u, 200u},
      {"bytes 0-0/1", 0u, 1u},
      {"Bytes 5-9/10", 5u, 10u},
      {"bytes   5 - 9 / 10 ", 5u, 10u},
      {"bytes 4-9/*", 4u, std::nullopt},
      {"bytes */200", std::nullopt, 200u},
      {"bytes */*", std::nullopt, std::nullopt},
      {"bytes -9/10", std::nullopt, 10u},
      {"bytes 18446744073709551616-1/2", std::nullopt, 2u},
      {"bytes 1-2/-3", 1u, std::nullopt},
      {"bytes 1-2", std::nullopt, std::nullopt},
      {"bytes", std::nullopt, std::nullopt},
      {"bytes=1-2/3", std::nullopt, std::nullopt},
      {"items 1-2/3", std::nullopt, std::nullopt},
      {"", std::nullopt, std::nullopt},
      {"junk", std::nullopt, std::nullopt},
      {"junk", 1u, 3u, "bytes 1-2/3"},
      {"bytes 1-2", 1u, 3u, "bytes 1-2/3"},
      {"bytes */9", 1u, 9u, "bytes 1-2/3"},
      {"bytes 4-5/*", 4u, std::nullopt, "bytes 1-2/3"},
      {"bytes x-5/6", std::nullopt, 6u, "bytes 1-2/3"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.before ? c.before : "") + " then " + c.value);
    Head head;
    if (c.before) parse_content_range(c.before, &head);
    parse_content_range(c.value, &head);
    EXPECT_EQ(head.range_start, c.start);
    EXPECT_EQ(head.range_total, c.total);
  }
}

TEST(HeaderParser, RetryAfter) {
  struct Case {
    const char* value;
    std::optional<int64_t> want;
  };
  const Case cases[] = {
      {"120", 120},
      {"0", 0},
      {"9223372036854775807", INT64_MAX},
      {"9999999999999999999", INT64_MAX},  // over int64: as long as can be
      {"99999999999999999999", std::nullopt},
      {"-1", std::nullopt},
      {"1.5", std::nullopt},
      {"soon", std::nullopt},
      {"", std::nullopt},
      {"Tue, 14 Nov 2023 22:15:00 GMT", 100},  // an HTTP date: the seconds from now
      {"Tue, 14 Nov 2023 22:13:20 GMT", 0},    // now
      {"Sun, 06 Nov 1994 08:49:37 GMT", 0},    // past: at once
      {"Sun Nov  6 08:49:37 1994", 0},
      {"Tue, 14 Nov 2023 25:61:00 GMT", std::nullopt},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.value);
    EXPECT_EQ(parse_retry_after(c.value, kContext), c.want);
  }
}

TEST(HeaderParser, NoDateGrammarMeansNoDates) {
  const HeaderContext no_dates{kNow, nullptr};
  EXPECT_EQ(parse_retry_after("Tue, 14 Nov 2023 22:15:00 GMT", no_dates), std::nullopt);
  EXPECT_EQ(parse_retry_after("7", no_dates), 7);
  ResponseHead response;
  parse_header_line("Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT", no_dates, &response);
  EXPECT_FALSE(response.head.last_modified);
}

TEST(HeaderParser, FormatsImfFixdate) {
  struct Case {
    int64_t unix_seconds;
    const char* want;
  };
  const Case cases[] = {
      {0, "Thu, 01 Jan 1970 00:00:00 GMT"},          {k1994, "Sun, 06 Nov 1994 08:49:37 GMT"},
      {951782400, "Tue, 29 Feb 2000 00:00:00 GMT"},  {kNow, "Tue, 14 Nov 2023 22:13:20 GMT"},
      {4102444800, "Fri, 01 Jan 2100 00:00:00 GMT"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.unix_seconds);
    EXPECT_EQ(format_http_date(c.unix_seconds), c.want);
  }
}

TEST(HeaderParser, RequestHeaderLines) {
  struct Case {
    const char* name;
    Request request;
    std::vector<std::string> want;
  };
  auto with = [](auto change) {
    Request r;
    r.url = "http://server/file";
    change(r);
    return r;
  };
  const std::vector<Case> cases = {
      {"none", with([](Request&) {}), {}},
      {"an etag", with([](Request& r) { r.if_none_match = "\"v1\""; }), {"If-None-Match: \"v1\""}},
      {"a date",
       with([](Request& r) { r.if_modified_since = k1994; }),
       {"If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT"}},
      {"a range", with([](Request& r) { r.range_from = 100; }), {"Range: bytes=100-"}},
      {"a range from 0", with([](Request& r) { r.range_from = 0; }), {"Range: bytes=0-"}},
      {"a range if unchanged",
       with([](Request& r) {
         r.range_from = 5;
         r.if_range = "\"v1\"";
       }),
       {"Range: bytes=5-", "If-Range: \"v1\""}},
      {"If-Range only with a range", with([](Request& r) { r.if_range = "\"v1\""; }), {}},
      {"all of them",
       with([](Request& r) {
         r.if_none_match = "\"a\"";
         r.if_modified_since = 0;
         r.range_from = 18446744073709551615u;
         r.if_range = "Thu, 01 Jan 1970 00:00:00 GMT";
       }),
       {"If-None-Match: \"a\"", "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT",
        "Range: bytes=18446744073709551615-", "If-Range: Thu, 01 Jan 1970 00:00:00 GMT"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(request_header_lines(c.request), c.want);
  }
}

}  // namespace
}  // namespace netbootfs::http
