// RuleSet::parse_toml: the rewrite keys of the config file (format in rewrite.h).
#include <toml++/toml.h>

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>

#include "rewrite/rewrite.h"

namespace netbootfs::rewrite {
namespace {

std::string line_of(const toml::node& node) {
  return "line " + std::to_string(node.source().begin.line);
}

Error config_error(const toml::node& node, const std::string& key, const std::string& what) {
  return make_error(EINVAL, line_of(node) + ": " + key + ": " + what);
}

// "4194304", "4M", "4MiB", "512 K", "1g": powers of 1024.
Result<size_t> parse_size(std::string_view text) {
  size_t i = 0;
  uint64_t value = 0;
  constexpr uint64_t kMax = std::numeric_limits<size_t>::max();
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (value > (kMax - digit) / 10) return make_error(ERANGE, "too large");
    value = value * 10 + digit;
    ++i;
  }
  if (i == 0) return make_error(EINVAL, "expected a number of bytes such as \"4M\"");
  while (i < text.size() && text[i] == ' ') ++i;
  std::string unit;
  for (; i < text.size(); ++i) {
    unit += static_cast<char>(text[i] >= 'a' && text[i] <= 'z' ? text[i] - 32 : text[i]);
  }
  uint64_t scale = 1;
  if (unit.empty() || unit == "B") {
    scale = 1;
  } else if (unit == "K" || unit == "KB" || unit == "KIB") {
    scale = uint64_t{1} << 10;
  } else if (unit == "M" || unit == "MB" || unit == "MIB") {
    scale = uint64_t{1} << 20;
  } else if (unit == "G" || unit == "GB" || unit == "GIB") {
    scale = uint64_t{1} << 30;
  } else {
    return make_error(EINVAL, "unknown unit '" +
                                  std::string(text.substr(text.size() - unit.size())) +
                                  "' (use K, M or G)");
  }
  if (value > kMax / scale) return make_error(ERANGE, "too large");
  return static_cast<size_t>(value * scale);
}

bool is_bare_key_byte(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
         c == '_';
}

Error screen_error(size_t line, const std::string& what) {
  return make_error(EINVAL, "line " + std::to_string(line) + ": " + what);
}

// toml++ 3.3.0, the packaged version, reaches undefined behaviour (an assertion
// in debug builds) on some malformed input: a table header whose key starts
// with a byte that cannot start a key (fixed upstream, marzer/tomlplusplus#301);
// a non-ASCII character where it tests for Unicode whitespace (#190, fixed by
// #305), i.e. outside strings, and in a multi-line basic string after a
// backslash; a '}' where an array expects a value ("[ 1,\n } ]"). This pass
// finds those places with a small lexer and rejects them with a clear error
// before toml++ sees the text. All of it is invalid TOML except one rare form,
// also rejected: a non-ASCII character first on the line after a line-ending
// backslash.
class Screener {
 public:
  explicit Screener(std::string_view text) : text_(text), n_(text.size()) {}

  Result<void> run() {
    for (size_t i = 0; i < n_; ++i) {
      const unsigned char c = at(i);
      if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f) {
        return screen_error(line_, "control character " + std::to_string(c) +
                                       " (TOML allows it only as an escape in a string)");
      }
      if (c == '\n') ++line_;
      if (auto r = step(i, c); !r) return r;
    }
    return {};
  }

 private:
  enum class State { kNormal, kComment, kBasic, kLiteral, kMultiBasic, kMultiLiteral };

  unsigned char at(size_t i) const { return i < n_ ? static_cast<unsigned char>(text_[i]) : 0; }

  // c = text_[i]; the steps may move i past bytes they consume.
  Result<void> step(size_t& i, unsigned char c) {
    switch (state_) {
      case State::kNormal:
        return normal(i, c);
      case State::kComment:
      case State::kBasic:
      case State::kLiteral:
        single_line(i, c);
        return {};
      case State::kMultiBasic:
        return multi_basic(i, c);
      case State::kMultiLiteral:
        if (c == '\'' && at(i + 1) == '\'' && at(i + 2) == '\'') close_multi(i, '\'');
        return {};
    }
    return {};
  }

  // Outside strings and comments.
  Result<void> normal(size_t& i, unsigned char c) {
    if (c >= 0x80) return screen_error(line_, "non-ASCII character outside a string");
    if (line_start_ && (c == ' ' || c == '\t' || c == '\r')) return {};
    if (line_start_ && c == '[') {
      if (auto r = check_header(i); !r) return r;
    }
    line_start_ = false;
    if (auto r = check_value_start(c); !r) return r;
    if (c != ' ' && c != '\t' && c != '\r') prev_ = c;
    if (c == '#' || c == '"' || c == '\'') {
      open_string(i, c);
      return {};
    }
    return structure(c);
  }

  // text_[i] is a '[' first on its line: a table header.
  Result<void> check_header(size_t i) const {
    size_t j = i + 1;
    if (at(j) == '[') ++j;
    while (at(j) == ' ' || at(j) == '\t') ++j;
    if (j < n_ && !is_bare_key_byte(at(j)) && at(j) != '"' && at(j) != '\'' && at(j) != ']') {
      return screen_error(line_, "a table header must start with a key");
    }
    return {};
  }

  Result<void> check_value_start(unsigned char c) const {
    if (!(c == '"' || c == '\'' || ((c == '[' || c == '{') && in_value_))) return {};
    // A string starts a key or a value, an array or an inline table a
    // value, and nothing else: after a bare word or a closed string
    // toml++ is still reading that word ("4K"x"", "10."x"", "1.0{")
    // and would test what follows for whitespace. A key starts a line
    // or follows '.', '{', ',' or a header's '['; a value follows '=',
    // '[' or ',' (or a newline inside an array).
    const std::string_view may_follow = in_value_ ? "=[,\n" : "\n[{,.";
    if (may_follow.find(static_cast<char>(prev_)) == std::string_view::npos) {
      return screen_error(line_, c == '"' || c == '\''
                                     ? std::string("unexpected quote")
                                     : std::string("unexpected '") + static_cast<char>(c) + "'");
    }
    return {};
  }

  // c is '#', '"' or '\'': a comment or one of the four kinds of string.
  void open_string(size_t& i, unsigned char c) {
    if (c == '#') {
      state_ = State::kComment;
    } else if (c == '"') {
      if (at(i + 1) == '"' && at(i + 2) == '"') {
        state_ = State::kMultiBasic;
        i += 2;
      } else {
        state_ = State::kBasic;
      }
    } else {
      if (at(i + 1) == '\'' && at(i + 2) == '\'') {
        state_ = State::kMultiLiteral;
        i += 2;
      } else {
        state_ = State::kLiteral;
      }
    }
  }

  // Brackets, '=', ',' and newlines: where keys and values are.
  Result<void> structure(unsigned char c) {
    if (c == '[' || c == '{') {
      open_ += static_cast<char>(c);
      if (c == '{') in_value_ = false;  // an inline table starts with a key
    } else if (c == ']' || c == '}') {
      if (open_.empty() || open_.back() != (c == ']' ? '[' : '{')) {
        return screen_error(line_, std::string("unbalanced '") + static_cast<char>(c) + "'");
      }
      open_.pop_back();
      if (c == '}') in_value_ = true;  // the inline table was a value
    } else if (c == '=') {
      // Only a key is followed by '=': in a value it ends a bare word,
      // and toml++ would read on into what follows ("a = 1="x"").
      if (in_value_) return screen_error(line_, "unexpected '='");
      in_value_ = true;
    } else if (c == ',') {
      in_value_ = open_.empty() || open_.back() != '{';  // in an inline table, a key follows
    } else if (c == '\n') {
      line_start_ = open_.empty();
      if (open_.empty()) in_value_ = false;
    }
    return {};
  }

  // A comment, a basic or a literal string.
  void single_line(size_t& i, unsigned char c) {
    // Single-line: a newline ends them (an unterminated string is toml++'s error).
    if (c == '\n') {
      state_ = State::kNormal;
      line_start_ = open_.empty();
      if (open_.empty()) in_value_ = false;
      prev_ = '\n';
    } else if (state_ == State::kBasic && c == '\\') {
      if (at(i + 1) != '\n') ++i;
    } else if ((state_ == State::kBasic && c == '"') || (state_ == State::kLiteral && c == '\'')) {
      state_ = State::kNormal;
      prev_ = c;  // a string ends a key or a value: no quote may follow it
    }
  }

  Result<void> multi_basic(size_t& i, unsigned char c) {
    if (c == '\\') {
      const unsigned char next = at(i + 1);
      if (next >= 0x80) return screen_error(line_, "invalid escape in a string");
      if (next == ' ' || next == '\t' || next == '\r' || next == '\n') {
        return skip_line_ending_backslash(i);
      }
      if (next != 0) ++i;
    } else if (c == '"' && at(i + 1) == '"' && at(i + 2) == '"') {
      close_multi(i, '"');
    }
    return {};
  }

  // A line-ending backslash: toml++ skips the blanks that follow.
  Result<void> skip_line_ending_backslash(size_t& i) {
    size_t j = i + 1;
    while (j < n_ && (at(j) == ' ' || at(j) == '\t' || at(j) == '\r' || at(j) == '\n')) {
      if (at(j) == '\n') ++line_;
      ++j;
    }
    if (at(j) >= 0x80) {
      return screen_error(line_,
                          "a non-ASCII character right after a line-ending backslash "
                          "is not supported: escape it (\\uXXXX)");
    }
    i = j - 1;
    return {};
  }

  void close_multi(size_t& i, char quote) {
    // i is on the first of three quotes; up to two more still belong to the string.
    i += 2;
    for (int extra = 0; extra < 2 && at(i + 1) == static_cast<unsigned char>(quote); ++extra) ++i;
    state_ = State::kNormal;
    prev_ = static_cast<unsigned char>(quote);
  }

  const std::string_view text_;
  const size_t n_;
  State state_ = State::kNormal;
  size_t line_ = 1;
  std::string open_;           // unclosed '[' and '{' of values (and of the current header)
  bool line_start_ = true;     // only blanks so far on a line outside any value
  unsigned char prev_ = '\n';  // the last byte outside strings and comments, not a blank
  // In a value (after '=', in an array), not a key: a '.' there is part of a
  // number or a date, never of a dotted key.
  bool in_value_ = false;
};

Result<void> screen(std::string_view text) { return Screener(text).run(); }

Result<std::string> get_string(const toml::node& node, const std::string& key) {
  const auto* s = node.as_string();
  if (s == nullptr) return config_error(node, key, "expected a string");
  return s->get();
}

Result<Rule> parse_rule(const toml::table& table, size_t index) {
  const std::string where = "rewrite[" + std::to_string(index) + "]";
  Rule rule;
  bool has_files = false;
  bool has_replace = false;
  for (auto&& [key, node] : table) {
    const std::string k(key.str());
    const std::string path = where + "." + k;
    if (k == "name") {
      auto name = get_string(node, path);
      if (!name) return name.error();
      rule.name = std::move(name.value());
    } else if (k == "files") {
      has_files = true;
      const auto* files = node.as_array();
      if (files == nullptr) return config_error(node, path, "expected an array of glob patterns");
      for (size_t i = 0; i < files->size(); ++i) {
        auto pattern = get_string(*files->get(i), path + "[" + std::to_string(i) + "]");
        if (!pattern) return pattern.error();
        rule.files.push_back(std::move(pattern.value()));
      }
      if (rule.files.empty()) {
        return config_error(node, path, "no pattern: the rule would do nothing");
      }
    } else if (k == "replace") {
      has_replace = true;
      const auto* list = node.as_array();
      if (list == nullptr) {
        return config_error(node, path, "expected an array of { from = \"...\", to = \"...\" }");
      }
      for (size_t i = 0; i < list->size(); ++i) {
        const toml::node& item = *list->get(i);
        const std::string item_path = path + "[" + std::to_string(i) + "]";
        const auto* pair = item.as_table();
        if (pair == nullptr) {
          return config_error(item, item_path, "expected { from = \"...\", to = \"...\" }");
        }
        Replacement rep;
        bool has_from = false;
        bool has_to = false;
        for (auto&& [pkey, pnode] : *pair) {
          const std::string pk(pkey.str());
          if (pk == "from") {
            auto from = get_string(pnode, item_path + ".from");
            if (!from) return from.error();
            if (from->empty()) return config_error(pnode, item_path + ".from", "must not be empty");
            rep.from = std::move(from.value());
            has_from = true;
          } else if (pk == "to") {
            auto to = get_string(pnode, item_path + ".to");
            if (!to) return to.error();
            rep.to = std::move(to.value());
            has_to = true;
          } else {
            return config_error(pnode, item_path + "." + pk, "unknown key (expected from, to)");
          }
        }
        if (!has_from || !has_to) {
          return config_error(item, item_path, has_from ? "missing 'to'" : "missing 'from'");
        }
        rule.replace.push_back(std::move(rep));
      }
      if (rule.replace.empty()) {
        return config_error(node, path, "no replacement: the rule would do nothing");
      }
    } else {
      return config_error(node, path, "unknown key (expected name, files, replace)");
    }
  }
  if (!has_files) return config_error(table, where, "missing 'files'");
  if (!has_replace) return config_error(table, where, "missing 'replace'");
  return rule;
}

}  // namespace

Result<void> screen_toml(std::string_view text) { return screen(text); }

Result<RuleSet> RuleSet::parse_toml(std::string_view text) {
  if (auto screened = screen(text); !screened) return screened.error();
  toml::table doc;
  try {
    doc = toml::parse(text);
  } catch (const toml::parse_error& e) {
    const auto& begin = e.source().begin;
    return make_error(EINVAL, "line " + std::to_string(begin.line) + ", column " +
                                  std::to_string(begin.column) + ": " +
                                  std::string(e.description()));
  }

  RuleSet set;
  for (auto&& [key, node] : doc) {
    const std::string k(key.str());
    if (k == "rewrite_max_size") {
      size_t bytes = 0;
      if (const auto* i = node.as_integer()) {
        if (i->get() <= 0) return config_error(node, k, "must be a positive number of bytes");
        bytes = static_cast<size_t>(i->get());
      } else if (const auto* s = node.as_string()) {
        auto parsed = parse_size(s->get());
        if (!parsed) return config_error(node, k, parsed.error().message);
        bytes = parsed.value();
      } else {
        return config_error(node, k, "expected a size such as \"4M\" or a number of bytes");
      }
      if (bytes == 0) return config_error(node, k, "must be a positive number of bytes");
      set.set_max_size(bytes);
    } else if (k == "rewrite") {
      const auto* rules = node.as_array();
      if (rules == nullptr) {
        return config_error(node, k,
                            "expected an array of tables: write [[rewrite]], not [rewrite]");
      }
      for (size_t i = 0; i < rules->size(); ++i) {
        const toml::node& item = *rules->get(i);
        const auto* table = item.as_table();
        if (table == nullptr) {
          return config_error(item, "rewrite[" + std::to_string(i) + "]", "expected a table");
        }
        auto rule = parse_rule(*table, i);
        if (!rule) return rule.error();
        if (auto added = set.add(std::move(rule.value())); !added) {
          return config_error(item, "rewrite[" + std::to_string(i) + "]", added.error().message);
        }
      }
    } else if (k.rfind("rewrite", 0) == 0) {
      // Ours by its name: a misspelt key must not be ignored silently.
      return config_error(node, k, "unknown key (expected rewrite_max_size or [[rewrite]])");
    }
    // Anything else belongs to another part of the configuration.
  }
  return set;
}

}  // namespace netbootfs::rewrite
