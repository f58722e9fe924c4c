// args: netbootfsctl's argument values that are more than a string: times,
// durations and the paths of the tree.
//
// Contract
// - Pure but for gather_paths() reading --from FILE. Every error is EINVAL
//   (or the errno of reading FILE) with a message that names the bad value
//   and what is accepted, ready for fail().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cache/util/result.h"

namespace netbootfs::fs::ctl {

// "--since": unix seconds ("@1700000000" or "1700000000"), a UTC date
// ("2026-11-30") or a UTC time ("2026-11-30T12:00:00Z", the Z optional).
Result<int64_t> parse_time(const std::string& s);

// "--older-than": seconds, or a number with s, m, h or d ("1.5h"); not negative.
Result<int64_t> parse_duration(const std::string& s);

// The paths named on the command line, then those of `from` (a file, one a
// line; blank lines and '#' comments skipped, trailing spaces and CRs
// dropped; none when `from` is empty), each a normalised relative path:
// "", "/" and "." are the root ("").
Result<std::vector<std::string>> gather_paths(const std::vector<std::string>& args,
                                              const std::string& from);

}  // namespace netbootfs::fs::ctl
