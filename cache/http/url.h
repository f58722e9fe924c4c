// Upstream URLs and mount-relative paths.
//
// A mount-relative path is "" for the root or "a/b/c": no leading or trailing
// slash, no empty, "." or ".." segment. URLs are built by percent-encoding each
// segment, so names with spaces, '%', '#', '?', '+' and UTF-8 round-trip and
// nothing can escape the base URL.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "cache/util/result.h"

namespace netbootfs::http {

// Checks an upstream base URL: http or https, a host, no query or fragment.
// Returns it normalised with exactly one trailing slash.
Result<std::string> normalize_base_url(std::string_view url);

// Percent-encodes one path segment (RFC 3986: unreserved characters stay).
std::string encode_segment(std::string_view segment);

// Decodes %XX escapes; nullopt on a malformed escape.
std::optional<std::string> percent_decode(std::string_view text);

// base (normalised) + encoded relative path; `directory` adds a trailing slash.
std::string join_url(std::string_view base, std::string_view rel_path, bool directory = false);

// Validates and normalises a relative path ("/a//b/" -> "a/b"). Rejects ".."
// segments and NUL bytes with EINVAL.
Result<std::string> normalize_rel_path(std::string_view path);

// "a/b/c" -> "a/b"; "c" -> "".
std::string_view parent_path(std::string_view rel_path);
// "a/b/c" -> "c".
std::string_view base_name(std::string_view rel_path);
// parent + "/" + name, or name when parent is the root.
std::string child_path(std::string_view parent, std::string_view name);

// The host of a URL ("http://[::1]:8080/x" -> "::1"), empty when none.
std::string url_host(std::string_view url);

}  // namespace netbootfs::http
