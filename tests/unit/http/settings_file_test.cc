// The recorded HTTP settings of a mount: they round-trip, never carry a
// proxy password, are private when they name a key, and a missing file is
// the defaults.
#include "cache/http/settings_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace netbootfs::http {
namespace {

using namespace std::chrono_literals;

class SettingsFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/nbfs-settings-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/" + kSettingsFileName;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  mode_t mode() const {
    struct stat st {};
    EXPECT_EQ(::stat(path_.c_str(), &st), 0);
    return st.st_mode & 0777;
  }
  std::string text() const {
    std::ifstream in(path_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::string dir_, path_;
};

TEST(StripUserinfo, Table) {
  struct Case {
    const char* in;
    const char* want;
  };
  const Case cases[] = {
      {"http://proxy:3128", "http://proxy:3128"},
      {"http://user:pw@proxy:3128", "http://proxy:3128"},
      {"http://user:p@ss@proxy:3128/", "http://proxy:3128/"},
      {"socks5h://u@proxy", "socks5h://proxy"},
      {"user:pw@proxy:3128", "proxy:3128"},
      {"proxy:3128", "proxy:3128"},
      {"http://proxy/path@x", "http://proxy/path@x"},
      {"", ""},
  };
  for (const auto& c : cases) EXPECT_EQ(strip_userinfo(c.in), c.want) << c.in;
}

TEST_F(SettingsFile, RoundTripsWhatTheMountUses) {
  Options o;
  o.proxy = "http://127.0.0.1:3128";
  o.ca_file = "/etc/netbootfs/ca with space.pem";
  o.insecure = true;
  o.connect_timeout = 2500ms;
  o.request_timeout = 7s;
  o.low_speed_time = 12s;
  ASSERT_TRUE(write_settings_file(path_, o).ok());
  EXPECT_EQ(mode(), 0644u) << "no key named: readable like the upstream file";
  auto r = read_settings_file(path_, Options{});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->found);
  EXPECT_EQ(r->options.proxy, o.proxy);
  EXPECT_EQ(r->options.ca_file, o.ca_file);
  EXPECT_TRUE(r->options.client_cert.empty());
  EXPECT_TRUE(r->options.insecure);
  EXPECT_EQ(r->options.connect_timeout, 2500ms);
  EXPECT_EQ(r->options.request_timeout, 7s);
  EXPECT_EQ(r->options.low_speed_time, 12s);
}

TEST_F(SettingsFile, KeyPathsMakeItPrivateAndPasswordsStayOut) {
  Options o;
  o.proxy = "http://admin:s3cret@proxy.example:3128";
  o.client_cert = "/etc/netbootfs/client.pem";
  o.client_key = "/etc/netbootfs/client.key";
  ASSERT_TRUE(write_settings_file(path_, o).ok());
  EXPECT_EQ(mode(), 0600u);
  EXPECT_EQ(text().find("s3cret"), std::string::npos) << text();
  auto r = read_settings_file(path_, Options{});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->options.proxy, "http://proxy.example:3128");
  EXPECT_EQ(r->options.client_key, o.client_key);
  // A later mount without a key makes the file readable again, and without
  // a proxy forgets the proxy.
  ASSERT_TRUE(write_settings_file(path_, Options{}).ok());
  EXPECT_EQ(mode(), 0644u);
  r = read_settings_file(path_, Options{});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->options.proxy.empty());
  EXPECT_TRUE(r->options.client_key.empty());
}

TEST_F(SettingsFile, MissingIsTheBase) {
  Options base;
  base.user_agent = "netbootfsctl";
  auto r = read_settings_file(path_, base);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->found);
  EXPECT_EQ(r->options.user_agent, "netbootfsctl");
  EXPECT_EQ(r->options.connect_timeout, Options{}.connect_timeout);
}

TEST_F(SettingsFile, BadValuesNameTheLineAndLineBreaksAreRefused) {
  for (const char* t : {"insecure=yes\n", "connect_timeout=-1\n", "request_timeout=x\n",
                        "low_speed_time=0\n", "just words\n"}) {
    Options o;
    auto r = parse_settings(std::string("# c\n") + t, "f", o);
    ASSERT_FALSE(r.ok()) << t;
    EXPECT_EQ(r.error().message.rfind("f: line 2: ", 0), 0u) << r.error().message;
  }
  Options o;
  EXPECT_TRUE(parse_settings("future_key=1\nproxy=p:1\n", "f", o).ok()) << "unknown keys ignored";
  EXPECT_EQ(o.proxy, "p:1");
  Options nl;
  nl.ca_file = "/etc/a\nproxy=http://evil";
  EXPECT_FALSE(write_settings_file(path_, nl).ok());
}

}  // namespace
}  // namespace netbootfs::http
