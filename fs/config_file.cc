#include "fs/config_file.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include <toml++/toml.h>

#include "cache/http/url.h"

namespace netbootfs::fs {

Result<std::vector<std::string>> config_mirrors_from(const std::string& text,
                                                     const std::string& name) {
  toml::table doc;
  try {
    doc = toml::parse(text);
  } catch (const toml::parse_error& e) {
    return Error{EINVAL, name + ": line " + std::to_string(e.source().begin.line) + ": " +
                             std::string(e.description())};
  }
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

Result<std::vector<std::string>> config_mirrors(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error{errno, "cannot read config " + path + ": " + std::strerror(errno)};
  std::stringstream text;
  text << in.rdbuf();
  return config_mirrors_from(text.str(), path);
}

}  // namespace netbootfs::fs
