#include "fs/config_file.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include <toml++/toml.h>

#include "cache/evictor.h"
#include "cache/http/url.h"
#include "cache/prefetch.h"
#include "rewrite/rewrite.h"

namespace netbootfs::fs {

namespace {
// The config file's TOML, or one line naming the file and the line.
Result<toml::table> parse_document(const std::string& text, const std::string& name) {
  if (auto screened = rewrite::screen_toml(text); !screened) {
    return Error{EINVAL, name + ": " + screened.error().message};
  }
  try {
    return toml::parse(text);
  } catch (const toml::parse_error& e) {
    return Error{EINVAL, name + ": line " + std::to_string(e.source().begin.line) + ": " +
                             std::string(e.description())};
  }
}
}  // namespace

Result<std::vector<std::string>> config_mirrors_from(const std::string& text,
                                                     const std::string& name) {
  auto parsed = parse_document(text, name);
  if (!parsed) return parsed.error();
  const toml::table& doc = parsed.value();
  std::vector<std::string> out;
  const toml::node* node = doc.get("mirrors");
  if (!node) return out;
  const toml::array* list = node->as_array();
  if (!list) return Error{EINVAL, name + ": mirrors: expected a list of URLs"};
  for (size_t i = 0; i < list->size(); ++i) {
    const auto* url = list->get(i)->as_string();
    if (!url) {
      return Error{EINVAL, name + ": mirrors[" + std::to_string(i) + "]: expected a URL string"};
    }
    auto base = http::normalize_base_url(url->get());
    if (!base) {
      return Error{EINVAL, name + ": mirrors[" + std::to_string(i) + "]: bad URL '" + url->get() +
                               "': " + base.error().message};
    }
    out.push_back(base.value());
  }
  return out;
}

namespace {
Result<std::string> read_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error{errno, "cannot read config " + path + ": " + std::strerror(errno)};
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}
}  // namespace

Result<std::vector<std::string>> config_mirrors(const std::string& path) {
  auto text = read_config(path);
  if (!text) return text.error();
  return config_mirrors_from(text.value(), path);
}

Result<CacheConfig> config_cache_from(const std::string& text, const std::string& name) {
  auto parsed = parse_document(text, name);
  if (!parsed) return parsed.error();
  const toml::table& doc = parsed.value();
  CacheConfig out;
  if (const toml::node* node = doc.get("max_cache_size")) {
    const auto* s = node->as_string();
    if (!s) return Error{EINVAL, name + ": max_cache_size: expected a size string such as \"20G\""};
    auto size = cache::parse_size(s->get());
    if (!size) return Error{EINVAL, name + ": max_cache_size: " + size.error().message};
    out.max_cache_size = size.value();
  }
  if (const toml::node* node = doc.get("pins")) {
    const toml::array* list = node->as_array();
    if (!list) return Error{EINVAL, name + ": pins: expected a list of globs"};
    for (size_t i = 0; i < list->size(); ++i) {
      const auto* g = list->get(i)->as_string();
      if (!g || g->get().empty()) {
        return Error{EINVAL, name + ": pins[" + std::to_string(i) + "]: expected a glob string"};
      }
      out.pins.push_back(g->get());
    }
  }
  if (const toml::node* node = doc.get("max_rate")) {
    const auto* s = node->as_string();
    if (!s) return Error{EINVAL, name + ": max_rate: expected a rate string such as \"20M\""};
    auto rate = s->get() == "0" ? Result<uint64_t>(uint64_t{0}) : cache::parse_rate(s->get());
    if (!rate) return Error{EINVAL, name + ": max_rate: " + rate.error().message};
    out.max_rate = rate.value();
  }
  if (const toml::node* node = doc.get("max_downloads")) {
    const auto* n = node->as_integer();
    if (!n || n->get() < 0 || n->get() > 100000) {
      return Error{EINVAL, name + ": max_downloads: expected a whole number, 0 for no limit"};
    }
    out.max_downloads = static_cast<int>(n->get());
  }
  return out;
}

Result<CacheConfig> config_cache(const std::string& path) {
  auto text = read_config(path);
  if (!text) return text.error();
  return config_cache_from(text.value(), path);
}

}  // namespace netbootfs::fs
