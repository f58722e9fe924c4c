#include "cache/http/header_parser.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace netbootfs::http {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::optional<int64_t> parse_date(std::string_view value, const HeaderContext& context) {
  if (!context.parse_date) return std::nullopt;
  return context.parse_date(value);
}

void parse_field(std::string_view name, std::string_view value, const HeaderContext& context,
                 ResponseHead* response) {
  Head& h = response->head;
  if (iequals(name, "Content-Length")) {
    h.content_length = parse_decimal(value);
  } else if (iequals(name, "ETag")) {
    h.etag = std::string(value);
  } else if (iequals(name, "Last-Modified")) {
    h.last_modified = parse_date(value, context);
  } else if (iequals(name, "Content-Range")) {
    parse_content_range(value, &h);
  } else if (iequals(name, "Content-Type")) {
    h.content_type = std::string(value);
  } else if (iequals(name, "Content-Encoding")) {
    if (!value.empty() && !iequals(value, "identity")) {
      if (!response->content_encoding.empty()) response->content_encoding += ", ";
      response->content_encoding += value;
    }
  } else if (iequals(name, "Location")) {
    response->has_location = !value.empty();
  } else if (iequals(name, "Retry-After")) {
    if (auto seconds = parse_retry_after(value, context)) h.retry_after = seconds;
  }
}

}  // namespace

bool ResponseHead::will_follow() const {
  const long s = head.status;
  return has_location && (s == 300 || s == 301 || s == 302 || s == 303 || s == 307 || s == 308);
}

HeaderLine parse_header_line(std::string_view line, const HeaderContext& context,
                             ResponseHead* response) {
  if (line.size() >= 5 && line.substr(0, 5) == "HTTP/") {
    *response = ResponseHead{};
    const auto sp = line.find(' ');
    if (sp != std::string_view::npos) {
      const auto code = parse_decimal(trim(line.substr(sp + 1, 4)));
      response->head.status = code ? static_cast<long>(*code) : 0;
    }
    return HeaderLine::kStatus;
  }
  if (trim(line).empty()) return HeaderLine::kEndOfHead;
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) return HeaderLine::kIgnored;
  parse_field(trim(line.substr(0, colon)), trim(line.substr(colon + 1)), context, response);
  return HeaderLine::kField;
}

std::optional<uint64_t> parse_decimal(std::string_view text) {
  if (text.empty() || text.size() > 19) return std::nullopt;  // 19 digits always fit
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  return value;
}

void parse_content_range(std::string_view value, Head* head) {
  if (value.size() < 6 || !iequals(value.substr(0, 6), "bytes ")) return;
  value = trim(value.substr(6));
  const auto slash = value.find('/');
  if (slash == std::string_view::npos) return;
  const std::string_view range = value.substr(0, slash);
  if (const auto dash = range.find('-'); dash != std::string_view::npos) {
    head->range_start = parse_decimal(trim(range.substr(0, dash)));
  }
  head->range_total = parse_decimal(trim(value.substr(slash + 1)));
}

std::optional<int64_t> parse_retry_after(std::string_view value, const HeaderContext& context) {
  if (auto seconds = parse_decimal(value)) {
    return static_cast<int64_t>(std::min<uint64_t>(*seconds, INT64_MAX));
  }
  const auto when = parse_date(value, context);
  if (!when) return std::nullopt;
  return *when > context.now ? *when - context.now : 0;
}

std::vector<std::string> request_header_lines(const Request& request) {
  std::vector<std::string> lines;
  if (!request.if_none_match.empty()) lines.push_back("If-None-Match: " + request.if_none_match);
  if (request.if_modified_since) {
    lines.push_back("If-Modified-Since: " + format_http_date(*request.if_modified_since));
  }
  if (request.range_from) {
    lines.push_back("Range: bytes=" + std::to_string(*request.range_from) + "-");
    if (!request.if_range.empty()) lines.push_back("If-Range: " + request.if_range);
  }
  return lines;
}

std::string format_http_date(int64_t unix_seconds) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const auto t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday],
                tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

}  // namespace netbootfs::http
