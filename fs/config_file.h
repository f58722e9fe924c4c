// The parts of the config file (config=FILE, TOML) that are not rewrite
// rules: the mirror list and the cache's size settings. Read once at mount
// time.
//
// Contract: a missing `mirrors` key is an empty list; `mirrors` must be an
// array of http(s) URL strings, each normalised like the upstream URL; any
// other shape is an error naming the file and the key (one line).
// `max_cache_size` is a size string ("20G", see cache::parse_size) and
// `pins` a list of glob strings (see cache/evictor.h); both may be absent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cache/util/result.h"

namespace netbootfs::fs {

Result<std::vector<std::string>> config_mirrors(const std::string& path);
// The same, from the file's text (for tests).
Result<std::vector<std::string>> config_mirrors_from(const std::string& text,
                                                     const std::string& name);

// The cache and WAN settings of the config file (the command line wins).
struct CacheConfig {
  std::optional<uint64_t> max_cache_size;
  std::vector<std::string> pins;
  std::optional<uint64_t> max_rate;      // max_rate = "20M"
  std::optional<int> max_downloads;      // max_downloads = 4
};
Result<CacheConfig> config_cache(const std::string& path);
Result<CacheConfig> config_cache_from(const std::string& text, const std::string& name);

}  // namespace netbootfs::fs
