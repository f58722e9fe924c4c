// FuseFs: the FUSE low-level glue. A thin layer: every decision about bytes
// and attributes belongs to cache::Fetcher, every decision about a reply's
// form (errnos, stat, entries, dirents, xattr answers) to fs/fuse_replies.h;
// this file turns kernel requests into Fetcher calls and sends the replies.
//
// Contract
// - Every request gets exactly one reply. Requests that wait for the network
//   (lookup, open, opendir, reads past a download's frontier) are parked: the
//   callback returns at once and the reply comes from the Fetcher's thread.
//   A parked request is answered EINTR when the kernel interrupts it, and
//   every parked request is answered by answer_all_pending() before the
//   session ends.
// - Read-only: every write-type operation answers EROFS.
// - No lock is held while replying.
#pragma once

#include <fuse_lowlevel.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>

#include <tsl/robin_map.h>

#include "cache/fetcher.h"
#include "fs/inode_table.h"
#include "fs/options.h"

namespace netbootfs::fs {

// Requests parked while the Fetcher works, so that interrupts and shutdown
// can answer them; whoever claims an entry first replies, the others drop it.
class PendingReplies {
 public:
  struct Entry {
    fuse_req_t req;
    std::atomic<bool> claimed{false};
  };
  std::shared_ptr<Entry> park(fuse_req_t req);
  bool claim(const std::shared_ptr<Entry>& e);
  void interrupt(fuse_req_t req);
  size_t answer_all(int err);
  size_t size() const;

 private:
  mutable std::mutex mu_;
  tsl::robin_map<fuse_req_t, std::shared_ptr<Entry>> map_;
};

class FuseFs {
 public:
  explicit FuseFs(const MountOptions& options);
  // The Fetcher is attached once its threads may start (after daemonizing),
  // before the session loop runs.
  void attach(cache::Fetcher* fetcher) { fetcher_ = fetcher; }
  static const fuse_lowlevel_ops& operations();
  // Answers every request still parked (at shutdown, after the Fetcher stopped).
  size_t answer_all_pending(int err) { return pending_.answer_all(err); }
  // The session, for notifications to the kernel (set before the loop runs).
  void set_session(fuse_session* se) { session_ = se; }
  // After Fetcher::invalidate(prefix): tells the kernel to forget the names
  // it caches at or under prefix (entries, directory contents) and the
  // contents of prefix's parent directory, plus the names in `extra`
  // (negative entries the inode table never held). Must
  // not be called from a FUSE worker thread that holds a request. Returns
  // how many notifications the kernel accepted.
  size_t invalidate_kernel(const std::string& prefix, const std::vector<std::string>& extra);

  // Operations (public for the C trampolines).
  void init(fuse_conn_info* conn);
  void lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void forget(fuse_ino_t ino, uint64_t nlookup) { inodes_.forget(ino, nlookup); }
  void getattr(fuse_req_t req, fuse_ino_t ino);
  void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void read(fuse_req_t req, size_t size, off_t off, fuse_file_info* fi);
  void release(fuse_req_t req, fuse_file_info* fi);
  void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  // READDIRPLUS: readdir() with each entry's attributes where the fetcher
  // knows them without a request (Fetcher::peek), so `ls -l` needs no
  // LOOKUP per name.
  void readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  void releasedir(fuse_req_t req, fuse_file_info* fi);
  void statfs(fuse_req_t req);
  void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  PendingReplies& pending() { return pending_; }

  // Requests by operation, for the metrics (relaxed counters).
  enum class Op {
    kLookup,
    kForget,
    kGetattr,
    kOpen,
    kRead,
    kRelease,
    kFlush,
    kOpendir,
    kReaddir,
    kReaddirplus,
    kReleasedir,
    kStatfs,
    kAccess,
    kGetxattr,
    kListxattr,
    kWrite,
    kCount
  };
  static constexpr size_t kOpCount = static_cast<size_t>(Op::kCount);
  static const char* op_name(Op op);
  FuseFs* count(Op op) {
    ops_[static_cast<size_t>(op)].fetch_add(1, std::memory_order_relaxed);
    return this;
  }
  uint64_t op_count(Op op) const {
    return ops_[static_cast<size_t>(op)].load(std::memory_order_relaxed);
  }
  uint64_t served_bytes() const { return served_bytes_.load(std::memory_order_relaxed); }

 private:
  // The entry of `path` as a LOOKUP reply carries it, counted as one kernel
  // reference in the inode table (the caller forgets it if the reply fails).
  fuse_entry_param ref_entry(const std::string& path, const cache::Attr& a);
  void reply_slice(fuse_req_t req, const cache::Slice& s);

  const MountOptions& opt_;
  cache::Fetcher* fetcher_ = nullptr;
  fuse_session* session_ = nullptr;
  InodeTable inodes_;
  PendingReplies pending_;
  const int64_t mount_time_;
  std::array<std::atomic<uint64_t>, kOpCount> ops_{};
  std::atomic<uint64_t> served_bytes_{0};
};

}  // namespace netbootfs::fs
