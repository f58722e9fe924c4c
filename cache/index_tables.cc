#include "cache/index_tables.h"

#include <algorithm>
#include <unordered_map>
#include <utility>

#include "cache/blob_store.h"  // is_sha256_hex
#include "cache/lmdb_txn.h"
#include "cache/util/log.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return logger("cache"); }

// What the path entries say a blob record must hold.
struct Want {
  uint32_t refs = 0;
  uint64_t size = 0;
};
using Wants = std::unordered_map<std::string, Want>;

int count_wanted_refs(MDB_txn* txn, MDB_dbi paths, Wants& want) {
  return lmdb::for_each(txn, paths, [&](std::string_view, std::string_view value) {
    if (auto e = decode_path_entry(value)) {
      auto& w = want[e->sha256];
      w.refs++;
      w.size = e->size;
    }
  });
}

// Collected before any write: writing while a cursor walks the same table
// would move it under our feet.
using BlobRecords = std::vector<std::pair<std::string, std::optional<BlobEntry>>>;
int collect_blob_records(MDB_txn* txn, MDB_dbi blobs, BlobRecords& out) {
  return lmdb::for_each(txn, blobs, [&](std::string_view key, std::string_view value) {
    out.emplace_back(std::string(key), decode_blob_entry(value));
  });
}

}  // namespace

int IndexTables::open(MDB_txn* txn, bool create) {
  const unsigned flags = create ? MDB_CREATE : 0;
  int rc = mdb_dbi_open(txn, "paths", flags, &paths);
  if (rc == 0) rc = mdb_dbi_open(txn, "blobs", flags, &blobs);
  if (rc == 0) rc = mdb_dbi_open(txn, "meta", flags, &meta);
  return rc;
}

std::optional<PathEntry> IndexTables::get_path(MDB_txn* txn, std::string_view path) const {
  if (path.empty() || path.size() > max_key) return std::nullopt;
  std::string_view v;
  if (lmdb::get(txn, paths, path, v) != 0) return std::nullopt;
  return decode_path_entry(v);
}

std::optional<BlobEntry> IndexTables::get_blob(MDB_txn* txn, std::string_view sha) const {
  if (!is_sha256_hex(sha)) return std::nullopt;
  std::string_view v;
  if (lmdb::get(txn, blobs, sha, v) != 0) return std::nullopt;
  return decode_blob_entry(v);
}

std::optional<BlobTotals> IndexTables::get_totals(MDB_txn* txn) const {
  std::string_view v;
  if (lmdb::get(txn, meta, kMetaTotalsKey, v) != 0) return std::nullopt;
  return decode_totals(v);
}

BlobTotals IndexTables::count_totals(MDB_txn* txn) const {
  BlobTotals t;
  lmdb::for_each(txn, blobs, [&](std::string_view, std::string_view value) {
    if (auto e = decode_blob_entry(value)) {
      t.objects++;
      t.bytes += e->size;
    }
  });
  return t;
}

int IndexTables::get_schema(MDB_txn* txn, uint32_t& version) const {
  std::string_view v;
  const int rc = lmdb::get(txn, meta, kMetaSchemaKey, v);
  if (rc == 0) version = decode_schema_version(v).value_or(0);
  return rc;
}

bool IndexTables::has_clean_mark(MDB_txn* txn) const {
  std::string_view v;
  return lmdb::get(txn, meta, kMetaCleanKey, v) == 0;
}

int IndexTables::put_path(MDB_txn* txn, const std::string& path, const PathEntry& entry) {
  auto old = get_path(txn, path);
  int rc = 0;
  if (!old || old->sha256 != entry.sha256) {
    if (old) rc = drop_ref(txn, old->sha256);
    if (rc == 0) rc = add_ref(txn, entry.sha256, entry.size);
  }
  if (rc == 0) rc = write_path(txn, path, entry);
  return rc;
}

int IndexTables::write_path(MDB_txn* txn, const std::string& path, const PathEntry& entry) {
  return lmdb::put(txn, paths, path, encode_path_entry(entry));
}

int IndexTables::remove_path(MDB_txn* txn, const std::string& path) {
  auto old = get_path(txn, path);
  if (!old) return 0;
  int rc = drop_ref(txn, old->sha256);
  if (rc == 0) rc = lmdb::del_if_present(txn, paths, path);
  return rc;
}

int IndexTables::raise_last_access(MDB_txn* txn, const std::string& sha, int64_t at) {
  auto b = get_blob(txn, sha);
  if (!b || b->last_access >= at) return 0;  // gone since, or already newer
  b->last_access = at;
  return lmdb::put(txn, blobs, sha, encode_blob_entry(*b));  // same size: the totals stay
}

// Moves one reference. A decrement of a blob without a record is a no-op:
// creating a zero-size garbage record would hide the real size.
int IndexTables::add_ref(MDB_txn* txn, const std::string& sha, uint64_t size) {
  const auto before = get_blob(txn, sha);
  BlobEntry b = before.value_or(BlobEntry{});
  b.refs += 1;
  b.size = size;  // same address, same bytes: any entry's size is the blob's
  return write_blob(txn, sha, before, b);
}

int IndexTables::drop_ref(MDB_txn* txn, const std::string& sha) {
  auto b = get_blob(txn, sha);
  if (!b) return 0;
  if (b->refs > 0) b->refs -= 1;
  return lmdb::put(txn, blobs, sha, encode_blob_entry(*b));  // same size: the totals stay
}

// Blob records are added, dropped or resized only through these two, so
// "totals" follows them.
int IndexTables::write_blob(MDB_txn* txn, const std::string& sha,
                            const std::optional<BlobEntry>& before, const BlobEntry& after) {
  int rc = lmdb::put(txn, blobs, sha, encode_blob_entry(after));
  if (rc == 0 && (!before || before->size != after.size)) {
    rc = adjust_totals(txn, before, after);
  }
  return rc;
}

int IndexTables::erase_blob(MDB_txn* txn, const std::string& sha,
                            const std::optional<BlobEntry>& before) {
  int rc = lmdb::del(txn, blobs, sha);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc == 0 && before) rc = adjust_totals(txn, before, std::nullopt);
  return rc;
}

int IndexTables::adjust_totals(MDB_txn* txn, const std::optional<BlobEntry>& before,
                               const std::optional<BlobEntry>& after) {
  auto t = get_totals(txn);
  // Missing only in an index no writable open has seen yet (open() creates
  // it); stats() counts by walking until then.
  if (!t) return 0;
  if (before) {
    t->bytes -= std::min(t->bytes, before->size);
    t->objects -= std::min<uint64_t>(t->objects, 1);
  }
  if (after) {
    t->bytes += after->size;
    t->objects += 1;
  }
  return put_totals(txn, *t);
}

int IndexTables::put_totals(MDB_txn* txn, const BlobTotals& totals) {
  return lmdb::put(txn, meta, kMetaTotalsKey, encode_totals(totals));
}

int IndexTables::put_schema(MDB_txn* txn, uint32_t version) {
  return lmdb::put(txn, meta, kMetaSchemaKey, encode_schema_version(version));
}

int IndexTables::put_clean_mark(MDB_txn* txn) {
  return lmdb::put(txn, meta, kMetaCleanKey, encode_clean_mark(mdb_txn_id(txn)));
}

int IndexTables::take_clean_mark(MDB_txn* txn, bool& clean) {
  clean = false;
  std::string_view v;
  const int rc = lmdb::get(txn, meta, kMetaCleanKey, v);
  if (rc != 0) return rc == MDB_NOTFOUND ? 0 : rc;
  // Clean only when the mark's transaction is the one before this one.
  const auto at = decode_clean_mark(v);
  clean = at && *at + 1 == mdb_txn_id(txn);
  return lmdb::del_if_present(txn, meta, kMetaCleanKey);
}

Result<void> IndexTables::rebuild_refs(MDB_txn* txn, std::vector<std::string>& dropped) {
  if (auto r = fix_blob_records(txn, dropped); !r) return r;
  // The totals are checked here too: recovery runs this at every mount,
  // and a release that wrote blob records without adjusting them (a
  // downgrade), or a damaged record, must not skew eviction for long.
  return fix_totals(txn);
}

Result<void> IndexTables::fix_blob_records(MDB_txn* txn, std::vector<std::string>& dropped) {
  Wants want;
  BlobRecords existing;
  int walk = count_wanted_refs(txn, paths, want);
  if (walk == 0) walk = collect_blob_records(txn, blobs, existing);
  if (walk != 0) return lmdb::error(walk, "cursor");
  for (auto& [sha, b] : existing) {
    auto it = want.find(sha);
    if (it == want.end()) {
      if (int rc = erase_blob(txn, sha, b); rc != 0) {
        return lmdb::error(rc, "drop blob record " + sha);
      }
      dropped.push_back(sha);
      continue;
    }
    BlobEntry fixed = b.value_or(BlobEntry{});  // an unreadable record is rewritten
    fixed.refs = it->second.refs;
    fixed.size = it->second.size;
    if (!b || b->refs != fixed.refs || b->size != fixed.size) {
      if (int rc = write_blob(txn, sha, b, fixed); rc != 0) {
        return lmdb::error(rc, "refcount of " + sha);
      }
    }
    want.erase(it);
  }
  for (auto& [sha, w] : want) {  // entries whose blob record was missing
    if (!is_sha256_hex(sha)) continue;
    if (int rc = write_blob(txn, sha, std::nullopt, BlobEntry{w.size, w.refs, 0}); rc != 0) {
      return lmdb::error(rc, "blob record " + sha);
    }
  }
  return {};
}

Result<void> IndexTables::fix_totals(MDB_txn* txn) {
  const BlobTotals counted = count_totals(txn);
  const auto stored = get_totals(txn);
  if (stored && *stored == counted) return {};
  if (stored) {
    log()->warn("index: totals said {} blobs ({} bytes), the records hold {} ({} bytes); fixed",
                stored->objects, stored->bytes, counted.objects, counted.bytes);
  }
  if (int rc = put_totals(txn, counted); rc != 0) return lmdb::error(rc, "index totals");
  return {};
}

}  // namespace netbootfs::cache
