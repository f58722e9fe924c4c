#include "rewrite/rewrite.h"

#include <fnmatch.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

namespace netbootfs::rewrite {
namespace {

// Part of the fingerprint: bump it whenever matching semantics change, so that
// rewritten files stored by an older daemon are derived again.
constexpr std::string_view kEngineVersion = "netbootfs-rewrite-1";

bool is_alnum(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_xdigit(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
unsigned char lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c; }

// Bytes that continue a name: a host name seen next to one of them is part of
// a longer name. '.' is handled separately on the right (a sentence may end
// after a name) and ':' only belongs to IPv6 addresses (elsewhere it starts a
// port).
bool is_name_byte(unsigned char c) { return is_alnum(c) || c == '-' || c == '_'; }

bool is_host_label_byte(char c) { return is_name_byte(static_cast<unsigned char>(c)); }

bool is_ipv6(std::string_view s) {
  // Hand-written rather than inet_pton: s is not NUL-terminated, and the shape
  // check is all we need (we match text, we never use the address).
  if (s.size() < 2 || s.size() > 45) return false;
  size_t groups = 0;
  bool compressed = false;
  size_t i = 0;
  if (s.substr(0, 2) == "::") {
    compressed = true;
    i = 2;
    if (i == s.size()) return true;
  } else if (s[0] == ':') {
    return false;
  }
  while (i < s.size()) {
    size_t start = i;
    while (i < s.size() && is_xdigit(static_cast<unsigned char>(s[i]))) ++i;
    size_t len = i - start;
    if (i < s.size() && s[i] == '.') {
      // Trailing dotted IPv4 part, worth two groups.
      std::string_view v4 = s.substr(start);
      int parts = 0;
      size_t j = 0;
      while (j <= v4.size()) {
        size_t k = j;
        unsigned value = 0;
        while (k < v4.size() && v4[k] >= '0' && v4[k] <= '9' && k - j < 4) {
          value = value * 10 + static_cast<unsigned>(v4[k] - '0');
          ++k;
        }
        if (k == j || k - j > 3 || value > 255) return false;
        ++parts;
        if (k == v4.size()) break;
        if (v4[k] != '.') return false;
        j = k + 1;
      }
      if (parts != 4) return false;
      groups += 2;
      i = s.size();
      break;
    }
    if (len == 0 || len > 4) return false;
    ++groups;
    if (i == s.size()) break;
    if (s[i] != ':') return false;
    ++i;
    if (i < s.size() && s[i] == ':') {
      if (compressed) return false;
      compressed = true;
      ++i;
      if (i == s.size()) break;
    } else if (i == s.size()) {
      return false;  // a single trailing ':'
    }
  }
  return compressed ? groups < 8 : groups == 8;
}

bool is_host_name(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  char prev = '.';
  for (char c : s) {
    if (c == '.') {
      if (prev == '.') return false;
    } else if (!is_host_label_byte(c)) {
      return false;
    }
    prev = c;
  }
  return true;
}

std::string_view strip_leading_slashes(std::string_view s) {
  while (!s.empty() && s.front() == '/') s.remove_prefix(1);
  return s;
}

// One replacement prepared for the scan.
struct Matcher {
  FromKind kind;
  std::string needle;  // lower case for kHostName and kIpv6
  std::string_view to;
  size_t rule;       // index in the rule set
  bool check_left;   // false when the needle starts with a delimiter ('[')
  bool check_right;  // false when it ends with one (']')
};

// True when the byte(s) before input[pos] delimit a name.
bool left_boundary(std::string_view input, size_t pos, FromKind kind) {
  if (pos == 0) return true;
  unsigned char c = static_cast<unsigned char>(input[pos - 1]);
  bool continues = is_name_byte(c) || c == '.' || (kind == FromKind::kIpv6 && c == ':');
  if (!continues) return true;
  // "http%3A%2F%2Fuyuni..." in a URL passed as a parameter: an escape is a delimiter.
  return pos >= 3 && input[pos - 3] == '%' &&
         is_xdigit(static_cast<unsigned char>(input[pos - 2])) && is_xdigit(c);
}

// True when the byte(s) at input[pos] (just after a candidate) delimit a name.
bool right_boundary(std::string_view input, size_t pos, FromKind kind) {
  if (pos == input.size()) return true;
  unsigned char c = static_cast<unsigned char>(input[pos]);
  if (c == '.') {
    // A dot (or an ellipsis) ends the name unless more name follows it:
    // "uyuni.example.com." at the end of a sentence vs "uyuni.example.com.au".
    while (pos < input.size() && input[pos] == '.') ++pos;
    return pos == input.size() || !is_name_byte(static_cast<unsigned char>(input[pos]));
  }
  return !(is_name_byte(c) || (kind == FromKind::kIpv6 && c == ':'));
}

bool matches_at(std::string_view input, size_t pos, const Matcher& m) {
  const std::string& n = m.needle;
  if (input.size() - pos < n.size()) return false;
  if (m.kind == FromKind::kLiteral) return std::memcmp(input.data() + pos, n.data(), n.size()) == 0;
  for (size_t k = 0; k < n.size(); ++k) {
    if (lower(static_cast<unsigned char>(input[pos + k])) != static_cast<unsigned char>(n[k])) {
      return false;
    }
  }
  return (!m.check_left || left_boundary(input, pos, m.kind)) &&
         (!m.check_right || right_boundary(input, pos + n.size(), m.kind));
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(lower(static_cast<unsigned char>(c)));
  return out;
}

bool valid_rule_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!is_name_byte(static_cast<unsigned char>(c)) && c != '.') return false;
  }
  return true;
}

bool rule_selects(const Rule& rule, std::string_view path) {
  for (const std::string& p : rule.files) {
    if (glob_matches(p, path)) return true;
  }
  return false;
}

Matcher make_matcher(const Replacement& rep, size_t rule) {
  Matcher m;
  m.kind = classify(rep.from);
  m.needle = m.kind == FromKind::kLiteral ? rep.from : to_lower(rep.from);
  m.to = rep.to;
  m.rule = rule;
  m.check_left = m.kind != FromKind::kLiteral && m.needle.front() != '[';
  m.check_right = m.kind != FromKind::kLiteral && m.needle.back() != ']';
  return m;
}

// The replacements of the rules that select a path, in rule and priority order.
struct Matchers {
  std::vector<Matcher> list;
  // Bytes a match can start with: most positions are rejected with one lookup.
  std::array<bool, 256> first{};
};

Matchers prepare_matchers(const std::vector<Rule>& rules, std::string_view path) {
  Matchers out;
  for (size_t r = 0; r < rules.size(); ++r) {
    if (!rule_selects(rules[r], path)) continue;
    for (const Replacement& rep : rules[r].replace) {
      Matcher m = make_matcher(rep, r);
      unsigned char c0 = static_cast<unsigned char>(m.needle.front());
      out.first[c0] = true;
      if (m.kind != FromKind::kLiteral && c0 >= 'a' && c0 <= 'z') {
        out.first[c0 - ('a' - 'A')] = true;  // names and addresses: any case
      }
      out.list.push_back(std::move(m));
    }
  }
  return out;
}

// True, with out's status and skipped_reason set, when input is not to be
// rewritten whatever the rules: too large, or not text.
bool refuse_input(std::string_view input, size_t max_size, Outcome& out) {
  if (input.size() > max_size) {
    out.status = Status::kTooLarge;
    out.skipped_reason = "not rewritten: " + std::to_string(input.size()) +
                         " bytes is more than rewrite_max_size (" + std::to_string(max_size) +
                         " bytes)";
    return true;
  }
  if (const void* nul = std::memchr(input.data(), '\0', input.size())) {
    out.status = Status::kNotText;
    out.skipped_reason = "not rewritten: not text (NUL byte at offset " +
                         std::to_string(static_cast<const char*>(nul) - input.data()) + ")";
    return true;
  }
  return false;
}

const Matcher* match_at(std::string_view input, size_t pos, const Matchers& matchers) {
  if (!matchers.first[static_cast<unsigned char>(input[pos])]) return nullptr;
  for (const Matcher& m : matchers.list) {
    if (matches_at(input, pos, m)) return &m;
  }
  return nullptr;
}

// One left-to-right pass: the first matcher that fits wins, and the scan goes
// on after the text it replaced (output is never rescanned).
void replace_all(std::string_view input, const Matchers& matchers, const std::vector<Rule>& rules,
                 Outcome& out) {
  std::vector<size_t> per_rule(rules.size(), 0);
  size_t copied = 0;  // input[0, copied) is already in out.output
  size_t pos = 0;
  while (pos < input.size()) {
    const Matcher* hit = match_at(input, pos, matchers);
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    if (out.replacements == 0) out.output.reserve(input.size() + input.size() / 8);
    out.output.append(input.data() + copied, pos - copied);
    out.output.append(hit->to);
    ++out.replacements;
    ++per_rule[hit->rule];
    pos += hit->needle.size();
    copied = pos;
  }
  if (out.replacements == 0) {
    out.status = Status::kUnchanged;
    return;
  }
  out.output.append(input.data() + copied, input.size() - copied);
  out.status = Status::kRewritten;
  for (size_t r = 0; r < rules.size(); ++r) {
    if (per_rule[r] > 0) out.rules_applied.push_back(rules[r].name);
  }
}

class Fnv1a64 {
 public:
  void bytes(std::string_view s) {
    for (char c : s) {
      hash_ ^= static_cast<unsigned char>(c);
      hash_ *= 0x100000001b3ULL;
    }
  }
  // Every variable-length field is preceded by its length, so that no two
  // different rule sets serialise to the same bytes.
  void number(uint64_t v) {
    char buf[8];
    for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    bytes(std::string_view(buf, sizeof buf));
  }
  void field(std::string_view s) {
    number(s.size());
    bytes(s);
  }
  uint64_t value() const { return hash_; }

 private:
  uint64_t hash_ = 0xcbf29ce484222325ULL;
};

}  // namespace

FromKind classify(std::string_view from) {
  if (is_host_name(from)) return FromKind::kHostName;
  std::string_view inner = from;
  if (inner.size() >= 2 && inner.front() == '[' && inner.back() == ']') {
    inner = inner.substr(1, inner.size() - 2);
  }
  if (is_ipv6(inner)) return FromKind::kIpv6;
  return FromKind::kLiteral;
}

bool glob_matches(std::string_view pattern, std::string_view path) {
  pattern = strip_leading_slashes(pattern);
  path = strip_leading_slashes(path);
  if (pattern.empty() || pattern.find('\0') != std::string_view::npos ||
      path.find('\0') != std::string_view::npos) {
    return false;
  }
  std::string pat(pattern);
  if (pattern.find('/') == std::string_view::npos) {
    size_t slash = path.rfind('/');
    std::string base(slash == std::string_view::npos ? path : path.substr(slash + 1));
    return ::fnmatch(pat.c_str(), base.c_str(), 0) == 0;
  }
  std::string full(path);
  return ::fnmatch(pat.c_str(), full.c_str(), FNM_PATHNAME) == 0;
}

RuleSet RuleSet::defaults(std::string_view upstream_host, std::string_view upstream_ip,
                          std::string_view proxy_host, std::string_view proxy_ip) {
  if (upstream_host.size() >= 2 && upstream_host.front() == '[' && upstream_host.back() == ']') {
    upstream_host = upstream_host.substr(1, upstream_host.size() - 2);
  }
  if (upstream_ip.size() >= 2 && upstream_ip.front() == '[' && upstream_ip.back() == ']') {
    upstream_ip = upstream_ip.substr(1, upstream_ip.size() - 2);
  }
  Rule rule;
  rule.name = "default";
  for (std::string_view p : kDefaultPatterns) rule.files.emplace_back(p);
  auto add_replacement = [&rule](std::string_view from, std::string_view to) {
    if (from.empty() || to.empty() || to_lower(from) == to_lower(to)) return;
    for (const Replacement& r : rule.replace) {
      if (to_lower(r.from) == to_lower(from)) return;
    }
    rule.replace.push_back(Replacement{std::string(from), std::string(to)});
  };
  add_replacement(upstream_host, proxy_host);
  add_replacement(upstream_ip, proxy_ip.empty() ? proxy_host : proxy_ip);

  RuleSet set;
  if (!rule.replace.empty()) {
    // Cannot fail for the rule built here unless a host contains NUL; then the
    // set stays empty, which serves upstream bytes unchanged.
    (void)set.add(std::move(rule));
  }
  return set;
}

Result<void> RuleSet::add(Rule rule) {
  std::string where =
      rule.name.empty() ? "rule " + std::to_string(rules_.size() + 1) : "rule '" + rule.name + "'";
  if (rule.name.empty()) rule.name = "rule-" + std::to_string(rules_.size() + 1);
  if (!valid_rule_name(rule.name)) {
    return make_error(EINVAL, where + ": a name is 1 to 64 letters, digits, '.', '_' or '-'");
  }
  for (const Rule& r : rules_) {
    if (r.name == rule.name) return make_error(EINVAL, where + ": name already used");
  }
  if (rule.files.empty()) return make_error(EINVAL, where + ": no file pattern");
  for (const std::string& p : rule.files) {
    if (strip_leading_slashes(p).empty()) return make_error(EINVAL, where + ": empty file pattern");
    if (p.find('\0') != std::string::npos) {
      return make_error(EINVAL, where + ": NUL byte in a file pattern");
    }
  }
  if (rule.replace.empty()) return make_error(EINVAL, where + ": no replacement");
  for (const Replacement& r : rule.replace) {
    if (r.from.empty()) return make_error(EINVAL, where + ": empty 'from'");
    if (r.from.find('\0') != std::string::npos || r.to.find('\0') != std::string::npos) {
      // Files with NUL are never rewritten, and output must stay text.
      return make_error(EINVAL, where + ": NUL byte in a replacement");
    }
  }
  rules_.push_back(std::move(rule));
  return {};
}

bool RuleSet::matches(std::string_view path) const {
  for (const Rule& rule : rules_) {
    if (rule_selects(rule, path)) return true;
  }
  return false;
}

Outcome RuleSet::apply(std::string_view path, std::string_view input) const {
  Outcome out;
  const Matchers matchers = prepare_matchers(rules_, path);
  if (matchers.list.empty()) {
    out.status = Status::kNoRule;
    return out;
  }
  if (refuse_input(input, max_size_, out)) return out;
  replace_all(input, matchers, rules_, out);
  return out;
}

std::string RuleSet::fingerprint() const {
  Fnv1a64 h;
  h.field(kEngineVersion);
  h.number(max_size_);
  h.number(rules_.size());
  for (const Rule& rule : rules_) {
    h.field(rule.name);
    h.number(rule.files.size());
    for (const std::string& p : rule.files) h.field(p);
    h.number(rule.replace.size());
    for (const Replacement& r : rule.replace) {
      h.field(r.from);
      h.field(r.to);
    }
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex(16, '0');
  uint64_t v = h.value();
  for (int i = 15; i >= 0; --i) {
    hex[static_cast<size_t>(i)] = kHex[v & 0xf];
    v >>= 4;
  }
  return hex;
}

}  // namespace netbootfs::rewrite
