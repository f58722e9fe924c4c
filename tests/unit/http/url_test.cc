#include "cache/http/url.h"

#include <gtest/gtest.h>

namespace netbootfs::http {
namespace {

TEST(Url, NormalizeBaseUrl) {
  struct Case {
    const char* in;
    const char* want;  // nullptr: rejected
  };
  const Case cases[] = {
      {"http://server/tftp", "http://server/tftp/"},
      {"http://server/tftp///", "http://server/tftp/"},
      {"https://server", "https://server/"},
      {"HTTP://Server:8080/x", "http://Server:8080/x/"},
      {"http://[fd00::5]:8080/tftp", "http://[fd00::5]:8080/tftp/"},
      {"ftp://server/tftp", nullptr},
      {"file:///etc", nullptr},
      {"server/tftp", nullptr},
      {"http://server/tftp?x=1", nullptr},
      {"http://server/tftp#frag", nullptr},
      {"http:///nohost", nullptr},
      {"http://server/a b", nullptr},
  };
  for (const auto& c : cases) {
    auto r = normalize_base_url(c.in);
    if (!c.want) {
      EXPECT_FALSE(r.ok()) << c.in;
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
      {"a b", "a%20b"},
      {"50%", "50%25"},
      {"#1", "%231"},
      {"what?", "what%3F"},
      {"a+b", "a%2Bb"},
      {"caf\xc3\xa9", "caf%C3%A9"},
      {"x/y", "x%2Fy"},  // a segment never carries a slash through
      {"&=;", "%26%3D%3B"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(encode_segment(c.name), c.encoded) << c.name;
    auto back = percent_decode(c.encoded);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, c.name);
  }
  EXPECT_FALSE(percent_decode("%").has_value());
  EXPECT_FALSE(percent_decode("%4").has_value());
  EXPECT_FALSE(percent_decode("%zz").has_value());
}

TEST(Url, JoinUrl) {
  EXPECT_EQ(join_url("http://h/t/", "names with spaces/boot menu #1.cfg"),
            "http://h/t/names%20with%20spaces/boot%20menu%20%231.cfg");
  EXPECT_EQ(join_url("http://h/t/", "pxelinux.cfg", true), "http://h/t/pxelinux.cfg/");
  EXPECT_EQ(join_url("http://h/t/", "", true), "http://h/t/");
  EXPECT_EQ(join_url("http://h/t", "a"), "http://h/t/a");
}

TEST(Url, RelativePathsNeverEscape) {
  struct Case {
    const char* in;
    const char* want;  // nullptr: rejected
  };
  const Case cases[] = {
      {"a/b", "a/b"},       {"/a//b/", "a/b"},   {"./a/./b", "a/b"}, {"", ""},
      {"/", ""},            {"../etc", nullptr}, {"a/../../x", nullptr},
      {"a/..", nullptr},
  };
  for (const auto& c : cases) {
    auto r = normalize_rel_path(c.in);
    if (!c.want) {
      ASSERT_FALSE(r.ok()) << c.in;
      EXPECT_EQ(r.error().code, EINVAL);
    } else {
      ASSERT_TRUE(r.ok()) << c.in;
      EXPECT_EQ(r.value(), c.want) << c.in;
    }
  }
  EXPECT_FALSE(normalize_rel_path(std::string_view("a\0b", 3)).ok());
}

TEST(Url, PathHelpersAndHosts) {
  EXPECT_EQ(parent_path("a/b/c"), "a/b");
  EXPECT_EQ(parent_path("c"), "");
  EXPECT_EQ(base_name("a/b/c"), "c");
  EXPECT_EQ(base_name("c"), "c");
  EXPECT_EQ(child_path("", "x"), "x");
  EXPECT_EQ(child_path("a/b", "x"), "a/b/x");
  EXPECT_EQ(url_host("http://uyuni.example.com/tftp"), "uyuni.example.com");
  EXPECT_EQ(url_host("https://user:pw@host:8443/x"), "host");
  EXPECT_EQ(url_host("http://[fd00::5]:8080/"), "fd00::5");
  EXPECT_EQ(url_host("http://10.0.0.5"), "10.0.0.5");
  EXPECT_EQ(url_host("no scheme"), "");
}

}  // namespace
}  // namespace netbootfs::http
