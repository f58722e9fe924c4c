#include "fs/fuse_fs.h"

#include <sys/statvfs.h>
#include <sys/xattr.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "cache/http/url.h"
#include "cache/util/log.h"

namespace netbootfs::fs {
namespace {

std::shared_ptr<spdlog::logger> log() {
  static auto l = logger("fs");
  return l;
}

FuseFs* self(fuse_req_t req) { return static_cast<FuseFs*>(fuse_req_userdata(req)); }

void interrupt_cb(fuse_req_t req, void* data) { static_cast<FuseFs*>(data)->pending().interrupt(req); }

struct DirHandle {
  std::string path;  // of the directory
  std::vector<cache::DirEntry> entries;
};

// A directory stream: offset 0 is ".", 1 is "..", 2.. the entries; each
// entry's offset is the next one's index.
size_t dirent_count(const DirHandle& dh) { return dh.entries.size() + 2; }

// The name of entry `i` and, in *st, what a plain dirent carries of it
// (inode number, type).
const char* dirent_at(const DirHandle& dh, size_t i, fuse_ino_t dir_ino, struct stat* st) {
  st->st_mode = S_IFDIR;
  if (i == 0) {
    st->st_ino = dir_ino;
    return ".";
  }
  if (i == 1) {
    st->st_ino = FUSE_ROOT_ID;
    return "..";
  }
  const cache::DirEntry& e = dh.entries[i - 2];
  // Not the inode a LOOKUP would give (that depends on the version); any
  // non-zero number will do for a dirent.
  st->st_ino = std::hash<std::string>{}(e.name) | 1;
  if (!e.is_dir) st->st_mode = S_IFREG;
  return e.name.c_str();
}

void erofs(fuse_req_t req) {
  self(req)->count(FuseFs::Op::kWrite);
  fuse_reply_err(req, EROFS);
}

}  // namespace

// --- PendingReplies ---------------------------------------------------------

std::shared_ptr<PendingReplies::Entry> PendingReplies::park(fuse_req_t req) {
  auto e = std::make_shared<Entry>();
  e->req = req;
  {
    std::lock_guard lk(mu_);
    map_[req] = e;
  }
  // Registered after the entry exists: if the request was already
  // interrupted, the callback runs right here and finds it.
  fuse_req_interrupt_func(req, interrupt_cb, fuse_req_userdata(req));
  return e;
}

bool PendingReplies::claim(const std::shared_ptr<Entry>& e) {
  if (e->claimed.exchange(true)) return false;
  std::lock_guard lk(mu_);
  auto it = map_.find(e->req);
  if (it != map_.end() && it->second == e) map_.erase(it);
  return true;
}

void PendingReplies::interrupt(fuse_req_t req) {
  std::shared_ptr<Entry> e;
  {
    std::lock_guard lk(mu_);
    auto it = map_.find(req);
    if (it == map_.end()) return;
    e = it->second;
  }
  if (claim(e)) fuse_reply_err(req, EINTR);
}

size_t PendingReplies::answer_all(int err) {
  std::vector<std::shared_ptr<Entry>> all;
  {
    std::lock_guard lk(mu_);
    for (auto& [req, e] : map_) all.push_back(e);
  }
  size_t n = 0;
  for (auto& e : all) {
    if (claim(e)) {
      fuse_reply_err(e->req, err);
      ++n;
    }
  }
  return n;
}

size_t PendingReplies::size() const {
  std::lock_guard lk(mu_);
  return map_.size();
}

// --- FuseFs -----------------------------------------------------------------

FuseFs::FuseFs(const MountOptions& options)
    : opt_(options),
      mount_time_(std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count()) {}

struct stat FuseFs::make_stat(const NodeInfo& n) const {
  struct stat st {};
  st.st_ino = n.ino;
  st.st_uid = opt_.uid;
  st.st_gid = opt_.gid;
  if (n.is_dir) {
    st.st_mode = S_IFDIR | (0555 & ~opt_.umask);
    st.st_nlink = 2;
    st.st_size = 4096;
  } else {
    st.st_mode = S_IFREG | (0444 & ~opt_.umask);
    st.st_nlink = 1;
    st.st_size = static_cast<off_t>(n.size);
  }
  st.st_blksize = 4096;
  st.st_blocks = (st.st_size + 511) / 512;
  const int64_t t = n.mtime ? n.mtime : mount_time_;
  st.st_mtim.tv_sec = st.st_ctim.tv_sec = st.st_atim.tv_sec = t;
  return st;
}

fuse_entry_param FuseFs::ref_entry(const std::string& path, const cache::Attr& a) {
  fuse_entry_param e{};
  e.ino = inodes_.ref(path, a);
  e.attr = make_stat(NodeInfo{e.ino, path, a.is_dir, a.size, a.mtime, a.version});
  e.attr_timeout = opt_.attr_timeout;
  e.entry_timeout = opt_.entry_timeout;
  return e;
}

void FuseFs::init(fuse_conn_info* conn) {
  // Readahead reads parked at a download frontier count against the
  // kernel's background limit (default 12): raise it so they do not block
  // page-cache misses of cached files.
  conn->max_background = 512;
  conn->congestion_threshold = 384;
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
  // An inode's bytes never change: no invalidation from mtime.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  log()->info("FUSE protocol {}.{}, max_readahead {}, max_background {}", conn->proto_major,
              conn->proto_minor, conn->max_readahead, conn->max_background);
}

void FuseFs::lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  auto p = inodes_.get(parent);
  if (!p || !p->is_dir) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  const std::string path = http::child_path(p->path, name);
  auto pend = pending_.park(req);
  fetcher_->lookup(path, [this, pend, path](Result<cache::Attr> r) {
    if (!pending_.claim(pend)) return;
    fuse_entry_param e{};
    if (!r) {
      if (r.error().code != ENOENT) {
        fuse_reply_err(pend->req, r.error().code);
        return;
      }
      e.ino = 0;  // a negative entry the kernel may cache
      e.entry_timeout = opt_.negative_ttl;
      fuse_reply_entry(pend->req, &e);
      return;
    }
    e = ref_entry(path, r.value());
    if (fuse_reply_entry(pend->req, &e) != 0) inodes_.forget(e.ino, 1);
  });
}

void FuseFs::getattr(fuse_req_t req, fuse_ino_t ino) {
  auto n = inodes_.get(ino);
  if (!n) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct stat st = make_stat(*n);
  fuse_reply_attr(req, &st, opt_.attr_timeout);
}

void FuseFs::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
    fuse_reply_err(req, EROFS);
    return;
  }
  auto n = inodes_.get(ino);
  if (!n) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  if (n->is_dir) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  auto pend = pending_.park(req);
  const int flags = fi->flags;
  fetcher_->open(n->version, [this, pend, flags](Result<std::unique_ptr<cache::OpenFile>> r) {
    if (!pending_.claim(pend)) return;
    if (!r) {
      // ESTALE makes the VFS walk the path again with LOOKUP_REVAL: the
      // fresh LOOKUP returns the new version's inode and open is retried.
      fuse_reply_err(pend->req, r.error().code);
      return;
    }
    fuse_file_info info{};
    info.flags = flags;
    info.keep_cache = 1;  // an inode's bytes never change
    info.noflush = 1;
    info.fh = reinterpret_cast<uint64_t>(r.value().get());
    if (fuse_reply_open(pend->req, &info) == 0) r.value().release();
  });
}

void FuseFs::reply_slice(fuse_req_t req, const cache::Slice& s) {
  served_bytes_.fetch_add(s.len, std::memory_order_relaxed);
  if (s.len == 0) {
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  fuse_bufvec buf = FUSE_BUFVEC_INIT(s.len);
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  buf.buf[0].fd = s.fd;
  buf.buf[0].pos = static_cast<off_t>(s.offset);
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void FuseFs::read(fuse_req_t req, size_t size, off_t off, fuse_file_info* fi) {
  auto* of = reinterpret_cast<cache::OpenFile*>(fi->fh);
  if (of->fd() >= 0) {  // published: straight from the blob, no parking
    of->read(static_cast<uint64_t>(off), size, [this, req](Result<cache::Slice> r) {
      if (r) {
        reply_slice(req, r.value());
      } else {
        fuse_reply_err(req, r.error().code);
      }
    });
    return;
  }
  auto pend = pending_.park(req);
  of->read(static_cast<uint64_t>(off), size, [this, pend](Result<cache::Slice> r) {
    if (!pending_.claim(pend)) return;
    if (r) {
      reply_slice(pend->req, r.value());
    } else {
      fuse_reply_err(pend->req, r.error().code);
    }
  });
}

void FuseFs::release(fuse_req_t req, fuse_file_info* fi) {
  delete reinterpret_cast<cache::OpenFile*>(fi->fh);
  fuse_reply_err(req, 0);
}

void FuseFs::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto n = inodes_.get(ino);
  if (!n) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  if (!n->is_dir) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  auto pend = pending_.park(req);
  const int flags = fi->flags;
  const std::string path = n->path;
  fetcher_->list_dir(path, [this, pend, flags, path](Result<std::vector<cache::DirEntry>> r) {
    if (!pending_.claim(pend)) return;
    if (!r) {
      fuse_reply_err(pend->req, r.error().code);
      return;
    }
    auto dh = std::make_unique<DirHandle>();
    dh->path = path;
    dh->entries = std::move(r).value();
    fuse_file_info info{};
    info.flags = flags;
    info.fh = reinterpret_cast<uint64_t>(dh.get());
    if (fuse_reply_open(pend->req, &info) == 0) dh.release();
  });
}

void FuseFs::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                     fuse_file_info* fi) {
  auto* dh = reinterpret_cast<DirHandle*>(fi->fh);
  std::vector<char> buf(size);
  size_t used = 0;
  for (size_t i = static_cast<size_t>(off); i < dirent_count(*dh); ++i) {
    struct stat st {};
    const char* name = dirent_at(*dh, i, ino, &st);
    size_t need = fuse_add_direntry(req, buf.data() + used, size - used, name, &st,
                                    static_cast<off_t>(i + 1));
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void FuseFs::readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                         fuse_file_info* fi) {
  auto* dh = reinterpret_cast<DirHandle*>(fi->fh);
  std::vector<char> buf(size);
  size_t used = 0;
  // Every entry with an inode counts as a LOOKUP reply; if the kernel does
  // not get the reply, it does not hold them.
  std::vector<fuse_ino_t> refs;
  for (size_t i = static_cast<size_t>(off); i < dirent_count(*dh); ++i) {
    fuse_entry_param e{};
    const char* name = dirent_at(*dh, i, ino, &e.attr);
    const size_t need = fuse_add_direntry_plus(req, nullptr, 0, name, nullptr, 0);
    if (need > size - used) break;
    // "." and ".." are never linked by the kernel: no inode reference, only
    // the dirent. Other entries get attributes only where they are known
    // without asking upstream (a listing without sizes would mean a HEAD
    // per entry); ino 0 leaves the entry to a LOOKUP of its own.
    if (i >= 2) {
      const std::string path = http::child_path(dh->path, name);
      if (Result<cache::Attr> a = fetcher_->peek(path)) {
        e = ref_entry(path, a.value());
        refs.push_back(e.ino);
      }
    }
    used += fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e,
                                   static_cast<off_t>(i + 1));
  }
  if (fuse_reply_buf(req, buf.data(), used) != 0) {
    for (fuse_ino_t r : refs) inodes_.forget(r, 1);
  }
}

void FuseFs::releasedir(fuse_req_t req, fuse_file_info* fi) {
  delete reinterpret_cast<DirHandle*>(fi->fh);
  fuse_reply_err(req, 0);
}

void FuseFs::statfs(fuse_req_t req) {
  struct statvfs st {};
  if (::statvfs(opt_.cache_dir.c_str(), &st) != 0) st = {};
  st.f_namemax = 255;
  st.f_flag |= ST_RDONLY;
  fuse_reply_statfs(req, &st);
}

namespace {

constexpr char kXattrUser[] = "user.";              // the only namespace there is
constexpr char kXattrPrefix[] = "user.netbootfs.";  // every name below starts so
constexpr char kXattrRewritten[] = "user.netbootfs.rewritten";
// On the root only: "up" or "down", the fetcher's view of upstream health.
constexpr char kXattrUpstream[] = "user.netbootfs.upstream";

void reply_xattr_value(fuse_req_t req, const std::string& value, size_t size) {
  if (size == 0) {
    fuse_reply_xattr(req, value.size());
  } else if (size < value.size()) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, value.data(), value.size());
  }
}

}  // namespace

namespace {

std::string iso8601_utc(int64_t unix_s) {
  std::time_t t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The inspection attributes of a file that have a value, in listing order.
// From Fetcher::describe: a snapshot, never a request.
std::vector<std::pair<const char*, std::string>> file_xattrs(const cache::Fetcher& fetcher,
                                                             const std::shared_ptr<cache::FileVersion>& v) {
  const cache::VersionInfo info = fetcher.describe(v);
  std::vector<std::pair<const char*, std::string>> out;
  out.emplace_back("user.netbootfs.state", cache::to_string(info.state));
  if (!info.etag.empty()) out.emplace_back("user.netbootfs.etag", info.etag);
  if (!info.sha256.empty()) out.emplace_back("user.netbootfs.sha256", info.sha256);
  if (!info.upstream_sha256.empty()) {
    out.emplace_back("user.netbootfs.upstream_sha256", info.upstream_sha256);
  }
  if (info.validated_at > 0) out.emplace_back("user.netbootfs.validated", iso8601_utc(info.validated_at));
  out.emplace_back("user.netbootfs.source", info.source_url);
  const std::string& note = v->filter_note();
  out.emplace_back(kXattrRewritten, note.empty() ? "not rewritten: no rule" : note);
  return out;
}

}  // namespace

void FuseFs::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto n = inodes_.get(ino);
  if (!n) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  if (ino == FUSE_ROOT_ID && std::strcmp(name, kXattrUpstream) == 0) {
    reply_xattr_value(req, fetcher_->upstream_up() ? "up" : "down", size);
    return;
  }
  // `ls -l` asks every file for security.selinux and system.posix_acl_access
  // and the kernel caches no answer. Only the user namespace is supported:
  // EOPNOTSUPP for the others, which ls remembers for the whole device and
  // stops asking (ENODATA it would ask again of every name); ENODATA for
  // other user names.
  if (std::strncmp(name, kXattrUser, sizeof kXattrUser - 1) != 0) {
    fuse_reply_err(req, EOPNOTSUPP);
    return;
  }
  if (std::strncmp(name, kXattrPrefix, sizeof kXattrPrefix - 1) != 0 || n->is_dir || !n->version) {
    fuse_reply_err(req, ENODATA);
    return;
  }
  for (auto& [key, value] : file_xattrs(*fetcher_, n->version)) {
    if (std::strcmp(name, key) == 0) {
      reply_xattr_value(req, value, size);
      return;
    }
  }
  fuse_reply_err(req, ENODATA);
}

void FuseFs::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  auto n = inodes_.get(ino);
  if (!n) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  std::string names;
  if (ino == FUSE_ROOT_ID) {
    names = std::string(kXattrUpstream) + '\0';
  } else if (!n->is_dir && n->version) {
    for (auto& [key, value] : file_xattrs(*fetcher_, n->version)) {
      names += key;
      names += '\0';
    }
  }
  reply_xattr_value(req, names, size);
}

const char* FuseFs::op_name(Op op) {
  static const char* const kNames[kOpCount] = {"lookup",  "forget",      "getattr",    "open",
                                               "read",    "release",     "flush",      "opendir",
                                               "readdir", "readdirplus", "releasedir", "statfs",
                                               "access",  "getxattr",    "listxattr",  "write"};
  return kNames[static_cast<size_t>(op)];
}

const fuse_lowlevel_ops& FuseFs::operations() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    using Op = FuseFs::Op;
    o.init = [](void* ud, fuse_conn_info* conn) { static_cast<FuseFs*>(ud)->init(conn); };
    o.lookup = [](fuse_req_t r, fuse_ino_t p, const char* n) { self(r)->count(Op::kLookup)->lookup(r, p, n); };
    o.forget = [](fuse_req_t r, fuse_ino_t i, uint64_t n) {
      self(r)->count(Op::kForget)->forget(i, n);
      fuse_reply_none(r);
    };
    o.forget_multi = [](fuse_req_t r, size_t count, fuse_forget_data* f) {
      for (size_t i = 0; i < count; ++i) self(r)->count(Op::kForget)->forget(f[i].ino, f[i].nlookup);
      fuse_reply_none(r);
    };
    o.getattr = [](fuse_req_t r, fuse_ino_t i, fuse_file_info*) { self(r)->count(Op::kGetattr)->getattr(r, i); };
    o.open = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r)->count(Op::kOpen)->open(r, i, fi); };
    o.read = [](fuse_req_t r, fuse_ino_t, size_t s, off_t off, fuse_file_info* fi) {
      self(r)->count(Op::kRead)->read(r, s, off, fi);
    };
    o.release = [](fuse_req_t r, fuse_ino_t, fuse_file_info* fi) { self(r)->count(Op::kRelease)->release(r, fi); };
    o.flush = [](fuse_req_t r, fuse_ino_t, fuse_file_info*) {
      self(r)->count(Op::kFlush);
      fuse_reply_err(r, 0);
    };
    o.opendir = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r)->count(Op::kOpendir)->opendir(r, i, fi); };
    o.readdir = [](fuse_req_t r, fuse_ino_t i, size_t s, off_t off, fuse_file_info* fi) {
      self(r)->count(Op::kReaddir)->readdir(r, i, s, off, fi);
    };
    o.readdirplus = [](fuse_req_t r, fuse_ino_t i, size_t s, off_t off, fuse_file_info* fi) {
      self(r)->count(Op::kReaddirplus)->readdirplus(r, i, s, off, fi);
    };
    o.releasedir = [](fuse_req_t r, fuse_ino_t, fuse_file_info* fi) {
      self(r)->count(Op::kReleasedir)->releasedir(r, fi);
    };
    o.statfs = [](fuse_req_t r, fuse_ino_t) { self(r)->count(Op::kStatfs)->statfs(r); };
    o.access = [](fuse_req_t r, fuse_ino_t, int mask) {
      self(r)->count(Op::kAccess);
      fuse_reply_err(r, (mask & W_OK) ? EROFS : 0);
    };
    o.getxattr = [](fuse_req_t r, fuse_ino_t i, const char* n, size_t s) {
      self(r)->count(Op::kGetxattr)->getxattr(r, i, n, s);
    };
    o.listxattr = [](fuse_req_t r, fuse_ino_t i, size_t s) { self(r)->count(Op::kListxattr)->listxattr(r, i, s); };
    // Read-only: every write-type operation.
    o.setattr = [](fuse_req_t r, fuse_ino_t, struct stat*, int, fuse_file_info*) { erofs(r); };
    o.mknod = [](fuse_req_t r, fuse_ino_t, const char*, mode_t, dev_t) { erofs(r); };
    o.mkdir = [](fuse_req_t r, fuse_ino_t, const char*, mode_t) { erofs(r); };
    o.unlink = [](fuse_req_t r, fuse_ino_t, const char*) { erofs(r); };
    o.rmdir = [](fuse_req_t r, fuse_ino_t, const char*) { erofs(r); };
    o.symlink = [](fuse_req_t r, const char*, fuse_ino_t, const char*) { erofs(r); };
    o.rename = [](fuse_req_t r, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) {
      erofs(r);
    };
    o.link = [](fuse_req_t r, fuse_ino_t, fuse_ino_t, const char*) { erofs(r); };
    o.write = [](fuse_req_t r, fuse_ino_t, const char*, size_t, off_t, fuse_file_info*) {
      erofs(r);
    };
    o.create = [](fuse_req_t r, fuse_ino_t, const char*, mode_t, fuse_file_info*) { erofs(r); };
    o.setxattr = [](fuse_req_t r, fuse_ino_t, const char*, const char*, size_t, int) {
      erofs(r);
    };
    o.removexattr = [](fuse_req_t r, fuse_ino_t, const char*) { erofs(r); };
    o.fallocate = [](fuse_req_t r, fuse_ino_t, int, off_t, off_t, fuse_file_info*) { erofs(r); };
    return o;
  }();
  return ops;
}

size_t FuseFs::invalidate_kernel(const std::string& prefix,
                                 const std::vector<std::string>& extra) {
  if (!session_) return 0;
  size_t n = 0;
  // Names first (the kernel drops the dentries, so the next access looks
  // them up again), then directory contents (cached readdir pages).
  for (const auto& e : inodes_.entries_under(prefix)) {
    if (fuse_lowlevel_notify_inval_entry(session_, e.parent, e.name.c_str(), e.name.size()) == 0) {
      n++;
    }
  }
  for (const auto& path : extra) {
    if (path.empty()) continue;
    const fuse_ino_t parent = inodes_.dir_ino(std::string(http::parent_path(path)));
    if (!parent) continue;  // the kernel holds no name below an unknown directory
    const std::string name(http::base_name(path));
    if (fuse_lowlevel_notify_inval_entry(session_, parent, name.c_str(), name.size()) == 0) n++;
  }
  std::vector<fuse_ino_t> dirs = inodes_.dirs_under(prefix);
  if (!prefix.empty()) {
    // The parent lists prefix and its siblings (the Fetcher dropped that
    // listing too): its cached contents and attributes go as well, or a
    // file added or removed beside a single invalidated file would stay
    // invisible for the kernel's timeouts.
    if (fuse_ino_t parent = inodes_.dir_ino(std::string(http::parent_path(prefix)))) {
      dirs.push_back(parent);
    }
  }
  // The table's lock is not held here: the kernel may need a FUSE request
  // answered before the notification returns.
  for (fuse_ino_t ino : dirs) {
    if (fuse_lowlevel_notify_inval_inode(session_, ino, 0, 0) == 0) n++;
  }
  return n;
}

}  // namespace netbootfs::fs
