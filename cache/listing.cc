#include "cache/listing.h"

#include <libxml/HTMLparser.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <strings.h>

#include <charconv>
#include <cstring>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <utility>

#include "cache/http/url.h"

namespace netbootfs::cache {
namespace {

constexpr int kHtmlOptions =
    HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | HTML_PARSE_RECOVER | HTML_PARSE_NONET;

struct XmlDocFree {
  void operator()(xmlDoc* doc) const noexcept { xmlFreeDoc(doc); }
};
struct XmlStringFree {
  void operator()(xmlChar* s) const noexcept { xmlFree(s); }
};
using XmlDoc = std::unique_ptr<xmlDoc, XmlDocFree>;
using XmlString = std::unique_ptr<xmlChar, XmlStringFree>;

// libxml2 initialises its globals lazily on first use, which is not
// thread-safe; listings are parsed on whichever thread completes a request.
void init_libxml() {
  static const bool initialised = [] {
    xmlInitParser();
    return true;
  }();
  (void)initialised;
}

Error not_a_listing(std::string what) { return make_error(EPROTO, std::move(what)); }

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split_words(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) ++i;
    const size_t start = i;
    while (i < s.size() && !is_space(s[i])) ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && strncasecmp(s.data(), prefix.data(), prefix.size()) == 0;
}

// Exactly `digits` decimal digits (sscanf's %d would also take signs and blanks).
bool parse_fixed(std::string_view s, size_t digits, int* out) {
  if (s.size() != digits) return false;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

// 1..12 for "Jan".."Dec", 0 otherwise.
int month_number(std::string_view abbrev) {
  static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (int i = 0; i < 12; ++i) {
    if (abbrev == kMonths[i]) return i + 1;
  }
  return 0;
}

// timegm normalises out-of-range fields instead of failing, so a garbled
// listing would otherwise yield a plausible but wrong time.
std::optional<int64_t> utc_seconds(int year, int month, int day, int hour, int minute, int second) {
  if (year < 1970 || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 ||
      second > 60) {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  return static_cast<int64_t>(timegm(&tm));
}

// "21:00" or "21:00:07".
bool parse_clock(std::string_view s, int* hour, int* minute, int* second) {
  *second = 0;
  if (s.size() == 5) {
    return s[2] == ':' && parse_fixed(s.substr(0, 2), 2, hour) &&
           parse_fixed(s.substr(3, 2), 2, minute);
  }
  return s.size() == 8 && s[2] == ':' && s[5] == ':' && parse_fixed(s.substr(0, 2), 2, hour) &&
         parse_fixed(s.substr(3, 2), 2, minute) && parse_fixed(s.substr(6, 2), 2, second);
}

// The date columns of HTML indexes: nginx (and Apache 2.2) "22-Nov-2026",
// Apache 2.4 "2026-11-22"; then "21:00". nginx prints UTC by default; Apache
// prints the server's local time, which we cannot know, so UTC is assumed.
std::optional<int64_t> parse_index_time(std::string_view date, std::string_view clock) {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!parse_clock(clock, &hour, &minute, &second)) return std::nullopt;
  if (date.size() == 11 && date[2] == '-' && date[6] == '-') {
    month = month_number(date.substr(3, 3));
    if (!parse_fixed(date.substr(0, 2), 2, &day) || !parse_fixed(date.substr(7, 4), 4, &year)) {
      return std::nullopt;
    }
  } else if (date.size() == 10 && date[4] == '-' && date[7] == '-') {
    if (!parse_fixed(date.substr(0, 4), 4, &year) || !parse_fixed(date.substr(5, 2), 2, &month) ||
        !parse_fixed(date.substr(8, 2), 2, &day)) {
      return std::nullopt;
    }
  } else {
    return std::nullopt;
  }
  return utc_seconds(year, month, day, hour, minute, second);
}

// nginx JSON: "Sun, 22 Nov 2026 21:00:00 GMT" (RFC 7231 IMF-fixdate).
std::optional<int64_t> parse_http_date(std::string_view s) {
  const size_t comma = s.find(',');
  if (comma == std::string_view::npos) return std::nullopt;
  const auto w = split_words(s.substr(comma + 1));
  if (w.size() != 5 || w[4] != "GMT") return std::nullopt;
  int day = 0, year = 0, hour = 0, minute = 0, second = 0;
  const int month = month_number(w[1]);
  if (!(parse_fixed(w[0], 2, &day) || parse_fixed(w[0], 1, &day)) || !parse_fixed(w[2], 4, &year) ||
      w[3].size() != 8 || !parse_clock(w[3], &hour, &minute, &second)) {
    return std::nullopt;
  }
  return utc_seconds(year, month, day, hour, minute, second);
}

std::optional<uint64_t> parse_byte_count(std::string_view s) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// A name the mount can show: one path segment, no NUL.
bool valid_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

// The entry an href names, or nullopt for links that are not entries of this
// directory. Names are taken from the href because link text is truncated
// ("long-name..>") and HTML-escaped; the href is complete and percent-encoded.
std::optional<std::string> name_from_href(std::string_view href, bool* is_dir) {
  // Sort links ("?C=N;O=D"), fragments, absolute paths and "//host/".
  if (href.empty() || href[0] == '?' || href[0] == '#' || href[0] == '/') return std::nullopt;
  // A ':' before any '/', '?' or '#' is a scheme ("http:", "mailto:"). Apache
  // writes "./a:b" for names with a colon precisely so that they are not.
  const size_t delim = href.find_first_of(":/?#");
  if (delim != std::string_view::npos && href[delim] == ':') return std::nullopt;
  if (href.substr(0, 2) == "./") href.remove_prefix(2);
  // Both servers encode '?' and '#' inside names, so these are delimiters.
  href = href.substr(0, href.find_first_of("?#"));
  *is_dir = !href.empty() && href.back() == '/';
  if (*is_dir) href.remove_suffix(1);
  if (href.find('/') != std::string_view::npos) return std::nullopt;  // "../", "a/b"
  auto name = http::percent_decode(href);
  // A malformed escape or an encoded '/' cannot be turned back into the URL
  // the server meant; dropping the entry beats inventing a name.
  if (!name || !valid_name(*name)) return std::nullopt;
  return name;
}

std::string node_text(const xmlNode* node) {
  XmlString s(xmlNodeGetContent(node));
  return s ? std::string(reinterpret_cast<const char*>(s.get())) : std::string();
}

bool is_element(const xmlNode* n, const char* name) {
  return n && n->type == XML_ELEMENT_NODE && xmlStrcasecmp(n->name, BAD_CAST name) == 0;
}

// Every element in document order. Iterative: a hostile page can nest deep
// enough to overflow the stack of a recursive walk.
template <class Fn>
void for_each_element(xmlNode* root, Fn&& fn) {
  xmlNode* n = root;
  while (n) {
    if (n->type == XML_ELEMENT_NODE) fn(n);
    if (n->children && n->type == XML_ELEMENT_NODE) {
      n = n->children;
      continue;
    }
    while (n && !n->next && n != root) n = n->parent;
    if (!n || n == root) break;
    n = n->next;
  }
}

// The columns that follow a link: the sibling cells of a table row (Apache
// HTMLTable), else the text up to the end of the line (nginx and Apache <pre>).
std::string details_after(const xmlNode* anchor) {
  std::string out;
  const xmlNode* cell = anchor->parent;
  if (is_element(cell, "td") || is_element(cell, "th")) {
    for (const xmlNode* n = cell->next; n; n = n->next) {
      if (n->type == XML_ELEMENT_NODE) out += node_text(n) + " ";
    }
    return out;
  }
  for (const xmlNode* n = anchor->next; n; n = n->next) {
    if (is_element(n, "a") || is_element(n, "br") || is_element(n, "li") || is_element(n, "tr")) {
      break;
    }
    if (n->type != XML_TEXT_NODE || !n->content) continue;
    const std::string_view text(reinterpret_cast<const char*>(n->content));
    const size_t eol = text.find('\n');
    out.append(text.substr(0, eol));
    if (eol != std::string_view::npos) break;
  }
  return out;
}

enum class Flavor { kNginx, kApache, kOther };

struct Link {
  xmlNode* node;
  std::string href;
  std::string text;
};

Flavor guess_flavor(const std::vector<Link>& links) {
  bool nginx_parent = false;
  for (const Link& l : links) {
    const std::string_view text = trim(l.text);
    if (l.href.rfind("?C=", 0) == 0 || text == "Parent Directory") return Flavor::kApache;
    if (l.href == "../" && text == "../") nginx_parent = true;
  }
  // nginx always opens its <pre> with "../", even at the root.
  return nginx_parent ? Flavor::kNginx : Flavor::kOther;
}

// "Index of /path" in the title or first heading: nginx, Apache and lighttpd
// all say so, and an ordinary page served as the directory index does not.
bool looks_like_index(xmlNode* root) {
  bool found = false;
  for_each_element(root, [&](xmlNode* n) {
    if (!found && (is_element(n, "title") || is_element(n, "h1"))) {
      found = starts_with_nocase(trim(node_text(n)), "index of");
    }
  });
  return found;
}

}  // namespace

Result<std::vector<ListingEntry>> parse_nginx_json(std::string_view body) {
  const auto doc = nlohmann::json::parse(body.begin(), body.end(), /*cb=*/nullptr,
                                         /*allow_exceptions=*/false);
  if (doc.is_discarded()) return not_a_listing("listing is not valid JSON");
  if (!doc.is_array()) return not_a_listing("JSON listing is not an array");
  std::vector<ListingEntry> out;
  out.reserve(doc.size());
  for (const auto& item : doc) {
    // Anything but nginx's objects means this is some other JSON document.
    if (!item.is_object()) return not_a_listing("JSON listing item is not an object");
    const auto name = item.find("name");
    const auto type = item.find("type");
    if (name == item.end() || !name->is_string() || type == item.end() || !type->is_string()) {
      return not_a_listing("JSON listing item without name or type");
    }
    ListingEntry e;
    e.name = name->get<std::string>();
    const auto& type_name = type->get_ref<const std::string&>();
    if (type_name == "directory") {
      e.is_dir = true;
    } else if (type_name != "file") {
      continue;  // "other": sockets, fifos, devices upstream cannot serve
    }
    if (!valid_name(e.name)) continue;
    const auto size = item.find("size");
    if (!e.is_dir && size != item.end() && size->is_number_unsigned()) {
      e.size = size->get<uint64_t>();
    }
    const auto mtime = item.find("mtime");
    if (mtime != item.end() && mtime->is_string()) {
      e.mtime = parse_http_date(mtime->get_ref<const std::string&>());
    }
    out.push_back(std::move(e));
  }
  return out;
}

Result<std::vector<ListingEntry>> parse_html_listing(std::string_view body) {
  if (trim(body).empty()) return not_a_listing("empty body");
  if (body.size() > static_cast<size_t>(INT32_MAX)) return not_a_listing("listing too large");
  init_libxml();
  // Names are read from percent-encoded hrefs, so the declared encoding only
  // matters for link text; UTF-8 is what both servers write.
  XmlDoc doc(htmlReadMemory(body.data(), static_cast<int>(body.size()), /*URL=*/nullptr, "UTF-8",
                            kHtmlOptions));
  xmlNode* root = doc ? xmlDocGetRootElement(doc.get()) : nullptr;
  if (!root) return not_a_listing("not HTML");
  if (!looks_like_index(root)) return not_a_listing("HTML page is not a directory index");

  std::vector<Link> links;
  for_each_element(root, [&](xmlNode* n) {
    if (!is_element(n, "a")) return;
    XmlString href(xmlGetProp(n, BAD_CAST "href"));
    if (!href) return;
    links.push_back({n, reinterpret_cast<const char*>(href.get()), node_text(n)});
  });
  const Flavor flavor = guess_flavor(links);

  std::vector<ListingEntry> out;
  // Apache's IconsAreLinks links each name twice (icon and text).
  std::unordered_map<std::string, size_t> seen;
  for (const Link& l : links) {
    ListingEntry e;
    auto name = name_from_href(l.href, &e.is_dir);
    if (!name) continue;
    e.name = std::move(*name);
    const std::string details = details_after(l.node);
    const auto w = split_words(details);
    for (size_t i = 0; i + 1 < w.size(); ++i) {
      e.mtime = parse_index_time(w[i], w[i + 1]);
      if (!e.mtime) continue;
      // nginx prints exact bytes unless autoindex_exact_size is off, and even
      // then below 10000 bytes; "12K" and "3M" fail to parse and stay unset.
      // Apache rounds every size ("512" may be 511.6 of a kilobyte), so its
      // numbers are never exact.
      if (flavor == Flavor::kNginx && !e.is_dir && i + 2 < w.size()) {
        e.size = parse_byte_count(w[i + 2]);
      }
      break;
    }
    const auto [it, inserted] = seen.emplace(e.name, out.size());
    if (inserted) {
      out.push_back(std::move(e));
      continue;
    }
    ListingEntry& first = out[it->second];
    if (!first.mtime) first.mtime = e.mtime;
    if (!first.size) first.size = e.size;
  }
  return out;
}

Result<std::vector<ListingEntry>> parse_listing(std::string_view body,
                                                std::string_view content_type) {
  const std::string_view type = trim(content_type.substr(0, content_type.find(';')));
  if (type.find("json") != std::string_view::npos) return parse_nginx_json(body);
  if (type.find("html") != std::string_view::npos) return parse_html_listing(body);
  // No or a generic content type: judge by the first byte.
  const std::string_view start = trim(body);
  if (!start.empty() && start[0] == '[') return parse_nginx_json(body);
  if (!start.empty() && start[0] == '<') return parse_html_listing(body);
  return not_a_listing("unknown listing format");
}

}  // namespace netbootfs::cache
