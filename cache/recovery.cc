#include "cache/recovery.h"

#include "cache/derived_keys.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <optional>
#include <set>

namespace netbootfs::cache {
namespace {


std::optional<std::string> hash_file(int fd) {
  // Tell the kernel the whole file is read once, front to back.
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  Sha256 h;
  std::string buf(size_t{1} << 16, '\0');
  off_t off = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    h.update(buf.data(), static_cast<size_t>(n));
    off += n;
  }
  return h.hex_digest();
}

// A blob file without a record is either a publish whose index write never
// happened, or garbage whose record was dropped (by recovery's refcount
// rebuild, or by an eviction whose unlink then failed).
Result<uint64_t> remove_orphan_blobs(Index& index, BlobStore& blobs) {
  std::set<std::string> live;
  for (const auto& [sha, b] : index.list_blobs()) live.insert(sha);
  uint64_t removed = 0;
  for (const auto& sha : blobs.list()) {
    if (live.count(sha)) continue;
    if (auto r = blobs.remove(sha); !r) return r.error();
    removed++;
  }
  return removed;
}

}  // namespace

// Every step leaves a state that the same procedure repairs, so a crash
// during recovery is recovered by the next start:
// - entries are dropped before anything is deleted, so no entry is ever
//   left pointing at a file we removed;
// - blob records are dropped (one transaction) before their files, so a
//   crash in between leaves files without a record, which the last step
//   deletes next time.
Result<RecoveryReport> recover(Index& index, BlobStore& blobs) {
  RecoveryReport report;
  // 1. Nothing in tmp/ belongs to a live download at start-up.
  report.temp_files_removed = blobs.clear_tmp();

  // 2. An entry must point at a complete blob of its size. A missing file is
  //    a rename lost with its directory; a wrong size a torn or damaged file.
  std::set<std::string> sources;  // blobs that a (kept) path points at
  std::vector<std::pair<std::string, std::string>> derived;  // key, source
  for (const auto& [path, entry] : index.list_paths()) {
    const auto size = blobs.blob_size(entry.sha256);
    if (size && *size == entry.size) {
      if (!is_internal_key(path)) {
        sources.insert(entry.sha256);
      } else if (auto src = derived_source(path)) {
        derived.emplace_back(path, std::move(*src));
      }
      continue;
    }
    if (auto r = index.remove_path(path); !r) return r.error();
    report.entries_dropped++;
  }
  // 2b. A rewritten output is only reached through its source: once no path
  //     points at the source (dropped above, or removed while the output
  //     stayed), the output is garbage. Its blob goes in steps 3 and 4.
  for (const auto& [key, source] : derived) {
    if (sources.count(source)) continue;
    if (auto r = index.remove_path(key); !r) return r.error();
    report.derived_dropped.push_back(key);
  }

  // 3. Refcounts are recounted from the entries rather than trusted: the
  //    stored count is what a bug or a damaged record would get wrong, and a
  //    count that is too low would free a live blob. This also drops the
  //    records nothing refers to (refs == 0) and creates missing ones.
  auto dropped = index.rebuild_refs();
  if (!dropped) return dropped.error();

  // 4. Blob files without a record, the ones step 3 just dropped included.
  auto orphans = remove_orphan_blobs(index, blobs);
  if (!orphans) return orphans.error();
  report.blobs_removed = *orphans;
  return report;
}

Result<RecoveryReport> recover_after_clean_stop(Index& index, BlobStore& blobs) {
  RecoveryReport report;
  report.temp_files_removed = blobs.clear_tmp();
  auto orphans = remove_orphan_blobs(index, blobs);
  if (!orphans) return orphans.error();
  report.blobs_removed = *orphans;
  return report;
}

Result<StartUpRecovery> recover_at_start(Index& index, BlobStore& blobs) {
  auto clean = index.take_clean_mark();
  if (!clean) return clean.error();
  auto rec = *clean ? recover_after_clean_stop(index, blobs) : recover(index, blobs);
  if (!rec) return rec.error();
  return StartUpRecovery{*clean, std::move(rec).value()};
}

std::vector<std::string> verify(const Index& index, const BlobStore& blobs) {
  std::vector<std::string> problems;
  const auto records_list = index.list_blobs();
  const std::map<std::string, BlobEntry> records(records_list.begin(), records_list.end());
  std::map<std::string, uint32_t> refs;  // sha256 -> entries pointing at it

  std::set<std::string> sources;
  std::vector<std::string> derived_keys;
  for (const auto& [path, entry] : index.list_paths()) {
    if (!is_internal_key(path)) sources.insert(entry.sha256);
    if (derived_source(path)) derived_keys.push_back(path);
    refs[entry.sha256]++;
    const auto size = blobs.blob_size(entry.sha256);
    if (!size) {
      problems.push_back(path + ": blob " + entry.sha256 + " is missing");
    } else if (*size != entry.size) {
      problems.push_back(path + ": blob " + entry.sha256 + " has " + std::to_string(*size) +
                         " bytes, the entry says " + std::to_string(entry.size));
    }
    const auto rec = records.find(entry.sha256);
    if (rec == records.end()) {
      problems.push_back(path + ": no blob record for " + entry.sha256);
    } else if (rec->second.size != entry.size) {
      problems.push_back(path + ": blob record " + entry.sha256 + " says " +
                         std::to_string(rec->second.size) + " bytes, the entry " +
                         std::to_string(entry.size));
    }
  }

  for (const auto& key : derived_keys) {
    const std::string source = *derived_source(key);
    if (sources.count(source)) continue;
    problems.push_back("rewritten output " + key.substr(1) + ": no path points at its source " +
                       source);
  }

  // The running totals must match the records (eviction trusts them).
  const Index::TotalsCheck totals = index.check_totals();
  if (totals.stored && (totals.kept.blobs != totals.counted.blobs ||
                        totals.kept.blob_bytes != totals.counted.blob_bytes)) {
    problems.push_back("index totals say " + std::to_string(totals.kept.blobs) + " blobs (" +
                       std::to_string(totals.kept.blob_bytes) + " bytes), the blob records hold " +
                       std::to_string(totals.counted.blobs) + " (" +
                       std::to_string(totals.counted.blob_bytes) + " bytes)");
  }

  for (const auto& [sha, b] : records) {
    const auto it = refs.find(sha);
    const uint32_t actual = it == refs.end() ? 0 : it->second;
    if (b.refs != actual) {
      problems.push_back("blob " + sha + ": refcount " + std::to_string(b.refs) + ", " +
                         std::to_string(actual) + " entries point at it");
    }
    // With entries, the missing file was reported once per entry above.
    if (actual == 0 && !blobs.blob_size(sha)) {
      problems.push_back("blob " + sha + ": record without a file");
    }
  }

  for (const auto& sha : blobs.list()) {
    if (!records.count(sha)) {
      problems.push_back("blob " + sha + ": file without a blob record");
    } else if (!refs.count(sha)) {
      problems.push_back("blob " + sha + ": no entry refers to it");
    }
    auto fd = blobs.open_blob(sha);
    if (!fd) {
      problems.push_back("blob " + sha + ": unreadable: " + fd.error().message);
      continue;
    }
    const auto digest = hash_file(fd->get());
    if (!digest) {
      problems.push_back("blob " + sha + ": read error while hashing");
    } else if (*digest != sha) {
      problems.push_back("blob " + sha + ": content hashes to " + *digest);
    }
  }
  return problems;
}

Result<RepairReport> repair(Index& index, BlobStore& blobs) {
  RepairReport report;
  // Corrupt blobs first: their entries then point at a missing file and are
  // dropped below like any entry without its blob (entries go before files
  // in recover(); here the file is garbage whatever the entries say).
  for (const auto& sha : blobs.list()) {
    auto fd = blobs.open_blob(sha);
    std::optional<std::string> digest;
    if (fd) digest = hash_file(fd->get());
    if (digest && *digest == sha) continue;
    if (auto r = blobs.remove(sha); !r) return r.error();
    report.corrupt_blobs_removed++;
    report.actions.push_back("removed corrupt blob " + sha +
                             (digest ? " (content hashes to " + *digest + ")" : " (unreadable)"));
  }
  for (const auto& [path, entry] : index.list_paths()) {
    const auto size = blobs.blob_size(entry.sha256);
    if (size && *size == entry.size) continue;
    report.actions.push_back("dropped entry " + path + " (blob " + entry.sha256.substr(0, 12) +
                             (size ? " has the wrong size)" : " is missing)"));
  }
  const auto before = blobs.list();
  const Index::TotalsCheck totals = index.check_totals();
  auto r = recover(index, blobs);
  if (!r) return r.error();
  for (const auto& key : r->derived_dropped) {
    report.actions.push_back("dropped rewritten output " + key.substr(1) + " (its source is gone)");
  }
  if (totals.stored && (totals.kept.blobs != totals.counted.blobs ||
                        totals.kept.blob_bytes != totals.counted.blob_bytes)) {
    report.actions.push_back("recounted the index totals (they said " +
                             std::to_string(totals.kept.blob_bytes) + " bytes in " +
                             std::to_string(totals.kept.blobs) + " blobs, the records held " +
                             std::to_string(totals.counted.blob_bytes) + " in " +
                             std::to_string(totals.counted.blobs) + ")");
  }
  report.entries_dropped = r->entries_dropped + r->derived_dropped.size();
  report.orphan_blobs_removed = r->blobs_removed;
  report.temp_files_removed = r->temp_files_removed;
  std::set<std::string> after;
  for (auto& sha : blobs.list()) after.insert(std::move(sha));
  for (const auto& sha : before) {
    if (!after.count(sha)) report.actions.push_back("removed orphan blob " + sha);
  }
  if (r->temp_files_removed) {
    report.actions.push_back("removed " + std::to_string(r->temp_files_removed) + " temp files");
  }
  return report;
}

}  // namespace netbootfs::cache
