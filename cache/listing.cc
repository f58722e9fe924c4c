#include "cache/listing.h"

#include <libxml/HTMLparser.h>
#include <libxml/tree.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>

#include "cache/http/url.h"

namespace netbootfs::cache {
namespace {

int month_index(std::string_view m) {
  static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (int i = 0; i < 12; ++i) {
    if (kMonths[i] == m) return i;
  }
  return -1;
}

// "Sat, 22 Nov 2026 21:00:00 GMT" (nginx JSON).
std::optional<int64_t> parse_rfc1123(const std::string& s) {
  char wday[4] = {}, mon[4] = {};
  int d, y, hh, mm, ss;
  if (std::sscanf(s.c_str(), "%3s, %d %3s %d %d:%d:%d", wday, &d, mon, &y, &hh, &mm, &ss) != 7) {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_mday = d;
  tm.tm_mon = month_index(mon);
  if (tm.tm_mon < 0) return std::nullopt;
  tm.tm_year = y - 1900;
  tm.tm_hour = hh;
  tm.tm_min = mm;
  tm.tm_sec = ss;
  return static_cast<int64_t>(timegm(&tm));
}

// nginx HTML: "22-Nov-2026 21:00"; Apache: "2026-11-22 21:00" (either may carry seconds).
std::optional<int64_t> parse_listing_time(std::string_view s) {
  std::tm tm{};
  char mon[4] = {};
  int d, y, hh, mm, ss = 0;
  const std::string str(s);
  if (std::sscanf(str.c_str(), "%d-%3s-%d %d:%d:%d", &d, mon, &y, &hh, &mm, &ss) >= 5 &&
      month_index(mon) >= 0) {
    tm.tm_mon = month_index(mon);
  } else if (std::sscanf(str.c_str(), "%d-%d-%d %d:%d:%d", &y, &tm.tm_mon, &d, &hh, &mm, &ss) >= 5) {
    tm.tm_mon -= 1;
  } else {
    return std::nullopt;
  }
  tm.tm_mday = d;
  tm.tm_year = y - 1900;
  tm.tm_hour = hh;
  tm.tm_min = mm;
  tm.tm_sec = ss;
  return static_cast<int64_t>(timegm(&tm));
}

struct DocDeleter {
  void operator()(xmlDoc* d) const { xmlFreeDoc(d); }
};

std::string text_of(xmlNode* n) {
  std::string out;
  for (xmlNode* c = n; c; c = c->next) {
    if (c->type == XML_TEXT_NODE && c->content) out += reinterpret_cast<const char*>(c->content);
    if (c->children) out += text_of(c->children);
  }
  return out;
}

// What follows a link up to the next link or row: "22-Nov-2026 21:00   12345".
std::string trailing_text(xmlNode* a) {
  std::string out;
  for (xmlNode* n = a->next; n; n = n->next) {
    if (n->type == XML_ELEMENT_NODE &&
        (xmlStrcasecmp(n->name, BAD_CAST "a") == 0 || xmlStrcasecmp(n->name, BAD_CAST "br") == 0)) {
      break;
    }
    if (n->type == XML_TEXT_NODE && n->content) {
      out += reinterpret_cast<const char*>(n->content);
      if (out.find('\n') != std::string::npos) break;  // the end of a <pre> line
    }
  }
  return out;
}

// Apache's table rows put date and size in sibling cells of the link's cell.
std::string row_cells_after(xmlNode* a) {
  xmlNode* cell = a->parent;
  if (!cell || xmlStrcasecmp(cell->name, BAD_CAST "td") != 0) return {};
  std::string out;
  for (xmlNode* n = cell->next; n; n = n->next) {
    if (n->type == XML_ELEMENT_NODE) out += " " + text_of(n->children) + " ";
  }
  return out;
}

std::vector<std::string> words(std::string_view s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

void collect_links(xmlNode* node, bool apache, std::vector<ListingEntry>& out) {
  for (xmlNode* n = node; n; n = n->next) {
    if (n->type == XML_ELEMENT_NODE && xmlStrcasecmp(n->name, BAD_CAST "a") == 0) {
      xmlChar* href = xmlGetProp(n, BAD_CAST "href");
      if (href) {
        std::string h(reinterpret_cast<const char*>(href));
        xmlFree(href);
        // Only plain relative names of this directory: no sort links, no
        // parent, no absolute paths, no other hosts.
        const bool skip = h.empty() || h[0] == '?' || h[0] == '/' || h[0] == '#' ||
                          h.find("://") != std::string::npos || h.rfind("../", 0) == 0 ||
                          h == "./" || h.rfind("mailto:", 0) == 0;
        if (!skip) {
          std::string raw = h.substr(0, h.find_first_of("?#"));
          if (raw.rfind("./", 0) == 0) raw.erase(0, 2);
          ListingEntry e;
          e.is_dir = !raw.empty() && raw.back() == '/';
          if (e.is_dir) raw.pop_back();
          auto name = http::percent_decode(raw);
          if (name && !name->empty() && name->find('/') == std::string::npos && *name != "." &&
              *name != "..") {
            e.name = *name;
            const std::string info = apache ? row_cells_after(n) + trailing_text(n)
                                            : trailing_text(n);
            const auto w = words(info);
            if (w.size() >= 2) e.mtime = parse_listing_time(w[0] + " " + w[1]);
            // nginx with autoindex_exact_size on prints plain byte counts;
            // Apache always rounds ("1.2K", and "512" may mean anything), so
            // its sizes are never reported as exact.
            if (!apache && !e.is_dir && w.size() >= 3 && all_digits(w[2])) {
              e.size = std::stoull(w[2]);
            }
            out.push_back(std::move(e));
          }
        }
      }
    }
    if (n->children) collect_links(n->children, apache, out);
  }
}

}  // namespace

Result<std::vector<ListingEntry>> parse_nginx_json(std::string_view body) {
  auto doc = nlohmann::json::parse(body.begin(), body.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_array()) return Error{EPROTO, "not an nginx JSON listing"};
  std::vector<ListingEntry> out;
  for (const auto& item : doc) {
    if (!item.is_object() || !item.contains("name") || !item["name"].is_string()) continue;
    ListingEntry e;
    e.name = item["name"].get<std::string>();
    if (e.name.empty() || e.name == "." || e.name == ".." || e.name.find('/') != std::string::npos) {
      continue;
    }
    const std::string type = item.value("type", "file");
    e.is_dir = type == "directory";
    if (type != "file" && type != "directory") continue;  // links to other things
    if (!e.is_dir && item.contains("size") && item["size"].is_number_unsigned()) {
      e.size = item["size"].get<uint64_t>();
    }
    if (item.contains("mtime") && item["mtime"].is_string()) {
      e.mtime = parse_rfc1123(item["mtime"].get<std::string>());
    }
    out.push_back(std::move(e));
  }
  return out;
}

Result<std::vector<ListingEntry>> parse_html_listing(std::string_view body) {
  std::unique_ptr<xmlDoc, DocDeleter> doc(htmlReadMemory(
      body.data(), static_cast<int>(body.size()), nullptr, "UTF-8",
      HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | HTML_PARSE_RECOVER | HTML_PARSE_NONET));
  if (!doc) return Error{EPROTO, "not an HTML listing"};
  xmlNode* root = xmlDocGetRootElement(doc.get());
  if (!root) return Error{EPROTO, "empty HTML document"};
  const std::string all = text_of(root->children);
  const bool listing_title =
      all.find("Index of") != std::string::npos || all.find("Directory listing") != std::string::npos;
  if (!listing_title) return Error{EPROTO, "HTML without a directory index"};
  // Apache marks its listings with its sort links or a "Parent Directory" row.
  const std::string_view b(body);
  const bool apache = b.find("?C=N;O=") != std::string_view::npos ||
                      all.find("Parent Directory") != std::string::npos;
  std::vector<ListingEntry> out;
  collect_links(root, apache, out);
  return out;
}

Result<std::vector<ListingEntry>> parse_listing(std::string_view body,
                                                std::string_view content_type) {
  if (content_type.find("json") != std::string_view::npos) return parse_nginx_json(body);
  size_t i = 0;
  while (i < body.size() && std::isspace(static_cast<unsigned char>(body[i]))) ++i;
  if (i < body.size() && body[i] == '[') return parse_nginx_json(body);
  return parse_html_listing(body);
}

}  // namespace netbootfs::cache
