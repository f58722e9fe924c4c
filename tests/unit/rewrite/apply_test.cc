// RuleSet::apply: rule order, one pass, outcomes, and the default rule on real menus.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "rewrite/rewrite.h"

namespace netbootfs::rewrite {
namespace {

RuleSet make(std::vector<Rule> rules) {
  RuleSet set;
  for (Rule& r : rules) {
    auto added = set.add(std::move(r));
    EXPECT_TRUE(added.ok()) << added.error().message;
  }
  return set;
}

std::string served(const RuleSet& set, std::string_view path, const std::string& input) {
  Outcome out = set.apply(path, input);
  return out.rewritten() ? out.output : input;
}

TEST(Apply, OneRuleReportsCountAndName) {
  RuleSet set = make({{"pxe", {"pxelinux.cfg/*"}, {{"uyuni.lan", "proxy.lan"}}}});
  Outcome out = set.apply("pxelinux.cfg/default", "a uyuni.lan b uyuni.lan c");
  EXPECT_EQ(out.status, Status::kRewritten);
  EXPECT_EQ(out.output, "a proxy.lan b proxy.lan c");
  EXPECT_EQ(out.replacements, 2u);
  EXPECT_EQ(out.rules_applied, std::vector<std::string>{"pxe"});
  EXPECT_TRUE(out.skipped_reason.empty());
}

TEST(Apply, PathNotSelected) {
  RuleSet set = make({{"pxe", {"pxelinux.cfg/*"}, {{"uyuni.lan", "proxy.lan"}}}});
  Outcome out = set.apply("images/linux", "uyuni.lan");
  EXPECT_EQ(out.status, Status::kNoRule);
  EXPECT_TRUE(out.output.empty());
  EXPECT_EQ(out.replacements, 0u);
  EXPECT_FALSE(set.matches("images/linux"));
  EXPECT_TRUE(set.matches("pxelinux.cfg/default"));
  EXPECT_EQ(RuleSet().apply("pxelinux.cfg/default", "x").status, Status::kNoRule);
}

TEST(Apply, NoOccurrenceIsUnchanged) {
  RuleSet set = make({{"pxe", {"*"}, {{"uyuni.lan", "proxy.lan"}}}});
  Outcome out = set.apply("x.cfg", "nothing to see\n");
  EXPECT_EQ(out.status, Status::kUnchanged);
  EXPECT_TRUE(out.output.empty());
  EXPECT_TRUE(out.rules_applied.empty());
}

TEST(Apply, EmptyInput) {
  RuleSet set = make({{"pxe", {"*"}, {{"uyuni.lan", "proxy.lan"}}}});
  EXPECT_EQ(set.apply("x.cfg", "").status, Status::kUnchanged);
}

TEST(Apply, NulIsNotText) {
  RuleSet set = make({{"pxe", {"*"}, {{"uyuni.lan", "proxy.lan"}}}});
  Outcome out = set.apply("x.cfg", std::string("uyuni.lan\0x", 11));
  EXPECT_EQ(out.status, Status::kNotText);
  EXPECT_TRUE(out.output.empty());
  EXPECT_EQ(out.replacements, 0u);
  EXPECT_NE(out.skipped_reason.find("NUL byte at offset 9"), std::string::npos)
      << out.skipped_reason;
}

TEST(Apply, LargerThanMaxSizeIsSkipped) {
  RuleSet set = make({{"pxe", {"*"}, {{"uyuni.lan", "proxy.lan"}}}});
  set.set_max_size(16);
  EXPECT_EQ(set.apply("x.cfg", std::string(16, 'a')).status, Status::kUnchanged);
  Outcome out = set.apply("x.cfg", "uyuni.lan uyuni.lan");
  EXPECT_EQ(out.status, Status::kTooLarge);
  EXPECT_TRUE(out.output.empty());
  EXPECT_NE(out.skipped_reason.find("19 bytes"), std::string::npos) << out.skipped_reason;
  EXPECT_EQ(RuleSet().max_size(), size_t{4} << 20);
}

TEST(Apply, CrlfPreserved) {
  RuleSet set = make({{"pxe", {"*"}, {{"uyuni.lan", "proxy.lan"}}}});
  EXPECT_EQ(served(set, "x", "a uyuni.lan\r\nb\r\nuyuni.lan\r\n"),
            "a proxy.lan\r\nb\r\nproxy.lan\r\n");
}

TEST(Apply, LongerAndShorterReplacements) {
  RuleSet longer = make({{"r", {"*"}, {{"u", "a-much-longer-host.example.org"}}}});
  EXPECT_EQ(served(longer, "x", "http://u/ u"),
            "http://a-much-longer-host.example.org/ a-much-longer-host.example.org");
  RuleSet shorter = make({{"r", {"*"}, {{"a-much-longer-host.example.org", "u"}}}});
  EXPECT_EQ(served(shorter, "x", "(http,a-much-longer-host.example.org)"), "(http,u)");
  RuleSet erase = make({{"r", {"*"}, {{"/cobbler", ""}}}});
  EXPECT_EQ(served(erase, "x", "/cobbler/a /cobbler/b"), "/a /b");
}

TEST(Apply, AllMatches) {
  RuleSet set = make({{"r", {"*"}, {{"h.lan", "proxy"}}}});
  Outcome out = set.apply("x", "h.lan h.lan\nh.lan");
  EXPECT_EQ(out.output, "proxy proxy\nproxy");
  EXPECT_EQ(out.replacements, 3u);
  // "ab" would be a host name, with boundaries; a literal matches back to back.
  RuleSet lit = make({{"r", {"*"}, {{"/x", "/yz"}}}});
  out = lit.apply("x", "/x/x/x/x");
  EXPECT_EQ(out.output, "/yz/yz/yz/yz");
  EXPECT_EQ(out.replacements, 4u);
}

TEST(Apply, OutputIsNeverRescanned) {
  // a -> b and b -> c in one pass: an "a" becomes "b", never "c".
  RuleSet set = make({{"r", {"*"}, {{"a.lan", "b.lan"}, {"b.lan", "c.lan"}}}});
  EXPECT_EQ(served(set, "x", "a.lan b.lan"), "b.lan c.lan");
  // A replacement containing its own `from` does not recurse.
  RuleSet grow = make({{"r", {"*"}, {{"h.lan", "h.lan.h.lan"}}}});
  EXPECT_EQ(served(grow, "x", "h.lan"), "h.lan.h.lan");
  // Two rules that swap names.
  RuleSet swap = make({{"one", {"*"}, {{"a.lan", "b.lan"}}}, {"two", {"*"}, {{"b.lan", "a.lan"}}}});
  Outcome out = swap.apply("x", "a.lan b.lan");
  EXPECT_EQ(out.output, "b.lan a.lan");
  EXPECT_EQ(out.rules_applied, (std::vector<std::string>{"one", "two"}));
}

TEST(Apply, OverlappingFromOrderDecides) {
  // Literal froms that start at the same place: the first listed wins.
  RuleSet short_first = make({{"r", {"*"}, {{"/tftp/", "/A/"}, {"/tftp/boot/", "/B/"}}}});
  EXPECT_EQ(served(short_first, "x", "/tftp/boot/linux"), "/A/boot/linux");
  RuleSet long_first = make({{"r", {"*"}, {{"/tftp/boot/", "/B/"}, {"/tftp/", "/A/"}}}});
  EXPECT_EQ(served(long_first, "x", "/tftp/boot/linux /tftp/x"), "/B/linux /A/x");
  // Across rules, the earlier rule wins.
  RuleSet rules =
      make({{"first", {"*"}, {{"/tftp/", "/A/"}}}, {"second", {"*"}, {{"/tftp/boot/", "/B/"}}}});
  Outcome out = rules.apply("x", "/tftp/boot/linux");
  EXPECT_EQ(out.output, "/A/boot/linux");
  EXPECT_EQ(out.rules_applied, std::vector<std::string>{"first"});
  // Host names cannot overlap that way: the boundary tells them apart.
  RuleSet hosts = make({{"r", {"*"}, {{"uyuni", "short"}, {"uyuni.example.com", "long"}}}});
  EXPECT_EQ(served(hosts, "x", "uyuni uyuni.example.com"), "short long");
  // A literal overlapping a host: the earlier position wins whatever the order.
  RuleSet mixed = make({{"r", {"*"}, {{"uyuni.example.com", "p"}, {"http://uyuni", "http://q"}}}});
  EXPECT_EQ(served(mixed, "x", "http://uyuni.example.com/"), "http://q.example.com/");
}

TEST(Apply, OverlappingPatternsOnlySelectedRulesApply) {
  RuleSet set = make({
      {"grub", {"grub/*.cfg"}, {{"uyuni.lan", "grub-proxy"}}},
      {"all-cfg", {"*.cfg"}, {{"uyuni.lan", "cfg-proxy"}, {"10.0.0.5", "10.1.0.1"}}},
      {"ipxe", {"*.ipxe"}, {{"10.0.0.5", "ipxe-proxy"}}},
  });
  Outcome grub = set.apply("grub/grub.cfg", "uyuni.lan 10.0.0.5");
  EXPECT_EQ(grub.output, "grub-proxy 10.1.0.1");
  EXPECT_EQ(grub.rules_applied, (std::vector<std::string>{"grub", "all-cfg"}));
  EXPECT_EQ(grub.replacements, 2u);
  EXPECT_EQ(served(set, "menu.cfg", "uyuni.lan 10.0.0.5"), "cfg-proxy 10.1.0.1");
  EXPECT_EQ(served(set, "boot.ipxe", "uyuni.lan 10.0.0.5"), "uyuni.lan ipxe-proxy");
  EXPECT_EQ(set.apply("kernel", "uyuni.lan").status, Status::kNoRule);
}

TEST(Apply, AddRejectsInvalidRules) {
  RuleSet set;
  EXPECT_FALSE(set.add(Rule{"r", {}, {{"a", "b"}}}).ok());
  EXPECT_FALSE(set.add(Rule{"r", {"*"}, {}}).ok());
  EXPECT_FALSE(set.add(Rule{"r", {""}, {{"a", "b"}}}).ok());
  EXPECT_FALSE(set.add(Rule{"r", {"/"}, {{"a", "b"}}}).ok());
  EXPECT_FALSE(set.add(Rule{"r", {"*"}, {{"", "b"}}}).ok());
  EXPECT_FALSE(set.add(Rule{"r", {"*"}, {{std::string("a\0b", 3), "b"}}}).ok());
  EXPECT_FALSE(set.add(Rule{"r", {"*"}, {{"a", std::string("\0", 1)}}}).ok());
  EXPECT_FALSE(set.add(Rule{"bad name", {"*"}, {{"a", "b"}}}).ok());
  EXPECT_FALSE(set.add(Rule{"a,b", {"*"}, {{"a", "b"}}}).ok());
  EXPECT_TRUE(set.empty());
  EXPECT_TRUE(set.add(Rule{"r", {"*"}, {{"a", "b"}}}).ok());
  auto dup = set.add(Rule{"r", {"*"}, {{"a", "b"}}});
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, EINVAL);
  EXPECT_NE(dup.error().message.find("already used"), std::string::npos);
  EXPECT_TRUE(set.add(Rule{"", {"*"}, {{"a", ""}}}).ok());
  ASSERT_EQ(set.rules().size(), 2u);
  EXPECT_EQ(set.rules()[1].name, "rule-2");
}

// --- The default rule on menus as Uyuni and Cobbler write them. ---

RuleSet uyuni_defaults() {
  return RuleSet::defaults("uyuni.example.com", "10.0.0.5", "proxy.example.com");
}

TEST(Defaults, PxelinuxMenu) {
  const std::string in =
      "DEFAULT menu\r\n"
      "PROMPT 0\r\n"
      "MENU TITLE Cobbler | uyuni.example.com\r\n"
      "TIMEOUT 200\r\n"
      "\r\n"
      "LABEL sles15sp5\r\n"
      "  MENU LABEL sles15sp5\r\n"
      "  kernel /images/sles15sp5/linux\r\n"
      "  append initrd=/images/sles15sp5/initrd install=http://uyuni.example.com:80/ks/dist/sles15 "
      "autoyast=http://UYUNI.example.com/cblr/svc/op/autoinstall/profile/sles15 "
      "self_update=0 MASTER=uyuni.example.com tftp-server=10.0.0.5\r\n"
      "  ipappend 2\r\n";
  const std::string want =
      "DEFAULT menu\r\n"
      "PROMPT 0\r\n"
      "MENU TITLE Cobbler | proxy.example.com\r\n"
      "TIMEOUT 200\r\n"
      "\r\n"
      "LABEL sles15sp5\r\n"
      "  MENU LABEL sles15sp5\r\n"
      "  kernel /images/sles15sp5/linux\r\n"
      "  append initrd=/images/sles15sp5/initrd install=http://proxy.example.com:80/ks/dist/sles15 "
      "autoyast=http://proxy.example.com/cblr/svc/op/autoinstall/profile/sles15 "
      "self_update=0 MASTER=proxy.example.com tftp-server=proxy.example.com\r\n"
      "  ipappend 2\r\n";
  Outcome out = uyuni_defaults().apply("pxelinux.cfg/default", in);
  ASSERT_EQ(out.status, Status::kRewritten);
  EXPECT_EQ(out.output, want);
  EXPECT_EQ(out.replacements, 5u);
  EXPECT_EQ(out.rules_applied, std::vector<std::string>{"default"});
}

TEST(Defaults, GrubCfg) {
  const std::string in =
      "set default=0\n"
      "set timeout=5\n"
      "echo 'Booting from uyuni.example.com.'\n"
      "menuentry 'sles15sp5' --class gnu-linux {\n"
      "  set root=(http,uyuni.example.com)\n"
      "  linux /images/sles15sp5/linux install=http://uyuni.example.com/ks/dist/sles15 "
      "mirror.uyuni.example.com.au=1\n"
      "  initrd /images/sles15sp5/initrd\n"
      "}\n"
      "source (tftp,10.0.0.5)/grub/x86_64_menu_items.cfg\n";
  const std::string want =
      "set default=0\n"
      "set timeout=5\n"
      "echo 'Booting from proxy.example.com.'\n"
      "menuentry 'sles15sp5' --class gnu-linux {\n"
      "  set root=(http,proxy.example.com)\n"
      "  linux /images/sles15sp5/linux install=http://proxy.example.com/ks/dist/sles15 "
      "mirror.uyuni.example.com.au=1\n"
      "  initrd /images/sles15sp5/initrd\n"
      "}\n"
      "source (tftp,proxy.example.com)/grub/x86_64_menu_items.cfg\n";
  for (const char* path : {"grub/grub.cfg", "EFI/BOOT/grub.cfg", "grub.cfg-01-52-54-00-12-34-56",
                           "grub/x86_64_menu_items.cfg", "grub/system/52:54:00:12:34:56"}) {
    EXPECT_EQ(served(uyuni_defaults(), path, in), want) << path;
  }
}

TEST(Defaults, IpxeScriptWithIpv6AndProxyIp) {
  const std::string in =
      "#!ipxe\n"
      "dhcp\n"
      "set base http://[fd00::5]:8080/cobbler\n"
      "chain http://uyuni.example.com/cblr/svc/op/ipxe/system/${net0/mac} || goto failed\n"
      "kernel ${base}/images/linux nfsroot=10.0.0.5:/srv\n";
  const std::string want =
      "#!ipxe\n"
      "dhcp\n"
      "set base http://[fd00::5]:8080/cobbler\n"
      "chain http://proxy.example.com/cblr/svc/op/ipxe/system/${net0/mac} || goto failed\n"
      "kernel ${base}/images/linux nfsroot=10.1.0.1:/srv\n";
  RuleSet v4 = RuleSet::defaults("uyuni.example.com", "10.0.0.5", "proxy.example.com", "10.1.0.1");
  EXPECT_EQ(served(v4, "boot.ipxe", in), want);
  // An IPv6 upstream given as the URL's bracketed host.
  RuleSet v6 = RuleSet::defaults("[fd00::5]", "", "proxy.example.com");
  EXPECT_EQ(served(v6, "ipxe/default.ipxe", "set base http://[fd00::5]:8080/cobbler\n"),
            "set base http://[proxy.example.com]:8080/cobbler\n");
}

TEST(Defaults, Construction) {
  RuleSet set = uyuni_defaults();
  ASSERT_EQ(set.rules().size(), 1u);
  EXPECT_EQ(set.rules()[0].name, "default");
  ASSERT_EQ(set.rules()[0].replace.size(), 2u);
  EXPECT_EQ(set.rules()[0].replace[1].to, "proxy.example.com");  // no proxy_ip given
  EXPECT_EQ(set.rules()[0].files.size(), std::size(kDefaultPatterns));
  EXPECT_TRUE(RuleSet::defaults("", "", "proxy").empty());
  EXPECT_TRUE(RuleSet::defaults("proxy.lan", "", "PROXY.lan").empty());
  EXPECT_TRUE(RuleSet::defaults("uyuni", "", "").empty());
  EXPECT_EQ(RuleSet::defaults("uyuni", "", "proxy").rules()[0].replace.size(), 1u);
  EXPECT_FALSE(set.matches("images/sles/linux"));
  EXPECT_FALSE(set.matches("pxelinux.0"));
  EXPECT_TRUE(set.matches("pxelinux.cfg/01-52-54-00-12-34-56"));
  EXPECT_TRUE(set.matches("/pxelinux.cfg/default"));
}

}  // namespace
}  // namespace netbootfs::rewrite
