#include "cache/recovery.h"

#include <unistd.h>

#include <map>
#include <set>

namespace netbootfs::cache {
namespace {

std::optional<std::string> hash_file(int fd) {
  Sha256 h;
  char buf[1 << 16];
  off_t off = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buf, sizeof buf, off);
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    h.update(buf, static_cast<size_t>(n));
    off += n;
  }
  return h.hex_digest();
}

}  // namespace

Result<RecoveryReport> recover(Index& index, BlobStore& blobs) {
  RecoveryReport report;
  report.temp_files_removed = blobs.clear_tmp();
  // Entries must point at a complete blob of their size.
  for (const auto& [path, entry] : index.list_paths()) {
    const auto size = blobs.blob_size(entry.sha256);
    if (!size || *size != entry.size) {
      if (auto r = index.remove_path(path); !r) return r.error();
      report.entries_dropped++;
    }
  }
  // Refcounts are recounted from the entries, so a crash between two writes
  // never leaves a count that keeps garbage or frees a live blob.
  auto dropped = index.rebuild_refs();
  if (!dropped) return dropped.error();
  std::set<std::string> live;
  for (const auto& [sha, b] : index.list_blobs()) live.insert(sha);
  for (const auto& sha : blobs.list()) {
    if (live.count(sha)) continue;
    if (auto r = blobs.remove(sha); !r) return r.error();
    report.blobs_removed++;
  }
  return report;
}

std::vector<std::string> verify(const Index& index, const BlobStore& blobs) {
  std::vector<std::string> problems;
  std::map<std::string, uint32_t> refs;
  for (const auto& [path, entry] : index.list_paths()) {
    refs[entry.sha256]++;
    const auto size = blobs.blob_size(entry.sha256);
    if (!size) {
      problems.push_back(path + ": blob " + entry.sha256 + " is missing");
    } else if (*size != entry.size) {
      problems.push_back(path + ": blob " + entry.sha256 + " has " + std::to_string(*size) +
                         " bytes, the entry says " + std::to_string(entry.size));
    }
    if (!index.get_blob(entry.sha256)) {
      problems.push_back(path + ": no blob record for " + entry.sha256);
    }
  }
  for (const auto& [sha, b] : index.list_blobs()) {
    const auto it = refs.find(sha);
    const uint32_t actual = it == refs.end() ? 0 : it->second;
    if (b.refs != actual) {
      problems.push_back("blob " + sha + ": refcount " + std::to_string(b.refs) + ", " +
                         std::to_string(actual) + " entries point at it");
    }
  }
  for (const auto& sha : blobs.list()) {
    if (!refs.count(sha)) problems.push_back("blob " + sha + ": no entry refers to it");
    auto fd = blobs.open_blob(sha);
    if (!fd) {
      problems.push_back("blob " + sha + ": unreadable: " + fd.error().message);
      continue;
    }
    auto digest = hash_file(fd->get());
    if (!digest || *digest != sha) {
      problems.push_back("blob " + sha + ": content hashes to " + digest.value_or("(read error)"));
    }
  }
  return problems;
}

}  // namespace netbootfs::cache
