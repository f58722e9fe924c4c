// URL building and path normalisation: names that need escaping round-trip,
// nothing escapes the base URL, hosts are found in every URL form.
#include "cache/http/url.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace netbootfs::http {
namespace {

TEST(Url, NormalizeBaseUrl) {
  struct Case {
    const char* in;
    const char* want;  // nullptr: rejected
  };
  const Case cases[] = {
      {"http://server/tftp", "http://server/tftp/"},
      {"http://server/tftp/", "http://server/tftp/"},
      {"http://server/tftp///", "http://server/tftp/"},
      {"https://server", "https://server/"},
      {"https://server/", "https://server/"},
      {"http://server//", "http://server/"},
      {"HTTP://Server:8080/x", "http://Server:8080/x/"},
      {"HtTpS://server/a/b", "https://server/a/b/"},
      {"http://[fd00::5]:8080/tftp", "http://[fd00::5]:8080/tftp/"},
      {"http://[::1]/", "http://[::1]/"},
      {"https://user:secret@server/tftp", "https://user:secret@server/tftp/"},
      {"http://server/with%20escape", "http://server/with%20escape/"},
      {"http://server:65535/", "http://server:65535/"},
      {"ftp://server/tftp", nullptr},
      {"file:///etc", nullptr},
      {"gopher://server/", nullptr},
      {"server/tftp", nullptr},
      {"://server/tftp", nullptr},
      {"", nullptr},
      {"http://server/tftp?x=1", nullptr},
      {"http://server/tftp#frag", nullptr},
      {"http://server?x", nullptr},
      {"http:///nohost", nullptr},
      {"http://", nullptr},
      {"http://user@/x", nullptr},
      {"http://:8080/x", nullptr},
      {"http://server:99999/", nullptr},
      {"http://server:80a/", nullptr},
      {"http://[::1/", nullptr},
      {"http://[::1]x/", nullptr},
      {"http://server/a b", nullptr},
      {"http://server/a\tb", nullptr},
  };
  for (const auto& c : cases) {
    auto r = normalize_base_url(c.in);
    if (!c.want) {
      ASSERT_FALSE(r.ok()) << c.in << " -> " << r.value();
      EXPECT_EQ(r.error().code, EINVAL) << c.in;
    } else {
      ASSERT_TRUE(r.ok()) << c.in << ": " << r.error().message;
      EXPECT_EQ(r.value(), c.want) << c.in;
    }
  }
}

TEST(Url, SegmentsArePercentEncodedAndRoundTrip) {
  struct Case {
    const char* name;
    const char* encoded;
  };
  const Case cases[] = {
      {"plain-name_1.0~x", "plain-name_1.0~x"},
      {"ABCxyz0189", "ABCxyz0189"},
      {"a b", "a%20b"},
      {"50%", "50%25"},
      {"%41", "%2541"},  // an escape in a name is a name, not an escape
      {"#1", "%231"},
      {"what?", "what%3F"},
      {"a+b", "a%2Bb"},
      {"caf\xc3\xa9", "caf%C3%A9"},
      {"\xe2\x82\xac", "%E2%82%AC"},
      {"x/y", "x%2Fy"},  // a segment never carries a slash through
      {"a\\b", "a%5Cb"},
      {"&=;:@!$'()*,", "%26%3D%3B%3A%40%21%24%27%28%29%2A%2C"},
      {"\"<>[]{}|^`", "%22%3C%3E%5B%5D%7B%7D%7C%5E%60"},
      {"\x01\x7f\xff", "%01%7F%FF"},
      {"", ""},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(encode_segment(c.name), c.encoded) << c.name;
    auto back = percent_decode(c.encoded);
    ASSERT_TRUE(back.has_value()) << c.encoded;
    EXPECT_EQ(*back, c.name);
  }
}

TEST(Url, EveryByteEncodesByTheRfc) {
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    const std::string one(1, c);
    const bool unreserved = (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') ||
                            (b >= '0' && b <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
    const std::string encoded = encode_segment(one);
    if (unreserved) {
      EXPECT_EQ(encoded, one) << b;
    } else {
      ASSERT_EQ(encoded.size(), 3u) << b;
      EXPECT_EQ(encoded[0], '%');
      static constexpr char kHex[] = "0123456789ABCDEF";
      EXPECT_EQ(encoded[1], kHex[b >> 4]) << b;
      EXPECT_EQ(encoded[2], kHex[b & 15]) << b;
    }
    EXPECT_EQ(percent_decode(encoded), one) << b;
  }
}

TEST(Url, PercentDecode) {
  struct Case {
    const char* in;
    const char* want;  // nullptr: malformed
  };
  const Case cases[] = {
      {"", ""},
      {"plain", "plain"},
      {"%20", " "},
      {"%c3%A9", "\xc3\xa9"},
      {"a+b", "a+b"},        // '+' is not a space in a path
      {"%25%32%30", "%20"},  // decoded once only
      {"%", nullptr},
      {"%4", nullptr},
      {"100%", nullptr},
      {"a%2", nullptr},
      {"%zz", nullptr},
      {"%G0", nullptr},
      {"%0g", nullptr},
  };
  for (const auto& c : cases) {
    auto r = percent_decode(c.in);
    if (!c.want) {
      EXPECT_FALSE(r.has_value()) << c.in;
    } else {
      ASSERT_TRUE(r.has_value()) << c.in;
      EXPECT_EQ(*r, c.want) << c.in;
    }
  }
  EXPECT_EQ(percent_decode("a%00b"), std::string("a\0b", 3));
}

TEST(Url, JoinUrl) {
  struct Case {
    const char* base;
    const char* rel;
    bool directory;
    const char* want;
  };
  const Case cases[] = {
      {"http://h/t/", "a b/c#d", false, "http://h/t/a%20b/c%23d"},
      {"http://h/t/", "a b/c#d", true, "http://h/t/a%20b/c%23d/"},
      {"http://h/t/", "names with spaces/boot menu #1.cfg", false,
       "http://h/t/names%20with%20spaces/boot%20menu%20%231.cfg"},
      {"http://h/t/", "pxelinux.cfg", true, "http://h/t/pxelinux.cfg/"},
      {"http://h/t/", "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", false,
       "http://h/t/pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"},
      {"http://h/t/", "", true, "http://h/t/"},
      {"http://h/t/", "", false, "http://h/t/"},
      {"http://h/t", "a", false, "http://h/t/a"},
      {"http://h/", "q?x=1&y=2", false, "http://h/q%3Fx%3D1%26y%3D2"},
      {"http://h/", "caf\xc3\xa9/50%/a+b", false, "http://h/caf%C3%A9/50%25/a%2Bb"},
      // Not normalised input still cannot leave the base.
      {"http://h/t/", "/a//b/", false, "http://h/t/a/b"},
      {"http://h/t/", "./a/./b", false, "http://h/t/a/b"},
      {"http://h/t/", "../../etc/passwd", false, "http://h/t/%2E%2E/%2E%2E/etc/passwd"},
      {"http://h/t/", "...", false, "http://h/t/..."},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(join_url(c.base, c.rel, c.directory), c.want) << c.rel;
  }
}

TEST(Url, AwkwardNamesRoundTripThroughUrls) {
  const std::string base = "https://uyuni.example.com/tftp/";
  const std::vector<std::string> names = {
      "boot menu.cfg",
      "100%.cfg",
      "#hash",
      "why?",
      "a+b=c",
      "caf\xc3\xa9",
      "\xe6\x97\xa5\xe6\x9c\xac",
      "~user",
      "semi;colon",
      "tab\tname",
      ".hidden",
      "..dots",
  };
  for (const auto& name : names) {
    const std::string url = join_url(base, "dir/" + name);
    ASSERT_EQ(url.rfind(base + "dir/", 0), 0u) << url;
    const std::string tail = url.substr(base.size() + 4);
    EXPECT_EQ(tail.find_first_of("/?# +\t"), std::string::npos) << tail;
    EXPECT_EQ(percent_decode(tail), name);
    auto normal = normalize_rel_path("dir/" + name);
    ASSERT_TRUE(normal.ok()) << name;
    EXPECT_EQ(base_name(normal.value()), name);
  }
}

TEST(Url, RelativePathsNeverEscape) {
  struct Case {
    const char* in;
    const char* want;  // nullptr: rejected
  };
  const Case cases[] = {
      {"a/b", "a/b"},
      {"/a//b/", "a/b"},
      {"./a/./b", "a/b"},
      {"", ""},
      {"/", ""},
      {".", ""},
      {"//./", ""},
      {"pxelinux.cfg/default", "pxelinux.cfg/default"},
      {"...", "..."},
      {"a/.../b", "a/.../b"},
      {".hidden/..x/x..", ".hidden/..x/x.."},
      {"a b/c#d", "a b/c#d"},
      {"../etc", nullptr},
      {"..", nullptr},
      {"/..", nullptr},
      {"a/../../x", nullptr},
      {"a/..", nullptr},
      {"a/../b", nullptr},  // rejected, not resolved: the kernel never sends it
  };
  for (const auto& c : cases) {
    auto r = normalize_rel_path(c.in);
    if (!c.want) {
      ASSERT_FALSE(r.ok()) << c.in;
      EXPECT_EQ(r.error().code, EINVAL) << c.in;
    } else {
      ASSERT_TRUE(r.ok()) << c.in << ": " << r.error().message;
      EXPECT_EQ(r.value(), c.want) << c.in;
    }
  }
  for (std::string_view nul :
       {std::string_view("a\0b", 3), std::string_view("\0", 1), std::string_view("a/\0/b", 5)}) {
    auto r = normalize_rel_path(nul);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, EINVAL);
  }
}

TEST(Url, PathHelpers) {
  struct Case {
    const char* path;
    const char* parent;
    const char* base;
  };
  const Case cases[] = {
      {"a/b/c", "a/b", "c"},
      {"c", "", "c"},
      {"", "", ""},
      {"pxelinux.cfg/default", "pxelinux.cfg", "default"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(parent_path(c.path), c.parent) << c.path;
    EXPECT_EQ(base_name(c.path), c.base) << c.path;
    if (*c.path) {
      EXPECT_EQ(child_path(parent_path(c.path), base_name(c.path)), c.path);
    }
  }
  EXPECT_EQ(child_path("", "x"), "x");
  EXPECT_EQ(child_path("a/b", "x"), "a/b/x");
}

TEST(Url, Hosts) {
  struct Case {
    const char* url;
    const char* host;
  };
  const Case cases[] = {
      {"http://uyuni.example.com/tftp", "uyuni.example.com"},
      {"https://uyuni.example.com", "uyuni.example.com"},
      {"http://host:8080/x", "host"},
      {"http://host?q", "host"},
      {"http://host#f", "host"},
      {"https://user:pw@host:8443/x", "host"},
      {"https://user@host/x", "host"},
      {"http://u:p@ss@host/", "host"},
      {"http://[fd00::5]:8080/", "fd00::5"},
      {"http://[::1]/tftp", "::1"},
      {"http://[::1]", "::1"},
      {"http://user@[2001:db8::1]:80/", "2001:db8::1"},
      {"http://10.0.0.5", "10.0.0.5"},
      {"http://10.0.0.5:80/a:b", "10.0.0.5"},
      {"http://[::1/x", ""},
      {"http:///x", ""},
      {"no scheme", ""},
      {"", ""},
  };
  for (const auto& c : cases) EXPECT_EQ(url_host(c.url), c.host) << c.url;
}

}  // namespace
}  // namespace netbootfs::http
