#include "fs/fuse_fs.h"

#include <sys/statvfs.h>
#include <sys/xattr.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <vector>

#include "cache/http/url.h"
#include "cache/util/log.h"
#include "fs/fuse_replies.h"

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

fuse_entry_param FuseFs::ref_entry(const std::string& path, const cache::Attr& a) {
  return entry_reply(inodes_.ref(path, a), a, opt_, mount_time_);
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
  if (int err = lookup_errno(p)) {
    fuse_reply_err(req, err);
    return;
  }
  const std::string path = http::child_path(p->path, name);
  auto pend = pending_.park(req);
  fetcher_->lookup(path, [this, pend, path](Result<cache::Attr> r) {
    if (!pending_.claim(pend)) return;
    if (!r) {
      if (!is_negative_lookup(r.error().code)) {
        fuse_reply_err(pend->req, r.error().code);
        return;
      }
      const fuse_entry_param negative = negative_entry(opt_);
      fuse_reply_entry(pend->req, &negative);
      return;
    }
    const fuse_entry_param e = ref_entry(path, r.value());
    if (fuse_reply_entry(pend->req, &e) != 0) inodes_.forget(e.ino, 1);
  });
}

void FuseFs::getattr(fuse_req_t req, fuse_ino_t ino) {
  auto n = inodes_.get(ino);
  if (int err = node_errno(n)) {
    fuse_reply_err(req, err);
    return;
  }
  const struct stat st = make_stat(*n, opt_, mount_time_);
  fuse_reply_attr(req, &st, opt_.attr_timeout);
}

void FuseFs::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto n = inodes_.get(ino);
  if (int err = open_errno(fi->flags, n)) {
    fuse_reply_err(req, err);
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
    const fuse_file_info info = open_reply(flags, reinterpret_cast<uint64_t>(r.value().get()));
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
  if (int err = opendir_errno(n)) {
    fuse_reply_err(req, err);
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
    const fuse_file_info info = opendir_reply(flags, reinterpret_cast<uint64_t>(dh.get()));
    if (fuse_reply_open(pend->req, &info) == 0) dh.release();
  });
}

void FuseFs::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                     fuse_file_info* fi) {
  auto* dh = reinterpret_cast<DirHandle*>(fi->fh);
  std::vector<char> buf(size);
  size_t used = 0;
  for (size_t i = static_cast<size_t>(off); i < dirent_count(dh->entries); ++i) {
    const Dirent d = dirent_at(dh->entries, i, ino);
    size_t need = fuse_add_direntry(req, buf.data() + used, size - used, d.name, &d.attr, d.next);
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
  for (size_t i = static_cast<size_t>(off); i < dirent_count(dh->entries); ++i) {
    const Dirent d = dirent_at(dh->entries, i, ino);
    fuse_entry_param e{};
    e.attr = d.attr;
    const size_t need = fuse_add_direntry_plus(req, nullptr, 0, d.name, nullptr, 0);
    if (need > size - used) break;
    // "." and ".." are never linked by the kernel: no inode reference, only
    // the dirent. Other entries get attributes only where they are known
    // without asking upstream (a listing without sizes would mean a HEAD
    // per entry); ino 0 leaves the entry to a LOOKUP of its own.
    if (d.child) {
      const std::string path = http::child_path(dh->path, d.name);
      if (Result<cache::Attr> a = fetcher_->peek(path)) {
        e = ref_entry(path, a.value());
        refs.push_back(e.ino);
      }
    }
    used += fuse_add_direntry_plus(req, buf.data() + used, size - used, d.name, &e, d.next);
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

void reply_xattr_value(fuse_req_t req, const std::string& value, size_t size) {
  switch (xattr_reply(value.size(), size)) {
    case XattrReply::kSize:
      fuse_reply_xattr(req, value.size());
      return;
    case XattrReply::kTooSmall:
      fuse_reply_err(req, ERANGE);
      return;
    case XattrReply::kValue:
      fuse_reply_buf(req, value.data(), value.size());
      return;
  }
}

// From Fetcher::describe: a snapshot, never a request.
Xattrs version_xattrs(const cache::Fetcher& fetcher, const std::shared_ptr<cache::FileVersion>& v) {
  return file_xattrs(fetcher.describe(v), v->filter_note());
}

}  // namespace

void FuseFs::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto n = inodes_.get(ino);
  const XattrPlan plan = plan_getxattr(n, name);
  switch (plan.source) {
    case XattrSource::kError:
      fuse_reply_err(req, plan.err);
      return;
    case XattrSource::kUpstream:
      reply_xattr_value(req, fetcher_->upstream_up() ? "up" : "down", size);
      return;
    case XattrSource::kFile:
      if (auto value = find_xattr(version_xattrs(*fetcher_, n->version), name)) {
        reply_xattr_value(req, *value, size);
      } else {
        fuse_reply_err(req, ENODATA);
      }
      return;
  }
}

void FuseFs::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  auto n = inodes_.get(ino);
  if (int err = node_errno(n)) {
    fuse_reply_err(req, err);
    return;
  }
  const Xattrs attrs = wants_file_xattrs(*n) ? version_xattrs(*fetcher_, n->version) : Xattrs{};
  reply_xattr_value(req, xattr_names(*n, attrs), size);
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
      fuse_reply_err(r, access_errno(mask));
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
