// The parts of the config file (config=FILE, TOML) that are not rewrite
// rules: today the mirror list. Read once at mount time.
//
// Contract: a missing `mirrors` key is an empty list; `mirrors` must be an
// array of http(s) URL strings, each normalised like the upstream URL; any
// other shape is an error naming the file and the key (one line).
#pragma once

#include <string>
#include <vector>

#include "cache/util/result.h"

namespace netbootfs::fs {

Result<std::vector<std::string>> config_mirrors(const std::string& path);
// The same, from the file's text (for tests).
Result<std::vector<std::string>> config_mirrors_from(const std::string& text,
                                                     const std::string& name);

}  // namespace netbootfs::fs
