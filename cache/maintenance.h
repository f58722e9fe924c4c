// Maintenance: removing index entries and collecting the blobs nothing refers
// to any more, the same way for the mount (the fetcher) and for netbootfsctl.
//
// Contract
// - A blob is garbage when no entry refers to it (its record's refs is 0, or
//   it has no record): its record and its file go. A rewritten output (see
//   cache/derived_keys.h) is garbage when its source is: no path points at
//   the blob it was derived from.
// - Order: the entry first, then the outputs of its blob, then the blobs.
//   A crash in between leaves garbage that recovery collects at the next
//   start, never an entry without its blob.
// - Locks: none of its own. The caller excludes concurrent publishes of the
//   blobs it may delete (the fetcher holds its gc lock exclusively around
//   every call; netbootfsctl holds the cache's write lock).
// - Errors: a failed index write stops the call and comes back; a blob file
//   that cannot be unlinked is logged and counted as not removed (recovery
//   removes a file without a record).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cache/blob_store.h"
#include "cache/index.h"
#include "cache/util/result.h"

namespace netbootfs::cache {

struct Removed {
  size_t entries = 0;  // path entries removed (rewritten outputs not counted)
  size_t outputs = 0;  // rewritten outputs removed with their source
  size_t blobs = 0;    // blob files removed
  uint64_t bytes = 0;  // their sizes
  Removed& operator+=(const Removed& o);
};

// Removes the blob `sha256` (record and file) when nothing refers to it.
void collect_blob(Index& index, BlobStore& blobs, const std::string& sha256, Removed& out);

// Removes the rewritten outputs of `source_sha256`, and their blobs, when no
// path points at that source any more.
void drop_outputs_of(Index& index, BlobStore& blobs, const std::string& source_sha256,
                     Removed& out);

// Removes each path's entry (a path without one is skipped), then the
// outputs and blobs that only they referred to.
Result<Removed> remove_paths(Index& index, BlobStore& blobs, const std::vector<std::string>& paths);

}  // namespace netbootfs::cache
