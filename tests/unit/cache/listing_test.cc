// Listing parsers against real server output. The samples under
// listing_samples/ were captured from nginx 1.22.1 and Apache 2.4 serving one
// directory of awkward names (space, '%', a literal "%25", '#', '?', '+', '&',
// ':', '<>"', UTF-8, names longer than the link text nginx prints, a
// subdirectory), so the tests check the round trip of names as the servers
// really encode them, not as we imagine they do.
#include "cache/listing.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>

namespace netbootfs::cache {
namespace {

std::string sample(const std::string& file) {
  // From the source tree, so the test runs from any build directory.
  std::ifstream in(std::string(NETBOOTFS_TEST_SOURCE_DIR) + "/listing_samples/" + file,
                   std::ios::binary);
  EXPECT_TRUE(in) << "missing sample " << file;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

constexpr int64_t kNov22 = 1795381200;  // 2026-11-22 21:00:00 UTC
constexpr int64_t kJan05 = 1736046245;  // 2025-01-05 03:04:05 UTC

struct Expected {
  const char* name;
  bool is_dir;
  uint64_t size;  // ignored for directories
  int64_t mtime;
};

// The directory every sample lists (timestamps set with touch -d).
const Expected kTree[] = {
    {"pxelinux.cfg", true, 0, kNov22},
    {"sub", true, 0, kNov22},
    {"sub dir", true, 0, kNov22},
    {"a-very-long-file-name-that-exceeds-fifty-characters-for-sure.txt", false, 4, kNov22},
    {"a:colon", false, 1, kNov22},
    {"amp&ersand", false, 5, kNov22},
    {"big.img", false, 3500000, kJan05},
    {"café.cfg", false, 5, kNov22},
    {"empty.txt", false, 0, kNov22},
    {"hash#name", false, 2, kNov22},
    {"lt<gt>quote\".txt", false, 3, kNov22},
    {"percent%25sign", false, 1, kNov22},
    {"percent%sign", false, 1, kNov22},
    {"plain.txt", false, 6, kNov22},
    {"plus+sign", false, 4, kNov22},
    {"question?mark", false, 3, kNov22},
    {"twelve-k.bin", false, 12345, kNov22},
    {"with space.bin", false, 5000, kNov22},
    {"ünïcödé-long-name-ünïcödé-long-name-ünïcödé-long-name.cfg", false, 1, kNov22},
};

enum class Sizes {
  kExact,       // every file's byte count
  kBelow10000,  // nginx autoindex_exact_size off: "12K", "3M" above 9999 bytes
  kNever,       // Apache rounds everything
};
enum class Mtimes { kSeconds, kMinutes, kNone };

struct SampleCase {
  const char* file;
  const char* content_type;
  Sizes sizes;
  Mtimes mtimes;
};

class TreeSample : public testing::TestWithParam<SampleCase> {};

TEST_P(TreeSample, NamesTypesSizesAndTimes) {
  const SampleCase& c = GetParam();
  auto parsed = parse_listing(sample(c.file), c.content_type);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  std::map<std::string, ListingEntry> by_name;
  for (const auto& e : *parsed) {
    EXPECT_TRUE(by_name.emplace(e.name, e).second) << "duplicate " << e.name;
  }
  ASSERT_EQ(by_name.size(), std::size(kTree));
  for (const Expected& want : kTree) {
    SCOPED_TRACE(want.name);
    const auto it = by_name.find(want.name);
    ASSERT_NE(it, by_name.end()) << "missing";
    const ListingEntry& e = it->second;
    EXPECT_EQ(e.is_dir, want.is_dir);
    const bool exact = !want.is_dir && (c.sizes == Sizes::kExact ||
                                        (c.sizes == Sizes::kBelow10000 && want.size < 10000));
    if (exact) {
      ASSERT_TRUE(e.size.has_value());
      EXPECT_EQ(*e.size, want.size);
    } else {
      EXPECT_FALSE(e.size.has_value()) << *e.size;
    }
    switch (c.mtimes) {
      case Mtimes::kSeconds:
        EXPECT_EQ(e.mtime, want.mtime);
        break;
      case Mtimes::kMinutes:
        EXPECT_EQ(e.mtime, want.mtime - want.mtime % 60);
        break;
      case Mtimes::kNone:
        EXPECT_FALSE(e.mtime.has_value());
        break;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Servers, TreeSample,
    testing::Values(
        SampleCase{"nginx.json", "application/json", Sizes::kExact, Mtimes::kSeconds},
        SampleCase{"nginx.json", "", Sizes::kExact, Mtimes::kSeconds},
        SampleCase{"nginx_html_exact.html", "text/html", Sizes::kExact, Mtimes::kMinutes},
        SampleCase{"nginx_html_exact.html", "", Sizes::kExact, Mtimes::kMinutes},
        SampleCase{"nginx_html_inexact.html", "text/html", Sizes::kBelow10000, Mtimes::kMinutes},
        SampleCase{"apache_fancy_table.html", "text/html;charset=UTF-8", Sizes::kNever,
                   Mtimes::kMinutes},
        SampleCase{"apache_fancy_pre.html", "text/html;charset=UTF-8", Sizes::kNever,
                   Mtimes::kMinutes},
        SampleCase{"apache_plain_ul.html", "text/html;charset=UTF-8", Sizes::kNever,
                   Mtimes::kNone}),
    [](const testing::TestParamInfo<SampleCase>& param_info) {
      std::string n = param_info.param.file;
      for (char& ch : n) {
        if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
      }
      return n + (*param_info.param.content_type ? "" : "_sniffed");
    });

TEST(Listing, EmptyDirectories) {
  const std::pair<const char*, const char*> cases[] = {
      {"nginx_empty.json", "application/json"},
      {"nginx_empty.html", "text/html"},
      {"apache_empty.html", "text/html;charset=UTF-8"},
  };
  for (const auto& [file, type] : cases) {
    auto parsed = parse_listing(sample(file), type);
    ASSERT_TRUE(parsed.ok()) << file << ": " << parsed.error().message;
    EXPECT_TRUE(parsed->empty()) << file;
  }
}

TEST(Listing, ApacheSubdirectorySkipsAbsoluteParent) {
  auto parsed = parse_listing(sample("apache_subdir.html"), "text/html");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  ASSERT_EQ(parsed->size(), 1u);
  EXPECT_EQ((*parsed)[0].name, "default");
  EXPECT_FALSE((*parsed)[0].is_dir);
  EXPECT_FALSE((*parsed)[0].size.has_value());
}

TEST(Listing, ApacheSizesAreNeverExact) {
  for (const char* file : {"apache_fancy_table.html", "apache_fancy_pre.html",
                           "apache_plain_ul.html", "apache_subdir.html"}) {
    auto parsed = parse_html_listing(sample(file));
    ASSERT_TRUE(parsed.ok()) << file;
    for (const auto& e : *parsed) EXPECT_FALSE(e.size.has_value()) << file << " " << e.name;
  }
}

TEST(Listing, NonUtf8NameFromNginxHtml) {
  auto parsed = parse_listing(sample("nginx_html_bad_utf8.html"), "text/html");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[0].name,
            "bad\xff"
            "name.bin");
  EXPECT_EQ((*parsed)[0].size, 1u);
  EXPECT_EQ((*parsed)[1].name, "ok.txt");
}

// nginx writes such a name raw into its JSON, which is then not valid JSON:
// the whole listing is refused rather than guessed at.
TEST(Listing, NonUtf8NameMakesNginxJsonUnreadable) {
  auto parsed = parse_listing(sample("nginx_bad_utf8.json"), "application/json");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error().code, EPROTO);
}

TEST(Listing, NotAListingIsEproto) {
  const std::pair<std::string, const char*> cases[] = {
      {sample("nginx_404.html"), "text/html"},
      {sample("apache_404.html"), "text/html; charset=iso-8859-1"},
      {"", "text/html"},
      {"", ""},
      {"   \n", "application/json"},
      {"hello world", ""},
      {"hello world", "text/plain"},
      {"{\"name\":\"x\"}", "application/json"},
      {"[1, 2]", "application/json"},
      {"[{\"type\":\"file\"}]", "application/json"},
      {"[{\"name\":\"x\",\"type\":\"file\"", "application/json"},
      {"<html><head><title>Welcome</title></head><body><a href=\"x.iso\">x.iso</a></body></html>",
       "text/html"},
      {"<?xml version=\"1.0\"?><list><file>a</file></list>", ""},
      {std::string("\x00\x01\x02garbage", 10), ""},
  };
  for (const auto& [body, type] : cases) {
    auto parsed = parse_listing(body, type);
    ASSERT_FALSE(parsed.ok()) << "'" << body << "' as " << type;
    EXPECT_EQ(parsed.error().code, EPROTO) << body;
  }
}

// Links that are not entries of this directory, and hrefs that decode to
// names the mount could not represent.
TEST(Listing, HrefTable) {
  struct Case {
    const char* href;
    const char* name;  // nullptr: skipped
    bool is_dir;
  };
  const Case cases[] = {
      {"plain", "plain", false},
      {"dir/", "dir", true},
      {"./a:b", "a:b", false},
      {"with%20space", "with space", false},
      {"%C3%A9t%c3%a9", "été", false},
      {"plus+sign", "plus+sign", false},
      {"a%2525b", "a%25b", false},
      {"file?download=1", "file", false},
      {"file#top", "file", false},
      {"?C=N;O=D", nullptr, false},
      {"#top", nullptr, false},
      {"/", nullptr, false},
      {"/abs/path", nullptr, false},
      {"//other.host/x", nullptr, false},
      {"http://other.host/x", nullptr, false},
      {"HTTPS://other.host/x", nullptr, false},
      {"mailto:root@example.org", nullptr, false},
      {"javascript:void(0)", nullptr, false},
      {"a:b", nullptr, false},
      {"../", nullptr, false},
      {"..", nullptr, false},
      {"./", nullptr, false},
      {".", nullptr, false},
      {"%2e%2e/", nullptr, false},
      {"sub/deeper", nullptr, false},
      {"a%2Fb", nullptr, false},
      {"nul%00byte", nullptr, false},
      {"bad%zzescape", nullptr, false},
      {"trunc%4", nullptr, false},
      {"", nullptr, false},
  };
  for (const Case& c : cases) {
    const std::string body = std::string("<html><head><title>Index of /x/</title></head><body>") +
                             "<h1>Index of /x/</h1><hr><pre><a href=\"../\">../</a>\n<a href=\"" +
                             c.href + "\">text</a>   22-Nov-2026 21:00     7\n</pre></body></html>";
    auto parsed = parse_html_listing(body);
    ASSERT_TRUE(parsed.ok()) << c.href;
    if (!c.name) {
      EXPECT_TRUE(parsed->empty()) << c.href << " -> " << (*parsed)[0].name;
      continue;
    }
    ASSERT_EQ(parsed->size(), 1u) << c.href;
    EXPECT_EQ((*parsed)[0].name, c.name) << c.href;
    EXPECT_EQ((*parsed)[0].is_dir, c.is_dir) << c.href;
    EXPECT_EQ((*parsed)[0].mtime, kNov22) << c.href;
    if (c.is_dir) {
      EXPECT_FALSE((*parsed)[0].size.has_value()) << c.href;
    } else {
      EXPECT_EQ((*parsed)[0].size, 7u) << c.href;
    }
  }
}

// The columns after a link in nginx's <pre>: what becomes an exact size and
// a time, and what is left unset.
TEST(Listing, NginxColumnsTable) {
  struct Case {
    const char* columns;
    std::optional<uint64_t> size;
    std::optional<int64_t> mtime;
  };
  const Case cases[] = {
      {"   22-Nov-2026 21:00     7", 7, kNov22},
      {" 22-Nov-2026 21:00   0\r", 0, kNov22},
      {" 22-Nov-2026 21:00   18446744073709551615", UINT64_MAX, kNov22},
      {" 22-Nov-2026 21:00   18446744073709551616", std::nullopt, kNov22},  // overflow
      {" 22-Nov-2026 21:00   12K", std::nullopt, kNov22},
      {" 22-Nov-2026 21:00   3M", std::nullopt, kNov22},
      {" 22-Nov-2026 21:00   -", std::nullopt, kNov22},
      {" 22-Nov-2026 21:00   +7", std::nullopt, kNov22},
      {" 22-Nov-2026 21:00", std::nullopt, kNov22},
      {" 01-Jan-1970 00:00   1", 1, 0},
      {" 32-Nov-2026 21:00   7", std::nullopt, std::nullopt},  // no day 32
      {" 22-Foo-2026 21:00   7", std::nullopt, std::nullopt},
      {" 22-Nov-2026 24:00   7", std::nullopt, std::nullopt},
      {" 22-Nov-2026 2100   7", std::nullopt, std::nullopt},
      {" 2026-11-22 21:00   7", 7, kNov22},
      {" 2026-11-22 21:00:05   7", 7, kNov22 + 5},
      {"", std::nullopt, std::nullopt},
      {"   7", std::nullopt, std::nullopt},  // a size is only trusted after a time
  };
  for (const Case& c : cases) {
    const std::string body = std::string("<html><head><title>Index of /</title></head><body>") +
                             "<h1>Index of /</h1><hr><pre><a href=\"../\">../</a>\n" +
                             "<a href=\"f\">f</a>" + c.columns +
                             "\n<a href=\"g\">g</a> 01-Jan-2000 00:00 1\n</pre></body></html>";
    auto parsed = parse_html_listing(body);
    ASSERT_TRUE(parsed.ok()) << c.columns;
    ASSERT_EQ(parsed->size(), 2u) << c.columns;
    EXPECT_EQ((*parsed)[0].size, c.size) << c.columns;
    EXPECT_EQ((*parsed)[0].mtime, c.mtime) << c.columns;
  }
}

TEST(Listing, NginxJsonTable) {
  auto parsed = parse_nginx_json(R"([
    {"name":"f", "type":"file", "mtime":"Sun, 22 Nov 2026 21:00:00 GMT", "size":7},
    {"name":"d", "type":"directory", "mtime":"Sun, 22 Nov 2026 21:00:05 GMT", "size":4096},
    {"name":"fifo", "type":"other", "mtime":"Sun, 22 Nov 2026 21:00:00 GMT"},
    {"name":"no-time", "type":"file", "size":1},
    {"name":"bad-time", "type":"file", "mtime":"yesterday", "size":-1},
    {"name":"a/b", "type":"file", "size":1},
    {"name":"..", "type":"directory"},
    {"name":"", "type":"file"},
    {"name":"esc\"aped\\\n", "type":"file", "size":2}
  ])");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  ASSERT_EQ(parsed->size(), 5u);
  const auto& v = *parsed;
  EXPECT_EQ(v[0].name, "f");
  EXPECT_EQ(v[0].size, 7u);
  EXPECT_EQ(v[0].mtime, kNov22);
  EXPECT_EQ(v[1].name, "d");
  EXPECT_TRUE(v[1].is_dir);
  EXPECT_FALSE(v[1].size.has_value());
  EXPECT_EQ(v[1].mtime, kNov22 + 5);
  EXPECT_EQ(v[2].name, "no-time");
  EXPECT_FALSE(v[2].mtime.has_value());
  EXPECT_EQ(v[3].name, "bad-time");
  EXPECT_FALSE(v[3].mtime.has_value());
  EXPECT_FALSE(v[3].size.has_value());
  EXPECT_EQ(v[4].name, "esc\"aped\\\n");
}

// Apache's IconsAreLinks links the icon and the name to the same entry.
TEST(Listing, DuplicateLinksMerge) {
  const std::string body =
      "<html><head><title>Index of /d</title></head><body><h1>Index of /d</h1><pre>"
      "<a href=\"?C=N;O=D\">Name</a>\n"
      "<a href=\"k\"><img src=\"/icons/unknown.gif\" alt=\"[   ]\"></a> <a href=\"k\">k</a>"
      "   2026-11-22 21:00  4.1M  \n</pre></body></html>";
  auto parsed = parse_html_listing(body);
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->size(), 1u);
  EXPECT_EQ((*parsed)[0].name, "k");
  EXPECT_EQ((*parsed)[0].mtime, kNov22);
  EXPECT_FALSE((*parsed)[0].size.has_value());
}

TEST(Listing, DeeplyNestedHtmlDoesNotCrash) {
  std::string body = "<html><head><title>Index of /</title></head><body>";
  for (int i = 0; i < 20000; ++i) body += "<div>";
  body += "<a href=\"deep\">deep</a>";
  auto parsed = parse_html_listing(body);
  ASSERT_TRUE(parsed.ok());
}

}  // namespace
}  // namespace netbootfs::cache
