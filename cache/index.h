// Index: the LMDB database under <cache_dir>/index that maps paths to blobs.
//
// Contract
// - Tables: "paths" path -> PathEntry, "blobs" sha256 -> BlobEntry, "meta"
//   (schema version, blob totals). open() fails with a clear message when
//   the schema version on disk differs from kSchemaVersion.
// - The bytes and number of blob records are kept as running totals in
//   "meta", adjusted in the transaction that writes the records, so stats()
//   costs one read however large the cache. A writable open creates them
//   when missing (an index from an older release); rebuild_refs() (run by
//   recovery at every mount and by repair) recounts and fixes them.
// - Blob refcounts are kept by the Index: put_path() increments the new blob's
//   refs (creating its BlobEntry) and decrements the blob the path pointed at
//   before; remove_path() decrements. A blob with refs == 0 is garbage that
//   the owner may delete (unreferenced_blobs()).
// - Writes are grouped: concurrent writers enqueue operations and one of them
//   commits everything pending in a single write transaction (group commit).
//   A write call returns once its operation is durable (or failed).
// - Access times are only noted in memory (note_access) and written by
//   flush_access(), so a read never costs a write transaction.
// - Several processes may open the same index (the mount and netbootfsctl);
//   LMDB's lock file serialises them. Stale readers are cleared at open.
// - Thread safety: every method may be called from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/util/result.h"

namespace netbootfs::cache {

struct PathEntry {
  std::string sha256;          // hex; the blob holding the bytes
  uint64_t size = 0;
  std::string etag;            // upstream's validator, quotes included; may be empty
  int64_t last_modified = 0;   // unix seconds from Last-Modified, 0 when unknown
  int64_t validated_at = 0;    // unix seconds of the last 200/304 from upstream
};

struct BlobEntry {
  uint64_t size = 0;
  uint32_t refs = 0;
  int64_t last_access = 0;  // unix seconds
};

struct IndexStats {
  uint64_t paths = 0;
  uint64_t blobs = 0;
  uint64_t blob_bytes = 0;
};

class Index {
 public:
  static constexpr uint32_t kSchemaVersion = 1;
  struct Options {
    size_t map_size = size_t{1} << 30;  // bytes of address space for the map
    // The map doubles when full, up to this many bytes (0: no limit). Past
    // it, a write that does not fit fails alone with ENOSPC, leaving nothing
    // half-written; the index stays readable, and writes succeed again once
    // there is room (a reopen with a higher limit).
    size_t max_map_size = 0;
    bool read_only = false;
  };

  static Result<std::unique_ptr<Index>> open(const std::string& dir, Options options);
  ~Index();
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  std::optional<PathEntry> get_path(std::string_view path) const;
  std::optional<BlobEntry> get_blob(std::string_view sha256) const;
  // Entries whose path equals `prefix` or lies below it ("" = all), in key
  // order; at most `max` of them.
  std::vector<std::pair<std::string, PathEntry>> list_paths(std::string_view prefix = {},
                                                            size_t max = SIZE_MAX) const;
  std::vector<std::pair<std::string, BlobEntry>> list_blobs() const;
  std::vector<std::string> unreferenced_blobs() const;
  // O(1): the running totals (walks the blob table only for an index from
  // before them, opened read-only).
  IndexStats stats() const;
  // The running totals and the same figures counted by walking the blob
  // table, read in one transaction: they differ only when the totals are
  // wrong (verification).
  struct TotalsCheck {
    bool stored = false;  // a totals record exists
    IndexStats kept;      // what it says (blobs, blob_bytes)
    IndexStats counted;   // what the blob records hold
  };
  TotalsCheck check_totals() const;

  Result<void> put_path(std::string path, PathEntry entry);
  // Every entry in one transaction: all of them become visible, or none.
  Result<void> put_paths(std::vector<std::pair<std::string, PathEntry>> entries);
  Result<void> remove_path(std::string path);
  Result<void> set_validated(std::string path, int64_t at);
  // Drops a blob entry; refused (EBUSY) while refs > 0.
  Result<void> remove_blob(std::string sha256);

  // Recomputes every blob's refcount from the path entries in one write
  // transaction (a blob record is created where an entry needs one), drops
  // the blob records nothing refers to (returns their sha256s), and
  // recounts the blob totals, rewriting them when they were wrong.
  Result<std::vector<std::string>> rebuild_refs();

  // The clean-stop mark. A daemon that stops cleanly writes it as its last
  // transaction. take_clean_mark() answers whether it is still the last
  // transaction of the index: no process wrote after it, be it this daemon
  // crashing, an offline netbootfsctl command or an older release. It drops
  // the mark in the same transaction, so a crash of the run that follows is
  // never taken for a clean stop.
  Result<void> set_clean_mark();
  Result<bool> take_clean_mark();

  void note_access(std::string_view sha256, int64_t at);
  Result<void> flush_access();
  // Accesses noted and not yet flushed (sha256, unix seconds): what LRU order
  // must add to the stored last_access.
  std::vector<std::pair<std::string, int64_t>> pending_access() const;

 private:
  struct Impl;
  explicit Index(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace netbootfs::cache
