// ContentFilter: the interface through which the cache serves some paths as
// a function of their upstream bytes (boot menus with the proxy's names).
// Implemented above the cache (fs/rewrite_filter.h); the cache stores each
// output once per (upstream blob, fingerprint) as a blob of its own
// (cache/derived_keys.h) and reports its size. Implementations must be
// safe to call from any thread and pure: the same input and fingerprint
// give the same output.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace netbootfs::cache {

// A transformation of file contents in the read path (hostname rewriting),
// implemented above the cache: the cache only knows that some paths are served
// as a function of their upstream bytes. The cached blob stays byte-identical
// to upstream; the output is stored as a blob of its own, once per (upstream
// blob, fingerprint), and its size is what stat reports.
class ContentFilter {
 public:
  struct Output {
    bool changed = false;  // false: serve the upstream bytes
    std::string bytes;     // the file to serve when changed
    std::string note;      // what was done ("default: 2 replacements") or why not
    bool warn = false;     // note is worth a warning (too large, not text)
  };
  virtual ~ContentFilter() = default;
  virtual bool matches(std::string_view path) const = 0;
  // Changes whenever any output could change.
  virtual std::string fingerprint() const = 0;
  virtual Output apply(std::string_view path, std::string_view input) const = 0;
  // Inputs larger than this are served unmodified without being read.
  virtual size_t max_input() const = 0;
};

}  // namespace netbootfs::cache
