#include "fs/fuse_replies.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace netbootfs::fs {
namespace {

using namespace std::string_literals;

// A FileVersion is made only by the Fetcher. These decisions only ask
// whether a node has one, so a non-owning pointer that is never dereferenced
// stands in for it.
std::shared_ptr<cache::FileVersion> opaque_version() {
  alignas(cache::FileVersion) static unsigned char storage[sizeof(cache::FileVersion)];
  return {std::shared_ptr<void>{}, reinterpret_cast<cache::FileVersion*>(storage)};
}

enum class Kind { kUnknown, kRoot, kDir, kFile, kFileWithoutVersion };

const char* kind_name(Kind k) {
  static const char* const kNames[] = {"unknown", "root", "dir", "file", "file without version"};
  return kNames[static_cast<int>(k)];
}

std::optional<NodeInfo> node(Kind k) {
  switch (k) {
    case Kind::kUnknown:
      return std::nullopt;
    case Kind::kRoot:
      return NodeInfo{FUSE_ROOT_ID, "", true, 0, 0, nullptr};
    case Kind::kDir:
      return NodeInfo{7, "boot", true, 0, 1700000000, nullptr};
    case Kind::kFile:
      return NodeInfo{8, "boot/vmlinuz", false, 1234, 1700000000, opaque_version()};
    case Kind::kFileWithoutVersion:
      return NodeInfo{9, "boot/initrd", false, 1234, 1700000000, nullptr};
  }
  return std::nullopt;
}

// --- errnos -----------------------------------------------------------------

TEST(FuseReplies, WriteTypeOpenFlags) {
  struct Row {
    const char* what;
    int flags;
    bool write;
  };
  const Row rows[] = {
      {"O_RDONLY", O_RDONLY, false},
      {"O_WRONLY", O_WRONLY, true},
      {"O_RDWR", O_RDWR, true},
      {"O_RDONLY|O_TRUNC", O_RDONLY | O_TRUNC, true},
      {"O_WRONLY|O_APPEND", O_WRONLY | O_APPEND, true},
      {"O_RDWR|O_APPEND", O_RDWR | O_APPEND, true},
      // Without write access O_APPEND changes nothing: the file is served.
      {"O_RDONLY|O_APPEND", O_RDONLY | O_APPEND, false},
      {"O_RDONLY|O_NONBLOCK|O_CLOEXEC", O_RDONLY | O_NONBLOCK | O_CLOEXEC, false},
      {"O_RDONLY|O_LARGEFILE|O_NOATIME", O_RDONLY | O_LARGEFILE | O_NOATIME, false},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.what);
    EXPECT_EQ(is_write_open(r.flags), r.write);
    EXPECT_EQ(open_errno(r.flags, node(Kind::kFile)), r.write ? EROFS : 0);
  }
}

TEST(FuseReplies, OpenErrnoByNode) {
  struct Row {
    int flags;
    Kind kind;
    int err;
  };
  const Row rows[] = {
      {O_RDONLY, Kind::kFile, 0},
      {O_RDONLY, Kind::kUnknown, ENOENT},
      {O_RDONLY, Kind::kDir, EISDIR},
      {O_RDONLY, Kind::kRoot, EISDIR},
      // A write-mode open is refused before the inode is looked at.
      {O_WRONLY, Kind::kUnknown, EROFS},
      {O_RDWR, Kind::kDir, EROFS},
      {O_RDONLY | O_TRUNC, Kind::kUnknown, EROFS},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(std::string(kind_name(r.kind)) + " flags " + std::to_string(r.flags));
    EXPECT_EQ(open_errno(r.flags, node(r.kind)), r.err);
  }
}

TEST(FuseReplies, ErrnoOfOtherRequestsByNode) {
  struct Row {
    Kind kind;
    int node;    // getattr, listxattr
    int lookup;  // as the parent of a LOOKUP
    int opendir;
  };
  const Row rows[] = {
      {Kind::kUnknown, ENOENT, ENOENT, ENOENT},
      {Kind::kRoot, 0, 0, 0},
      {Kind::kDir, 0, 0, 0},
      {Kind::kFile, 0, ENOENT, ENOTDIR},
      {Kind::kFileWithoutVersion, 0, ENOENT, ENOTDIR},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(kind_name(r.kind));
    EXPECT_EQ(node_errno(node(r.kind)), r.node);
    EXPECT_EQ(lookup_errno(node(r.kind)), r.lookup);
    EXPECT_EQ(opendir_errno(node(r.kind)), r.opendir);
  }
}

TEST(FuseReplies, AccessRefusesOnlyWrite) {
  struct Row {
    const char* what;
    int mask;
    int err;
  };
  const Row rows[] = {
      {"F_OK", F_OK, 0},
      {"R_OK", R_OK, 0},
      {"X_OK", X_OK, 0},
      {"R_OK|X_OK", R_OK | X_OK, 0},
      {"W_OK", W_OK, EROFS},
      {"R_OK|W_OK", R_OK | W_OK, EROFS},
      {"R_OK|W_OK|X_OK", R_OK | W_OK | X_OK, EROFS},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.what);
    EXPECT_EQ(access_errno(r.mask), r.err);
  }
}

TEST(FuseReplies, OnlyEnoentBecomesANegativeEntry) {
  struct Row {
    int err;
    bool negative;
  };
  const Row rows[] = {
      {ENOENT, true}, {EIO, false}, {EACCES, false}, {ESTALE, false}, {EINTR, false}};
  for (const Row& r : rows) {
    SCOPED_TRACE(r.err);
    EXPECT_EQ(is_negative_lookup(r.err), r.negative);
  }
}

// --- attributes and replies -------------------------------------------------

TEST(FuseReplies, StatUnderMountOptions) {
  constexpr int64_t kMount = 1600000000;
  struct Row {
    const char* what;
    NodeInfo n;
    unsigned uid, gid, umask;
    mode_t mode;
    nlink_t nlink;
    off_t size;
    blkcnt_t blocks;
    int64_t time;
  };
  // One row a case: node, uid, gid, umask; then what the stat says.
  // clang-format off
  const Row rows[] = {
      {"file, defaults", {8, "f", false, 1000, 1700000000, nullptr}, 0, 0, 0022,
       S_IFREG | 0444, 1, 1000, 2, 1700000000},
      {"dir, defaults", {7, "d", true, 0, 1700000000, nullptr}, 0, 0, 0022,
       S_IFDIR | 0555, 2, 4096, 8, 1700000000},
      {"file, uid/gid, umask 027", {8, "f", false, 1000, 1, nullptr}, 1000, 100, 0027,
       S_IFREG | 0440, 1, 1000, 2, 1},
      {"dir, uid/gid, umask 027", {7, "d", true, 0, 1, nullptr}, 1000, 100, 0027,
       S_IFDIR | 0550, 2, 4096, 8, 1},
      {"file, umask 0 (never writable)", {8, "f", false, 1, 5, nullptr}, 0, 0, 0,
       S_IFREG | 0444, 1, 1, 1, 5},
      {"dir, umask 0 (never writable)", {7, "d", true, 0, 5, nullptr}, 0, 0, 0,
       S_IFDIR | 0555, 2, 4096, 8, 5},
      {"file, umask 0777", {8, "f", false, 1, 5, nullptr}, 0, 0, 0777, S_IFREG, 1, 1, 1, 5},
      {"dir, umask 0077", {7, "d", true, 0, 5, nullptr}, 65534, 65534, 0077,
       S_IFDIR | 0500, 2, 4096, 8, 5},
      {"empty file", {8, "f", false, 0, 5, nullptr}, 0, 0, 0022, S_IFREG | 0444, 1, 0, 0, 5},
      {"513 bytes: two blocks", {8, "f", false, 513, 5, nullptr}, 0, 0, 0022,
       S_IFREG | 0444, 1, 513, 2, 5},
      {"5 GiB", {8, "f", false, uint64_t{5} << 30, 5, nullptr}, 0, 0, 0022,
       S_IFREG | 0444, 1, off_t{5} << 30, blkcnt_t{10} << 20, 5},
      {"file, unknown mtime: mount time", {8, "f", false, 1, 0, nullptr}, 0, 0, 0022,
       S_IFREG | 0444, 1, 1, 1, kMount},
      {"dir, unknown mtime: mount time", {FUSE_ROOT_ID, "", true, 0, 0, nullptr}, 0, 0, 0022,
       S_IFDIR | 0555, 2, 4096, 8, kMount},
  };
  // clang-format on
  for (const Row& r : rows) {
    SCOPED_TRACE(r.what);
    MountOptions opt;
    opt.uid = r.uid;
    opt.gid = r.gid;
    opt.umask = r.umask;
    const struct stat st = make_stat(r.n, opt, kMount);
    EXPECT_EQ(st.st_ino, r.n.ino);
    EXPECT_EQ(st.st_mode, r.mode);
    EXPECT_EQ(st.st_uid, r.uid);
    EXPECT_EQ(st.st_gid, r.gid);
    EXPECT_EQ(st.st_nlink, r.nlink);
    EXPECT_EQ(st.st_size, r.size);
    EXPECT_EQ(st.st_blocks, r.blocks);
    EXPECT_EQ(st.st_blksize, 4096);
    EXPECT_EQ(st.st_mtim.tv_sec, r.time);
    EXPECT_EQ(st.st_ctim.tv_sec, r.time);
    EXPECT_EQ(st.st_atim.tv_sec, r.time);
    EXPECT_EQ(st.st_mtim.tv_nsec, 0);
  }
}

TEST(FuseReplies, EntryCarriesTheStatAndTheMountTimeouts) {
  MountOptions opt;
  opt.entry_timeout = 2.5;
  opt.attr_timeout = 7200;
  opt.negative_ttl = 30;
  opt.uid = 42;
  opt.umask = 0027;
  struct Row {
    const char* what;
    cache::Attr a;
    mode_t mode;
    off_t size;
  };
  const Row rows[] = {
      {"file", {false, 999, 1700000000, nullptr}, S_IFREG | 0440, 999},
      {"dir", {true, 0, 1700000000, nullptr}, S_IFDIR | 0550, 4096},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.what);
    const fuse_entry_param e = entry_reply(12, r.a, opt, 1);
    EXPECT_EQ(e.ino, 12u);
    EXPECT_EQ(e.generation, 0u);
    EXPECT_EQ(e.attr.st_ino, 12u);
    EXPECT_EQ(e.attr.st_mode, r.mode);
    EXPECT_EQ(e.attr.st_size, r.size);
    EXPECT_EQ(e.attr.st_uid, 42u);
    EXPECT_EQ(e.attr.st_mtim.tv_sec, 1700000000);
    EXPECT_EQ(e.entry_timeout, 2.5);
    EXPECT_EQ(e.attr_timeout, 7200);
  }
  const fuse_entry_param neg = negative_entry(opt);
  EXPECT_EQ(neg.ino, 0u);
  EXPECT_EQ(neg.entry_timeout, 30);
  EXPECT_EQ(neg.attr_timeout, 0);
  EXPECT_EQ(neg.attr.st_mode, 0u);
}

TEST(FuseReplies, OpenRepliesKeepTheFileCacheNeverDirectIo) {
  struct Row {
    const char* what;
    fuse_file_info info;
    int flags;
    unsigned keep_cache, noflush;
  };
  const Row rows[] = {
      {"file", open_reply(O_RDONLY | O_NONBLOCK, 0xdeadbeef), O_RDONLY | O_NONBLOCK, 1, 1},
      {"dir", opendir_reply(O_RDONLY | O_DIRECTORY, 0xdeadbeef), O_RDONLY | O_DIRECTORY, 0, 0},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.what);
    EXPECT_EQ(r.info.flags, r.flags);
    EXPECT_EQ(r.info.fh, 0xdeadbeefu);
    EXPECT_EQ(r.info.keep_cache, r.keep_cache);
    EXPECT_EQ(r.info.noflush, r.noflush);
    EXPECT_EQ(r.info.direct_io, 0u);
    EXPECT_EQ(r.info.cache_readdir, 0u);
    EXPECT_EQ(r.info.nonseekable, 0u);
  }
}

// --- directory streams ------------------------------------------------------

TEST(FuseReplies, DirentsDotsThenEntriesEachPointingAtTheNext) {
  const std::vector<cache::DirEntry> entries = {{"grub", true}, {"vmlinuz", false}, {"a b", false}};
  constexpr fuse_ino_t kDir = 5;
  ASSERT_EQ(dirent_count(entries), 5u);
  struct Row {
    size_t i;
    const char* name;
    mode_t type;
    bool child;
  };
  const Row rows[] = {
      {0, ".", S_IFDIR, false},      {1, "..", S_IFDIR, false}, {2, "grub", S_IFDIR, true},
      {3, "vmlinuz", S_IFREG, true}, {4, "a b", S_IFREG, true},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.i);
    const Dirent d = dirent_at(entries, r.i, kDir);
    EXPECT_STREQ(d.name, r.name);
    EXPECT_EQ(d.attr.st_mode, r.type);
    EXPECT_EQ(d.next, static_cast<off_t>(r.i + 1));
    EXPECT_EQ(d.child, r.child);
    EXPECT_NE(d.attr.st_ino, 0u);
    if (r.child) {
      EXPECT_EQ(d.name, entries[r.i - 2].name.c_str());  // no copy
    }
  }
  EXPECT_EQ(dirent_at(entries, 0, kDir).attr.st_ino, kDir);
  EXPECT_EQ(dirent_at(entries, 1, kDir).attr.st_ino, FUSE_ROOT_ID);  // ".." is always the root
  EXPECT_EQ(dirent_at(entries, 1, FUSE_ROOT_ID).attr.st_ino, FUSE_ROOT_ID);
  // An entry's number depends on its name only: the same in any listing.
  const std::vector<cache::DirEntry> other = {{"x", false}, {"vmlinuz", false}};
  EXPECT_EQ(dirent_at(other, 3, 99).attr.st_ino, dirent_at(entries, 3, kDir).attr.st_ino);
  EXPECT_NE(dirent_at(entries, 2, kDir).attr.st_ino, dirent_at(entries, 3, kDir).attr.st_ino);
}

TEST(FuseReplies, EmptyDirectoryHasOnlyTheDots) {
  const std::vector<cache::DirEntry> none;
  ASSERT_EQ(dirent_count(none), 2u);
  EXPECT_STREQ(dirent_at(none, 0, 3).name, ".");
  EXPECT_STREQ(dirent_at(none, 1, 3).name, "..");
  EXPECT_EQ(dirent_at(none, 1, 3).next, 2);
}

// --- extended attributes ----------------------------------------------------

cache::VersionInfo full_info() {
  cache::VersionInfo info;
  info.state = cache::VersionInfo::State::kCached;
  info.etag = "\"abc\"";
  info.sha256 = "e3b0";
  info.upstream_sha256 = "ffff";
  info.validated_at = 1700000000;
  info.source_url = "http://mirror/boot/vmlinuz";
  return info;
}

// What GETXATTR answers for `name` on a node whose file attributes are
// `attrs` and with upstream up: an errno, or the value.
struct Answer {
  int err;
  std::string value;
};
Answer getxattr_answer(const std::optional<NodeInfo>& n, const std::string& name,
                       const Xattrs& attrs) {
  const XattrPlan plan = plan_getxattr(n, name);
  switch (plan.source) {
    case XattrSource::kError:
      return {plan.err, ""};
    case XattrSource::kUpstream:
      return {0, "up"};
    case XattrSource::kFile:
      if (auto v = find_xattr(attrs, name)) return {0, *v};
      return {ENODATA, ""};
  }
  return {-1, ""};
}

TEST(FuseReplies, GetxattrNamespacesAndNames) {
  const Xattrs attrs = file_xattrs(full_info(), "");
  struct Row {
    Kind kind;
    const char* name;
    int err;
    const char* value;
  };
  const Row rows[] = {
      {Kind::kFile, "user.netbootfs.state", 0, "cached"},
      {Kind::kFile, "user.netbootfs.etag", 0, "\"abc\""},
      {Kind::kFile, "user.netbootfs.source", 0, "http://mirror/boot/vmlinuz"},
      {Kind::kFile, "user.netbootfs.rewritten", 0, "not rewritten: no rule"},
      {Kind::kFile, "user.netbootfs.sha", ENODATA, ""},  // a prefix of a name is not it
      {Kind::kFile, "user.netbootfs.state.x", ENODATA, ""},
      {Kind::kFile, "user.netbootfs.upstream", ENODATA, ""},  // the root's only
      {Kind::kFile, "user.other", ENODATA, ""},
      {Kind::kFile, "user.", ENODATA, ""},
      {Kind::kFile, "security.selinux", EOPNOTSUPP, ""},
      {Kind::kFile, "system.posix_acl_access", EOPNOTSUPP, ""},
      {Kind::kFile, "trusted.x", EOPNOTSUPP, ""},
      {Kind::kFile, "", EOPNOTSUPP, ""},
      {Kind::kFile, "user", EOPNOTSUPP, ""},
      {Kind::kFile, "USER.netbootfs.state", EOPNOTSUPP, ""},
      {Kind::kFileWithoutVersion, "user.netbootfs.state", ENODATA, ""},
      {Kind::kRoot, "user.netbootfs.upstream", 0, "up"},
      {Kind::kRoot, "user.netbootfs.upstreams", ENODATA, ""},
      {Kind::kRoot, "user.netbootfs.state", ENODATA, ""},
      {Kind::kRoot, "security.selinux", EOPNOTSUPP, ""},
      {Kind::kDir, "user.netbootfs.upstream", ENODATA, ""},
      {Kind::kDir, "user.netbootfs.state", ENODATA, ""},
      {Kind::kDir, "system.posix_acl_access", EOPNOTSUPP, ""},
      {Kind::kUnknown, "user.netbootfs.state", ENOENT, ""},
      {Kind::kUnknown, "security.selinux", ENOENT, ""},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(std::string(kind_name(r.kind)) + " '" + r.name + "'");
    const Answer a = getxattr_answer(node(r.kind), r.name, attrs);
    EXPECT_EQ(a.err, r.err);
    EXPECT_EQ(a.value, r.value);
  }
}

TEST(FuseReplies, XattrValueAgainstBufferSize) {
  struct Row {
    size_t value, buf;
    XattrReply reply;
  };
  const Row rows[] = {
      {6, 0, XattrReply::kSize},           {6, 1, XattrReply::kTooSmall},
      {6, 5, XattrReply::kTooSmall},       {6, 6, XattrReply::kValue},
      {6, 7, XattrReply::kValue},          {6, 65536, XattrReply::kValue},
      {0, 0, XattrReply::kSize},           {0, 1, XattrReply::kValue},
      {4096, 4095, XattrReply::kTooSmall}, {SIZE_MAX, SIZE_MAX - 1, XattrReply::kTooSmall},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(std::to_string(r.value) + " bytes into " + std::to_string(r.buf));
    EXPECT_EQ(xattr_reply(r.value, r.buf), r.reply);
  }
}

TEST(FuseReplies, FileXattrsListOnlyWhatHasAValue) {
  cache::VersionInfo bare;
  bare.state = cache::VersionInfo::State::kRemote;
  bare.source_url = "http://up/x";
  struct Row {
    const char* what;
    cache::VersionInfo info;
    std::string note;
    Xattrs expected;
  };
  const Row rows[] = {
      {"everything known",
       full_info(),
       "rewritten: 2 hosts",
       {{"user.netbootfs.state", "cached"},
        {"user.netbootfs.etag", "\"abc\""},
        {"user.netbootfs.sha256", "e3b0"},
        {"user.netbootfs.upstream_sha256", "ffff"},
        {"user.netbootfs.validated", "2023-11-14T22:13:20Z"},
        {"user.netbootfs.source", "http://mirror/boot/vmlinuz"},
        {"user.netbootfs.rewritten", "rewritten: 2 hosts"}}},
      {"remote, never validated, no rule",
       bare,
       "",
       {{"user.netbootfs.state", "remote"},
        {"user.netbootfs.source", "http://up/x"},
        {"user.netbootfs.rewritten", "not rewritten: no rule"}}},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.what);
    const Xattrs got = file_xattrs(r.info, r.note);
    ASSERT_EQ(got.size(), r.expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_STREQ(got[i].first, r.expected[i].first);
      EXPECT_EQ(got[i].second, r.expected[i].second);
    }
  }
}

TEST(FuseReplies, ListxattrNamesByNode) {
  const Xattrs attrs = file_xattrs(full_info(), "");
  struct Row {
    Kind kind;
    bool wants;
    std::string names;
  };
  const Row rows[] = {
      {Kind::kRoot, false, "user.netbootfs.upstream\0"s},
      {Kind::kDir, false, ""},
      {Kind::kFileWithoutVersion, false, ""},
      {Kind::kFile, true,
       "user.netbootfs.state\0user.netbootfs.etag\0user.netbootfs.sha256\0"
       "user.netbootfs.upstream_sha256\0user.netbootfs.validated\0user.netbootfs.source\0"
       "user.netbootfs.rewritten\0"s},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(kind_name(r.kind));
    const NodeInfo n = *node(r.kind);
    EXPECT_EQ(wants_file_xattrs(n), r.wants);
    EXPECT_EQ(xattr_names(n, r.wants ? attrs : Xattrs{}), r.names);
  }
}

}  // namespace
}  // namespace netbootfs::fs
