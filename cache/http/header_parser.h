// Response header parsing: the lines of one exchange, as libcurl hands them
// over one at a time (each response's status line, its fields, the blank line
// that ends it; interim 1xx and followed redirects included), turned into the
// fields of http::Head; and the few fields a request adds, in the other
// direction.
//
// Contract
// - Pure: text in, values out. No I/O, no clock, no libcurl: the current time
//   (for a Retry-After date) and the HTTP date parser are passed in, so that
//   the client keeps libcurl's date grammar and tests can pin the time.
// - A status line starts a new response: whatever earlier responses said is
//   dropped, so that only the final response after redirects and 1xx counts.
// - A value that does not parse is no information (the field stays empty or
//   keeps what an earlier field of the same response said, as listed on
//   parse_header_line), never an error and never a crash.
// - Head::effective_url is not a header: the client fills it in.
// - No shared state: a ResponseHead belongs to one transfer and is used by one
//   thread at a time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/http/client.h"

namespace netbootfs::http {

// Unix seconds of an HTTP date; nullopt when the text is not one (or is
// before 1970).
using DateParser = std::optional<int64_t> (*)(std::string_view text);

// What the lines of the current response said so far.
struct ResponseHead {
  Head head;
  std::string content_encoding;  // the codings other than identity, ", "-joined
  bool has_location = false;     // a non-empty Location field

  // True when libcurl follows this response rather than ends with it.
  bool will_follow() const;
  // The blank line after this head ends an interim or followed response.
  bool is_interim() const { return head.status < 200 || will_follow(); }
};

enum class HeaderLine {
  kStatus,     // "HTTP/..." : a new response began (status 0 if unreadable)
  kEndOfHead,  // the blank line that ends a response's fields
  kField,      // a "name: value" line (known or not)
  kIgnored,    // anything else (no colon)
};

struct HeaderContext {
  int64_t now = 0;                  // unix seconds, for a Retry-After date
  DateParser parse_date = nullptr;  // nullptr: no value is a date
};

// Parses one header line (CRLF or LF included or not) into *response.
// Names are case-insensitive; values are trimmed of blanks. A repeated field
// replaces the earlier value, except Content-Encoding (codings accumulate), and
// except that a Retry-After, or a Content-Range's start, that does not parse
// keeps the earlier value. Content-Length, Last-Modified and the total of
// Content-Range are cleared by a value that does not parse.
HeaderLine parse_header_line(std::string_view line, const HeaderContext& context,
                             ResponseHead* response);

// The pieces, for the parser and for tests.

// Decimal digits only, at most 19 of them (so that the value always fits).
std::optional<uint64_t> parse_decimal(std::string_view text);

// "bytes FIRST-LAST/TOTAL", "bytes FIRST-LAST/*" or "bytes */TOTAL" into
// head->range_start and head->range_total. Without "bytes " and a '/' nothing
// changes; otherwise range_total is what follows the '/' (nullopt for '*' or
// junk), and range_start what precedes a '-' if the part before '/' has one.
void parse_content_range(std::string_view value, Head* head);

// Delay-seconds, or an HTTP date turned into the seconds from `now` (0 when it
// is past); nullopt when it is neither.
std::optional<int64_t> parse_retry_after(std::string_view value, const HeaderContext& context);

// The other way: the fields a request adds to libcurl's own, "Name: value"
// without CRLF (its validators and its range).
std::vector<std::string> request_header_lines(const Request& request);

// IMF-fixdate (RFC 9110 5.6.7) of unix seconds, for request header fields.
std::string format_http_date(int64_t unix_seconds);

}  // namespace netbootfs::http
