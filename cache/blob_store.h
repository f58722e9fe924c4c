// BlobStore: content-addressed files under <cache_dir>/blobs/ab/<sha256>.
//
// Contract
// - A blob is published only complete: bytes stream into tmp/ (TempBlob),
//   are hashed as they arrive, fsynced, then renamed to their address and the
//   directory fsynced. A crash leaves at worst a file in tmp/, which
//   clear_tmp() removes at start-up.
// - The fd of a TempBlob stays valid across publish() (rename keeps the
//   inode), so readers of an in-flight download keep reading the same file.
// - Publishing content that is already stored keeps the existing blob and
//   drops the temp file (a re-download of identical bytes changes nothing).
// - Thread safety: BlobStore methods may be called from any thread. A
//   TempBlob is used by one thread at a time (its owner); its fd may be read
//   (pread) concurrently by others below size().
// - The store knows nothing of paths or refcounts: that is the Index's job.
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/util/result.h"
#include "cache/util/unique_fd.h"

namespace netbootfs::cache {

// Incremental SHA-256 (OpenSSL EVP), lowercase hex output.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t len);
  std::string hex_digest();  // finishes; call once, then reset() to reuse
  void reset();
  static std::string of(std::string_view data);

 private:
  EVP_MD_CTX* ctx_;
};

bool is_sha256_hex(std::string_view s);

class TempBlob {
 public:
  TempBlob() = default;
  TempBlob(TempBlob&&) noexcept;
  TempBlob& operator=(TempBlob&&) noexcept;
  TempBlob(const TempBlob&) = delete;
  TempBlob& operator=(const TempBlob&) = delete;
  ~TempBlob();  // unlinks the temp file unless it was published

  // Appends at size(); hashes the bytes. ENOSPC/EIO come back as errors.
  Result<void> append(const char* data, size_t len);
  // Drops everything written (a restarted download).
  Result<void> reset();
  uint64_t size() const { return size_; }
  int fd() const { return fd_.get(); }
  bool valid() const { return fd_.valid(); }
  const std::string& path() const { return path_; }

 private:
  friend class BlobStore;
  UniqueFd fd_;
  std::string path_;
  uint64_t size_ = 0;
  Sha256 hash_;
  bool published_ = false;
};

class BlobStore {
 public:
  // Creates <cache_dir>/blobs and <cache_dir>/tmp as needed.
  static Result<std::unique_ptr<BlobStore>> open(const std::string& cache_dir);

  Result<TempBlob> create_temp();
  // fsync, rename into place, fsync the directory. Returns the sha256 hex.
  // On return the TempBlob's fd still reads the same bytes.
  Result<std::string> publish(TempBlob& tmp);
  // Opens a published blob read-only.
  Result<UniqueFd> open_blob(std::string_view sha256) const;
  std::optional<uint64_t> blob_size(std::string_view sha256) const;
  Result<void> remove(std::string_view sha256);
  // Every published blob's sha256 (files with a valid name only).
  std::vector<std::string> list() const;
  // Removes every file in tmp/; returns how many.
  size_t clear_tmp();
  std::string blob_path(std::string_view sha256) const;
  const std::string& dir() const { return dir_; }

 private:
  explicit BlobStore(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace netbootfs::cache
