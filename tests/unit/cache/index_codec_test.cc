// The index's stored records: the exact bytes of each layout (the on-disk
// format of existing caches), round trips at the boundary values, and clean
// rejection of empty, truncated, mis-formatted and garbage input.
#include "cache/index_codec.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace netbootfs::cache {
namespace {

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();
constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kI64Min = std::numeric_limits<int64_t>::min();

std::string bytes(std::initializer_list<int> b) {
  std::string out;
  for (int c : b) out += static_cast<char>(c);
  return out;
}

PathEntry path_entry(std::string sha256, uint64_t size, std::string etag, int64_t last_modified,
                     int64_t validated_at) {
  PathEntry e;
  e.sha256 = std::move(sha256);
  e.size = size;
  e.etag = std::move(etag);
  e.last_modified = last_modified;
  e.validated_at = validated_at;
  return e;
}

void expect_same(const PathEntry& want, const std::optional<PathEntry>& got) {
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->sha256, want.sha256);
  EXPECT_EQ(got->size, want.size);
  EXPECT_EQ(got->etag, want.etag);
  EXPECT_EQ(got->last_modified, want.last_modified);
  EXPECT_EQ(got->validated_at, want.validated_at);
}

void expect_same(const BlobEntry& want, const std::optional<BlobEntry>& got) {
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->size, want.size);
  EXPECT_EQ(got->refs, want.refs);
  EXPECT_EQ(got->last_access, want.last_access);
}

const std::string kSha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

// The bytes an existing cache holds. Host byte order: written out for a
// little-endian host.
TEST(IndexCodec, LayoutIsTheOnDiskFormat) {
  if (__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__) GTEST_SKIP() << "the table is little-endian";
  struct Case {
    const char* name;
    std::string encoded;
    std::string want;
  };
  // One field a line.
  // clang-format off
  const std::vector<Case> cases = {
      {"path entry", encode_path_entry(path_entry("ab", 0x0102030405060708, "\"e\"", -1, 0x10)),
       bytes({1,                                                 // format
              8, 7, 6, 5, 4, 3, 2, 1,                            // size
              0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,    // last_modified
              0x10, 0, 0, 0, 0, 0, 0, 0,                         // validated_at
              2, 0, 'a', 'b',                                    // sha256
              3, 0, '"', 'e', '"'})},                            // etag
      {"path entry, empty strings", encode_path_entry(PathEntry{}),
       bytes({1,
              0, 0, 0, 0, 0, 0, 0, 0,
              0, 0, 0, 0, 0, 0, 0, 0,
              0, 0, 0, 0, 0, 0, 0, 0,
              0, 0,
              0, 0})},
      {"blob entry", encode_blob_entry(BlobEntry{5, 0x01020304, -2}),
       bytes({1,                                                 // format
              5, 0, 0, 0, 0, 0, 0, 0,                            // size
              4, 3, 2, 1,                                        // refs
              0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})}, // last_access
      {"totals", encode_totals(BlobTotals{1, 2}),
       bytes({1,                                                 // format
              1, 0, 0, 0, 0, 0, 0, 0,                            // bytes
              2, 0, 0, 0, 0, 0, 0, 0})},                         // records
      {"schema version", encode_schema_version(1), bytes({1, 0, 0, 0})},
      {"clean mark", encode_clean_mark(0x0102), bytes({2, 1, 0, 0, 0, 0, 0, 0})},
  };
  // clang-format on
  for (const auto& c : cases) EXPECT_EQ(c.encoded, c.want) << c.name;
}

TEST(IndexCodec, PathEntryRoundTrips) {
  const std::vector<PathEntry> cases = {
      PathEntry{},
      path_entry(kSha, 1234, "\"v1\"", 1600000000, 1700000000),
      path_entry(kSha, kU64Max, "W/\"weak\"", kI64Max, kI64Max),
      path_entry(kSha, 0, "", kI64Min, kI64Min),
      path_entry("", 7, "only an etag", 0, 0),
      path_entry(kSha, 1, std::string("nul\0inside\xff", 11), -1, 1),
      path_entry(kSha, 1, std::string(kMaxStoredString, 'x'), 0, 0),  // the longest kept
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    expect_same(cases[i], decode_path_entry(encode_path_entry(cases[i])));
  }
}

TEST(IndexCodec, OversizedStringIsStoredEmpty) {
  const std::string too_long(kMaxStoredString + 1, 'e');
  const PathEntry long_etag = path_entry(kSha, 9, too_long, 3, 4);
  expect_same(path_entry(kSha, 9, "", 3, 4), decode_path_entry(encode_path_entry(long_etag)));
  const PathEntry long_sha = path_entry(too_long, 9, "\"x\"", 3, 4);
  expect_same(path_entry("", 9, "\"x\"", 3, 4), decode_path_entry(encode_path_entry(long_sha)));
}

TEST(IndexCodec, BlobEntryRoundTrips) {
  const std::vector<BlobEntry> cases = {
      BlobEntry{},
      BlobEntry{4096, 3, 1700000000},
      BlobEntry{kU64Max, std::numeric_limits<uint32_t>::max(), kI64Max},
      BlobEntry{0, 0, kI64Min},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    expect_same(cases[i], decode_blob_entry(encode_blob_entry(cases[i])));
  }
}

TEST(IndexCodec, MetaRecordsRoundTrip) {
  for (const BlobTotals t : {BlobTotals{}, BlobTotals{1, 1}, BlobTotals{kU64Max, kU64Max}}) {
    EXPECT_EQ(decode_totals(encode_totals(t)), t);
  }
  for (const uint32_t v : {0u, 1u, std::numeric_limits<uint32_t>::max()}) {
    EXPECT_EQ(decode_schema_version(encode_schema_version(v)), v);
  }
  for (const uint64_t id : {uint64_t{0}, uint64_t{1}, kU64Max}) {
    EXPECT_EQ(decode_clean_mark(encode_clean_mark(id)), id);
  }
}

// Whether each decoder reads `in` (the value itself is checked elsewhere).
struct Decoder {
  const char* name;
  std::function<bool(std::string_view)> reads;
  std::string valid;  // one encoding it reads
  bool fixed_size;    // a meta value without a format byte, read only at its exact size
};

std::vector<Decoder> decoders() {
  return {
      {"path entry", [](std::string_view in) { return decode_path_entry(in).has_value(); },
       encode_path_entry(path_entry(kSha, 10, "\"etag\"", 1, 2)), false},
      {"blob entry", [](std::string_view in) { return decode_blob_entry(in).has_value(); },
       encode_blob_entry(BlobEntry{10, 1, 2}), false},
      {"totals", [](std::string_view in) { return decode_totals(in).has_value(); },
       encode_totals(BlobTotals{10, 1}), false},
      {"schema version", [](std::string_view in) { return decode_schema_version(in).has_value(); },
       encode_schema_version(1), true},
      {"clean mark", [](std::string_view in) { return decode_clean_mark(in).has_value(); },
       encode_clean_mark(42), true},
  };
}

TEST(IndexCodec, EveryTruncationIsRejected) {
  for (const auto& d : decoders()) {
    ASSERT_TRUE(d.reads(d.valid)) << d.name;
    for (size_t n = 0; n < d.valid.size(); ++n) {
      EXPECT_FALSE(d.reads(std::string_view(d.valid).substr(0, n)))
          << d.name << ", " << n << " bytes";
    }
  }
}

TEST(IndexCodec, UnknownFormatIsRejected) {
  for (const auto& d : decoders()) {
    if (d.fixed_size) continue;  // no format byte
    for (const int format : {0, 2, 0x7f, 0xff}) {
      std::string in = d.valid;
      in[0] = static_cast<char>(format);
      EXPECT_FALSE(d.reads(in)) << d.name << ", format " << format;
    }
  }
}

// The fixed-size meta values must be exact; the records ignore what follows
// their last field (as the index always did).
TEST(IndexCodec, TrailingBytes) {
  for (const auto& d : decoders()) {
    EXPECT_EQ(d.reads(d.valid + '\0'), !d.fixed_size) << d.name;
    EXPECT_EQ(d.reads(d.valid + std::string(100, 'z')), !d.fixed_size) << d.name;
  }
  const PathEntry e = path_entry(kSha, 10, "\"etag\"", 1, 2);
  expect_same(e, decode_path_entry(encode_path_entry(e) + "more"));
  EXPECT_FALSE(decode_schema_version(bytes({1, 0, 0, 0, 0, 0, 0, 0})).has_value());
}

TEST(IndexCodec, StringLengthPastTheEndIsRejected) {
  const std::string good = encode_path_entry(path_entry("ab", 1, "xyz", 0, 0));
  const size_t sha_len = 1 + 8 * 3;         // where the sha256's u16 length lies
  const size_t etag_len = sha_len + 2 + 2;  // and the etag's
  struct Case {
    const char* name;
    size_t at;
    uint16_t length;
  };
  const std::vector<Case> cases = {
      {"etag one past the end", etag_len, 4},
      {"etag at the u16 limit", etag_len, 0xffff},
      {"sha256 swallowing the etag and more", sha_len, 100},
      {"sha256 at the u16 limit", sha_len, 0xffff},
  };
  for (const auto& c : cases) {
    std::string in = good;
    in[c.at] = static_cast<char>(c.length & 0xff);
    in[c.at + 1] = static_cast<char>(c.length >> 8);
    EXPECT_FALSE(decode_path_entry(in).has_value()) << c.name;
  }
}

// Random bytes never crash a decoder (the sanitizer build checks the reads),
// and whatever one accepts is read exactly: encoding it again gives back the
// bytes it consumed.
TEST(IndexCodec, GarbageIsReadExactlyOrRejected) {
  std::mt19937 rng(20240601);
  std::uniform_int_distribution<int> byte(0, 255), len(0, 80);
  int decoded = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string in(static_cast<size_t>(len(rng)), '\0');
    for (auto& c : in) c = static_cast<char>(byte(rng) % (i % 3 == 0 ? 4 : 256));
    if (!in.empty() && i % 2 == 0) in[0] = 1;  // past the format byte half the time
    if (auto e = decode_path_entry(in)) {
      ++decoded;
      EXPECT_EQ(encode_path_entry(*e), in.substr(0, encode_path_entry(*e).size()));
    }
    if (auto e = decode_blob_entry(in)) {
      ++decoded;
      EXPECT_EQ(encode_blob_entry(*e), in.substr(0, 21));
    }
    if (auto t = decode_totals(in)) {
      ++decoded;
      EXPECT_EQ(encode_totals(*t), in.substr(0, 17));
    }
    if (auto v = decode_schema_version(in)) {
      EXPECT_EQ(encode_schema_version(*v), in);
    }
    if (auto id = decode_clean_mark(in)) {
      EXPECT_EQ(encode_clean_mark(*id), in);
    }
  }
  EXPECT_GT(decoded, 100);  // the inputs did reach past the checks
}

}  // namespace
}  // namespace netbootfs::cache
