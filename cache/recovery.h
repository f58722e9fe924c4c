// Start-up recovery: makes a cache consistent after a crash at any instant.
//
// Order matters: tmp/ is emptied; index entries whose blob is missing or has
// the wrong size are dropped, and so are rewritten outputs
// (cache/derived_keys.h) whose source no path points at any
// more; refcounts and the index's blob totals are recounted; blobs that no
// entry refers to (on disk without an entry, or with refs == 0) are deleted.
// Afterwards every path entry points at a complete blob of its recorded size.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cache/blob_store.h"
#include "cache/index.h"

namespace netbootfs::cache {

struct RecoveryReport {
  uint64_t temp_files_removed = 0;
  uint64_t entries_dropped = 0;   // index entries without a valid blob
  // Rewritten outputs whose source is gone (their keys, for messages).
  std::vector<std::string> derived_dropped;
  uint64_t blobs_removed = 0;     // orphan blobs deleted
};

Result<RecoveryReport> recover(Index& index, BlobStore& blobs);

// Start-up after a clean stop (Index::take_clean_mark() said so): what a run
// that did not crash can still leave is removed, tmp/ and blob files without
// a record (an evicted blob whose unlink failed, a publish whose index write
// failed). Entries are not checked against their blobs, nor refcounts
// recounted: that is a walk of every entry, and the cost of a start-up
// grows with the cache (a stat of each blob). A blob removed by hand anyway
// fails the open that finds it missing, which drops its entry.
Result<RecoveryReport> recover_after_clean_stop(Index& index, BlobStore& blobs);

// What a writer (the mount, an unmounted prefetch) runs when it opens the
// cache: Index::take_clean_mark(), then recover_after_clean_stop() after a
// clean stop and recover() after anything else.
struct StartUpRecovery {
  bool after_clean_stop = false;
  RecoveryReport report;
};
Result<StartUpRecovery> recover_at_start(Index& index, BlobStore& blobs);

// Read-only check used by `netbootfsctl verify`: re-hashes every blob and
// checks index <-> blobs; each problem is one human-readable line.
std::vector<std::string> verify(const Index& index, const BlobStore& blobs);

// `netbootfsctl verify --repair`, for a cache nothing else has open (the
// caller holds the CacheLock): re-hashes every blob, deletes those whose
// content does not hash to their name, then does what recover() does (tmp/
// emptied, entries without a blob of their size dropped, rewritten outputs
// of a dropped source dropped, refcounts and totals rebuilt, orphan blobs
// deleted). `actions` gets one human-readable line per change.
struct RepairReport {
  uint64_t corrupt_blobs_removed = 0;  // content did not match the sha256
  uint64_t entries_dropped = 0;        // their blob was missing, corrupt or short
  uint64_t orphan_blobs_removed = 0;   // no entry referred to them
  uint64_t temp_files_removed = 0;
  std::vector<std::string> actions;
};
Result<RepairReport> repair(Index& index, BlobStore& blobs);

}  // namespace netbootfs::cache
