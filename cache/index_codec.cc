#include "cache/index_codec.h"

#include <cstring>
#include <type_traits>

namespace netbootfs::cache {
namespace {

// The leading format byte lets a later release read old records while it
// rewrites them lazily.
constexpr uint8_t kFormat = 1;

template <class T>
void put_field(std::string& out, T v) {
  static_assert(std::is_arithmetic_v<T>);
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

void put_field(std::string& out, const std::string& s) {
  // The whole string or nothing: a cut one would be another value.
  const std::string_view kept = s.size() > kMaxStoredString ? std::string_view() : s;
  put_field<uint16_t>(out, static_cast<uint16_t>(kept.size()));
  out += kept;
}

template <class T>
bool get_field(std::string_view& in, T& v) {
  static_assert(std::is_arithmetic_v<T>);
  if (in.size() < sizeof v) return false;
  std::memcpy(&v, in.data(), sizeof v);
  in.remove_prefix(sizeof v);
  return true;
}

bool get_field(std::string_view& in, std::string& s) {
  uint16_t n;
  if (!get_field(in, n) || in.size() < n) return false;
  s.assign(in.data(), n);
  in.remove_prefix(n);
  return true;
}

// A record: the format byte, then the fields in order.
template <class... T>
std::string put_record(size_t reserve, const T&... fields) {
  std::string out;
  out.reserve(reserve);
  put_field(out, kFormat);
  (put_field(out, fields), ...);
  return out;
}

template <class... T>
bool get_record(std::string_view in, T&... fields) {
  uint8_t format;
  return get_field(in, format) && format == kFormat && (get_field(in, fields) && ...);
}

// A value that is the whole record, without a format byte.
template <class T>
std::optional<T> get_exact(std::string_view in) {
  T v;
  if (!get_field(in, v) || !in.empty()) return std::nullopt;
  return v;
}

template <class T>
std::string put_exact(T v) {
  std::string out;
  put_field(out, v);
  return out;
}

}  // namespace

std::string encode_path_entry(const PathEntry& e) {
  return put_record(1 + 8 * 3 + 2 + e.sha256.size() + 2 + e.etag.size(), e.size, e.last_modified,
                    e.validated_at, e.sha256, e.etag);
}

std::optional<PathEntry> decode_path_entry(std::string_view in) {
  PathEntry e;
  if (!get_record(in, e.size, e.last_modified, e.validated_at, e.sha256, e.etag)) {
    return std::nullopt;
  }
  return e;
}

std::string encode_blob_entry(const BlobEntry& e) {
  return put_record(1 + 8 + 4 + 8, e.size, e.refs, e.last_access);
}

std::optional<BlobEntry> decode_blob_entry(std::string_view in) {
  BlobEntry e;
  if (!get_record(in, e.size, e.refs, e.last_access)) return std::nullopt;
  return e;
}

std::string encode_totals(const BlobTotals& t) { return put_record(1 + 8 + 8, t.bytes, t.objects); }

std::optional<BlobTotals> decode_totals(std::string_view in) {
  BlobTotals t;
  if (!get_record(in, t.bytes, t.objects)) return std::nullopt;
  return t;
}

std::string encode_schema_version(uint32_t version) { return put_exact(version); }

std::optional<uint32_t> decode_schema_version(std::string_view in) {
  return get_exact<uint32_t>(in);
}

std::string encode_clean_mark(uint64_t txn_id) { return put_exact(txn_id); }

std::optional<uint64_t> decode_clean_mark(std::string_view in) { return get_exact<uint64_t>(in); }

}  // namespace netbootfs::cache
