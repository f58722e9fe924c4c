// The TOML config format and the rule-set fingerprint.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "rewrite/rewrite.h"

namespace netbootfs::rewrite {
namespace {

TEST(Toml, FullExample) {
  auto set = RuleSet::parse_toml(R"(
# Other modules' keys are not ours and are ignored.
cache_dir = "/var/cache/netbootfs"
rewrite_max_size = "1M"

[[rewrite]]
name = "pxelinux"
files = ["pxelinux.cfg/*", "*.ipxe"]
replace = [ { from = "uyuni.example.com", to = "proxy.example.com" },
            { from = "10.0.0.5", to = "10.1.0.1" } ]

[[rewrite]]
files = ["grub/*.cfg"]
replace = [ { from = "/cobbler/", to = "/" } ]

[mirrors]
primary = "https://x"
)");
  ASSERT_TRUE(set.ok()) << set.error().message;
  EXPECT_EQ(set->max_size(), size_t{1} << 20);
  ASSERT_EQ(set->rules().size(), 2u);
  const Rule& r0 = set->rules()[0];
  EXPECT_EQ(r0.name, "pxelinux");
  EXPECT_EQ(r0.files, (std::vector<std::string>{"pxelinux.cfg/*", "*.ipxe"}));
  ASSERT_EQ(r0.replace.size(), 2u);
  EXPECT_EQ(r0.replace[0].from, "uyuni.example.com");
  EXPECT_EQ(r0.replace[1].to, "10.1.0.1");
  EXPECT_EQ(set->rules()[1].name, "rule-2");
  Outcome out = set->apply("pxelinux.cfg/default", "kernel http://uyuni.example.com/x ip=10.0.0.5");
  EXPECT_EQ(out.output, "kernel http://proxy.example.com/x ip=10.1.0.1");
}

TEST(Toml, EmptyAndSizes) {
  auto empty = RuleSet::parse_toml("");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  EXPECT_EQ(empty->max_size(), kDefaultMaxSize);
  struct {
    const char* value;
    size_t bytes;
  } sizes[] = {{"1000", 1000},           {"\"4M\"", 4u << 20}, {"\"4MiB\"", 4u << 20},
               {"\"512k\"", 512u << 10}, {"\"2 KB\"", 2048},   {"\"1G\"", size_t{1} << 30},
               {"\"77\"", 77},           {"\"77B\"", 77}};
  for (const auto& s : sizes) {
    auto set = RuleSet::parse_toml(std::string("rewrite_max_size = ") + s.value);
    ASSERT_TRUE(set.ok()) << s.value << ": " << set.error().message;
    EXPECT_EQ(set->max_size(), s.bytes) << s.value;
  }
}

TEST(Toml, Errors) {
  struct {
    const char* text;
    const char* message_part;
  } cases[] = {
      {"rewrite_max_size = \"4X\"", "line 1: rewrite_max_size: unknown unit 'X'"},
      {"rewrite_max_size = 0", "line 1: rewrite_max_size: must be a positive"},
      {"rewrite_max_size = -4", "must be a positive"},
      {"rewrite_max_size = \"M\"", "expected a number of bytes"},
      {"rewrite_max_size = \"99999999999999999999999\"", "too large"},
      {"rewrite_max_size = \"99999999999G\"", "too large"},
      {"rewrite_max_size = true", "expected a size"},
      {"rewrite_max_sise = \"4M\"", "line 1: rewrite_max_sise: unknown key"},
      {"[rewrite]\nfiles = [\"*\"]", "write [[rewrite]], not [rewrite]"},
      {"rewrite = [1]", "rewrite[0]: expected a table"},
      {"[[rewrite]]\nreplace = [{from = \"a\", to = \"b\"}]\n", "rewrite[0]: missing 'files'"},
      {"[[rewrite]]\nfiles = [\"*\"]\n", "rewrite[0]: missing 'replace'"},
      {"[[rewrite]]\nfiles = \"*\"\nreplace = [{from = \"a\", to = \"b\"}]",
       "line 2: rewrite[0].files: expected an array"},
      {"[[rewrite]]\nfiles = []\nreplace = [{from = \"a\", to = \"b\"}]",
       "line 2: rewrite[0].files: no pattern"},
      {"[[rewrite]]\nfiles = [\"*\", 3]\nreplace = [{from = \"a\", to = \"b\"}]",
       "line 2: rewrite[0].files[1]: expected a string"},
      {"[[rewrite]]\nfiles = [\"*\"]\nreplace = []", "line 3: rewrite[0].replace: no replacement"},
      {"[[rewrite]]\nfiles = [\"*\"]\nreplace = {from = \"a\", to = \"b\"}",
       "rewrite[0].replace: expected an array"},
      {"[[rewrite]]\nfiles = [\"*\"]\nreplace = [\"a\"]",
       "line 3: rewrite[0].replace[0]: expected { from"},
      {"[[rewrite]]\nfiles = [\"*\"]\nreplace = [{from = \"a\"}]",
       "rewrite[0].replace[0]: missing 'to'"},
      {"[[rewrite]]\nfiles = [\"*\"]\nreplace = [{to = \"a\"}]",
       "rewrite[0].replace[0]: missing 'from'"},
      {"[[rewrite]]\nfiles = [\"*\"]\nreplace = [{from = \"\", to = \"a\"}]",
       "rewrite[0].replace[0].from: must not be empty"},
      {"[[rewrite]]\nfiles = [\"*\"]\nreplace = [{from = \"a\", to = 5}]",
       "line 3: rewrite[0].replace[0].to: expected a string"},
      {"[[rewrite]]\nfiles = [\"*\"]\nreplace = [{from = \"a\", too = \"b\"}]",
       "rewrite[0].replace[0].too: unknown key"},
      {"[[rewrite]]\nfile = [\"*\"]\nreplace = [{from = \"a\", to = \"b\"}]",
       "line 2: rewrite[0].file: unknown key"},
      {"[[rewrite]]\nname = 7\nfiles = [\"*\"]\nreplace = [{from = \"a\", to = \"b\"}]",
       "line 2: rewrite[0].name: expected a string"},
      {"[[rewrite]]\nname = \"a b\"\nfiles = [\"*\"]\nreplace = [{from = \"a\", to = \"b\"}]",
       "rewrite[0]: rule 'a b': a name is"},
      {"[[rewrite]]\nname = \"x\"\nfiles = [\"*\"]\nreplace = [{from = \"a\", to = \"b\"}]\n"
       "[[rewrite]]\nname = \"x\"\nfiles = [\"*\"]\nreplace = [{from = \"a\", to = \"b\"}]",
       "rewrite[1]: rule 'x': name already used"},
      {"[[rewrite]]\nfiles = [\"*\"]\nreplace = [{from = \"a\", to = \"b\\u0000\"}]", "NUL byte"},
      // Syntax errors come from the TOML parser, with line and column.
      {"[[rewrite]]\nfiles = [\"*\"\n", "line "},
      {"rewrite_max_size = \n", "line 1"},
      {"a = 1\na = 2\n", "line 2"},
      // Headers that break a precondition inside toml++ 3.3.0 (marzer/tomlplusplus#301):
      // the packaged library must still report them as errors.
      {"[.rewrite]\n", "line 1"},
      {"[[[1]]]\n", "line 1"},
      {"[[=\n", "line 1"},
      {"[[\x01rewrite]]\n", "line 1: a table header must start with a key"},
      {"a = \"x\x01\"\n", "line 1: control character 1"},
      {"a = 1\n[\n", "line 2: a table header must start with a key"},
      {"a = [ 1,\n } ]\n", "line 2: unbalanced '}'"},
      {"a = 4K\"\xc4\xa4\"\n", "line 1: unexpected quote"},
      // A quote after a number's '.' (found by the fuzzer): toml++ tests the
      // non-ASCII byte in the string for whitespace.
      {"DEF=10.\"*\xc8\x9cname = fg\"08", "line 1: unexpected quote"},
      {"a = [ 1.'\xc8\x9c' ]\n", "line 1: unexpected quote"},
      {"DEF=110=\"*\xc8\x9cname = f\"80n", "line 1: unexpected '='"},
      {"a = { b = 1 = \"\xc8\x9c\" }\n", "line 1: unexpected '='"},
      {"a = \"x\" \"\xc8\x9c\"\n", "line 1: unexpected quote"},
      {"a = '''x''' '\xc8\x9c'\n", "line 1: unexpected quote"},
      {"DEtoFtp-server=21.0{eeeceeeeDEF='1o\xc8\x93n'", "line 1: unexpected '{'"},
      {"a = [ 1 [ '\xc8\x93' ] ]\n", "line 1: unexpected '['"},
      {"a = ]\n", "line 1: unbalanced ']'"},
      {"a = { b = [ }\n", "line 1: unbalanced '}'"},
      // Non-ASCII where toml++ 3.3.0 tests for Unicode whitespace
      // (marzer/tomlplusplus#190): rejected before it gets there.
      {"a = [\xc6\x8c]\n", "line 1: non-ASCII character outside a string"},
      {"# ok\n\xc2\xa0" "a = 1\n", "line 2: non-ASCII character outside a string"},
      {"s = \"\"\"\\\xc6\x8c\"\"\"\n", "line 1: invalid escape"},
      {"s = \"\"\"\\\n  \xc2\xa7\"\"\"\n", "line 2: a non-ASCII character right after"},
  };
  for (const auto& c : cases) {
    auto set = RuleSet::parse_toml(c.text);
    ASSERT_FALSE(set.ok()) << c.text;
    EXPECT_EQ(set.error().code, EINVAL) << c.text;
    EXPECT_NE(set.error().message.find(c.message_part), std::string::npos)
        << "text:\n"
        << c.text << "\nmessage: " << set.error().message;
  }
}

TEST(Toml, ValidTextPassesTheScreen) {
  // UTF-8 in strings and comments, multi-line strings and arrays, nested arrays
  // at the start of a line, quotes at the end of multi-line strings, quoted
  // parts of dotted keys after a float.
  auto set = RuleSet::parse_toml(
      "# Menüs für den Proxy \xe2\x80\x94 ok\n"
      "motd = \"\"\"\n"
      "[not a header]\n"
      "caf\xc3\xa9 \\\n"
      "   done\"\"\"\"\n"
      "lit = '''\n[[x\n''''\n"
      "nested = [\n"
      "  [[1], [2]],  # a comment with ] and [\n"
      "  [{ a = \"]\" }],\n"
      "]\n"
      "dotted.\"quoted\".key = 1.5\n"
      "inline = { a.\"b\" = 2.0, c = [ 1.5, \"x\" ], d.'e' = { f.\"g\" = 1 } }\n"
      "[[rewrite]]\n"
      "name = \"menus\"  # \xc3\xa9\n"
      "files = [\n"
      "  \"*.cfg\",\n"
      "]\n"
      "replace = [{ from = \"uyuni.lan\", to = \"pr\xc3\xb6xy.lan\" }]\n"
      "[ other . \"table\" ]\n"
      "key = 'v'\r\n");
  ASSERT_TRUE(set.ok()) << set.error().message;
  ASSERT_EQ(set->rules().size(), 1u);
  EXPECT_EQ(set->rules()[0].replace[0].to, "pr\xc3\xb6xy.lan");
}

// --- Fingerprint ---

RuleSet base() {
  RuleSet set;
  EXPECT_TRUE(set.add(Rule{"a",
                           {"pxelinux.cfg/*", "*.ipxe"},
                           {{"uyuni.lan", "proxy.lan"}, {"10.0.0.5", "10.1.0.1"}}})
                  .ok());
  EXPECT_TRUE(set.add(Rule{"b", {"grub/*.cfg"}, {{"/cobbler/", "/"}}}).ok());
  return set;
}

TEST(Fingerprint, StableAndHex) {
  std::string fp = base().fingerprint();
  EXPECT_EQ(fp.size(), 16u);
  EXPECT_EQ(fp.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(base().fingerprint(), fp);
  RuleSet copy = base();
  (void)copy.apply("pxelinux.cfg/default", "uyuni.lan");  // applying changes nothing
  EXPECT_EQ(copy.fingerprint(), fp);
  // The same rules from TOML give the same fingerprint.
  auto parsed = RuleSet::parse_toml(R"(
[[rewrite]]
name = "a"
files = ["pxelinux.cfg/*", "*.ipxe"]
replace = [{from = "uyuni.lan", to = "proxy.lan"}, {from = "10.0.0.5", to = "10.1.0.1"}]
[[rewrite]]
name = "b"
files = ["grub/*.cfg"]
replace = [{from = "/cobbler/", to = "/"}]
)");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ(parsed->fingerprint(), fp);
  EXPECT_EQ(RuleSet::defaults("u", "", "p").fingerprint(),
            RuleSet::defaults("u", "", "p").fingerprint());
}

TEST(Fingerprint, ChangesWithEveryRuleChange) {
  using Edit = void (*)(std::vector<Rule>&, size_t&);
  const std::pair<const char*, Edit> edits[] = {
      {"rename", [](std::vector<Rule>& r, size_t&) { r[0].name = "c"; }},
      {"pattern text", [](std::vector<Rule>& r, size_t&) { r[0].files[1] = "*.IPXE"; }},
      {"pattern added", [](std::vector<Rule>& r, size_t&) { r[1].files.push_back("x"); }},
      {"pattern order",
       [](std::vector<Rule>& r, size_t&) { std::swap(r[0].files[0], r[0].files[1]); }},
      {"pattern moved between rules",
       [](std::vector<Rule>& r, size_t&) {
         r[1].files.insert(r[1].files.begin(), r[0].files.back());
         r[0].files.pop_back();
       }},
      {"from", [](std::vector<Rule>& r, size_t&) { r[0].replace[0].from = "uyuni.lan2"; }},
      {"to", [](std::vector<Rule>& r, size_t&) { r[0].replace[0].to = "proxy.lan2"; }},
      {"to emptied", [](std::vector<Rule>& r, size_t&) { r[1].replace[0].to = ""; }},
      {"from/to boundary",
       [](std::vector<Rule>& r, size_t&) {
         r[1].replace[0].from = "/cobbler//";
         r[1].replace[0].to = "";
       }},
      {"replacement order",
       [](std::vector<Rule>& r, size_t&) { std::swap(r[0].replace[0], r[0].replace[1]); }},
      {"replacement removed", [](std::vector<Rule>& r, size_t&) { r[0].replace.pop_back(); }},
      {"rule order", [](std::vector<Rule>& r, size_t&) { std::swap(r[0], r[1]); }},
      {"rule removed", [](std::vector<Rule>& r, size_t&) { r.pop_back(); }},
      {"max_size", [](std::vector<Rule>&, size_t& m) { m = 1000; }},
  };
  std::set<std::string> seen{base().fingerprint()};
  for (const auto& [what, edit] : edits) {
    std::vector<Rule> rules = base().rules();
    size_t max_size = kDefaultMaxSize;
    edit(rules, max_size);
    RuleSet set;
    for (Rule& r : rules) ASSERT_TRUE(set.add(std::move(r)).ok()) << what;
    set.set_max_size(max_size);
    EXPECT_TRUE(seen.insert(set.fingerprint()).second) << what << " left the fingerprint as before";
  }
  EXPECT_TRUE(seen.insert(RuleSet().fingerprint()).second);
}

}  // namespace
}  // namespace netbootfs::rewrite
