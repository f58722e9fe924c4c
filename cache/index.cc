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
#include "cache/index_tables.h"
#include "cache/lmdb_txn.h"
#include "cache/util/crash_point.h"
#include "cache/util/log.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return logger("cache"); }

using lmdb::Txn;

}  // namespace

struct Index::Impl {
  // Closed last, after every transaction (they all live in narrower scopes).
  lmdb::Env env_holder;
  MDB_env* env = nullptr;
  IndexTables tables;
  bool read_only = false;
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

  Result<void> check_path(std::string_view path) const {
    if (path.empty()) return Error{EINVAL, "empty path"};
    if (path.size() > tables.max_key) {
      return Error{ENAMETOOLONG, "path longer than the index's " + std::to_string(tables.max_key) +
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

  Result<void> open_env(const std::string& dir, const Options& options);
  Result<void> open_tables(const std::string& dir);
  Result<void> check_schema(MDB_txn* txn, const std::string& dir);
  Result<void> ensure_totals(MDB_txn* txn);
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
  if (auto r = impl->open_env(dir, options); !r) return r.error();
  if (auto r = impl->open_tables(dir); !r) return r.error();
  return std::unique_ptr<Index>(new Index(std::move(impl)));
}

Result<void> Index::Impl::open_env(const std::string& dir, const Options& options) {
  int rc = mdb_env_create(env_holder.out());
  if (rc != 0) return lmdb::error(rc, "mdb_env_create");
  env = env_holder.get();
  // A configured map smaller than the data already stored would make the
  // open fail; start from what the file holds.
  size_t wanted = std::max<size_t>(options.map_size, 1 << 16);
  struct stat st {};
  if (::stat((dir + "/data.mdb").c_str(), &st) == 0) {
    wanted = std::max(wanted, static_cast<size_t>(st.st_size));
  }
  if ((rc = mdb_env_set_mapsize(env, wanted)) != 0) return lmdb::error(rc, "index map size");
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
  map_size = info.me_mapsize;
  tables.max_key = static_cast<size_t>(mdb_env_get_maxkeysize(env));
  return {};
}

Result<void> Index::Impl::open_tables(const std::string& dir) {
  Txn txn;
  int rc = txn.begin(env, nullptr, read_only ? MDB_RDONLY : 0);
  if (rc != 0) return lmdb::error(rc, "index transaction");
  if ((rc = tables.open(txn.get(), /*create=*/!read_only)) != 0) {
    if (rc == MDB_NOTFOUND) return Error{ENOENT, "no netbootfs index in " + dir};
    return lmdb::error(rc, "index tables in " + dir);
  }
  if (auto r = check_schema(txn.get(), dir); !r) return r;
  if (!read_only) {
    if (auto r = ensure_totals(txn.get()); !r) return r;
  }
  // Committing also makes the dbi handles usable by every later transaction.
  if ((rc = txn.commit()) != 0) return lmdb::error(rc, "index open commit");
  return {};
}

// A new index gets the version; another version is refused.
Result<void> Index::Impl::check_schema(MDB_txn* txn, const std::string& dir) {
  uint32_t version = 0;
  int rc = tables.get_schema(txn, version);
  if (rc == MDB_NOTFOUND) {
    if (read_only) return Error{ENOENT, "index in " + dir + " has no schema version"};
    if ((rc = tables.put_schema(txn, kSchemaVersion)) != 0) return lmdb::error(rc, "schema");
    return {};
  }
  if (rc != 0) return lmdb::error(rc, "schema");
  if (version != kSchemaVersion) {
    return Error{EPROTO, "cache index " + dir + " has schema version " + std::to_string(version) +
                             ", this netbootfs uses version " + std::to_string(kSchemaVersion) +
                             "; move the cache directory away or clear it"};
  }
  return {};
}

// "totals" sums the blob records so that the cache's size is one read
// instead of a walk of the blob table. An index from before the running
// totals (or with a damaged record) is counted once here; every write keeps
// them up to date from then on, and rebuild_refs() fixes them when a
// release that did not know them (a downgrade) wrote blob records.
Result<void> Index::Impl::ensure_totals(MDB_txn* txn) {
  if (tables.get_totals(txn)) return {};
  const BlobTotals t = tables.count_totals(txn);
  if (int rc = tables.put_totals(txn, t); rc != 0) return lmdb::error(rc, "index totals");
  // A new index has nothing to count and nothing to say.
  if (t.objects > 0) log()->info("index: counted {} blobs ({} bytes)", t.objects, t.bytes);
  return {};
}

std::optional<PathEntry> Index::get_path(std::string_view path) const {
  return impl_->read<std::optional<PathEntry>>(
      [&](MDB_txn* t) { return impl_->tables.get_path(t, path); });
}

std::optional<BlobEntry> Index::get_blob(std::string_view sha256) const {
  return impl_->read<std::optional<BlobEntry>>(
      [&](MDB_txn* t) { return impl_->tables.get_blob(t, sha256); });
}

std::vector<std::pair<std::string, PathEntry>> Index::list_paths(std::string_view prefix,
                                                                size_t max) const {
  using Out = std::vector<std::pair<std::string, PathEntry>>;
  return impl_->read<Out>([&](MDB_txn* t) {
    Out out;
    lmdb::Cursor c;
    if (c.open(t, impl_->tables.paths) != 0) return out;
    MDB_val k = lmdb::val(prefix), v;
    int rc = prefix.empty() ? c.get(&k, &v, MDB_FIRST) : c.get(&k, &v, MDB_SET_RANGE);
    // "a" covers "a" and "a/..." but not "ab" nor "a b"; "a/" covers "a/...".
    const bool dir_form = !prefix.empty() && prefix.back() == '/';
    for (; rc == 0 && out.size() < max; rc = c.get(&k, &v, MDB_NEXT)) {
      const std::string_view key = lmdb::view(k);
      if (key.substr(0, prefix.size()) != prefix) break;
      if (!prefix.empty() && !dir_form && key.size() > prefix.size()) {
        const auto next = static_cast<unsigned char>(key[prefix.size()]);
        // Keys sort bytewise: "a b", "a-c" and "a.x" come before "a/",
        // and everything after the "a/" run is past the directory.
        if (next < '/') continue;
        if (next > '/') break;
      }
      if (auto e = decode_path_entry(lmdb::view(v))) {
        out.emplace_back(std::string(key), std::move(*e));
      }
    }
    return out;
  });
}

std::vector<std::pair<std::string, BlobEntry>> Index::list_blobs() const {
  using Out = std::vector<std::pair<std::string, BlobEntry>>;
  return impl_->read<Out>([&](MDB_txn* t) {
    Out out;
    lmdb::for_each(t, impl_->tables.blobs, [&](std::string_view key, std::string_view value) {
      if (auto e = decode_blob_entry(value)) out.emplace_back(std::string(key), *e);
    });
    return out;
  });
}

std::vector<std::string> Index::unreferenced_blobs() const {
  using Out = std::vector<std::string>;
  return impl_->read<Out>([&](MDB_txn* t) {
    Out out;
    lmdb::for_each(t, impl_->tables.blobs, [&](std::string_view key, std::string_view value) {
      auto e = decode_blob_entry(value);
      if (e && e->refs == 0) out.emplace_back(key);
    });
    return out;
  });
}

IndexStats Index::stats() const {
  // One transaction: the three figures describe the same moment.
  return impl_->read<IndexStats>([&](MDB_txn* t) {
    IndexStats s;
    MDB_stat st{};
    if (mdb_stat(t, impl_->tables.paths, &st) == 0) s.paths = st.ms_entries;
    // Without the totals record (an old index open read-only), walk. (Not
    // value_or: its argument, the walk, would be evaluated every time.)
    auto kept = impl_->tables.get_totals(t);
    const BlobTotals tot = kept ? *kept : impl_->tables.count_totals(t);
    s.blobs = tot.objects;
    s.blob_bytes = tot.bytes;
    return s;
  });
}

Index::TotalsCheck Index::check_totals() const {
  return impl_->read<TotalsCheck>([&](MDB_txn* t) {
    TotalsCheck c;
    if (auto kept = impl_->tables.get_totals(t)) {
      c.stored = true;
      c.kept.blobs = kept->objects;
      c.kept.blob_bytes = kept->bytes;
    }
    const BlobTotals counted = impl_->tables.count_totals(t);
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
      if (int rc = impl_->tables.put_path(t, path, entry); rc != 0) {
        return Result<void>(lmdb::error(rc, "put " + path));
      }
    }
    return Result<void>();
  });
}

Result<void> Index::remove_path(std::string path) {
  if (auto r = impl_->check_path(path); !r) return r;
  return impl_->submit([this, path = std::move(path)](MDB_txn* t) {
    if (int rc = impl_->tables.remove_path(t, path); rc != 0) {
      return Result<void>(lmdb::error(rc, "remove " + path));
    }
    return Result<void>();
  });
}

Result<void> Index::set_validated(std::string path, int64_t at) {
  if (auto r = impl_->check_path(path); !r) return r;
  return impl_->submit([this, path = std::move(path), at](MDB_txn* t) {
    auto e = impl_->tables.get_path(t, path);
    if (!e) return Result<void>(Error{ENOENT, "no entry for " + path});
    e->validated_at = at;
    if (int rc = impl_->tables.write_path(t, path, *e); rc != 0) {
      return Result<void>(lmdb::error(rc, "validate " + path));
    }
    return Result<void>();
  });
}

Result<void> Index::remove_blob(std::string sha256) {
  if (!is_sha256_hex(sha256)) return Error{EINVAL, "not a sha256: " + sha256};
  return impl_->submit([this, sha = std::move(sha256)](MDB_txn* t) {
    auto b = impl_->tables.get_blob(t, sha);
    if (!b) return Result<void>();
    // Checked inside the transaction: a put_path earlier in the same batch
    // may have just taken a reference.
    if (b->refs > 0) {
      return Result<void>(Error{EBUSY, "blob " + sha + " is still referenced by " +
                                           std::to_string(b->refs) + " path(s)"});
    }
    if (int rc = impl_->tables.erase_blob(t, sha, b); rc != 0) {
      return Result<void>(lmdb::error(rc, "remove blob " + sha));
    }
    return Result<void>();
  });
}

Result<std::vector<std::string>> Index::rebuild_refs() {
  auto dropped = std::make_shared<std::vector<std::string>>();
  auto r = impl_->submit([this, dropped](MDB_txn* t) {
    dropped->clear();  // the op is replayed when the map had to grow
    return impl_->tables.rebuild_refs(t, *dropped);
  });
  if (!r) return r.error();
  return std::move(*dropped);
}

// A nested transaction carries its parent's id, so the id seen here is the
// one of the transaction that commits the batch.
Result<void> Index::set_clean_mark() {
  return impl_->submit([this](MDB_txn* t) {
    if (int rc = impl_->tables.put_clean_mark(t); rc != 0) {
      return Result<void>(lmdb::error(rc, "clean mark"));
    }
    return Result<void>();
  });
}

Result<bool> Index::take_clean_mark() {
  if (impl_->read_only) return Error{EROFS, "the index is open read-only"};
  // Without a mark (a new cache, a crash) nothing is written: a start-up
  // after a crash commits what it did before.
  const bool marked =
      impl_->read<bool>([this](MDB_txn* t) { return impl_->tables.has_clean_mark(t); });
  if (!marked) return false;
  auto clean = std::make_shared<bool>(false);
  auto r = impl_->submit([this, clean](MDB_txn* t) {
    // Reset by the call: the op is replayed when the map had to grow.
    if (int rc = impl_->tables.take_clean_mark(t, *clean); rc != 0) {
      return Result<void>(lmdb::error(rc, "clean mark"));
    }
    return Result<void>();
  });
  if (!r) return r.error();
  return *clean;
}

namespace {

// Keeps the newest time noted for each blob.
void note_newest(std::unordered_map<std::string, int64_t>& access, std::string_view sha256,
                 int64_t at) {
  auto [it, inserted] = access.try_emplace(std::string(sha256), at);
  if (!inserted && it->second < at) it->second = at;
}

}  // namespace

void Index::note_access(std::string_view sha256, int64_t at) {
  std::lock_guard lk(impl_->access_mu);
  note_newest(impl_->access, sha256, at);
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
      if (int rc = impl_->tables.raise_last_access(t, sha, at); rc != 0) {
        return Result<void>(lmdb::error(rc, "access times"));
      }
    }
    return Result<void>();
  });
  if (!r) {
    // Keep the times for the next flush rather than lose them; LRU order
    // would otherwise forget the reads of this period.
    std::lock_guard lk(impl_->access_mu);
    for (const auto& [sha, at] : batch) note_newest(impl_->access, sha, at);
  }
  return r;
}

}  // namespace netbootfs::cache
