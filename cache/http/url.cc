#include "cache/http/url.h"

#include <cctype>

namespace netbootfs::http {
namespace {

bool unreserved(unsigned char c) {
  return std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Result<std::string> normalize_base_url(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return Error{EINVAL, "not a URL (no scheme)"};
  std::string scheme(url.substr(0, scheme_end));
  for (auto& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme != "http" && scheme != "https") {
    return Error{EINVAL, "only http and https upstreams are supported"};
  }
  if (url.find_first_of("?#") != std::string_view::npos) {
    return Error{EINVAL, "an upstream URL has no query or fragment"};
  }
  if (url_host(url).empty()) return Error{EINVAL, "no host in URL"};
  for (unsigned char c : url) {
    if (c <= ' ' || c == 0x7f) return Error{EINVAL, "spaces or control characters in URL"};
  }
  std::string out = scheme + std::string(url.substr(scheme_end));
  const auto path_start = out.find('/', scheme.size() + 3);
  if (path_start == std::string::npos) return out + "/";
  while (out.size() > path_start + 1 && out.back() == '/') out.pop_back();
  if (out.back() != '/') out += '/';
  return out;
}

std::string encode_segment(std::string_view segment) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(segment.size());
  for (unsigned char c : segment) {
    if (unreserved(c)) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out;
}

std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    const int hi = hex_value(text[i + 1]);
    const int lo = hex_value(text[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::string join_url(std::string_view base, std::string_view rel_path, bool directory) {
  std::string out(base);
  if (out.empty() || out.back() != '/') out += '/';
  size_t start = 0;
  bool first = true;
  while (start <= rel_path.size() && !rel_path.empty()) {
    const auto slash = rel_path.find('/', start);
    const auto seg = rel_path.substr(start, slash == std::string_view::npos ? std::string_view::npos
                                                                            : slash - start);
    if (!seg.empty()) {
      if (!first) out += '/';
      out += encode_segment(seg);
      first = false;
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (directory && !first) out += '/';
  return out;
}

Result<std::string> normalize_rel_path(std::string_view path) {
  std::string out;
  size_t start = 0;
  while (start <= path.size()) {
    auto slash = path.find('/', start);
    auto seg = path.substr(start, slash == std::string_view::npos ? std::string_view::npos
                                                                  : slash - start);
    if (seg.find('\0') != std::string_view::npos) return Error{EINVAL, "NUL in path"};
    if (seg == "..") return Error{EINVAL, "'..' is not allowed in a path"};
    if (!seg.empty() && seg != ".") {
      if (!out.empty()) out += '/';
      out += seg;
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return out;
}

std::string_view parent_path(std::string_view rel_path) {
  const auto slash = rel_path.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : rel_path.substr(0, slash);
}

std::string_view base_name(std::string_view rel_path) {
  const auto slash = rel_path.rfind('/');
  return slash == std::string_view::npos ? rel_path : rel_path.substr(slash + 1);
}

std::string child_path(std::string_view parent, std::string_view name) {
  if (parent.empty()) return std::string(name);
  std::string out(parent);
  out += '/';
  out += name;
  return out;
}

std::string url_host(std::string_view url) {
  auto p = url.find("://");
  if (p == std::string_view::npos) return {};
  auto rest = url.substr(p + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (auto at = rest.rfind('@'); at != std::string_view::npos) rest = rest.substr(at + 1);
  if (!rest.empty() && rest.front() == '[') {
    auto close = rest.find(']');
    if (close == std::string_view::npos) return {};
    return std::string(rest.substr(1, close - 1));
  }
  return std::string(rest.substr(0, rest.find(':')));
}

}  // namespace netbootfs::http
