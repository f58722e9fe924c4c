#include "cache/index_codec.h"

#include <cstring>

namespace netbootfs::cache {
namespace {

// The leading format byte lets a later release read old records while it
// rewrites them lazily.
constexpr uint8_t kFormat = 1;

template <class T>
void put_raw(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <class T>
bool get_raw(std::string_view& in, T& v) {
  if (in.size() < sizeof v) return false;
  std::memcpy(&v, in.data(), sizeof v);
  in.remove_prefix(sizeof v);
  return true;
}

void put_str(std::string& out, std::string_view s) {
  if (s.size() > kMaxStoredString) s = {};
  put_raw<uint16_t>(out, static_cast<uint16_t>(s.size()));
  out += s;
}

bool get_str(std::string_view& in, std::string& s) {
  uint16_t n;
  if (!get_raw(in, n) || in.size() < n) return false;
  s.assign(in.data(), n);
  in.remove_prefix(n);
  return true;
}

bool get_format(std::string_view& in) {
  uint8_t f;
  return get_raw(in, f) && f == kFormat;
}

// A value that is the whole record.
template <class T>
std::optional<T> get_exact(std::string_view in) {
  T v;
  if (!get_raw(in, v) || !in.empty()) return std::nullopt;
  return v;
}

}  // namespace

std::string encode_path_entry(const PathEntry& e) {
  std::string out;
  out.reserve(1 + 8 * 3 + 2 + e.sha256.size() + 2 + e.etag.size());
  put_raw(out, kFormat);
  put_raw(out, e.size);
  put_raw(out, e.last_modified);
  put_raw(out, e.validated_at);
  put_str(out, e.sha256);
  put_str(out, e.etag);
  return out;
}

std::optional<PathEntry> decode_path_entry(std::string_view in) {
  PathEntry e;
  if (!get_format(in) || !get_raw(in, e.size) || !get_raw(in, e.last_modified) ||
      !get_raw(in, e.validated_at) || !get_str(in, e.sha256) || !get_str(in, e.etag)) {
    return std::nullopt;
  }
  return e;
}

std::string encode_blob_entry(const BlobEntry& e) {
  std::string out;
  out.reserve(1 + 8 + 4 + 8);
  put_raw(out, kFormat);
  put_raw(out, e.size);
  put_raw(out, e.refs);
  put_raw(out, e.last_access);
  return out;
}

std::optional<BlobEntry> decode_blob_entry(std::string_view in) {
  BlobEntry e;
  if (!get_format(in) || !get_raw(in, e.size) || !get_raw(in, e.refs) ||
      !get_raw(in, e.last_access)) {
    return std::nullopt;
  }
  return e;
}

std::string encode_totals(const BlobTotals& t) {
  std::string out;
  put_raw(out, kFormat);
  put_raw(out, t.bytes);
  put_raw(out, t.objects);
  return out;
}

std::optional<BlobTotals> decode_totals(std::string_view in) {
  BlobTotals t;
  if (!get_format(in) || !get_raw(in, t.bytes) || !get_raw(in, t.objects)) return std::nullopt;
  return t;
}

std::string encode_schema_version(uint32_t version) {
  std::string out;
  put_raw(out, version);
  return out;
}

std::optional<uint32_t> decode_schema_version(std::string_view in) {
  return get_exact<uint32_t>(in);
}

std::string encode_clean_mark(uint64_t txn_id) {
  std::string out;
  put_raw(out, txn_id);
  return out;
}

std::optional<uint64_t> decode_clean_mark(std::string_view in) { return get_exact<uint64_t>(in); }

}  // namespace netbootfs::cache
