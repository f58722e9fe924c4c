// InodeTable: kernel inode numbers for the paths and versions the kernel knows.
//
// Contract
// - A directory has one inode per path; a file has one inode per version
//   (cache::FileVersion), so an inode's size and bytes never change and the
//   kernel may cache them for as long as it likes.
// - ref() counts one kernel reference (a LOOKUP reply); forget() drops them;
//   a node is erased when its count reaches zero, so the table holds only
//   what the kernel holds. The root (inode 1) is never erased.
// - Inode numbers are never reused within a mount.
// - Thread safety: all methods may be called from any thread.
#pragma once

#include <fuse_lowlevel.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <tsl/robin_map.h>

#include "cache/fetcher.h"

namespace netbootfs::fs {

struct NodeInfo {
  fuse_ino_t ino = 0;
  std::string path;
  bool is_dir = false;
  uint64_t size = 0;
  int64_t mtime = 0;
  std::shared_ptr<cache::FileVersion> version;  // files
};

class InodeTable {
 public:
  InodeTable();
  fuse_ino_t ref(const std::string& path, const cache::Attr& attr);
  std::optional<NodeInfo> get(fuse_ino_t ino) const;
  void forget(fuse_ino_t ino, uint64_t n);
  size_t size() const;

  // For invalidating the kernel's caches (see FuseFs::invalidate_kernel):
  // (parent directory inode, name) of every node at or under `prefix`
  // whose parent directory the kernel knows, and the directories there.
  struct Entry {
    fuse_ino_t parent;
    std::string name;
  };
  std::vector<Entry> entries_under(const std::string& prefix) const;
  std::vector<fuse_ino_t> dirs_under(const std::string& prefix) const;
  // The inode of a directory path the kernel knows, 0 if none.
  fuse_ino_t dir_ino(const std::string& path) const;

 private:
  struct Node {
    NodeInfo info;
    uint64_t nlookup = 0;
  };
  mutable std::mutex mu_;
  fuse_ino_t next_ino_ = FUSE_ROOT_ID + 1;
  tsl::robin_map<fuse_ino_t, std::unique_ptr<Node>> nodes_;
  tsl::robin_map<std::string, fuse_ino_t> dirs_;     // directory path -> ino
  tsl::robin_map<uint64_t, fuse_ino_t> versions_;    // FileVersion id -> ino
};

}  // namespace netbootfs::fs
