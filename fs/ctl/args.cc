#include "fs/ctl/args.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>

#include "cache/http/url.h"

namespace netbootfs::fs::ctl {

Result<int64_t> parse_time(const std::string& s) {
  std::string digits = !s.empty() && s[0] == '@' ? s.substr(1) : s;
  if (!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos) {
    errno = 0;
    const long long v = std::strtoll(digits.c_str(), nullptr, 10);
    if (errno == ERANGE) return Error{EINVAL, "bad time '" + s + "': out of range"};
    return static_cast<int64_t>(v);
  }
  for (const char* fmt : {"%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"}) {
    std::tm tm{};
    const char* end = strptime(s.c_str(), fmt, &tm);
    if (end && *end == '\0') return static_cast<int64_t>(timegm(&tm));
  }
  return Error{EINVAL, "bad time '" + s + "' (unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)"};
}

Result<int64_t> parse_duration(const std::string& s) {
  size_t used = 0;
  double n = 0;
  try {
    n = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = s.substr(used);
  int64_t mul = 0;
  if (unit.empty() || unit == "s") mul = 1;
  if (unit == "m") mul = 60;
  if (unit == "h") mul = 3600;
  if (unit == "d") mul = 86400;
  if (used == 0 || mul == 0 || !(n >= 0)) {
    return Error{EINVAL, "bad duration '" + s + "' (e.g. 3600, 30m, 12h, 7d)"};
  }
  const double seconds = n * static_cast<double>(mul);
  // Past a thousand years it is no duration any clock here can mean.
  if (seconds > 1000.0 * 366 * 86400) return Error{EINVAL, "bad duration '" + s + "': out of range"};
  return static_cast<int64_t>(seconds);
}

Result<std::vector<std::string>> gather_paths(const std::vector<std::string>& args,
                                              const std::string& from) {
  std::vector<std::string> raw = args;
  if (!from.empty()) {
    std::ifstream in(from);
    if (!in) return Error{errno, "cannot read " + from + ": " + std::strerror(errno)};
    for (std::string line; std::getline(in, line);) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (line.empty() || line[0] == '#') continue;
      raw.push_back(line);
    }
  }
  std::vector<std::string> out;
  for (const auto& r : raw) {
    if (r.empty() || r == "/" || r == ".") {
      out.push_back("");
      continue;
    }
    auto p = http::normalize_rel_path(r);
    if (!p) return Error{EINVAL, "bad path '" + r + "': " + p.error().message};
    out.push_back(p.value());
  }
  return out;
}

}  // namespace netbootfs::fs::ctl
