// Which occurrences of a `from` are replaced: whole host names, IPs and literals.
#include <gtest/gtest.h>

#include <string>

#include "rewrite/rewrite.h"

namespace netbootfs::rewrite {
namespace {

// The bytes a client would get for `input` with the single rule from -> to.
std::string served(const std::string& from, const std::string& to, const std::string& input) {
  RuleSet set;
  auto added = set.add(Rule{"r", {"*"}, {{from, to}}});
  EXPECT_TRUE(added.ok()) << added.error().message;
  Outcome out = set.apply("pxelinux.cfg/default", input);
  EXPECT_TRUE(out.status == Status::kRewritten || out.status == Status::kUnchanged);
  return out.rewritten() ? out.output : input;
}

struct Case {
  const char* input;
  const char* expected;
};

void run_table(const std::string& from, const std::string& to, const std::vector<Case>& cases) {
  for (const Case& c : cases) {
    EXPECT_EQ(served(from, to, c.input), c.expected)
        << "from '" << from << "' in '" << c.input << "'";
  }
}

TEST(Boundary, HostName) {
  run_table("uyuni.example.com", "proxy.lan",
            {
                {"uyuni.example.com", "proxy.lan"},
                {"http://uyuni.example.com/cobbler/x", "http://proxy.lan/cobbler/x"},
                {"https://uyuni.example.com:8080/x", "https://proxy.lan:8080/x"},
                {"uyuni.example.com:8080", "proxy.lan:8080"},
                {"set root=(http,uyuni.example.com)", "set root=(http,proxy.lan)"},
                {"MASTER=uyuni.example.com", "MASTER=proxy.lan"},
                {"tftp-server uyuni.example.com\n", "tftp-server proxy.lan\n"},
                {"user@uyuni.example.com", "user@proxy.lan"},
                {"\"uyuni.example.com\"", "\"proxy.lan\""},
                {"'uyuni.example.com'", "'proxy.lan'"},
                {"uyuni.example.com/", "proxy.lan/"},
                {"<uyuni.example.com>", "<proxy.lan>"},
                // A sentence may end right after the name; an ellipsis too.
                {"Served by uyuni.example.com.", "Served by proxy.lan."},
                {"Served by uyuni.example.com.\n", "Served by proxy.lan.\n"},
                {"Served by uyuni.example.com. Bye", "Served by proxy.lan. Bye"},
                {"see uyuni.example.com...", "see proxy.lan..."},
                // Case-insensitive; the replacement is inserted as configured.
                {"UYUNI.Example.COM", "proxy.lan"},
                {"http://Uyuni.example.com/", "http://proxy.lan/"},
                // A URL passed percent-encoded as a parameter.
                {"?next=http%3A%2F%2Fuyuni.example.com%2Fx", "?next=http%3A%2F%2Fproxy.lan%2Fx"},
                // Parts of longer names are other hosts.
                {"myuyuni.example.com", "myuyuni.example.com"},
                {"x.uyuni.example.com", "x.uyuni.example.com"},
                {"uyuni.example.com.au", "uyuni.example.com.au"},
                {"uyuni.example.com.au.", "uyuni.example.com.au."},
                {"uyuni-example.com", "uyuni-example.com"},
                {"uyuni.example.community", "uyuni.example.community"},
                {"uyuni.example.com-2", "uyuni.example.com-2"},
                {"uyuni.example.com_old", "uyuni.example.com_old"},
                {"old_uyuni.example.com", "old_uyuni.example.com"},
                {"2uyuni.example.com", "2uyuni.example.com"},
                {"uyuni.example.co", "uyuni.example.co"},
                {"uyuni", "uyuni"},
                // Two in a row, and separated by one delimiter.
                {"uyuni.example.com uyuni.example.com", "proxy.lan proxy.lan"},
                {"uyuni.example.com,uyuni.example.com", "proxy.lan,proxy.lan"},
            });
}

TEST(Boundary, ShortHostName) {
  run_table("uyuni", "proxy",
            {
                {"MASTER=uyuni", "MASTER=proxy"},
                {"http://uyuni/x", "http://proxy/x"},
                {"http://uyuni:80/x", "http://proxy:80/x"},
                {"uyuni.example.com", "uyuni.example.com"},  // a longer name
                {"/srv/uyuni-data/", "/srv/uyuni-data/"},
                {"myuyuni", "myuyuni"},
            });
}

TEST(Boundary, Ipv4) {
  run_table("10.0.0.5", "10.1.0.1",
            {
                {"10.0.0.5", "10.1.0.1"},
                {"tftp-server 10.0.0.5\n", "tftp-server 10.1.0.1\n"},
                {"http://10.0.0.5:8080/x", "http://10.1.0.1:8080/x"},
                {"ip=10.0.0.9::10.0.0.5:255.255.255.0", "ip=10.0.0.9::10.1.0.1:255.255.255.0"},
                {"nfsroot=10.0.0.5:/srv/root", "nfsroot=10.1.0.1:/srv/root"},
                {"next-server 10.0.0.5;", "next-server 10.1.0.1;"},
                {"at 10.0.0.5.", "at 10.1.0.1."},
                {"10.0.0.50", "10.0.0.50"},
                {"110.0.0.5", "110.0.0.5"},
                {"10.0.0.5.1", "10.0.0.5.1"},
                {"1.10.0.0.5", "1.10.0.0.5"},
                {"10.0.0.55 10.0.0.5", "10.0.0.55 10.1.0.1"},
            });
}

TEST(Boundary, Ipv6) {
  run_table("fd00::5", "fd00::1",
            {
                {"fd00::5", "fd00::1"},
                {"http://[fd00::5]/x", "http://[fd00::1]/x"},
                {"http://[fd00::5]:8080/x", "http://[fd00::1]:8080/x"},
                {"tftp-server FD00::5\n", "tftp-server fd00::1\n"},
                {"fd00::50", "fd00::50"},
                {"fd00::5:1", "fd00::5:1"},
                {"afd00::5", "afd00::5"},
                {"1:fd00::5", "1:fd00::5"},
                {"fe80::5%eth0 fd00::5%eth0", "fe80::5%eth0 fd00::1%eth0"},
                {"at fd00::5.", "at fd00::1."},
            });
}

TEST(Boundary, BracketedIpv6From) {
  run_table("[fd00::5]", "proxy.lan",
            {
                {"http://[fd00::5]:69/x", "http://proxy.lan:69/x"},
                {"x[FD00::5]y", "xproxy.lany"},
                {"fd00::5", "fd00::5"},
            });
}

TEST(Boundary, LiteralIsExactAndCaseSensitive) {
  run_table("/cobbler/", "/proxy/",
            {
                {"http://h/cobbler/images", "http://h/proxy/images"},
                {"x/cobbler/y/cobbler/", "x/proxy/y/proxy/"},
                {"/Cobbler/", "/Cobbler/"},
            });
  // "host:port" is literal too: the port is part of what the admin wants replaced.
  run_table("uyuni.example.com:80", "proxy:8080",
            {
                {"http://uyuni.example.com:80/x", "http://proxy:8080/x"},
                {"http://myuyuni.example.com:80/x", "http://myproxy:8080/x"},
                {"http://UYUNI.example.com:80/x", "http://UYUNI.example.com:80/x"},
            });
}

TEST(Boundary, Classify) {
  struct {
    const char* from;
    FromKind kind;
  } cases[] = {
      {"uyuni.example.com", FromKind::kHostName},
      {"UYUNI", FromKind::kHostName},
      {"10.0.0.5", FromKind::kHostName},
      {"my_host-1.lan", FromKind::kHostName},
      {"fd00::5", FromKind::kIpv6},
      {"::1", FromKind::kIpv6},
      {"::", FromKind::kIpv6},
      {"[fd00::5]", FromKind::kIpv6},
      {"2001:db8:0:0:0:0:0:1", FromKind::kIpv6},
      {"::ffff:10.0.0.5", FromKind::kIpv6},
      {"2001:db8:0:0:0:0:0:1:2", FromKind::kLiteral},
      {"fd00:::5", FromKind::kLiteral},
      {"fd00::5::1", FromKind::kLiteral},
      {"fd00:12345::1", FromKind::kLiteral},
      {"host:8080", FromKind::kLiteral},
      {".example.com", FromKind::kLiteral},
      {"example.com.", FromKind::kLiteral},
      {"a..b", FromKind::kLiteral},
      {"/tftp/", FromKind::kLiteral},
      {"http://uyuni", FromKind::kLiteral},
      {"two words", FromKind::kLiteral},
  };
  for (const auto& c : cases) EXPECT_EQ(classify(c.from), c.kind) << c.from;
}

}  // namespace
}  // namespace netbootfs::rewrite
