// Bundle: a single-file copy of cached entries, to carry a cache to a site
// that has no link to the server (netbootfsctl export / import).
//
// Format: a POSIX (pax) tar archive. Its first member is `manifest.json`:
//   {"format": "netbootfs-bundle", "version": 1, "created": UNIX, "since": UNIX,
//    "entries": [{"path", "sha256", "size", "etag", "last_modified", "validated_at"}]}
// followed by one member `blobs/<sha256>` per distinct blob the entries need.
// Entries keep upstream's validators, so an imported file revalidates
// against upstream like any other once a link exists.
//
// Contract
// - export_bundle() writes FILE.tmp next to FILE, fsyncs and renames it: a
//   failed export leaves no bundle behind. `since` > 0 exports only entries
//   validated (fetched or revalidated) at or after that time; 0 exports all.
//   Internal entries (rewritten outputs) are never exported: they are derived
//   again from the imported bytes.
// - import_bundle() is all or nothing: the manifest is checked whole (paths
//   relative and inside the tree, digests well-formed, no duplicates), every
//   blob is hashed while it streams into tmp/ and must match its name and the
//   manifest's size, every entry's blob must be in the bundle or already in
//   the store, and only then do all entries reach the index, in one write
//   transaction. On any failure the index is untouched and the blobs this
//   import added are removed again.
// - The caller owns the cache for writes (the mount is not running on it).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cache/blob_store.h"
#include "cache/index.h"
#include "cache/util/result.h"

namespace netbootfs::cache {

struct BundleSummary {
  uint64_t entries = 0;      // paths exported / imported
  uint64_t blobs = 0;        // blob members written / read
  uint64_t bytes = 0;        // bytes of those blobs
  uint64_t blobs_present = 0;  // import: blobs the store already had
};

Result<BundleSummary> export_bundle(const Index& index, const BlobStore& blobs, int64_t since,
                                    const std::string& file);
Result<BundleSummary> import_bundle(Index& index, BlobStore& blobs, const std::string& file);

// A manifest path must name a file inside the tree: relative, no empty, "."
// or ".." segments, no NUL or control bytes, not an internal key.
bool is_bundle_path(std::string_view path);

// One manifest entry: a path and the index entry it imports as.
struct ManifestEntry {
  std::string path;
  PathEntry entry;
};

// Pure: the manifest's text checked whole (format and version, every entry
// with a string path that is_bundle_path() accepts, a well-formed sha256
// and an unsigned size, no path twice; etag, last_modified and validated_at
// taken when present and of the right type). Any fault is EINVAL.
Result<std::vector<ManifestEntry>> parse_manifest(const std::string& text);

// Pure: the blobs the entries need, sha256 -> size. One blob given two
// sizes is EINVAL.
Result<std::map<std::string, uint64_t>> manifest_blobs(const std::vector<ManifestEntry>& manifest);

}  // namespace netbootfs::cache
