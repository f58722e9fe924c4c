#include "cache/bundle.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "cache/util/log.h"

namespace netbootfs::cache {
namespace {

constexpr const char* kManifest = "manifest.json";
constexpr const char* kFormat = "netbootfs-bundle";
constexpr int kVersion = 1;
constexpr size_t kMaxManifest = 256u << 20;  // ~1M entries; refuses a hostile size
constexpr size_t kChunk = 1u << 20;

std::shared_ptr<spdlog::logger> log() {
  static auto l = logger("bundle");
  return l;
}

struct ArchiveWriteDeleter {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct ArchiveReadDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct EntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using WriteArchive = std::unique_ptr<archive, ArchiveWriteDeleter>;
using ReadArchive = std::unique_ptr<archive, ArchiveReadDeleter>;
using Entry = std::unique_ptr<archive_entry, EntryDeleter>;

Error archive_error(archive* a, const std::string& what) {
  const int e = archive_errno(a);
  const char* s = archive_error_string(a);
  return Error{e > 0 ? e : EIO, what + ": " + (s ? s : "archive error")};
}

Result<void> write_member(archive* a, const std::string& name, uint64_t size, int64_t mtime,
                          const std::function<Result<void>(archive*)>& body) {
  Entry e(archive_entry_new());
  archive_entry_set_pathname(e.get(), name.c_str());
  archive_entry_set_size(e.get(), static_cast<la_int64_t>(size));
  archive_entry_set_filetype(e.get(), AE_IFREG);
  archive_entry_set_perm(e.get(), 0644);
  archive_entry_set_mtime(e.get(), mtime, 0);
  if (archive_write_header(a, e.get()) != ARCHIVE_OK) return archive_error(a, "bundle " + name);
  return body(a);
}

Result<void> fsync_path(const std::string& path, int flags) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (!fd.valid() || ::fsync(fd.get()) != 0) {
    return Error{errno, "fsync " + path + ": " + std::strerror(errno)};
  }
  return {};
}

std::string dir_of(const std::string& file) {
  const auto slash = file.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : file.substr(0, slash);
}

}  // namespace

bool is_bundle_path(std::string_view path) {
  if (path.empty() || path.front() == '/' || path.back() == '/') return false;
  for (unsigned char c : path) {
    if (c < 0x20 || c == 0x7f) return false;  // NUL, the internal prefix, controls
  }
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view seg = path.substr(start, end - start);
    if (seg.empty() || seg == "." || seg == "..") return false;
    start = end + 1;
  }
  return true;
}

Result<BundleSummary> export_bundle(const Index& index, const BlobStore& blobs, int64_t since,
                                    const std::string& file) {
  BundleSummary sum;
  nlohmann::json entries = nlohmann::json::array();
  std::map<std::string, uint64_t> needed;  // sha256 -> size
  for (const auto& [path, e] : index.list_paths()) {
    if (!is_bundle_path(path)) continue;  // internal entries are derived again
    if (since > 0 && e.validated_at < since) continue;
    if (blobs.blob_size(e.sha256) != e.size) {
      return Error{EIO, "cached blob of " + path + " is missing or damaged (run verify)"};
    }
    entries.push_back({{"path", path},
                       {"sha256", e.sha256},
                       {"size", e.size},
                       {"etag", e.etag},
                       {"last_modified", e.last_modified},
                       {"validated_at", e.validated_at}});
    needed.emplace(e.sha256, e.size);
    sum.entries++;
  }
  const int64_t now = ::time(nullptr);
  const std::string manifest = nlohmann::json{{"format", kFormat},
                                              {"version", kVersion},
                                              {"created", now},
                                              {"since", since},
                                              {"entries", std::move(entries)}}
                                   .dump(1);

  const std::string tmp = file + ".tmp";
  WriteArchive a(archive_write_new());
  if (!a) return Error{ENOMEM, "archive_write_new"};
  archive_write_set_format_pax_restricted(a.get());
  if (archive_write_open_filename(a.get(), tmp.c_str()) != ARCHIVE_OK) {
    return archive_error(a.get(), "cannot write " + tmp);
  }
  auto fail = [&](Error e) -> Result<BundleSummary> {
    a.reset();
    ::unlink(tmp.c_str());
    return e;
  };
  auto r = write_member(a.get(), kManifest, manifest.size(), now, [&](archive* w) -> Result<void> {
    if (archive_write_data(w, manifest.data(), manifest.size()) !=
        static_cast<la_ssize_t>(manifest.size())) {
      return archive_error(w, "bundle manifest");
    }
    return {};
  });
  if (!r) return fail(r.error());
  std::string buf(kChunk, '\0');
  for (const auto& [sha, size] : needed) {
    auto fd = blobs.open_blob(sha);
    if (!fd) return fail(fd.error());
    r = write_member(a.get(), "blobs/" + sha, size, now, [&](archive* w) -> Result<void> {
      uint64_t off = 0;
      while (off < size) {
        const ssize_t n = ::pread(fd->get(), buf.data(), std::min<uint64_t>(kChunk, size - off),
                                  static_cast<off_t>(off));
        if (n <= 0) return Error{n < 0 ? errno : EIO, "reading blob " + sha};
        if (archive_write_data(w, buf.data(), static_cast<size_t>(n)) != n) {
          return archive_error(w, "bundle blob " + sha);
        }
        off += static_cast<uint64_t>(n);
      }
      return {};
    });
    if (!r) return fail(r.error());
    sum.blobs++;
    sum.bytes += size;
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK) return fail(archive_error(a.get(), tmp));
  a.reset();
  if (auto s = fsync_path(tmp, O_RDONLY); !s) return fail(s.error());
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    return fail(Error{errno, "rename " + tmp + ": " + std::strerror(errno)});
  }
  if (auto s = fsync_path(dir_of(file), O_RDONLY | O_DIRECTORY); !s) return s.error();
  log()->info("exported {} entries ({} blobs, {} bytes) to {}", sum.entries, sum.blobs, sum.bytes,
              file);
  return sum;
}

Result<std::vector<ManifestEntry>> parse_manifest(const std::string& text) {
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Error{EINVAL, "the manifest is not JSON"};
  if (j.value("format", "") != kFormat) return Error{EINVAL, "not a netbootfs bundle"};
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"] != kVersion) {
    return Error{EINVAL, "unsupported bundle version"};
  }
  if (!j.contains("entries") || !j["entries"].is_array()) {
    return Error{EINVAL, "the manifest has no entries list"};
  }
  std::vector<ManifestEntry> out;
  std::set<std::string> seen;
  for (const auto& e : j["entries"]) {
    if (!e.is_object() || !e.contains("path") || !e["path"].is_string() || !e.contains("sha256") ||
        !e["sha256"].is_string() || !e.contains("size") || !e["size"].is_number_unsigned()) {
      return Error{EINVAL, "a manifest entry lacks path, sha256 or size"};
    }
    ManifestEntry m;
    m.path = e["path"].get<std::string>();
    if (!is_bundle_path(m.path)) return Error{EINVAL, "manifest path outside the tree: " + m.path};
    if (!seen.insert(m.path).second) return Error{EINVAL, "manifest path twice: " + m.path};
    m.entry.sha256 = e["sha256"].get<std::string>();
    if (!is_sha256_hex(m.entry.sha256)) {
      return Error{EINVAL, "manifest digest malformed for " + m.path};
    }
    m.entry.size = e["size"].get<uint64_t>();
    if (e.contains("etag") && e["etag"].is_string()) m.entry.etag = e["etag"].get<std::string>();
    if (e.contains("last_modified") && e["last_modified"].is_number_integer()) {
      m.entry.last_modified = e["last_modified"].get<int64_t>();
    }
    if (e.contains("validated_at") && e["validated_at"].is_number_integer()) {
      m.entry.validated_at = e["validated_at"].get<int64_t>();
    }
    out.push_back(std::move(m));
  }
  return out;
}

Result<std::map<std::string, uint64_t>> manifest_blobs(const std::vector<ManifestEntry>& manifest) {
  std::map<std::string, uint64_t> wanted;
  for (const auto& m : manifest) {
    auto [it, fresh] = wanted.emplace(m.entry.sha256, m.entry.size);
    if (!fresh && it->second != m.entry.size) {
      return Error{EINVAL, "two sizes for blob " + m.entry.sha256};
    }
  }
  return wanted;
}

namespace {

Result<ReadArchive> open_bundle(const std::string& file) {
  ReadArchive a(archive_read_new());
  if (!a) return Error{ENOMEM, "archive_read_new"};
  archive_read_support_format_tar(a.get());
  archive_read_support_filter_all(a.get());  // a bundle may have been compressed in transit
  if (archive_read_open_filename(a.get(), file.c_str(), kChunk) != ARCHIVE_OK) {
    return archive_error(a.get(), "cannot read " + file);
  }
  return a;
}

// The first member, which must be the manifest, read and checked whole.
Result<std::vector<ManifestEntry>> read_manifest(archive* a) {
  archive_entry* ae = nullptr;
  if (archive_read_next_header(a, &ae) != ARCHIVE_OK) {
    return archive_error(a, "not a tar archive");
  }
  if (std::strcmp(archive_entry_pathname(ae), kManifest) != 0 || !archive_entry_size_is_set(ae) ||
      archive_entry_size(ae) < 0 || static_cast<size_t>(archive_entry_size(ae)) > kMaxManifest) {
    return Error{EINVAL, "the first member is not a manifest of sane size"};
  }
  std::string text(static_cast<size_t>(archive_entry_size(ae)), '\0');
  if (archive_read_data(a, text.data(), text.size()) != static_cast<la_ssize_t>(text.size())) {
    return archive_error(a, "reading the manifest");
  }
  return parse_manifest(text);
}

// Streams the current member (`name`, blob `sha` of `size` bytes) into the
// store, verified on the way. Answers whether the store had it already.
Result<bool> stage_blob(archive* a, BlobStore& blobs, const std::string& name,
                        const std::string& sha, uint64_t size, std::string& buf) {
  auto tmp = blobs.create_temp();
  if (!tmp) return tmp.error();
  // Hashed here too, so that bytes that do not match their name are
  // dropped with the temp file instead of landing in the store.
  Sha256 hash;
  for (;;) {
    const la_ssize_t n = archive_read_data(a, buf.data(), buf.size());
    if (n < 0) return archive_error(a, "reading " + name);
    if (n == 0) break;
    if (tmp->size() + static_cast<uint64_t>(n) > size) {
      return Error{EINVAL, name + " is larger than the manifest says"};
    }
    hash.update(buf.data(), static_cast<size_t>(n));
    if (auto r = tmp->append(buf.data(), static_cast<size_t>(n)); !r) return r.error();
  }
  if (tmp->size() != size) {
    return Error{EINVAL, name + " has " + std::to_string(tmp->size()) +
                             " bytes, the manifest says " + std::to_string(size)};
  }
  if (hash.hex_digest() != sha) {
    return Error{EINVAL, name + " does not hash to its name (damaged bundle)"};
  }
  const bool present = blobs.blob_size(sha) == size;
  auto published = blobs.publish(*tmp);
  if (!published) return published.error();
  if (*published != sha) return Error{EIO, name + ": digest changed while publishing"};
  return present;
}

// Every member after the manifest: a blob the manifest wants, once each.
// Answers the blobs read; `added` gets those the store did not have, as
// they arrive, so that a failure later can remove them again.
Result<std::set<std::string>> stage_blobs(archive* a, BlobStore& blobs,
                                          const std::map<std::string, uint64_t>& wanted,
                                          BundleSummary& sum, std::vector<std::string>& added) {
  std::set<std::string> have;  // verified, from the bundle
  std::string buf(kChunk, '\0');
  archive_entry* ae = nullptr;
  for (;;) {
    const int rc = archive_read_next_header(a, &ae);
    if (rc == ARCHIVE_EOF) break;
    if (rc != ARCHIVE_OK) return archive_error(a, "reading the bundle");
    const std::string name = archive_entry_pathname(ae);
    const std::string sha = name.rfind("blobs/", 0) == 0 ? name.substr(6) : std::string();
    auto w = wanted.find(sha);
    if (w == wanted.end()) return Error{EINVAL, "unexpected member " + name};
    if (!have.insert(sha).second) return Error{EINVAL, "member twice: " + name};
    auto present = stage_blob(a, blobs, name, sha, w->second, buf);
    if (!present) return present.error();
    if (*present) {
      sum.blobs_present++;
    } else {
      added.push_back(sha);
    }
    sum.blobs++;
    sum.bytes += w->second;
  }
  return have;
}

// What the bundle did not carry must be in the store already.
Result<void> check_not_carried(const BlobStore& blobs,
                               const std::map<std::string, uint64_t>& wanted,
                               const std::set<std::string>& have, BundleSummary& sum) {
  for (const auto& [sha, size] : wanted) {
    if (!have.count(sha) && blobs.blob_size(sha) != size) {
      return Error{EINVAL, "blob " + sha + " is neither in the bundle nor in the cache"};
    }
    if (!have.count(sha)) sum.blobs_present++;
  }
  return {};
}

// All entries in one write transaction, then their blobs' access times.
Result<void> commit_entries(Index& index, std::vector<ManifestEntry> manifest,
                            const std::map<std::string, uint64_t>& wanted) {
  std::vector<std::pair<std::string, PathEntry>> puts;
  puts.reserve(manifest.size());
  for (auto& m : manifest) puts.emplace_back(std::move(m.path), std::move(m.entry));
  if (auto r = index.put_paths(std::move(puts)); !r) return r.error();
  // Imported bytes count as used now: eviction must not take them first.
  const int64_t now = ::time(nullptr);
  for (const auto& [sha, size] : wanted) index.note_access(sha, now);
  if (auto r = index.flush_access(); !r) log()->warn("access times: {}", r.error().message);
  return {};
}

}  // namespace

Result<BundleSummary> import_bundle(Index& index, BlobStore& blobs, const std::string& file) {
  BundleSummary sum;
  auto a = open_bundle(file);
  if (!a) return a.error();
  std::vector<std::string> added;  // blobs this import put into the store
  auto fail = [&](Error e) -> Result<BundleSummary> {
    for (const auto& sha : added) {
      // Only if still unreferenced: a concurrent writer may have taken it.
      auto b = index.get_blob(sha);
      if (!b || b->refs == 0) (void)blobs.remove(sha);
    }
    e.message = file + ": " + e.message + " (nothing imported)";
    return e;
  };
  auto manifest = read_manifest(a->get());
  if (!manifest) return fail(manifest.error());
  auto wanted = manifest_blobs(*manifest);
  if (!wanted) return fail(wanted.error());
  auto have = stage_blobs(a->get(), blobs, *wanted, sum, added);
  if (!have) return fail(have.error());
  if (auto r = check_not_carried(blobs, *wanted, *have, sum); !r) return fail(r.error());
  const size_t entries = manifest->size();
  if (auto r = commit_entries(index, std::move(*manifest), *wanted); !r) return fail(r.error());
  sum.entries = entries;
  log()->info("imported {} entries ({} blobs, {} bytes) from {}", sum.entries, sum.blobs, sum.bytes,
              file);
  return sum;
}

}  // namespace netbootfs::cache
