#include "cache/http/url.h"

#include <cerrno>

namespace netbootfs::http {
namespace {

// ASCII only on purpose: <cctype> answers by locale, and a byte of a UTF-8
// name must never pass as a letter.
bool is_alpha(unsigned char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool is_unreserved(unsigned char c) {
  return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The authority of "scheme://authority/path" with "://" at scheme_end.
std::string_view authority_of(std::string_view url, size_t scheme_end) {
  std::string_view rest = url.substr(scheme_end + 3);
  return rest.substr(0, rest.find_first_of("/?#"));
}

// Splits "user@host:port" into host and port; false when malformed (an
// unterminated "[", junk after "]", a port that is not a number in range).
bool split_authority(std::string_view authority, std::string_view* host, std::string_view* port) {
  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    authority.remove_prefix(at + 1);
  }
  std::string_view rest;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return false;
    *host = authority.substr(1, close - 1);
    rest = authority.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return false;
  } else {
    const auto colon = authority.find(':');
    *host = authority.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view() : authority.substr(colon);
  }
  *port = rest.empty() ? rest : rest.substr(1);
  if (port->size() > 5) return false;
  unsigned value = 0;
  for (char c : *port) {
    if (!is_digit(static_cast<unsigned char>(c))) return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value <= 65535;
}

}  // namespace

Result<std::string> normalize_base_url(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos || scheme_end == 0) {
    return Error{EINVAL, "not an absolute URL: " + std::string(url)};
  }
  std::string scheme(url.substr(0, scheme_end));
  for (char& c : scheme) c = to_lower(c);
  if (scheme != "http" && scheme != "https") {
    return Error{EINVAL, "only http and https upstreams are supported: " + std::string(url)};
  }
  for (unsigned char c : url) {
    // Unencoded spaces and controls would be sent as they are or rejected by
    // libcurl later; better to say so at mount time.
    if (c <= ' ' || c == 0x7f) return Error{EINVAL, "space or control character in URL"};
  }
  if (url.find_first_of("?#") != std::string_view::npos) {
    return Error{EINVAL, "an upstream URL takes no query or fragment: " + std::string(url)};
  }
  std::string_view host, port;
  if (!split_authority(authority_of(url, scheme_end), &host, &port)) {
    return Error{EINVAL, "malformed host or port in URL: " + std::string(url)};
  }
  if (host.empty()) return Error{EINVAL, "no host in URL: " + std::string(url)};

  std::string out = scheme;
  out.append(url.substr(scheme_end));
  const auto path_start = out.find('/', scheme.size() + 3);
  if (path_start == std::string::npos) return out + "/";
  while (out.size() > path_start + 1 && out.back() == '/') out.pop_back();
  if (out.back() != '/') out += '/';
  return out;
}

std::string encode_segment(std::string_view segment) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(segment.size() + segment.size() / 2);
  for (char ch : segment) {
    const auto c = static_cast<unsigned char>(ch);
    if (is_unreserved(c)) {
      out += ch;
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
    if (text.size() - i < 3) return std::nullopt;
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
  bool any = false;
  size_t start = 0;
  while (start < rel_path.size()) {
    auto end = rel_path.find('/', start);
    if (end == std::string_view::npos) end = rel_path.size();
    const std::string_view segment = rel_path.substr(start, end - start);
    start = end + 1;
    // Callers pass normalised paths; this only makes sure that a path that
    // was not cannot climb out of the base: libcurl and servers remove dot
    // segments, so ".." goes out fully encoded and "." is dropped.
    if (segment.empty() || segment == ".") continue;
    if (any) out += '/';
    out += segment == ".." ? "%2E%2E" : encode_segment(segment);
    any = true;
  }
  if (directory && any) out += '/';
  return out;
}

Result<std::string> normalize_rel_path(std::string_view path) {
  if (path.find('\0') != std::string_view::npos) return Error{EINVAL, "NUL byte in path"};
  std::string out;
  out.reserve(path.size());
  size_t start = 0;
  while (start < path.size()) {
    auto end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view segment = path.substr(start, end - start);
    start = end + 1;
    if (segment.empty() || segment == ".") continue;
    if (segment == "..") return Error{EINVAL, "'..' in path: " + std::string(path)};
    if (!out.empty()) out += '/';
    out.append(segment);
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
  std::string out(parent);
  if (!out.empty()) out += '/';
  out.append(name);
  return out;
}

std::string url_host(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return {};
  std::string_view host, port;
  if (!split_authority(authority_of(url, scheme_end), &host, &port)) return {};
  return std::string(host);
}

}  // namespace netbootfs::http
