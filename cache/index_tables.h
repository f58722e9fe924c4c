// IndexTables: the index's three tables ("paths", "blobs", "meta") read and
// written inside one LMDB transaction, with the blob refcounts and the
// running totals kept consistent with the records. Used by cache/index.cc
// only; the stored forms are in cache/index_codec.h.
//
// Contract
// - Holds the table handles and the key limit, set once by Index::open;
//   every method works in the transaction it is given, so it has no lock and
//   no state of its own: it is as thread-safe as that transaction.
// - Reads: a missing or undecodable record is std::nullopt. A path that is
//   empty or over the key limit, or a key that is not a sha256, reads as
//   missing without a lookup.
// - Writes return LMDB's code (0 on success) and leave the transaction to
//   the caller: on an error it must abort (Index runs each op in a nested
//   transaction), since a write may have happened in part.
// - Invariants every write keeps: a path entry holds one reference to its
//   blob's record (put_path creates the record, remove_path and a moved path
//   drop the reference; refs never go below 0); the "totals" record sums the
//   decodable blob records, adjusted by every write that adds, drops or
//   resizes one. A missing "totals" record stays missing (an old index open
//   read-only is counted by walking instead).
#pragma once

#include <lmdb.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/index.h"
#include "cache/index_codec.h"
#include "cache/util/result.h"

namespace netbootfs::cache {

struct IndexTables {
  MDB_dbi paths = 0, blobs = 0, meta = 0;
  size_t max_key = 511;  // mdb_env_get_maxkeysize()

  // Opens the tables in `txn`, creating the missing ones when `create`.
  // MDB_NOTFOUND: there is no index here.
  int open(MDB_txn* txn, bool create);

  std::optional<PathEntry> get_path(MDB_txn* txn, std::string_view path) const;
  std::optional<BlobEntry> get_blob(MDB_txn* txn, std::string_view sha) const;
  std::optional<BlobTotals> get_totals(MDB_txn* txn) const;
  // Walks the blob table: what "totals" must say.
  BlobTotals count_totals(MDB_txn* txn) const;
  // MDB_NOTFOUND without a version; `version` is 0 when it is unreadable.
  int get_schema(MDB_txn* txn, uint32_t& version) const;
  bool has_clean_mark(MDB_txn* txn) const;

  // Writes the entry, moving the reference when it names another blob.
  int put_path(MDB_txn* txn, const std::string& path, const PathEntry& entry);
  // Writes the entry as it is: for a change that keeps its blob.
  int write_path(MDB_txn* txn, const std::string& path, const PathEntry& entry);
  // Drops the entry and its reference; 0 when there was none.
  int remove_path(MDB_txn* txn, const std::string& path);
  // Raises the blob's last_access to `at`; nothing when it is gone or newer.
  int raise_last_access(MDB_txn* txn, const std::string& sha, int64_t at);
  // Drops a blob record whatever its refs; `before`: as get_blob() read it
  // in this transaction.
  int erase_blob(MDB_txn* txn, const std::string& sha, const std::optional<BlobEntry>& before);
  int put_totals(MDB_txn* txn, const BlobTotals& totals);
  int put_schema(MDB_txn* txn, uint32_t version);
  // Stamped with the transaction's id; `txn` must be the one that commits.
  int put_clean_mark(MDB_txn* txn);
  // Drops the mark (0 without one); `clean`: it was written by the
  // transaction before `txn`.
  int take_clean_mark(MDB_txn* txn, bool& clean);

  // Sets every blob's refs to the entries that name it (creating the
  // records that are missing), drops the records nothing names (appended
  // to `dropped`) and rewrites the totals when they are wrong.
  Result<void> rebuild_refs(MDB_txn* txn, std::vector<std::string>& dropped);

 private:
  int add_ref(MDB_txn* txn, const std::string& sha, uint64_t size);
  int drop_ref(MDB_txn* txn, const std::string& sha);
  int write_blob(MDB_txn* txn, const std::string& sha, const std::optional<BlobEntry>& before,
                 const BlobEntry& after);
  int adjust_totals(MDB_txn* txn, const std::optional<BlobEntry>& before,
                    const std::optional<BlobEntry>& after);
  Result<void> fix_blob_records(MDB_txn* txn, std::vector<std::string>& dropped);
  Result<void> fix_totals(MDB_txn* txn);
};

}  // namespace netbootfs::cache
