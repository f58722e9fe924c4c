// Parsers for upstream directory listings: nginx autoindex (HTML and
// `autoindex_format json`) and Apache mod_autoindex HTML.
//
// Contract: pure functions, no I/O. Names come back decoded (from the href,
// never from the truncated link text), without a trailing slash; "." , ".."
// and links that leave the directory (absolute, "../", "?C=N;O=D" sort links,
// other hosts) are skipped. `size` is set only when the listing gives an exact
// byte count (nginx JSON; nginx HTML with autoindex_exact_size on). Apache's
// rounded sizes ("1.2M") are never reported as exact.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/util/result.h"

namespace netbootfs::cache {

struct ListingEntry {
  std::string name;
  bool is_dir = false;
  std::optional<uint64_t> size;   // exact bytes only
  std::optional<int64_t> mtime;   // unix seconds, when given
};

// Chooses the parser from the content type and the body; EPROTO when the
// body is not a listing it understands.
Result<std::vector<ListingEntry>> parse_listing(std::string_view body,
                                                std::string_view content_type);

Result<std::vector<ListingEntry>> parse_nginx_json(std::string_view body);
Result<std::vector<ListingEntry>> parse_html_listing(std::string_view body);

}  // namespace netbootfs::cache
