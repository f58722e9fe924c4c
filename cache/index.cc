#include "cache/index.h"

#include <lmdb.h>
#include <sys/stat.h>

#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "cache/util/log.h"

namespace netbootfs::cache {
namespace {

Error mdb_error(int rc, const std::string& what) {
  return Error{rc == MDB_MAP_FULL ? ENOSPC : EIO, what + ": " + mdb_strerror(rc)};
}

// A transaction that aborts unless committed.
class Txn {
 public:
  Txn() = default;
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  ~Txn() { abort(); }
  int begin(MDB_env* env, MDB_txn* parent, unsigned flags) {
    return mdb_txn_begin(env, parent, flags, &txn_);
  }
  int commit() {
    const int rc = mdb_txn_commit(txn_);
    txn_ = nullptr;
    return rc;
  }
  void abort() {
    if (txn_) mdb_txn_abort(txn_);
    txn_ = nullptr;
  }
  MDB_txn* get() const { return txn_; }

 private:
  MDB_txn* txn_ = nullptr;
};

MDB_val val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string_view view(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }

// Serialised forms, little-endian host order (the cache never moves between
// architectures without an export):
//   PathEntry: u8 format=1, u64 size, i64 last_modified, i64 validated_at,
//              u16 len + sha256, u16 len + etag
//   BlobEntry: u8 format=1, u64 size, u32 refs, i64 last_access
constexpr uint8_t kFormat = 1;

template <class T>
void put_raw(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}
template <class T>
bool get_raw(std::string_view& in, T& v) {
  if (in.size() < sizeof v) return false;
  std::memcpy(&v, in.data(), sizeof v);
  in.remove_prefix(sizeof v);
  return true;
}
void put_str(std::string& out, const std::string& s) {
  put_raw<uint16_t>(out, static_cast<uint16_t>(s.size()));
  out += s;
}
bool get_str(std::string_view& in, std::string& s) {
  uint16_t n;
  if (!get_raw(in, n) || in.size() < n) return false;
  s.assign(in.data(), n);
  in.remove_prefix(n);
  return true;
}

std::string encode(const PathEntry& e) {
  std::string out;
  put_raw(out, kFormat);
  put_raw(out, e.size);
  put_raw(out, e.last_modified);
  put_raw(out, e.validated_at);
  put_str(out, e.sha256);
  put_str(out, e.etag.size() > 0xffff ? std::string() : e.etag);
  return out;
}
std::optional<PathEntry> decode_path(std::string_view in) {
  PathEntry e;
  uint8_t f;
  if (!get_raw(in, f) || f != kFormat || !get_raw(in, e.size) || !get_raw(in, e.last_modified) ||
      !get_raw(in, e.validated_at) || !get_str(in, e.sha256) || !get_str(in, e.etag)) {
    return std::nullopt;
  }
  return e;
}
std::string encode(const BlobEntry& e) {
  std::string out;
  put_raw(out, kFormat);
  put_raw(out, e.size);
  put_raw(out, e.refs);
  put_raw(out, e.last_access);
  return out;
}
std::optional<BlobEntry> decode_blob(std::string_view in) {
  BlobEntry e;
  uint8_t f;
  if (!get_raw(in, f) || f != kFormat || !get_raw(in, e.size) || !get_raw(in, e.refs) ||
      !get_raw(in, e.last_access)) {
    return std::nullopt;
  }
  return e;
}

}  // namespace

struct Index::Impl {
  MDB_env* env = nullptr;
  MDB_dbi paths = 0, blobs = 0, meta = 0;
  bool read_only = false;
  size_t map_size = 0;

  // Readers and the writer hold it shared; growing the map holds it
  // exclusively, because mdb_env_set_mapsize needs no transaction active in
  // this process.
  mutable std::shared_mutex env_mu;

  // Group commit.
  using Op = std::function<Result<void>(MDB_txn*)>;
  struct Pending {
    Op op;
    Result<void> result;
    bool done = false;
  };
  std::mutex queue_mu;
  std::condition_variable queue_cv;
  std::vector<std::shared_ptr<Pending>> queue;
  bool committing = false;

  std::mutex access_mu;
  std::unordered_map<std::string, int64_t> access;

  ~Impl() {
    if (env) mdb_env_close(env);
  }

  template <class T, class F>
  T read(F&& fn) const {
    std::shared_lock lk(env_mu);
    Txn txn;
    if (txn.begin(env, nullptr, MDB_RDONLY) != 0) return T{};
    return fn(txn.get());
  }

  std::optional<PathEntry> get_path(MDB_txn* txn, std::string_view path) const {
    MDB_val k = val(path), v;
    if (mdb_get(txn, paths, &k, &v) != 0) return std::nullopt;
    return decode_path(view(v));
  }
  std::optional<BlobEntry> get_blob(MDB_txn* txn, std::string_view sha) const {
    MDB_val k = val(sha), v;
    if (mdb_get(txn, blobs, &k, &v) != 0) return std::nullopt;
    return decode_blob(view(v));
  }
  int put(MDB_txn* txn, MDB_dbi dbi, std::string_view key, const std::string& value) {
    MDB_val k = val(key), v = val(value);
    return mdb_put(txn, dbi, &k, &v, 0);
  }

  Result<void> submit(Op op) {
    if (read_only) return Error{EROFS, "the index is open read-only"};
    auto p = std::make_shared<Pending>();
    p->op = std::move(op);
    std::unique_lock lk(queue_mu);
    queue.push_back(p);
    while (!p->done) {
      if (committing) {
        queue_cv.wait(lk);
        continue;
      }
      committing = true;
      std::vector<std::shared_ptr<Pending>> batch;
      batch.swap(queue);
      lk.unlock();
      commit_batch(batch);
      lk.lock();
      // Marked under the lock: a follower reads `done` under it, and then
      // its result, which the lock hand-over makes visible.
      for (auto& q : batch) q->done = true;
      committing = false;
      queue_cv.notify_all();
    }
    return p->result;
  }

  // One write transaction for the whole batch; each op in a nested
  // transaction so that one failing op fails alone.
  void commit_batch(std::vector<std::shared_ptr<Pending>>& batch) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      int rc;
      bool map_full = false;
      {
        std::shared_lock lk(env_mu);
        Txn txn;
        rc = txn.begin(env, nullptr, 0);
        if (rc == 0) {
          for (auto& p : batch) {
            Txn nested;
            rc = nested.begin(env, txn.get(), 0);
            if (rc != 0) break;
            p->result = p->op(nested.get());
            if (p->result.ok()) {
              rc = nested.commit();
              if (rc != 0) p->result = mdb_error(rc, "index write");
            }
            if (!p->result.ok() && p->result.error().code == ENOSPC) map_full = true;
            rc = 0;
          }
          if (!map_full && rc == 0) rc = txn.commit();
          if (rc == MDB_MAP_FULL) map_full = true;
        }
      }
      if (map_full && attempt == 0 && grow()) continue;
      for (auto& p : batch) {
        if (rc != 0) p->result = mdb_error(rc, "index commit");
      }
      return;
    }
  }

  bool grow() {
    std::unique_lock lk(env_mu);
    const size_t bigger = map_size * 2;
    if (mdb_env_set_mapsize(env, bigger) != 0) return false;
    map_size = bigger;
    logger("cache")->info("index map grown to {} MiB", bigger >> 20);
    return true;
  }

  int adjust_refs(MDB_txn* txn, const std::string& sha, int delta, uint64_t size) {
    auto b = get_blob(txn, sha).value_or(BlobEntry{size, 0, 0});
    if (delta > 0) {
      b.refs += static_cast<uint32_t>(delta);
      if (size) b.size = size;
    } else {
      b.refs = b.refs >= static_cast<uint32_t>(-delta) ? b.refs + delta : 0;
    }
    return put(txn, blobs, sha, encode(b));
  }
};

Index::Index(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Index::~Index() = default;

Result<std::unique_ptr<Index>> Index::open(const std::string& dir, Options options) {
  if (!options.read_only && ::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Error{errno, "mkdir " + dir + ": " + std::strerror(errno)};
  }
  auto impl = std::make_unique<Impl>();
  impl->read_only = options.read_only;
  int rc = mdb_env_create(&impl->env);
  if (rc != 0) return mdb_error(rc, "mdb_env_create");
  // Grow a small configured map to what the file already holds.
  struct stat st {};
  size_t map_size = options.map_size;
  if (::stat((dir + "/data.mdb").c_str(), &st) == 0) {
    map_size = std::max(map_size, static_cast<size_t>(st.st_size));
  }
  impl->map_size = map_size;
  mdb_env_set_mapsize(impl->env, map_size);
  mdb_env_set_maxdbs(impl->env, 4);
  mdb_env_set_maxreaders(impl->env, 512);
  unsigned flags = MDB_NOTLS;
  if (options.read_only) flags |= MDB_RDONLY;
  rc = mdb_env_open(impl->env, dir.c_str(), flags, 0644);
  if (rc != 0) return mdb_error(rc, "open index " + dir);
  int dead = 0;
  mdb_reader_check(impl->env, &dead);  // slots of crashed processes

  Txn txn;
  rc = txn.begin(impl->env, nullptr, options.read_only ? MDB_RDONLY : 0);
  if (rc != 0) return mdb_error(rc, "index transaction");
  const unsigned create = options.read_only ? 0 : MDB_CREATE;
  if ((rc = mdb_dbi_open(txn.get(), "paths", create, &impl->paths)) != 0 ||
      (rc = mdb_dbi_open(txn.get(), "blobs", create, &impl->blobs)) != 0 ||
      (rc = mdb_dbi_open(txn.get(), "meta", create, &impl->meta)) != 0) {
    return mdb_error(rc, "index tables");
  }
  MDB_val k = val("schema"), v;
  rc = mdb_get(txn.get(), impl->meta, &k, &v);
  if (rc == MDB_NOTFOUND) {
    if (options.read_only) return Error{EINVAL, "index has no schema version"};
    uint32_t version = kSchemaVersion;
    MDB_val nv{sizeof version, &version};
    if ((rc = mdb_put(txn.get(), impl->meta, &k, &nv, 0)) != 0) return mdb_error(rc, "schema");
  } else if (rc != 0) {
    return mdb_error(rc, "schema");
  } else {
    uint32_t version = 0;
    if (v.mv_size == sizeof version) std::memcpy(&version, v.mv_data, sizeof version);
    if (version != kSchemaVersion) {
      return Error{EINVAL, "cache index schema version " + std::to_string(version) +
                               " is not the version " + std::to_string(kSchemaVersion) +
                               " this netbootfs uses; move the cache away or clear it"};
    }
  }
  if ((rc = txn.commit()) != 0) return mdb_error(rc, "index open commit");
  return std::unique_ptr<Index>(new Index(std::move(impl)));
}

std::optional<PathEntry> Index::get_path(std::string_view path) const {
  return impl_->read<std::optional<PathEntry>>(
      [&](MDB_txn* t) { return impl_->get_path(t, path); });
}

std::optional<BlobEntry> Index::get_blob(std::string_view sha256) const {
  return impl_->read<std::optional<BlobEntry>>(
      [&](MDB_txn* t) { return impl_->get_blob(t, sha256); });
}

std::vector<std::pair<std::string, PathEntry>> Index::list_paths(std::string_view prefix) const {
  using Out = std::vector<std::pair<std::string, PathEntry>>;
  return impl_->read<Out>([&](MDB_txn* t) {
    Out out;
    MDB_cursor* c = nullptr;
    if (mdb_cursor_open(t, impl_->paths, &c) != 0) return out;
    MDB_val k = val(prefix), v;
    int rc = prefix.empty() ? mdb_cursor_get(c, &k, &v, MDB_FIRST)
                            : mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      const std::string_view key = view(k);
      if (key.compare(0, prefix.size(), prefix) != 0) break;
      // "a" covers "a" and "a/x", not "ab" or "a b".
      if (!prefix.empty() && key.size() > prefix.size() && key[prefix.size()] != '/') continue;
      if (auto e = decode_path(view(v))) out.emplace_back(std::string(key), std::move(*e));
    }
    mdb_cursor_close(c);
    return out;
  });
}

std::vector<std::pair<std::string, BlobEntry>> Index::list_blobs() const {
  using Out = std::vector<std::pair<std::string, BlobEntry>>;
  return impl_->read<Out>([&](MDB_txn* t) {
    Out out;
    MDB_cursor* c = nullptr;
    if (mdb_cursor_open(t, impl_->blobs, &c) != 0) return out;
    MDB_val k, v;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      if (auto e = decode_blob(view(v))) out.emplace_back(std::string(view(k)), *e);
    }
    mdb_cursor_close(c);
    return out;
  });
}

std::vector<std::string> Index::unreferenced_blobs() const {
  std::vector<std::string> out;
  for (auto& [sha, b] : list_blobs()) {
    if (b.refs == 0) out.push_back(sha);
  }
  return out;
}

IndexStats Index::stats() const {
  IndexStats s;
  s.paths = impl_->read<uint64_t>([&](MDB_txn* t) {
    MDB_stat st{};
    return mdb_stat(t, impl_->paths, &st) == 0 ? static_cast<uint64_t>(st.ms_entries) : 0;
  });
  for (auto& [sha, b] : list_blobs()) {
    s.blobs++;
    s.blob_bytes += b.size;
  }
  return s;
}

Result<void> Index::put_path(std::string path, PathEntry entry) {
  return impl_->submit([this, path = std::move(path), entry = std::move(entry)](MDB_txn* t) {
    auto old = impl_->get_path(t, path);
    int rc = 0;
    if (!old || old->sha256 != entry.sha256) {
      if (old) rc = impl_->adjust_refs(t, old->sha256, -1, 0);
      if (rc == 0) rc = impl_->adjust_refs(t, entry.sha256, +1, entry.size);
    }
    if (rc == 0) rc = impl_->put(t, impl_->paths, path, encode(entry));
    if (rc != 0) return Result<void>(mdb_error(rc, "put " + path));
    return Result<void>();
  });
}

Result<void> Index::remove_path(std::string path) {
  return impl_->submit([this, path = std::move(path)](MDB_txn* t) {
    auto old = impl_->get_path(t, path);
    if (!old) return Result<void>();
    int rc = impl_->adjust_refs(t, old->sha256, -1, 0);
    MDB_val k = val(path);
    if (rc == 0) rc = mdb_del(t, impl_->paths, &k, nullptr);
    if (rc != 0) return Result<void>(mdb_error(rc, "remove " + path));
    return Result<void>();
  });
}

Result<void> Index::set_validated(std::string path, int64_t at) {
  return impl_->submit([this, path = std::move(path), at](MDB_txn* t) {
    auto e = impl_->get_path(t, path);
    if (!e) return Result<void>(Error{ENOENT, "no entry for " + path});
    e->validated_at = at;
    if (int rc = impl_->put(t, impl_->paths, path, encode(*e)); rc != 0) {
      return Result<void>(mdb_error(rc, "validate " + path));
    }
    return Result<void>();
  });
}

Result<void> Index::remove_blob(std::string sha256) {
  return impl_->submit([this, sha = std::move(sha256)](MDB_txn* t) {
    auto b = impl_->get_blob(t, sha);
    if (!b) return Result<void>();
    if (b->refs > 0) return Result<void>(Error{EBUSY, "blob " + sha + " is still referenced"});
    MDB_val k = val(sha);
    if (int rc = mdb_del(t, impl_->blobs, &k, nullptr); rc != 0) {
      return Result<void>(mdb_error(rc, "remove blob " + sha));
    }
    return Result<void>();
  });
}

Result<std::vector<std::string>> Index::rebuild_refs() {
  auto dropped = std::make_shared<std::vector<std::string>>();
  auto r = impl_->submit([this, dropped](MDB_txn* t) {
    std::unordered_map<std::string, std::pair<uint32_t, uint64_t>> want;  // sha -> refs, size
    MDB_cursor* c = nullptr;
    if (int rc = mdb_cursor_open(t, impl_->paths, &c); rc != 0) {
      return Result<void>(mdb_error(rc, "cursor"));
    }
    MDB_val k, v;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      if (auto e = decode_path(view(v))) {
        auto& w = want[e->sha256];
        w.first++;
        w.second = e->size;
      }
    }
    mdb_cursor_close(c);
    std::vector<std::pair<std::string, BlobEntry>> existing;
    if (int rc = mdb_cursor_open(t, impl_->blobs, &c); rc != 0) {
      return Result<void>(mdb_error(rc, "cursor"));
    }
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      existing.emplace_back(std::string(view(k)), decode_blob(view(v)).value_or(BlobEntry{}));
    }
    mdb_cursor_close(c);
    for (auto& [sha, b] : existing) {
      auto it = want.find(sha);
      if (it == want.end()) {
        MDB_val key = val(sha);
        if (int rc = mdb_del(t, impl_->blobs, &key, nullptr); rc != 0) {
          return Result<void>(mdb_error(rc, "drop blob"));
        }
        dropped->push_back(sha);
        continue;
      }
      if (b.refs != it->second.first) {
        b.refs = it->second.first;
        if (int rc = impl_->put(t, impl_->blobs, sha, encode(b)); rc != 0) {
          return Result<void>(mdb_error(rc, "refcount"));
        }
      }
      want.erase(it);
    }
    for (auto& [sha, w] : want) {  // entries whose blob record was missing
      if (int rc = impl_->put(t, impl_->blobs, sha, encode(BlobEntry{w.second, w.first, 0}));
          rc != 0) {
        return Result<void>(mdb_error(rc, "blob record"));
      }
    }
    return Result<void>();
  });
  if (!r) return r.error();
  return std::move(*dropped);
}

void Index::note_access(std::string_view sha256, int64_t at) {
  std::lock_guard lk(impl_->access_mu);
  auto [it, inserted] = impl_->access.try_emplace(std::string(sha256), at);
  if (!inserted && it->second < at) it->second = at;
}

Result<void> Index::flush_access() {
  std::unordered_map<std::string, int64_t> batch;
  {
    std::lock_guard lk(impl_->access_mu);
    batch.swap(impl_->access);
  }
  if (batch.empty() || impl_->read_only) return {};
  return impl_->submit([this, batch = std::move(batch)](MDB_txn* t) {
    for (const auto& [sha, at] : batch) {
      auto b = impl_->get_blob(t, sha);
      if (!b || b->last_access >= at) continue;
      b->last_access = at;
      if (int rc = impl_->put(t, impl_->blobs, sha, encode(*b)); rc != 0) {
        return Result<void>(mdb_error(rc, "access times"));
      }
    }
    return Result<void>();
  });
}

}  // namespace netbootfs::cache
