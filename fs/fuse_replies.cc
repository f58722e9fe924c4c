#include "fs/fuse_replies.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <functional>

namespace netbootfs::fs {

int node_errno(const std::optional<NodeInfo>& n) { return n ? 0 : ENOENT; }

int lookup_errno(const std::optional<NodeInfo>& parent) {
  return parent && parent->is_dir ? 0 : ENOENT;
}

bool is_write_open(int flags) { return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC); }

int open_errno(int flags, const std::optional<NodeInfo>& n) {
  if (is_write_open(flags)) return EROFS;
  if (!n) return ENOENT;
  return n->is_dir ? EISDIR : 0;
}

int opendir_errno(const std::optional<NodeInfo>& n) {
  if (!n) return ENOENT;
  return n->is_dir ? 0 : ENOTDIR;
}

int access_errno(int mask) { return (mask & W_OK) ? EROFS : 0; }

bool is_negative_lookup(int err) { return err == ENOENT; }

struct stat make_stat(const NodeInfo& n, const MountOptions& opt, int64_t mount_time) {
  struct stat st {};
  st.st_ino = n.ino;
  st.st_uid = opt.uid;
  st.st_gid = opt.gid;
  if (n.is_dir) {
    st.st_mode = S_IFDIR | (0555 & ~opt.umask);
    st.st_nlink = 2;
    st.st_size = 4096;
  } else {
    st.st_mode = S_IFREG | (0444 & ~opt.umask);
    st.st_nlink = 1;
    st.st_size = static_cast<off_t>(n.size);
  }
  st.st_blksize = 4096;
  st.st_blocks = (st.st_size + 511) / 512;
  const int64_t t = n.mtime ? n.mtime : mount_time;
  st.st_mtim.tv_sec = st.st_ctim.tv_sec = st.st_atim.tv_sec = t;
  return st;
}

fuse_entry_param entry_reply(fuse_ino_t ino, const cache::Attr& a, const MountOptions& opt,
                             int64_t mount_time) {
  fuse_entry_param e{};
  e.ino = ino;
  NodeInfo n;
  n.ino = ino;
  n.is_dir = a.is_dir;
  n.size = a.size;
  n.mtime = a.mtime;
  e.attr = make_stat(n, opt, mount_time);
  e.attr_timeout = opt.attr_timeout;
  e.entry_timeout = opt.entry_timeout;
  return e;
}

fuse_entry_param negative_entry(const MountOptions& opt) {
  fuse_entry_param e{};
  e.ino = 0;
  e.entry_timeout = opt.negative_ttl;
  return e;
}

fuse_file_info open_reply(int flags, uint64_t fh) {
  fuse_file_info info{};
  info.flags = flags;
  info.keep_cache = 1;
  info.noflush = 1;
  info.fh = fh;
  return info;
}

fuse_file_info opendir_reply(int flags, uint64_t fh) {
  fuse_file_info info{};
  info.flags = flags;
  info.fh = fh;
  return info;
}

size_t dirent_count(const std::vector<cache::DirEntry>& entries) { return entries.size() + 2; }

Dirent dirent_at(const std::vector<cache::DirEntry>& entries, size_t i, fuse_ino_t dir_ino) {
  Dirent d{};
  d.next = static_cast<off_t>(i + 1);
  d.attr.st_mode = S_IFDIR;
  if (i == 0) {
    d.name = ".";
    d.attr.st_ino = dir_ino;
  } else if (i == 1) {
    d.name = "..";
    d.attr.st_ino = FUSE_ROOT_ID;
  } else {
    const cache::DirEntry& e = entries[i - 2];
    d.name = e.name.c_str();
    d.attr.st_ino = std::hash<std::string>{}(e.name) | 1;
    if (!e.is_dir) d.attr.st_mode = S_IFREG;
    d.child = true;
  }
  return d;
}

namespace {

constexpr std::string_view kXattrUser = "user.";              // the only namespace there is
constexpr std::string_view kXattrPrefix = "user.netbootfs.";  // every name below starts so
constexpr char kXattrRewritten[] = "user.netbootfs.rewritten";
// On the root only: "up" or "down", the fetcher's view of upstream health.
constexpr char kXattrUpstream[] = "user.netbootfs.upstream";

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

std::string iso8601_utc(int64_t unix_s) {
  std::time_t t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

XattrPlan plan_getxattr(const std::optional<NodeInfo>& n, std::string_view name) {
  if (!n) return {XattrSource::kError, ENOENT};
  if (n->ino == FUSE_ROOT_ID && name == kXattrUpstream) return {XattrSource::kUpstream, 0};
  // `ls -l` asks every file for security.selinux and system.posix_acl_access
  // and the kernel caches no answer. EOPNOTSUPP for the other namespaces,
  // which ls remembers for the whole device and stops asking (ENODATA it
  // would ask again of every name); ENODATA for other user names.
  if (!starts_with(name, kXattrUser)) return {XattrSource::kError, EOPNOTSUPP};
  if (!starts_with(name, kXattrPrefix) || n->is_dir || !n->version) {
    return {XattrSource::kError, ENODATA};
  }
  return {XattrSource::kFile, 0};
}

Xattrs file_xattrs(const cache::VersionInfo& info, const std::string& filter_note) {
  Xattrs out;
  out.emplace_back("user.netbootfs.state", cache::to_string(info.state));
  if (!info.etag.empty()) out.emplace_back("user.netbootfs.etag", info.etag);
  if (!info.sha256.empty()) out.emplace_back("user.netbootfs.sha256", info.sha256);
  if (!info.upstream_sha256.empty()) {
    out.emplace_back("user.netbootfs.upstream_sha256", info.upstream_sha256);
  }
  if (info.validated_at > 0) {
    out.emplace_back("user.netbootfs.validated", iso8601_utc(info.validated_at));
  }
  out.emplace_back("user.netbootfs.source", info.source_url);
  out.emplace_back(kXattrRewritten, filter_note.empty() ? "not rewritten: no rule" : filter_note);
  return out;
}

std::optional<std::string> find_xattr(const Xattrs& attrs, std::string_view name) {
  for (const auto& [key, value] : attrs) {
    if (name == key) return value;
  }
  return std::nullopt;
}

bool wants_file_xattrs(const NodeInfo& n) {
  return n.ino != FUSE_ROOT_ID && !n.is_dir && n.version;
}

std::string xattr_names(const NodeInfo& n, const Xattrs& attrs) {
  std::string names;
  if (n.ino == FUSE_ROOT_ID) {
    names = std::string(kXattrUpstream) + '\0';
  } else if (wants_file_xattrs(n)) {
    for (const auto& [key, value] : attrs) {
      names += key;
      names += '\0';
    }
  }
  return names;
}

XattrReply xattr_reply(size_t value_size, size_t buf_size) {
  if (buf_size == 0) return XattrReply::kSize;
  return buf_size < value_size ? XattrReply::kTooSmall : XattrReply::kValue;
}

}  // namespace netbootfs::fs
