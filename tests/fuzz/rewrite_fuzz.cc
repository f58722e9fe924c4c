// libFuzzer target for the rewrite engine and its TOML parser.
//
// Input: "<rules TOML>\0<body>" fuzzes the parser and then applies the parsed
// rules (followed by fixed ones) to the body; an input without a NUL is a body
// for the fixed rules alone (the default rule plus a literal and an IPv6 rule),
// which is what the seed corpus of real menus exercises.
//
// Properties checked on every apply, for several paths:
// - the status agrees with matches(), max_size() and NUL bytes;
// - a body in which no `from` occurs (case-insensitively) comes out unchanged;
// - the output length is within what `replacements` allows;
// - with every `to` set to its own `from`, a lower-cased body comes out
//   byte-identical;
// - parsing the same rules text twice gives the same fingerprint.
//
// Run (clang only):
//   cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
//         -DCMAKE_BUILD_TYPE=Debug
//   cmake --build build-fuzz --target rewrite_fuzz
//   mkdir -p /tmp/rewrite-corpus && build-fuzz/tests/fuzz/rewrite_fuzz -max_total_time=30 \
//         -dict=tests/fuzz/rewrite.dict /tmp/rewrite-corpus tests/fuzz/corpus/rewrite
// (New inputs go to the first directory; keep the checked-in seeds small.)
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "rewrite/rewrite.h"

namespace rw = netbootfs::rewrite;

namespace {

#define FUZZ_CHECK(cond)                                                               \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

const rw::RuleSet& fixed_rules() {
  static const rw::RuleSet set = [] {
    rw::RuleSet s;
    (void)s.add(rw::Rule{"literal", {"*.cfg", "*.ipxe"}, {{"/cobbler/", "/c/"}}});
    (void)s.add(rw::Rule{"v6", {"*"}, {{"fd00::5", "fd00::1"}, {"[fd00::6]", "proxy6"}}});
    const rw::RuleSet defaults =
        rw::RuleSet::defaults("uyuni.example.com", "10.0.0.5", "proxy.example.com");
    for (const rw::Rule& r : defaults.rules()) (void)s.add(r);
    return s;
  }();
  return set;
}

rw::RuleSet with_fixed(const rw::RuleSet& parsed) {
  rw::RuleSet s = parsed;
  for (const rw::Rule& r : fixed_rules().rules()) {
    rw::Rule copy = r;
    copy.name = "fixed-" + copy.name;  // may collide with a parsed name: then it is left out
    (void)s.add(std::move(copy));
  }
  return s;
}

void check(const rw::RuleSet& set, std::string_view path, std::string_view body) {
  const rw::Outcome out = set.apply(path, body);

  bool selected = false;
  size_t min_from = SIZE_MAX, max_from = 0, min_to = SIZE_MAX, max_to = 0;
  bool any_occurs = false;
  const std::string body_lower = lower(body);
  for (const rw::Rule& rule : set.rules()) {
    bool rule_selected =
        std::any_of(rule.files.begin(), rule.files.end(),
                    [&](const std::string& p) { return rw::glob_matches(p, path); });
    if (!rule_selected) continue;
    selected = true;
    for (const rw::Replacement& r : rule.replace) {
      min_from = std::min(min_from, r.from.size());
      max_from = std::max(max_from, r.from.size());
      min_to = std::min(min_to, r.to.size());
      max_to = std::max(max_to, r.to.size());
      if (body_lower.find(lower(r.from)) != std::string::npos) any_occurs = true;
    }
  }
  FUZZ_CHECK(selected == set.matches(path));

  if (!selected) {
    FUZZ_CHECK(out.status == rw::Status::kNoRule);
  } else if (body.size() > set.max_size()) {
    FUZZ_CHECK(out.status == rw::Status::kTooLarge);
  } else if (body.find('\0') != std::string_view::npos) {
    FUZZ_CHECK(out.status == rw::Status::kNotText);
  } else {
    FUZZ_CHECK(out.status == rw::Status::kRewritten || out.status == rw::Status::kUnchanged);
  }
  if (out.status == rw::Status::kTooLarge || out.status == rw::Status::kNotText) {
    FUZZ_CHECK(!out.skipped_reason.empty());
  }
  if (!out.rewritten()) {
    FUZZ_CHECK(out.output.empty() && out.replacements == 0 && out.rules_applied.empty());
    return;
  }
  // A body with no match must be served byte-identical.
  FUZZ_CHECK(any_occurs);
  FUZZ_CHECK(out.replacements > 0 && !out.rules_applied.empty());
  FUZZ_CHECK(out.output.find('\0') == std::string::npos);
  const size_t n = out.replacements;
  FUZZ_CHECK(n * min_from <= body.size());
  FUZZ_CHECK(out.output.size() <= body.size() - n * min_from + n * max_to);
  FUZZ_CHECK(out.output.size() + n * max_from >= body.size() + n * min_to);

  // Identity: every `to` equal to its (lower-cased) `from`, on a lower-cased body.
  rw::RuleSet identity;
  identity.set_max_size(set.max_size());
  for (rw::Rule rule : set.rules()) {
    for (rw::Replacement& r : rule.replace) {
      r.from = lower(r.from);
      r.to = r.from;
    }
    FUZZ_CHECK(identity.add(std::move(rule)).ok());
  }
  const rw::Outcome same = identity.apply(path, body_lower);
  FUZZ_CHECK(same.rewritten());
  FUZZ_CHECK(same.output == body_lower);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  static constexpr std::string_view kPaths[] = {"pxelinux.cfg/default", "grub/grub.cfg",
                                                "boot.ipxe", "a/b/menu.cfg", "images/linux"};

  const size_t nul = input.find('\0');
  if (nul == std::string_view::npos) {
    for (std::string_view path : kPaths) check(fixed_rules(), path, input);
    return 0;
  }
  const std::string_view rules_text = input.substr(0, nul);
  const std::string_view body = input.substr(nul + 1);

  auto parsed = rw::RuleSet::parse_toml(rules_text);
  if (!parsed.ok()) {
    FUZZ_CHECK(!parsed.error().message.empty());
    for (std::string_view path : kPaths) check(fixed_rules(), path, body);
    return 0;
  }
  auto again = rw::RuleSet::parse_toml(rules_text);
  FUZZ_CHECK(again.ok() && again->fingerprint() == parsed->fingerprint());

  const rw::RuleSet set = with_fixed(parsed.value());
  for (std::string_view path : kPaths) check(set, path, body);
  // The body's first line as a path: lets the fuzzer reach the parsed patterns.
  const std::string_view first_line = body.substr(0, std::min(body.find('\n'), size_t{256}));
  check(set, first_line, body);
  (void)rw::classify(first_line);
  return 0;
}
