// The version types the fetcher hands out: what fs/ holds on to for an
// inode (FileVersion, Attr), what it shows (VersionInfo, DirEntry) and what
// it reads (Slice).
//
// Contract
// - A FileVersion is one version of one path: its id, path, size, mtime and
//   etag never change. Its content binding (blob, validators, the download
//   filling it) only moves forward and is read and written by the fetcher
//   under its path-table lock (cache/fetch/path_table.h); nothing outside
//   the fetcher can reach it.
// - Attr, VersionInfo, DirEntry and Slice are plain values.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "cache/util/result.h"

namespace netbootfs::cache {

class Download;
class Fetcher;
class PathLock;

// One version of one file. Immutable after construction except for the
// content binding (download/sha256), which only moves forward.
class FileVersion {
 public:
  uint64_t id() const { return id_; }
  // For filtered files: what the filter did; empty when no filter applies.
  // Set before the version is shared, immutable afterwards.
  const std::string& filter_note() const { return filter_note_; }
  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  int64_t mtime() const { return mtime_; }
  const std::string& etag() const { return etag_; }

  // The content binding: only moves forward (a download, then a blob).
  // Guarded by the fetcher's path table; reached only with its lock token.
  struct Binding {
    std::string sha256;                   // set once published
    std::string validator_etag;           // what revalidation sends: learnt from the
    int64_t validator_last_modified = 0;  // response that delivered the bytes
    // Rewritten files: the upstream blob and the filter fingerprint this
    // version was derived with (its size and sha256 are the output's).
    std::string source_sha256;
    std::string filter_fp;
    std::shared_ptr<Download> download;  // set while a download serves it
    std::string source_url;              // where this process got the bytes from; empty: unknown
  };
  Binding& bound(const PathLock&) { return binding_; }

 private:
  friend class Fetcher;
  FileVersion(uint64_t id, std::string path, uint64_t size, int64_t mtime, std::string etag)
      : id_(id), path_(std::move(path)), size_(size), mtime_(mtime), etag_(std::move(etag)) {}
  std::string filter_note_;  // set before the version is shared
  const uint64_t id_;
  const std::string path_;
  const uint64_t size_;
  const int64_t mtime_;
  const std::string etag_;
  Binding binding_;
};

// What the Fetcher knows about one version right now (Fetcher::describe):
// a snapshot taken under its lock, with no I/O and no upstream request, for
// inspection (extended attributes, tools).
struct VersionInfo {
  // kRemote: known from a listing or HEAD, no bytes yet; kDownloading: a
  // download is filling it; kCached: published in a blob and current;
  // kStale: published, but served without upstream's word (upstream is
  // down, or it said the file is gone and missing_grace is running) or
  // no longer the path's current version.
  enum class State { kRemote, kDownloading, kCached, kStale };
  State state = State::kRemote;
  uint64_t size = 0;
  std::string etag;             // upstream's validator, quotes included; may be empty
  std::string sha256;           // of the served bytes; empty until published
  std::string upstream_sha256;  // rewritten files: of upstream's bytes; else empty
  bool rewritten = false;       // served through the content filter with changes
  int64_t validated_at = 0;     // unix seconds of the last 200/304; 0: never
  // The file's upstream URL: the origin its bytes came from when this process
  // fetched them (a mirror, maybe), else the base URL + the encoded path.
  std::string source_url;
};
const char* to_string(VersionInfo::State state);

struct Attr {
  bool is_dir = false;
  uint64_t size = 0;
  int64_t mtime = 0;
  std::shared_ptr<FileVersion> version;  // files only
};

struct DirEntry {
  std::string name;
  bool is_dir = false;
};

// A range of bytes ready to be sent: `len` bytes of `fd` at `offset`.
struct Slice {
  int fd = -1;
  uint64_t offset = 0;
  size_t len = 0;
};

using ReadCallback = std::function<void(Result<Slice>)>;

}  // namespace netbootfs::cache
