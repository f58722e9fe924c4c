// Derived keys: the index entries that are not upstream paths.
//
// Contract
// - A rewritten output (a boot menu with the proxy's names) is stored as an
//   index entry keyed "<kInternalMark>filtered/<filter fingerprint>/<source
//   sha256>": its blob is the output, its etag field the filter's note. The
//   source is the upstream blob it was derived from; the entry lives while a
//   path points at that source and goes with it (eviction, recovery,
//   netbootfsctl evict).
// - Every key that starts with kInternalMark is internal: never an upstream
//   path (normalised paths cannot hold control bytes), never listed, never
//   exported. This header is the only place the scheme is spelled.
// - Pure functions, no state; safe from any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace netbootfs::cache {

inline constexpr char kInternalMark = '\x01';
// The prefix of every rewritten output's key, slash included. Written as two
// literals: "\x01f..." would read as the single byte 0x1F.
inline constexpr std::string_view kDerivedPrefix =
    "\x01"
    "filtered/";

inline bool is_internal_key(std::string_view key) {
  return !key.empty() && key[0] == kInternalMark;
}

inline std::string derived_key(std::string_view fingerprint, std::string_view source_sha256) {
  std::string k(kDerivedPrefix);
  k.append(fingerprint).append("/").append(source_sha256);
  return k;
}

// The source sha256 of a rewritten output's key; nullopt for any other key.
inline std::optional<std::string> derived_source(std::string_view key) {
  if (key.compare(0, kDerivedPrefix.size(), kDerivedPrefix) != 0) return std::nullopt;
  const auto slash = key.rfind('/');
  if (slash < kDerivedPrefix.size() || slash + 1 >= key.size()) return std::nullopt;
  return std::string(key.substr(slash + 1));
}

}  // namespace netbootfs::cache
