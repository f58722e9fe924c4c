#include "cache/index.h"

#include <sys/stat.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "cache/blob_store.h"  // is_sha256_hex
#include "cache/index_codec.h"
#include "cache/lmdb_txn.h"
#include "cache/util/crash_point.h"
#include "cache/util/log.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return logger("cache"); }

using lmdb::Cursor;
using lmdb::Txn;
using lmdb::val;
using lmdb::view;

// "totals" sums the blob records (the decodable ones) so that the cache's
// size is one read instead of a walk of the blob table. Every write of a
// blob record adjusts it in the same transaction, so it is as
// crash-consistent as the records. An index written by a release without it
// (or a downgrade that wrote records without adjusting it) is recounted:
// at a writable open when it is missing, by rebuild_refs() (recovery, at
// every mount) when it is wrong. The stored forms: cache/index_codec.h.

}  // namespace

struct Index::Impl {
  // Closed last, after every transaction (they all live in narrower scopes).
  lmdb::Env env_holder;
  MDB_env* env = nullptr;
  MDB_dbi paths = 0, blobs = 0, meta = 0;
  bool read_only = false;
  size_t max_key = 511;
  size_t max_map_size = 0;  // 0: no limit

  // Lock order: env_gate -> env_mu. queue_mu is never held together with
  // either (the leader drops it before touching the environment); access_mu
  // is a leaf.
  //
  // Every transaction of this process is begun and ended while env_mu is
  // held shared (readers, and the one writer: the group-commit leader).
  // mdb_env_set_mapsize() may only be called while no transaction of this
  // process is active, so it runs with env_mu held exclusively.
  mutable std::shared_mutex env_mu;
  mutable size_t map_size = 0;  // guarded by env_mu
  // glibc's rwlock prefers readers: under a steady stream of FUSE reads an
  // exclusive env_mu could wait forever, and with it every writer. Shared
  // holders pass through `env_gate` first, and the resizer holds it while it
  // waits, so new readers queue behind it and the active ones drain.
  mutable std::mutex env_gate;

  std::shared_lock<std::shared_mutex> share_env() const {
    std::lock_guard gate(env_gate);
    return std::shared_lock(env_mu);
  }
  std::unique_lock<std::shared_mutex> own_env() const {
    std::lock_guard gate(env_gate);
    return std::unique_lock(env_mu);
  }

  // Group commit.
  using Op = std::function<Result<void>(MDB_txn*)>;
  struct Pending {
    Op op;
    Result<void> result;
    bool done = false;  // guarded by queue_mu
  };
  std::mutex queue_mu;
  std::condition_variable queue_cv;
  std::vector<std::shared_ptr<Pending>> queue;  // guarded by queue_mu
  bool committing = false;                      // guarded by queue_mu

  std::mutex access_mu;
  std::unordered_map<std::string, int64_t> access;  // sha256 -> newest noted time

  // Another process (netbootfsctl, or the mount while a tool runs) grew the
  // map past ours: LMDB refuses new transactions until we adopt its size.
  void adopt_resized_map() const {
    auto lk = own_env();
    if (mdb_env_set_mapsize(env, 0) == 0) {
      MDB_envinfo info{};
      mdb_env_info(env, &info);
      map_size = info.me_mapsize;
    }
  }

  // Begins a read-only transaction, following a map resize by another process.
  template <class T, class F>
  T read(F&& fn) const {
    for (int attempt = 0; attempt < 3; ++attempt) {
      auto lk = share_env();
      Txn txn;
      const int rc = txn.begin(env, nullptr, MDB_RDONLY);
      if (rc == 0) return fn(txn.get());
      if (rc != MDB_MAP_RESIZED) {
        log()->warn("index read transaction: {}", mdb_strerror(rc));
        return T{};
      }
      lk.unlock();
      adopt_resized_map();
    }
    log()->warn("index read transaction: the map keeps being resized");
    return T{};
  }

  std::optional<PathEntry> get_path(MDB_txn* txn, std::string_view path) const {
    MDB_val k = val(path), v;
    if (path.empty() || path.size() > max_key) return std::nullopt;
    if (mdb_get(txn, paths, &k, &v) != 0) return std::nullopt;
    return decode_path_entry(view(v));
  }
  std::optional<BlobEntry> get_blob(MDB_txn* txn, std::string_view sha) const {
    MDB_val k = val(sha), v;
    if (!is_sha256_hex(sha)) return std::nullopt;
    if (mdb_get(txn, blobs, &k, &v) != 0) return std::nullopt;
    return decode_blob_entry(view(v));
  }
  Result<void> check_path(std::string_view path) const {
    if (path.empty()) return Error{EINVAL, "empty path"};
    if (path.size() > max_key) {
      return Error{ENAMETOOLONG, "path longer than the index's " + std::to_string(max_key) +
                                     " byte key limit: " + std::string(path.substr(0, 80)) + "..."};
    }
    return {};
  }

  // Enqueues an op and returns once it is durable or failed. The first
  // waiter that finds no commit in progress becomes the leader: it takes the
  // whole queue, commits it in one transaction and wakes everybody; ops
  // queued meanwhile make the next batch. So N concurrent writers cost about
  // one fsync per batch instead of one each.
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

  // Runs the batch in one write transaction, each op in a nested transaction
  // so that an op that fails (validation, EBUSY, a full map) leaves no
  // partial writes and fails alone. Sets map_full when some op or the
  // commit ran out of map. Returns 0, or the error that fails the whole batch.
  int run_batch(std::vector<std::shared_ptr<Pending>>& batch, bool commit_when_full,
                bool& map_full) {
    map_full = false;
    auto lk = share_env();
    Txn txn;
    int rc = txn.begin(env, nullptr, 0);
    if (rc != 0) return rc;
    for (auto& p : batch) {
      Txn nested;
      rc = nested.begin(env, txn.get(), 0);
      if (rc != 0) return rc;  // the parent is unusable: the batch fails
      p->result = p->op(nested.get());
      if (p->result.ok()) {
        rc = nested.commit();
        if (rc != 0) p->result = lmdb::error(rc, "index write");
      }
      if (!p->result.ok() && p->result.error().code == ENOSPC) map_full = true;
    }
    // With a full map, the first try is thrown away so the whole batch can
    // be replayed once the map has grown; the last try commits what fitted.
    if (map_full && !commit_when_full) return MDB_MAP_FULL;
    crash_point(CrashPoint::kIndexBeforeCommit);
    rc = txn.commit();
    if (rc == MDB_MAP_FULL) map_full = true;
    return rc;
  }

  void commit_batch(std::vector<std::shared_ptr<Pending>>& batch) {
    bool grown = false;
    int resized = 0;
    for (;;) {
      bool map_full = false;
      const int rc = run_batch(batch, /*commit_when_full=*/grown, map_full);
      if (rc == MDB_MAP_RESIZED && resized++ < 3) {
        adopt_resized_map();
        continue;
      }
      if (map_full && !grown) {
        grown = true;
        if (grow()) continue;
        // Could not grow: commit what fits, the rest fails with ENOSPC.
        if (rc == MDB_MAP_FULL) continue;
      }
      if (rc != 0) {
        // Nothing of the batch was committed, whatever each op reported.
        for (auto& p : batch) p->result = lmdb::error(rc, "index commit");
      } else {
        crash_point(CrashPoint::kIndexAfterCommit);
      }
      return;
    }
  }

  // Safe without stopping the world: see env_mu. Growth is rare (it doubles),
  // and only the group-commit leader calls it, between two transactions.
  // Other processes notice on their next transaction (MDB_MAP_RESIZED).
  bool grow() {
    auto lk = own_env();
    size_t bigger = map_size * 2;
    if (max_map_size != 0 && bigger > max_map_size) {
      if (map_size >= max_map_size) {
        log()->error("index map full at its limit of {} KiB", max_map_size >> 10);
        return false;
      }
      bigger = max_map_size;
    }
    if (const int rc = mdb_env_set_mapsize(env, bigger); rc != 0) {
      log()->error("growing the index map to {} bytes: {}", bigger, mdb_strerror(rc));
      return false;
    }
    MDB_envinfo info{};
    mdb_env_info(env, &info);
    map_size = std::max(bigger, info.me_mapsize);
    log()->info("index map grown to {} KiB", map_size >> 10);
    return true;
  }

  // Moves one reference. A decrement of a blob without a record is a no-op:
  // creating a zero-size garbage record would hide the real size.
  int add_ref(MDB_txn* txn, const std::string& sha, uint64_t size) {
    const auto before = get_blob(txn, sha);
    BlobEntry b = before.value_or(BlobEntry{});
    b.refs += 1;
    b.size = size;  // same address, same bytes: any entry's size is the blob's
    return write_blob(txn, sha, before, b);
  }
  int drop_ref(MDB_txn* txn, const std::string& sha) {
    auto b = get_blob(txn, sha);
    if (!b) return 0;
    if (b->refs > 0) b->refs -= 1;
    return lmdb::put(txn, blobs, sha, encode_blob_entry(*b));  // same size: the totals stay
  }

  // Blob records change only through these two, so "totals" follows them.
  // `before`: the record as get_blob() read it in this transaction.
  int write_blob(MDB_txn* txn, const std::string& sha, const std::optional<BlobEntry>& before,
                 const BlobEntry& after) {
    int rc = lmdb::put(txn, blobs, sha, encode_blob_entry(after));
    if (rc == 0 && (!before || before->size != after.size)) {
      rc = adjust_totals(txn, before, after);
    }
    return rc;
  }
  int erase_blob(MDB_txn* txn, const std::string& sha, const std::optional<BlobEntry>& before) {
    MDB_val k = val(sha);
    int rc = mdb_del(txn, blobs, &k, nullptr);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc == 0 && before) rc = adjust_totals(txn, before, std::nullopt);
    return rc;
  }
  int adjust_totals(MDB_txn* txn, const std::optional<BlobEntry>& before,
                    const std::optional<BlobEntry>& after) {
    auto t = get_totals(txn);
    // Missing only in an index no writable open has seen yet (open() creates
    // it); stats() counts by walking until then.
    if (!t) return 0;
    if (before) {
      t->bytes -= std::min(t->bytes, before->size);
      t->objects -= std::min<uint64_t>(t->objects, 1);
    }
    if (after) {
      t->bytes += after->size;
      t->objects += 1;
    }
    return lmdb::put(txn, meta, kMetaTotalsKey, encode_totals(*t));
  }
  std::optional<BlobTotals> get_totals(MDB_txn* txn) const {
    MDB_val k = val(kMetaTotalsKey), v;
    if (mdb_get(txn, meta, &k, &v) != 0) return std::nullopt;
    return decode_totals(view(v));
  }
  // Walks the blob table: what "totals" must say.
  BlobTotals count_totals(MDB_txn* txn) const {
    BlobTotals t;
    Cursor c;
    if (c.open(txn, blobs) != 0) return t;
    MDB_val k, v;
    for (int rc = c.get(&k, &v, MDB_FIRST); rc == 0; rc = c.get(&k, &v, MDB_NEXT)) {
      if (auto e = decode_blob_entry(view(v))) {
        t.objects++;
        t.bytes += e->size;
      }
    }
    return t;
  }
};

Index::Index(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Index::~Index() = default;

Result<std::unique_ptr<Index>> Index::open(const std::string& dir, Options options) {
  if (!options.read_only && ::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    const int e = errno;
    return Error{e, "mkdir " + dir + ": " + std::strerror(e)};
  }
  auto impl = std::make_unique<Impl>();
  impl->read_only = options.read_only;
  impl->max_map_size = options.max_map_size;
  int rc = impl->env_holder.create();
  if (rc != 0) return lmdb::error(rc, "mdb_env_create");
  MDB_env* env = impl->env = impl->env_holder.get();
  // A configured map smaller than the data already stored would make the
  // open fail; start from what the file holds.
  size_t map_size = std::max<size_t>(options.map_size, 1 << 16);
  struct stat st {};
  if (::stat((dir + "/data.mdb").c_str(), &st) == 0) {
    map_size = std::max(map_size, static_cast<size_t>(st.st_size));
  }
  if ((rc = mdb_env_set_mapsize(env, map_size)) != 0) return lmdb::error(rc, "index map size");
  if ((rc = mdb_env_set_maxdbs(env, 4)) != 0) return lmdb::error(rc, "index tables");
  // Each FUSE thread may hold one short read transaction at a time.
  if ((rc = mdb_env_set_maxreaders(env, 512)) != 0) return lmdb::error(rc, "index readers");
  // MDB_NOTLS: read transactions are tied to the Txn object, not to the
  // thread, so any number of threads (and thread pools) can read.
  unsigned flags = MDB_NOTLS;
  if (options.read_only) flags |= MDB_RDONLY;
  rc = mdb_env_open(env, dir.c_str(), flags, 0644);
  if (rc != 0) return lmdb::error(rc, "open index " + dir);
  int dead = 0;
  // Reader slots of processes that died (kill -9) would pin old pages forever.
  if (mdb_reader_check(env, &dead) == 0 && dead > 0) {
    log()->info("index: cleared {} stale reader slot(s)", dead);
  }
  MDB_envinfo info{};
  mdb_env_info(env, &info);
  impl->map_size = info.me_mapsize;
  impl->max_key = static_cast<size_t>(mdb_env_get_maxkeysize(env));

  Txn txn;
  rc = txn.begin(env, nullptr, options.read_only ? MDB_RDONLY : 0);
  if (rc != 0) return lmdb::error(rc, "index transaction");
  const unsigned create = options.read_only ? 0 : MDB_CREATE;
  if ((rc = mdb_dbi_open(txn.get(), "paths", create, &impl->paths)) != 0 ||
      (rc = mdb_dbi_open(txn.get(), "blobs", create, &impl->blobs)) != 0 ||
      (rc = mdb_dbi_open(txn.get(), "meta", create, &impl->meta)) != 0) {
    if (rc == MDB_NOTFOUND) return Error{ENOENT, "no netbootfs index in " + dir};
    return lmdb::error(rc, "index tables in " + dir);
  }
  MDB_val k = val(kMetaSchemaKey), v;
  rc = mdb_get(txn.get(), impl->meta, &k, &v);
  if (rc == MDB_NOTFOUND) {
    if (options.read_only) return Error{ENOENT, "index in " + dir + " has no schema version"};
    rc = lmdb::put(txn.get(), impl->meta, kMetaSchemaKey, encode_schema_version(kSchemaVersion));
    if (rc != 0) return lmdb::error(rc, "schema");
  } else if (rc != 0) {
    return lmdb::error(rc, "schema");
  } else {
    const uint32_t version = decode_schema_version(view(v)).value_or(0);
    if (version != kSchemaVersion) {
      return Error{EPROTO, "cache index " + dir + " has schema version " + std::to_string(version) +
                               ", this netbootfs uses version " + std::to_string(kSchemaVersion) +
                               "; move the cache directory away or clear it"};
    }
  }
  if (!options.read_only && !impl->get_totals(txn.get())) {
    // An index from before the running totals (or with a damaged record):
    // counted once here, kept up to date by every write from now on.
    const BlobTotals t = impl->count_totals(txn.get());
    if ((rc = lmdb::put(txn.get(), impl->meta, kMetaTotalsKey, encode_totals(t))) != 0) {
      return lmdb::error(rc, "index totals");
    }
    // A new index has nothing to count and nothing to say.
    if (t.objects > 0) log()->info("index: counted {} blobs ({} bytes)", t.objects, t.bytes);
  }
  // Committing also makes the dbi handles usable by every later transaction.
  if ((rc = txn.commit()) != 0) return lmdb::error(rc, "index open commit");
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

std::vector<std::pair<std::string, PathEntry>> Index::list_paths(std::string_view prefix,
                                                                size_t max) const {
  using Out = std::vector<std::pair<std::string, PathEntry>>;
  return impl_->read<Out>([&](MDB_txn* t) {
    Out out;
    Cursor c;
    if (c.open(t, impl_->paths) != 0) return out;
    MDB_val k = val(prefix), v;
    int rc = prefix.empty() ? c.get(&k, &v, MDB_FIRST) : c.get(&k, &v, MDB_SET_RANGE);
    // "a" covers "a" and "a/..." but not "ab" nor "a b"; "a/" covers "a/...".
    const bool dir_form = !prefix.empty() && prefix.back() == '/';
    for (; rc == 0 && out.size() < max; rc = c.get(&k, &v, MDB_NEXT)) {
      const std::string_view key = view(k);
      if (key.substr(0, prefix.size()) != prefix) break;
      if (!prefix.empty() && !dir_form && key.size() > prefix.size()) {
        const auto next = static_cast<unsigned char>(key[prefix.size()]);
        // Keys sort bytewise: "a b", "a-c" and "a.x" come before "a/",
        // and everything after the "a/" run is past the directory.
        if (next < '/') continue;
        if (next > '/') break;
      }
      if (auto e = decode_path_entry(view(v))) out.emplace_back(std::string(key), std::move(*e));
    }
    return out;
  });
}

std::vector<std::pair<std::string, BlobEntry>> Index::list_blobs() const {
  using Out = std::vector<std::pair<std::string, BlobEntry>>;
  return impl_->read<Out>([&](MDB_txn* t) {
    Out out;
    Cursor c;
    if (c.open(t, impl_->blobs) != 0) return out;
    MDB_val k, v;
    for (int rc = c.get(&k, &v, MDB_FIRST); rc == 0; rc = c.get(&k, &v, MDB_NEXT)) {
      if (auto e = decode_blob_entry(view(v))) out.emplace_back(std::string(view(k)), *e);
    }
    return out;
  });
}

std::vector<std::string> Index::unreferenced_blobs() const {
  using Out = std::vector<std::string>;
  return impl_->read<Out>([&](MDB_txn* t) {
    Out out;
    Cursor c;
    if (c.open(t, impl_->blobs) != 0) return out;
    MDB_val k, v;
    for (int rc = c.get(&k, &v, MDB_FIRST); rc == 0; rc = c.get(&k, &v, MDB_NEXT)) {
      auto e = decode_blob_entry(view(v));
      if (e && e->refs == 0) out.emplace_back(view(k));
    }
    return out;
  });
}

IndexStats Index::stats() const {
  // One transaction: the three figures describe the same moment.
  return impl_->read<IndexStats>([&](MDB_txn* t) {
    IndexStats s;
    MDB_stat st{};
    if (mdb_stat(t, impl_->paths, &st) == 0) s.paths = st.ms_entries;
    // Without the totals record (an old index open read-only), walk. (Not
    // value_or: its argument, the walk, would be evaluated every time.)
    auto kept = impl_->get_totals(t);
    const BlobTotals tot = kept ? *kept : impl_->count_totals(t);
    s.blobs = tot.objects;
    s.blob_bytes = tot.bytes;
    return s;
  });
}

Index::TotalsCheck Index::check_totals() const {
  return impl_->read<TotalsCheck>([&](MDB_txn* t) {
    TotalsCheck c;
    if (auto kept = impl_->get_totals(t)) {
      c.stored = true;
      c.kept.blobs = kept->objects;
      c.kept.blob_bytes = kept->bytes;
    }
    const BlobTotals counted = impl_->count_totals(t);
    c.counted.blobs = counted.objects;
    c.counted.blob_bytes = counted.bytes;
    return c;
  });
}

Result<void> Index::put_path(std::string path, PathEntry entry) {
  std::vector<std::pair<std::string, PathEntry>> one;
  one.emplace_back(std::move(path), std::move(entry));
  return put_paths(std::move(one));
}

Result<void> Index::put_paths(std::vector<std::pair<std::string, PathEntry>> entries) {
  // Validated before queuing: a bad op never reaches the write transaction.
  for (const auto& [path, entry] : entries) {
    if (auto r = impl_->check_path(path); !r) return r;
    if (!is_sha256_hex(entry.sha256)) return Error{EINVAL, "not a sha256: " + entry.sha256};
  }
  // One op, so one nested transaction: a failure part-way leaves nothing.
  return impl_->submit([this, entries = std::move(entries)](MDB_txn* t) {
    for (const auto& [path, entry] : entries) {
      auto old = impl_->get_path(t, path);
      int rc = 0;
      if (!old || old->sha256 != entry.sha256) {
        if (old) rc = impl_->drop_ref(t, old->sha256);
        if (rc == 0) rc = impl_->add_ref(t, entry.sha256, entry.size);
      }
      if (rc == 0) rc = lmdb::put(t, impl_->paths, path, encode_path_entry(entry));
      if (rc != 0) return Result<void>(lmdb::error(rc, "put " + path));
    }
    return Result<void>();
  });
}

Result<void> Index::remove_path(std::string path) {
  if (auto r = impl_->check_path(path); !r) return r;
  return impl_->submit([this, path = std::move(path)](MDB_txn* t) {
    auto old = impl_->get_path(t, path);
    if (!old) return Result<void>();
    int rc = impl_->drop_ref(t, old->sha256);
    if (rc == 0) rc = lmdb::del_if_present(t, impl_->paths, path);
    if (rc != 0) return Result<void>(lmdb::error(rc, "remove " + path));
    return Result<void>();
  });
}

Result<void> Index::set_validated(std::string path, int64_t at) {
  if (auto r = impl_->check_path(path); !r) return r;
  return impl_->submit([this, path = std::move(path), at](MDB_txn* t) {
    auto e = impl_->get_path(t, path);
    if (!e) return Result<void>(Error{ENOENT, "no entry for " + path});
    e->validated_at = at;
    if (int rc = lmdb::put(t, impl_->paths, path, encode_path_entry(*e)); rc != 0) {
      return Result<void>(lmdb::error(rc, "validate " + path));
    }
    return Result<void>();
  });
}

Result<void> Index::remove_blob(std::string sha256) {
  if (!is_sha256_hex(sha256)) return Error{EINVAL, "not a sha256: " + sha256};
  return impl_->submit([this, sha = std::move(sha256)](MDB_txn* t) {
    auto b = impl_->get_blob(t, sha);
    if (!b) return Result<void>();
    // Checked inside the transaction: a put_path earlier in the same batch
    // may have just taken a reference.
    if (b->refs > 0) {
      return Result<void>(Error{EBUSY, "blob " + sha + " is still referenced by " +
                                           std::to_string(b->refs) + " path(s)"});
    }
    if (int rc = impl_->erase_blob(t, sha, b); rc != 0) {
      return Result<void>(lmdb::error(rc, "remove blob " + sha));
    }
    return Result<void>();
  });
}

Result<std::vector<std::string>> Index::rebuild_refs() {
  auto dropped = std::make_shared<std::vector<std::string>>();
  auto r = impl_->submit([this, dropped](MDB_txn* t) {
    dropped->clear();  // the op is replayed when the map had to grow
    struct Want {
      uint32_t refs = 0;
      uint64_t size = 0;
    };
    std::unordered_map<std::string, Want> want;
    MDB_val k, v;
    {
      Cursor c;
      if (int rc = c.open(t, impl_->paths); rc != 0) return Result<void>(lmdb::error(rc, "cursor"));
      for (int rc = c.get(&k, &v, MDB_FIRST); rc == 0; rc = c.get(&k, &v, MDB_NEXT)) {
        if (auto e = decode_path_entry(view(v))) {
          auto& w = want[e->sha256];
          w.refs++;
          w.size = e->size;
        }
      }
    }
    // Collected first: writing while a cursor walks the same table would
    // move it under our feet.
    std::vector<std::pair<std::string, std::optional<BlobEntry>>> existing;
    {
      Cursor c;
      if (int rc = c.open(t, impl_->blobs); rc != 0) return Result<void>(lmdb::error(rc, "cursor"));
      for (int rc = c.get(&k, &v, MDB_FIRST); rc == 0; rc = c.get(&k, &v, MDB_NEXT)) {
        existing.emplace_back(std::string(view(k)), decode_blob_entry(view(v)));
      }
    }
    for (auto& [sha, b] : existing) {
      auto it = want.find(sha);
      if (it == want.end()) {
        if (int rc = impl_->erase_blob(t, sha, b); rc != 0) {
          return Result<void>(lmdb::error(rc, "drop blob record " + sha));
        }
        dropped->push_back(sha);
        continue;
      }
      BlobEntry fixed = b.value_or(BlobEntry{});  // an unreadable record is rewritten
      fixed.refs = it->second.refs;
      fixed.size = it->second.size;
      if (!b || b->refs != fixed.refs || b->size != fixed.size) {
        if (int rc = impl_->write_blob(t, sha, b, fixed); rc != 0) {
          return Result<void>(lmdb::error(rc, "refcount of " + sha));
        }
      }
      want.erase(it);
    }
    for (auto& [sha, w] : want) {  // entries whose blob record was missing
      if (!is_sha256_hex(sha)) continue;
      if (int rc = impl_->write_blob(t, sha, std::nullopt, BlobEntry{w.size, w.refs, 0}); rc != 0) {
        return Result<void>(lmdb::error(rc, "blob record " + sha));
      }
    }
    // The totals are checked here too: recovery runs this at every mount,
    // and a release that wrote blob records without adjusting them (a
    // downgrade), or a damaged record, must not skew eviction for long.
    const BlobTotals counted = impl_->count_totals(t);
    const auto stored = impl_->get_totals(t);
    if (!stored || !(*stored == counted)) {
      if (stored) {
        log()->warn("index: totals said {} blobs ({} bytes), the records hold {} ({} bytes); fixed",
                    stored->objects, stored->bytes, counted.objects, counted.bytes);
      }
      if (int rc = lmdb::put(t, impl_->meta, kMetaTotalsKey, encode_totals(counted)); rc != 0) {
        return Result<void>(lmdb::error(rc, "index totals"));
      }
    }
    return Result<void>();
  });
  if (!r) return r.error();
  return std::move(*dropped);
}

// A nested transaction carries its parent's id, so the id seen here is the
// one of the transaction that commits the batch.
Result<void> Index::set_clean_mark() {
  return impl_->submit([this](MDB_txn* t) {
    const int rc = lmdb::put(t, impl_->meta, kMetaCleanKey, encode_clean_mark(mdb_txn_id(t)));
    if (rc != 0) return Result<void>(lmdb::error(rc, "clean mark"));
    return Result<void>();
  });
}

Result<bool> Index::take_clean_mark() {
  if (impl_->read_only) return Error{EROFS, "the index is open read-only"};
  // Without a mark (a new cache, a crash) nothing is written: a start-up
  // after a crash commits what it did before.
  const bool marked = impl_->read<bool>([this](MDB_txn* t) {
    MDB_val k = val(kMetaCleanKey), v;
    return mdb_get(t, impl_->meta, &k, &v) == 0;
  });
  if (!marked) return false;
  auto clean = std::make_shared<bool>(false);
  auto r = impl_->submit([this, clean](MDB_txn* t) {
    *clean = false;  // the op is replayed when the map had to grow
    MDB_val k = val(kMetaCleanKey), v;
    const int rc = mdb_get(t, impl_->meta, &k, &v);
    if (rc == MDB_NOTFOUND) return Result<void>();
    if (rc != 0) return Result<void>(lmdb::error(rc, "clean mark"));
    // Clean only when the mark's transaction is the one before this one.
    const auto at = decode_clean_mark(view(v));
    *clean = at && *at + 1 == mdb_txn_id(t);
    if (int d = lmdb::del_if_present(t, impl_->meta, kMetaCleanKey); d != 0) {
      return Result<void>(lmdb::error(d, "clean mark"));
    }
    return Result<void>();
  });
  if (!r) return r.error();
  return *clean;
}

void Index::note_access(std::string_view sha256, int64_t at) {
  std::lock_guard lk(impl_->access_mu);
  auto [it, inserted] = impl_->access.try_emplace(std::string(sha256), at);
  if (!inserted && it->second < at) it->second = at;
}

std::vector<std::pair<std::string, int64_t>> Index::pending_access() const {
  std::lock_guard lk(impl_->access_mu);
  return {impl_->access.begin(), impl_->access.end()};
}

Result<void> Index::flush_access() {
  std::unordered_map<std::string, int64_t> batch;
  {
    std::lock_guard lk(impl_->access_mu);
    batch.swap(impl_->access);
  }
  if (batch.empty() || impl_->read_only) return {};
  auto r = impl_->submit([this, &batch](MDB_txn* t) {
    for (const auto& [sha, at] : batch) {
      auto b = impl_->get_blob(t, sha);
      if (!b || b->last_access >= at) continue;  // gone since, or already newer
      b->last_access = at;
      if (int rc = lmdb::put(t, impl_->blobs, sha, encode_blob_entry(*b)); rc != 0) {
        return Result<void>(lmdb::error(rc, "access times"));
      }
    }
    return Result<void>();
  });
  if (!r) {
    // Keep the times for the next flush rather than lose them; LRU order
    // would otherwise forget the reads of this period.
    std::lock_guard lk(impl_->access_mu);
    for (const auto& [sha, at] : batch) {
      auto [it, inserted] = impl_->access.try_emplace(sha, at);
      if (!inserted && it->second < at) it->second = at;
    }
  }
  return r;
}

}  // namespace netbootfs::cache
