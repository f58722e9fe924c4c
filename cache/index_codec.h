// The stored form of the index's records: pure encoding and decoding, no LMDB.
//
// Contract
// - Layout, fields in host byte order (a cache moves between machines only
//   through `netbootfsctl export`, never as a raw LMDB file):
//
//     "paths" value  PathEntry: u8 format=1, u64 size, i64 last_modified,
//                    i64 validated_at, u16 n + n bytes sha256, u16 n + n bytes etag
//     "blobs" value  BlobEntry: u8 format=1, u64 size, u32 refs, i64 last_access
//     meta "schema"  u32 version
//     meta "totals"  u8 format=1, u64 blob bytes, u64 blob records
//     meta "clean"   u64 id of the transaction that wrote it (set_clean_mark)
//
//   This is the on-disk format of every existing cache: changing a byte of
//   it needs a new format byte (records) or Index::kSchemaVersion.
// - A decoder returns std::nullopt for input it cannot read: empty,
//   truncated, a string length past the end, a format byte other than 1.
//   The index treats such a record as missing, so there is no errno to give.
//   Bytes after the last field of a PathEntry, BlobEntry or totals record are
//   ignored (they always were); the schema version and the clean mark must
//   have their exact size.
// - A string longer than kMaxStoredString (only an ETag could be: no real
//   server sends one of 64 KiB) is stored as empty, which only costs an
//   unconditional GET on revalidation. Strings are bytes: no check of their
//   content (Index checks the sha256 before it stores one).
// - Pure functions of their arguments: safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "cache/index.h"

namespace netbootfs::cache {

// The keys of the records in the "meta" table.
inline constexpr std::string_view kMetaSchemaKey = "schema";
inline constexpr std::string_view kMetaTotalsKey = "totals";
inline constexpr std::string_view kMetaCleanKey = "clean";

inline constexpr size_t kMaxStoredString = 0xffff;

// The running sums of the (decodable) blob records.
struct BlobTotals {
  uint64_t bytes = 0;
  uint64_t objects = 0;
  bool operator==(const BlobTotals& o) const { return bytes == o.bytes && objects == o.objects; }
  bool operator!=(const BlobTotals& o) const { return !(*this == o); }
};

std::string encode_path_entry(const PathEntry& e);
std::optional<PathEntry> decode_path_entry(std::string_view in);

std::string encode_blob_entry(const BlobEntry& e);
std::optional<BlobEntry> decode_blob_entry(std::string_view in);

std::string encode_totals(const BlobTotals& t);
std::optional<BlobTotals> decode_totals(std::string_view in);

std::string encode_schema_version(uint32_t version);
std::optional<uint32_t> decode_schema_version(std::string_view in);

std::string encode_clean_mark(uint64_t txn_id);
std::optional<uint64_t> decode_clean_mark(std::string_view in);

}  // namespace netbootfs::cache
