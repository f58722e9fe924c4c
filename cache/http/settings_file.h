// The HTTP settings of a mount, recorded in its cache directory so that
// `netbootfsctl prefetch` on the unmounted cache reaches upstream the way the
// mount did (same proxy, CA bundle, client certificate, timeouts).
//
// Contract: write_settings_file() replaces the file atomically (temp file,
// rename). It records paths, never what they hold, and never a secret: a
// proxy URL's user:password is left out (strip_userinfo). The file is mode
// 0600 when it names a client certificate or key, 0644 otherwise. One
// `key=value` a line; a value runs to the end of its line, so a value with a
// newline is refused rather than written.
// read_settings_file() starts from `base` and sets what the file names; a
// missing file is not an error (a cache from before the file existed, or
// never mounted): it returns `base` with `found` false. Unknown keys are
// ignored (a newer mount's file stays readable); a bad value is an error
// naming the file and the line.
#pragma once

#include <string>

#include "cache/http/client.h"
#include "cache/util/result.h"

namespace netbootfs::http {

inline constexpr const char* kSettingsFileName = "upstream.http";

// What the file keeps of Options: proxy, ca_file, client_cert, client_key,
// insecure, connect_timeout, request_timeout, low_speed_time.
std::string format_settings(const Options& o);
Result<void> parse_settings(const std::string& text, const std::string& name, Options& o);

Result<void> write_settings_file(const std::string& path, const Options& o);

// Replaces `path` with `text` at once (PATH.tmp, then rename), mode `mode`
// whatever a leftover temp file had; the temp file is removed on failure.
// For the small records a mount leaves in its cache directory.
Result<void> replace_file(const std::string& path, const std::string& text, unsigned mode);

struct ReadSettings {
  Options options;
  bool found = false;
};
Result<ReadSettings> read_settings_file(const std::string& path, const Options& base);

// "http://user:pw@proxy:3128" -> "http://proxy:3128"; anything without
// userinfo unchanged.
std::string strip_userinfo(const std::string& url);

}  // namespace netbootfs::http
