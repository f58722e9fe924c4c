// The FUSE adapter's decisions as pure functions: which errno a request gets,
// what a stat, an entry, an open reply and a dirent carry, and which value
// an extended attribute query is answered with. FuseFs (fs/fuse_fs.cc) only
// gathers the inputs and sends what these return.
//
// Contract
// - No state, no I/O, no clock, no FUSE request: every input is a parameter
//   (mount time included), so each decision is table-tested
//   (tests/unit/fs/fuse_replies_test.cc). Safe from any thread.
// - An errno of 0 means "serve the request"; anything else is the reply.
// - Read-only: write-mode opens and W_OK access answer EROFS before anything
//   else is looked at; the write-type operations themselves always do.
// - An inode's attributes never change (one inode per file version), so the
//   entries and opens built here let the kernel cache them (attr_timeout,
//   keep_cache) and never ask for direct I/O.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/file_version.h"
#include "fs/inode_table.h"
#include "fs/options.h"

namespace netbootfs::fs {

// --- errnos -----------------------------------------------------------------
// `n` is what the inode table knows of the request's inode (nullopt: unknown).

// ENOENT for an unknown inode, else 0 (getattr, listxattr).
int node_errno(const std::optional<NodeInfo>& n);
// LOOKUP under `parent`: ENOENT unless it is a known directory.
int lookup_errno(const std::optional<NodeInfo>& parent);
// True for open flags that could change the file (write access, O_TRUNC).
bool is_write_open(int flags);
// OPEN: EROFS for a write-mode open, ENOENT, EISDIR, else 0.
int open_errno(int flags, const std::optional<NodeInfo>& n);
// OPENDIR: ENOENT, ENOTDIR, else 0.
int opendir_errno(const std::optional<NodeInfo>& n);
// ACCESS: EROFS when write permission is asked, else 0 (permissions are the
// kernel's business: default_permissions or none).
int access_errno(int mask);
// A failed LOOKUP's errno that the kernel may cache as a negative entry.
bool is_negative_lookup(int err);

// --- attributes and replies -------------------------------------------------

// The attributes of `n`: mode 0555 (directories) or 0444 (files) less the
// umask, the mount's uid and gid, a directory's size 4096 and nlink 2, a
// file's size and nlink 1, and all three times at mtime, or at `mount_time`
// (unix seconds) when the mtime is unknown (0).
struct stat make_stat(const NodeInfo& n, const MountOptions& opt, int64_t mount_time);
// A LOOKUP reply for inode `ino` with attributes `a`, cached for the mount's
// entry_timeout and attr_timeout.
fuse_entry_param entry_reply(fuse_ino_t ino, const cache::Attr& a, const MountOptions& opt,
                             int64_t mount_time);
// The LOOKUP reply for a name upstream does not have: ino 0, kept for
// negative_ttl.
fuse_entry_param negative_entry(const MountOptions& opt);
// The OPEN reply of a file handle `fh` opened with `flags`: keep_cache (the
// bytes never change), noflush, no direct_io.
fuse_file_info open_reply(int flags, uint64_t fh);
// The OPENDIR reply of a directory handle `fh`: nothing cached, no direct_io.
fuse_file_info opendir_reply(int flags, uint64_t fh);

// --- directory streams ------------------------------------------------------
// Offset 0 is ".", 1 is "..", 2.. the entries; each dirent's offset (what the
// kernel passes back to continue) is the next one's index.

size_t dirent_count(const std::vector<cache::DirEntry>& entries);
struct Dirent {
  const char* name;  // a literal or entries[i - 2].name: lives as long as entries
  struct stat attr;  // what a plain dirent carries: st_ino and the type in st_mode
  off_t next;        // the offset to continue from after this dirent
  bool child;        // an entry of the directory (not "." or ".."): LOOKUP-able
};
// Dirent `i` (< dirent_count) of directory `dir_ino`. ".." is always the
// root's inode, an entry's inode a non-zero hash of its name (not the one a
// LOOKUP gives: that depends on the version).
Dirent dirent_at(const std::vector<cache::DirEntry>& entries, size_t i, fuse_ino_t dir_ino);

// --- extended attributes ----------------------------------------------------
// Only the user namespace exists: "user.netbootfs.*" on files (a snapshot of
// the fetcher's view of the version) and "user.netbootfs.upstream" ("up" or
// "down") on the root.

// Where a GETXATTR's value comes from: an error, upstream health, or the
// file's attributes (file_xattrs; ENODATA when the name is not among them).
enum class XattrSource { kError, kUpstream, kFile };
struct XattrPlan {
  XattrSource source;
  int err;  // kError: ENOENT (unknown inode), EOPNOTSUPP (not "user."), ENODATA
};
XattrPlan plan_getxattr(const std::optional<NodeInfo>& n, std::string_view name);

// A file's attributes that have a value, in listing order.
using Xattrs = std::vector<std::pair<const char*, std::string>>;
Xattrs file_xattrs(const cache::VersionInfo& info, const std::string& filter_note);
// The value of `name` in `attrs`, nullopt if it is not there.
std::optional<std::string> find_xattr(const Xattrs& attrs, std::string_view name);
// LISTXATTR's names, each ending in '\0': the root's, a file's (`attrs`,
// which the caller builds only when wants_file_xattrs() says so), or none.
bool wants_file_xattrs(const NodeInfo& n);
std::string xattr_names(const NodeInfo& n, const Xattrs& attrs);

// How a value of `value_size` bytes answers a buffer of `buf_size`: its size
// (a size-0 query), ERANGE (too small), or the bytes.
enum class XattrReply { kSize, kTooSmall, kValue };
XattrReply xattr_reply(size_t value_size, size_t buf_size);

}  // namespace netbootfs::fs
