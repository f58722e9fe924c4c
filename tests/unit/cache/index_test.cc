// Index: records and their encoding, refcounts, prefix listing, the schema
// check, group commit under concurrency, batched access times, persistence,
// map growth (and its limit), a full disk, and read-only use.
#include "cache/index.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cache/blob_store.h"

namespace netbootfs::cache {
namespace {

namespace fsys = std::filesystem;

std::string sha(int n) { return Sha256::of("blob " + std::to_string(n)); }

PathEntry entry(const std::string& sha256, uint64_t size, std::string etag = "\"v1\"") {
  PathEntry e;
  e.sha256 = sha256;
  e.size = size;
  e.etag = std::move(etag);
  e.last_modified = 1600000000;
  e.validated_at = 1700000000;
  return e;
}

// Raw LMDB access to the index environment, for states no API produces.
// The Index must be closed: one environment per file per process.
class RawEnv {
 public:
  explicit RawEnv(const std::string& dir) {
    EXPECT_EQ(mdb_env_create(&env_), 0);
    mdb_env_set_maxdbs(env_, 4);
    rc_ = mdb_env_open(env_, dir.c_str(), 0, 0644);
  }
  ~RawEnv() { mdb_env_close(env_); }
  bool ok() const { return rc_ == 0; }
  void put(const char* db, std::string_view key, std::string value) {
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env_, nullptr, 0, &txn), 0);
    MDB_dbi dbi;
    ASSERT_EQ(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k{key.size(), const_cast<char*>(key.data())}, v{value.size(), value.data()};
    ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
  }
  void del(const char* db, std::string_view key) {
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env_, nullptr, 0, &txn), 0);
    MDB_dbi dbi;
    ASSERT_EQ(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k{key.size(), const_cast<char*>(key.data())};
    ASSERT_EQ(mdb_del(txn, dbi, &k, nullptr), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
  }
  std::optional<std::string> get(const char* db, std::string_view key) {
    MDB_txn* txn = nullptr;
    if (mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn) != 0) return std::nullopt;
    std::optional<std::string> out;
    MDB_dbi dbi;
    MDB_val k{key.size(), const_cast<char*>(key.data())}, v;
    if (mdb_dbi_open(txn, db, 0, &dbi) == 0 && mdb_get(txn, dbi, &k, &v) == 0) {
      out.emplace(static_cast<const char*>(v.mv_data), v.mv_size);
    }
    mdb_txn_abort(txn);
    return out;
  }
  size_t last_txnid() {
    MDB_envinfo info{};
    mdb_env_info(env_, &info);
    return info.me_last_txnid;
  }

 private:
  MDB_env* env_ = nullptr;
  int rc_ = -1;
};

class IndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/netbootfs-index-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    env_dir_ = dir_ + "/index";
    reopen();
  }
  void TearDown() override {
    index_.reset();
    std::error_code ec;
    fsys::remove_all(dir_, ec);
  }
  void reopen(size_t map_size = size_t{1} << 30, bool read_only = false) {
    index_.reset();  // the old environment must be closed first
    Index::Options o;
    o.map_size = map_size;
    o.read_only = read_only;
    auto idx = Index::open(env_dir_, o);
    ASSERT_TRUE(idx) << idx.error().message;
    index_ = std::move(idx).value();
  }
  uint32_t refs(const std::string& s) {
    auto b = index_->get_blob(s);
    return b ? b->refs : 0xdead;
  }
  std::vector<std::string> keys(std::string_view prefix) {
    std::vector<std::string> out;
    for (auto& [p, e] : index_->list_paths(prefix)) out.push_back(p);
    return out;
  }

  std::string dir_, env_dir_;
  std::unique_ptr<Index> index_;
};

TEST_F(IndexTest, OpenCreatesTheEnvironmentAndWritesTheSchema) {
  EXPECT_TRUE(fsys::is_regular_file(env_dir_ + "/data.mdb"));
  index_.reset();
  RawEnv raw(env_dir_);
  ASSERT_TRUE(raw.ok());
  auto v = raw.get("meta", "schema");
  ASSERT_TRUE(v);
  ASSERT_EQ(v->size(), 4u);
  uint32_t version;
  std::memcpy(&version, v->data(), 4);
  EXPECT_EQ(version, Index::kSchemaVersion);
}

TEST_F(IndexTest, PathEntriesRoundTrip) {
  const PathEntry cases[] = {
      entry(sha(1), 0, ""),
      entry(sha(2), 123456789012345ull, "W/\"weak-etag\""),
      [] {
        PathEntry e = entry(sha(3), 7, std::string(300, 'e'));
        e.last_modified = -1;  // before 1970: still a number
        e.validated_at = INT64_MAX;
        return e;
      }(),
  };
  int i = 0;
  for (const auto& want : cases) {
    const std::string path = "dir/file" + std::to_string(i++);
    ASSERT_TRUE(index_->put_path(path, want));
    auto got = index_->get_path(path);
    ASSERT_TRUE(got) << path;
    EXPECT_EQ(got->sha256, want.sha256);
    EXPECT_EQ(got->size, want.size);
    EXPECT_EQ(got->etag, want.etag);
    EXPECT_EQ(got->last_modified, want.last_modified);
    EXPECT_EQ(got->validated_at, want.validated_at);
    auto b = index_->get_blob(want.sha256);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->size, want.size);
    EXPECT_EQ(b->refs, 1u);
  }
  EXPECT_FALSE(index_->get_path("dir/missing")) << "a missing key is an empty optional";
  EXPECT_FALSE(index_->get_path(""));
  EXPECT_FALSE(index_->get_blob(sha(99)));
  EXPECT_FALSE(index_->get_blob("not a sha"));
}

TEST_F(IndexTest, RefcountsFollowPutOverwriteAndRemove) {
  const std::string a = sha(1), b = sha(2);
  struct Step {
    const char* what;
    std::function<Result<void>(Index&)> op;
    uint32_t refs_a, refs_b;  // 0xdead: no record
  };
  const Step steps[] = {
      {"x -> a", [&](Index& i) { return i.put_path("x", entry(a, 1)); }, 1, 0xdead},
      {"y -> a (shared)", [&](Index& i) { return i.put_path("y", entry(a, 1)); }, 2, 0xdead},
      {"x -> a again", [&](Index& i) { return i.put_path("x", entry(a, 1, "\"v2\"")); }, 2, 0xdead},
      {"x -> b", [&](Index& i) { return i.put_path("x", entry(b, 2)); }, 1, 1},
      {"y -> b", [&](Index& i) { return i.put_path("y", entry(b, 2)); }, 0, 2},
      {"remove x", [&](Index& i) { return i.remove_path("x"); }, 0, 1},
      {"remove x again", [&](Index& i) { return i.remove_path("x"); }, 0, 1},
      {"remove y", [&](Index& i) { return i.remove_path("y"); }, 0, 0},
      {"y -> a revives", [&](Index& i) { return i.put_path("y", entry(a, 1)); }, 1, 0},
  };
  for (const auto& s : steps) {
    SCOPED_TRACE(s.what);
    auto r = s.op(*index_);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(refs(a), s.refs_a);
    EXPECT_EQ(refs(b), s.refs_b);
  }
  EXPECT_EQ(index_->get_path("y")->sha256, a);
  EXPECT_EQ(index_->unreferenced_blobs(), std::vector<std::string>{b});
}

TEST_F(IndexTest, TwoPathsShareOneBlob) {
  const std::string k = sha(7);
  ASSERT_TRUE(index_->put_path("profile1/linux", entry(k, 42)));
  ASSERT_TRUE(index_->put_path("profile2/linux", entry(k, 42)));
  EXPECT_EQ(refs(k), 2u);
  const auto st = index_->stats();
  EXPECT_EQ(st.paths, 2u);
  EXPECT_EQ(st.blobs, 1u);
  EXPECT_EQ(st.blob_bytes, 42u) << "shared content is counted once";
  ASSERT_TRUE(index_->remove_path("profile1/linux"));
  EXPECT_EQ(refs(k), 1u);
  EXPECT_TRUE(index_->unreferenced_blobs().empty());
}

TEST_F(IndexTest, RemoveBlobIsRefusedWhileReferenced) {
  const std::string a = sha(1), b = sha(2);
  ASSERT_TRUE(index_->put_path("x", entry(a, 1)));
  ASSERT_TRUE(index_->put_path("y", entry(b, 1)));
  ASSERT_TRUE(index_->remove_path("y"));
  auto busy = index_->remove_blob(a);
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, EBUSY);
  EXPECT_EQ(refs(a), 1u) << "a refused op changes nothing";
  ASSERT_TRUE(index_->remove_blob(b));
  EXPECT_FALSE(index_->get_blob(b));
  EXPECT_TRUE(index_->remove_blob(b)) << "removing a missing record is not an error";
  EXPECT_TRUE(index_->unreferenced_blobs().empty());
  auto bad = index_->remove_blob("../x");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, EINVAL);
}

TEST_F(IndexTest, InvalidWritesAreRefused) {
  struct Case {
    const char* what;
    std::function<Result<void>(Index&)> op;
    int code;
  };
  const Case cases[] = {
      {"bad sha", [](Index& i) { return i.put_path("x", entry("abc", 1)); }, EINVAL},
      {"uppercase sha",
       [](Index& i) {
         std::string s = sha(1);
         std::transform(s.begin(), s.end(), s.begin(), ::toupper);
         return i.put_path("x", entry(s, 1));
       },
       EINVAL},
      {"empty path", [](Index& i) { return i.put_path("", entry(sha(1), 1)); }, EINVAL},
      {"path over the key limit",
       [](Index& i) { return i.put_path(std::string(600, 'p'), entry(sha(1), 1)); }, ENAMETOOLONG},
      {"validate missing", [](Index& i) { return i.set_validated("nope", 1); }, ENOENT},
  };
  for (const auto& c : cases) {
    auto r = c.op(*index_);
    ASSERT_FALSE(r) << c.what;
    EXPECT_EQ(r.error().code, c.code) << c.what << ": " << r.error().message;
  }
  EXPECT_EQ(index_->stats().paths, 0u);
  EXPECT_EQ(index_->stats().blobs, 0u);
}

TEST_F(IndexTest, SetValidatedChangesOnlyThatField) {
  ASSERT_TRUE(index_->put_path("k", entry(sha(1), 5)));
  ASSERT_TRUE(index_->set_validated("k", 1800000000));
  auto e = index_->get_path("k");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->validated_at, 1800000000);
  EXPECT_EQ(e->etag, "\"v1\"");
  EXPECT_EQ(refs(sha(1)), 1u);
}

TEST_F(IndexTest, ListPathsTakesAWholeDirectory) {
  for (const char* p : {"a", "a/x", "a/y/z", "a b", "a-c", "a.d", "ab/x", "ab", "b", "\x01int",
                        "pxelinux.cfg/default", "pxelinux.cfg2/x"}) {
    ASSERT_TRUE(index_->put_path(p, entry(sha(1), 1)));
  }
  using V = std::vector<std::string>;
  struct Case {
    std::string prefix;
    V want;
  };
  const Case cases[] = {
      {"a", V{"a", "a/x", "a/y/z"}},
      {"a/", V{"a/x", "a/y/z"}},
      {"a/y", V{"a/y/z"}},
      {"ab", V{"ab", "ab/x"}},
      {"a b", V{"a b"}},
      {"b", V{"b"}},
      {"pxelinux.cfg", V{"pxelinux.cfg/default"}},
      {"zzz", V{}},
      {"a/x/deeper", V{}},
  };
  for (const auto& c : cases) EXPECT_EQ(keys(c.prefix), c.want) << "prefix '" << c.prefix << "'";
  const V all = keys("");
  EXPECT_EQ(all.size(), 12u);
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end())) << "in key order";
  EXPECT_EQ(refs(sha(1)), 12u);
}

TEST_F(IndexTest, ASchemaMismatchIsRefusedNamingBothVersions) {
  index_.reset();
  {
    RawEnv raw(env_dir_);
    ASSERT_TRUE(raw.ok());
    const uint32_t other = 999;
    raw.put("meta", "schema", std::string(reinterpret_cast<const char*>(&other), 4));
  }
  for (bool ro : {false, true}) {
    Index::Options o;
    o.read_only = ro;
    auto idx = Index::open(env_dir_, o);
    ASSERT_FALSE(idx);
    const std::string& msg = idx.error().message;
    EXPECT_NE(msg.find("999"), std::string::npos) << msg;
    EXPECT_NE(msg.find("version " + std::to_string(Index::kSchemaVersion)), std::string::npos)
        << msg;
  }
}

TEST_F(IndexTest, EverythingSurvivesAReopen) {
  ASSERT_TRUE(index_->put_path("kept", entry(sha(1), 3)));
  ASSERT_TRUE(index_->put_path("gone", entry(sha(2), 4)));
  ASSERT_TRUE(index_->remove_path("gone"));
  index_->note_access(sha(1), 1234);
  ASSERT_TRUE(index_->flush_access());
  reopen();
  auto e = index_->get_path("kept");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->sha256, sha(1));
  EXPECT_FALSE(index_->get_path("gone"));
  EXPECT_EQ(index_->get_blob(sha(1))->last_access, 1234);
  EXPECT_EQ(refs(sha(2)), 0u);
}

TEST_F(IndexTest, ReadOnlyReadsButRefusesWrites) {
  ASSERT_TRUE(index_->put_path("k", entry(sha(1), 3)));
  reopen(size_t{1} << 30, /*read_only=*/true);
  EXPECT_TRUE(index_->get_path("k"));
  auto w = index_->put_path("k2", entry(sha(1), 3));
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, EROFS);
  index_->note_access(sha(1), 5);
  EXPECT_TRUE(index_->flush_access()) << "nothing to write is not an error";

  index_.reset();
  Index::Options o;
  o.read_only = true;
  auto missing = Index::open(dir_ + "/no-such-index", o);
  EXPECT_FALSE(missing);
  EXPECT_FALSE(fsys::exists(dir_ + "/no-such-index")) << "a read-only open creates nothing";
}

TEST_F(IndexTest, AccessTimesAreBatchedAndKeepTheNewest) {
  const std::string a = sha(1), b = sha(2), gone = sha(3);
  ASSERT_TRUE(index_->put_path("a", entry(a, 1)));
  ASSERT_TRUE(index_->put_path("b", entry(b, 1)));
  ASSERT_TRUE(index_->put_path("g", entry(gone, 1)));
  index_->note_access(a, 1900000000);
  index_->note_access(a, 1800000000);  // older, noted later: ignored
  index_->note_access(b, 100);
  index_->note_access(gone, 100);
  index_->note_access(sha(4), 100);  // never existed
  EXPECT_EQ(index_->get_blob(a)->last_access, 0) << "noted in memory only";
  ASSERT_TRUE(index_->remove_path("g"));
  ASSERT_TRUE(index_->remove_blob(gone));
  ASSERT_TRUE(index_->flush_access());
  EXPECT_EQ(index_->get_blob(a)->last_access, 1900000000);
  EXPECT_EQ(index_->get_blob(b)->last_access, 100);
  EXPECT_FALSE(index_->get_blob(gone)) << "a flush never recreates a removed blob";
  EXPECT_FALSE(index_->get_blob(sha(4)));
  // A flushed time is never moved backwards by an older note.
  index_->note_access(a, 5);
  ASSERT_TRUE(index_->flush_access());
  EXPECT_EQ(index_->get_blob(a)->last_access, 1900000000);
  EXPECT_TRUE(index_->flush_access()) << "an empty flush is fine";
}

// The clean-stop mark holds only while it is the index's last transaction.
TEST_F(IndexTest, TheCleanMarkHoldsUntilTheNextWrite) {
  auto none = index_->take_clean_mark();
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_FALSE(*none) << "a new index was never stopped cleanly";

  ASSERT_TRUE(index_->put_path("k", entry(sha(1), 3)));
  ASSERT_TRUE(index_->set_clean_mark());
  reopen();
  auto clean = index_->take_clean_mark();
  ASSERT_TRUE(clean) << clean.error().message;
  EXPECT_TRUE(*clean);
  auto again = index_->take_clean_mark();
  ASSERT_TRUE(again);
  EXPECT_FALSE(*again) << "taken: a crash after this start is not a clean stop";

  // Any write after the mark, by anyone, voids it.
  ASSERT_TRUE(index_->set_clean_mark());
  reopen();
  ASSERT_TRUE(index_->put_path("k2", entry(sha(2), 4)));
  auto written = index_->take_clean_mark();
  ASSERT_TRUE(written);
  EXPECT_FALSE(*written);

  ASSERT_TRUE(index_->set_clean_mark());
  index_->note_access(sha(1), 99);
  ASSERT_TRUE(index_->flush_access());
  auto touched = index_->take_clean_mark();
  ASSERT_TRUE(touched);
  EXPECT_FALSE(*touched) << "an access-time flush is a write";

  // A write by another process (a raw LMDB transaction, as an older
  // release would make) voids it as well.
  ASSERT_TRUE(index_->set_clean_mark());
  index_.reset();
  {
    RawEnv raw(env_dir_);
    raw.put("paths", "other", "x");
  }
  reopen();
  auto foreign = index_->take_clean_mark();
  ASSERT_TRUE(foreign);
  EXPECT_FALSE(*foreign);
}

TEST_F(IndexTest, AReadOnlyIndexNeitherTakesNorSetsTheMark) {
  ASSERT_TRUE(index_->set_clean_mark());
  reopen(size_t{1} << 30, /*read_only=*/true);
  auto t = index_->take_clean_mark();
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, EROFS);
  EXPECT_FALSE(index_->set_clean_mark());
  reopen();
  auto clean = index_->take_clean_mark();
  ASSERT_TRUE(clean);
  EXPECT_TRUE(*clean) << "read-only opens and reads leave the mark valid";
}

TEST_F(IndexTest, RebuildRefsRecountsFromThePaths) {
  ASSERT_TRUE(index_->put_path("x", entry(sha(1), 1)));
  ASSERT_TRUE(index_->put_path("y", entry(sha(1), 1)));
  ASSERT_TRUE(index_->put_path("z", entry(sha(2), 2)));
  ASSERT_TRUE(index_->remove_path("z"));  // sha(2): refs 0
  auto dropped = index_->rebuild_refs();
  ASSERT_TRUE(dropped) << dropped.error().message;
  EXPECT_EQ(dropped.value(), std::vector<std::string>{sha(2)});
  EXPECT_EQ(refs(sha(1)), 2u);
  EXPECT_FALSE(index_->get_blob(sha(2)));
}

// The running blob totals (meta "totals"): exact after every kind of write,
// durable, and recounted when missing or wrong.
class IndexTotalsTest : public IndexTest {
 protected:
  // Asserts stats() says `blobs`/`bytes` and agrees with a walk of the records.
  void expect_totals(uint64_t blobs, uint64_t bytes, const char* when) {
    const IndexStats st = index_->stats();
    EXPECT_EQ(st.blobs, blobs) << when;
    EXPECT_EQ(st.blob_bytes, bytes) << when;
    const Index::TotalsCheck c = index_->check_totals();
    EXPECT_TRUE(c.stored) << when;
    EXPECT_EQ(c.kept.blobs, c.counted.blobs) << when;
    EXPECT_EQ(c.kept.blob_bytes, c.counted.blob_bytes) << when;
  }
  static std::string raw_totals(uint64_t bytes, uint64_t objects) {
    std::string raw(1 + 8 + 8, '\0');
    raw[0] = 1;
    std::memcpy(&raw[1], &bytes, 8);
    std::memcpy(&raw[9], &objects, 8);
    return raw;
  }
};

TEST_F(IndexTotalsTest, StayExactAcrossPublishReplaceRemoveAndReopen) {
  expect_totals(0, 0, "empty");
  ASSERT_TRUE(index_->put_path("x", entry(sha(1), 100)));
  ASSERT_TRUE(index_->put_path("y", entry(sha(1), 100)));  // same blob: counted once
  ASSERT_TRUE(index_->put_path("z", entry(sha(2), 20)));
  expect_totals(2, 120, "published");
  ASSERT_TRUE(index_->put_path("x", entry(sha(3), 7)));  // replaced; sha(1) still held by y
  expect_totals(3, 127, "replaced");
  ASSERT_TRUE(index_->put_path("x", entry(sha(3), 7)));  // the same entry again
  expect_totals(3, 127, "rewritten");
  ASSERT_TRUE(index_->put_paths({{"m/1", entry(sha(4), 1000)}, {"m/2", entry(sha(5), 2000)}}));
  expect_totals(5, 3127, "a batch");
  ASSERT_TRUE(index_->remove_path("y"));  // refs 0: the record (and its bytes) stay
  expect_totals(5, 3127, "unreferenced");
  ASSERT_TRUE(index_->remove_blob(sha(1)));  // as eviction and garbage collection do
  expect_totals(4, 3027, "blob removed");
  ASSERT_FALSE(index_->remove_blob(sha(2)));  // refused (referenced): nothing changes
  ASSERT_TRUE(index_->remove_blob(sha(1)));   // gone already: a no-op
  expect_totals(4, 3027, "refused and repeated removals");
  // A failing op in a batch leaves the totals as it found them.
  ASSERT_FALSE(index_->put_paths({{"n/1", entry(sha(6), 5)}, {"", entry(sha(7), 5)}}));
  expect_totals(4, 3027, "a refused batch");
  index_->note_access(sha(2), 1900000000);
  ASSERT_TRUE(index_->flush_access());
  expect_totals(4, 3027, "access times");
  reopen();
  expect_totals(4, 3027, "reopened");
  reopen(size_t{1} << 30, /*read_only=*/true);
  expect_totals(4, 3027, "read-only");
}

TEST_F(IndexTotalsTest, ConcurrentWritersKeepThemExact) {
  constexpr int kThreads = 4, kOps = 100;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([this, t] {
      for (int i = 0; i < kOps; ++i) {
        const int n = t * kOps + i;
        ASSERT_TRUE(index_->put_path("p" + std::to_string(n), entry(sha(n), 10 + n % 7)));
        if (i % 3 == 0) {
          ASSERT_TRUE(index_->remove_path("p" + std::to_string(n)));
          ASSERT_TRUE(index_->remove_blob(sha(n)));
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  const auto c = index_->check_totals();
  EXPECT_EQ(c.kept.blobs, c.counted.blobs);
  EXPECT_EQ(c.kept.blob_bytes, c.counted.blob_bytes);
  EXPECT_EQ(c.counted.blobs, uint64_t{kThreads} * (kOps - (kOps + 2) / 3));
}

TEST_F(IndexTotalsTest, MissingTotalsAreCountedAtAWritableOpen) {
  ASSERT_TRUE(index_->put_path("x", entry(sha(1), 100)));
  ASSERT_TRUE(index_->put_path("z", entry(sha(2), 20)));
  index_.reset();
  {
    RawEnv raw(env_dir_);  // an index written before the totals existed
    ASSERT_TRUE(raw.ok());
    raw.del("meta", "totals");
  }
  // Read-only, nothing may be written: stats() walks instead.
  reopen(size_t{1} << 30, /*read_only=*/true);
  EXPECT_FALSE(index_->check_totals().stored);
  EXPECT_EQ(index_->stats().blob_bytes, 120u);
  EXPECT_EQ(index_->stats().blobs, 2u);
  reopen();
  expect_totals(2, 120, "counted at open");
  index_.reset();
  {
    RawEnv raw(env_dir_);  // damaged: unreadable reads as missing
    ASSERT_TRUE(raw.ok());
    raw.put("meta", "totals", "??");
  }
  reopen();
  expect_totals(2, 120, "a damaged record");
}

TEST_F(IndexTotalsTest, StaleTotalsAreRecountedByRebuildRefs) {
  ASSERT_TRUE(index_->put_path("x", entry(sha(1), 100)));
  ASSERT_TRUE(index_->put_path("z", entry(sha(2), 20)));
  index_.reset();
  {
    // A release without the totals wrote records meanwhile (a downgrade).
    RawEnv raw(env_dir_);
    ASSERT_TRUE(raw.ok());
    raw.put("meta", "totals", raw_totals(5, 9));
  }
  reopen();
  EXPECT_EQ(index_->stats().blob_bytes, 5u) << "trusted until recovery recounts";
  const auto c = index_->check_totals();
  EXPECT_EQ(c.counted.blob_bytes, 120u);
  ASSERT_TRUE(index_->rebuild_refs());
  expect_totals(2, 120, "recounted");
  // And they stay right afterwards.
  ASSERT_TRUE(index_->put_path("w", entry(sha(3), 1)));
  expect_totals(3, 121, "after the recount");
}

// 8 writers x 200 puts, plus ops that must fail alone in the same batches.
TEST_F(IndexTest, GroupCommitFromManyThreadsIsDurable) {
  constexpr int kThreads = 8, kOps = 200;
  const std::string shared = sha(0);
  ASSERT_TRUE(index_->put_path("anchor", entry(shared, 6)));
  index_.reset();
  size_t txn_before;
  {
    RawEnv raw(env_dir_);
    ASSERT_TRUE(raw.ok());
    txn_before = raw.last_txnid();
  }
  reopen();

  std::atomic<int> failures{0}, busy{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < kOps; ++i) {
        const std::string path = "t" + std::to_string(t) + "/f" + std::to_string(i);
        // Half share one blob, half get their own.
        const std::string s = i % 2 ? shared : sha(t * 1000 + i + 1);
        auto r = index_->put_path(path, entry(s, 6));
        if (!r) failures++;
        if (i % 50 == 0) {
          auto refused = index_->remove_blob(shared);
          if (!refused && refused.error().code == EBUSY) busy++;
        }
      }
    });
  }
  go = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(busy.load(), kThreads * (kOps / 50));

  const uint32_t shared_refs = 1 + kThreads * kOps / 2;
  auto check = [&] {
    EXPECT_EQ(index_->stats().paths, uint64_t{1} + kThreads * kOps);
    EXPECT_EQ(refs(shared), shared_refs);
    for (int t = 0; t < kThreads; ++t) {
      for (int i = 0; i < kOps; ++i) {
        auto e = index_->get_path("t" + std::to_string(t) + "/f" + std::to_string(i));
        ASSERT_TRUE(e);
        EXPECT_EQ(e->sha256, i % 2 ? shared : sha(t * 1000 + i + 1));
      }
    }
  };
  check();
  index_.reset();
  size_t txn_after;
  {
    RawEnv raw(env_dir_);
    txn_after = raw.last_txnid();
  }
  const size_t writes = kThreads * kOps + kThreads * (kOps / 50);
  const size_t txns = txn_after - txn_before;
  RecordProperty("write_ops", static_cast<int>(writes));
  RecordProperty("write_txns", static_cast<int>(txns));
  std::printf("group commit: %zu write ops in %zu transactions\n", writes, txns);
  EXPECT_LT(txns, writes) << "concurrent writes must share transactions";
  reopen();  // every acknowledged write is on disk
  check();
}

TEST_F(IndexTest, TheMapGrowsWhenFull) {
  reopen(64 * 1024);
  const std::string etag(200, 'e');  // fatter records: more pages per entry
  int i = 0;
  for (; i < 2000; ++i) {
    auto r = index_->put_path("some/long/directory/name/file" + std::to_string(i),
                              entry(sha(i % 10), 1, etag));
    ASSERT_TRUE(r) << i << ": " << r.error().message;
  }
  struct stat st {};
  ASSERT_EQ(::stat((env_dir_ + "/data.mdb").c_str(), &st), 0);
  EXPECT_GT(st.st_size, 64 * 1024) << "the data outgrew the initial map";
  EXPECT_EQ(index_->stats().paths, 2000u);
  // A reopen with the small configured map must still see everything.
  reopen(64 * 1024);
  EXPECT_EQ(index_->stats().paths, 2000u);
  EXPECT_EQ(refs(sha(3)), 200u);
  ASSERT_TRUE(index_->put_path("after/reopen", entry(sha(3), 1)));
}

// netbootfsctl and the mount share the index: when one grows the map, the
// other must adopt the new size instead of failing every transaction.
TEST_F(IndexTest, AMapGrownByAnotherProcessIsAdopted) {
  reopen(64 * 1024);
  ASSERT_TRUE(index_->put_path("before", entry(sha(1), 1)));
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The child never touches the parent's environment, and leaves with
    // _exit so that no destructor does either.
    Index::Options o;
    o.map_size = 64 * 1024;
    auto other = Index::open(env_dir_, o);
    if (!other) ::_exit(2);
    for (int i = 0; i < 1500; ++i) {
      if (!(*other)->put_path("child/" + std::to_string(i) + std::string(100, 'c'),
                              entry(sha(i), 1, std::string(200, 'e')))) {
        ::_exit(3);
      }
    }
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  struct stat st {};
  ASSERT_EQ(::stat((env_dir_ + "/data.mdb").c_str(), &st), 0);
  ASSERT_GT(st.st_size, 64 * 1024) << "the child must have outgrown our map";

  EXPECT_TRUE(index_->get_path("before"));
  EXPECT_EQ(index_->stats().paths, 1501u);
  ASSERT_TRUE(index_->put_path("after", entry(sha(1), 1)));
  EXPECT_EQ(refs(sha(1)), 3u);  // "before", "after" and child/1
}

TEST_F(IndexTest, TheMapGrowsUnderConcurrentWriters) {
  reopen(64 * 1024);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        auto r = index_->put_path(
            "w" + std::to_string(t) + "/" + std::to_string(i) + std::string(100, 'p'),
            entry(sha(t * 1000 + i), 1, std::string(100, 'e')));
        if (!r) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  reopen(64 * 1024);
  EXPECT_EQ(index_->stats().paths, 1200u);
  EXPECT_EQ(index_->stats().blobs, 1200u);
}

// Sums the refcounts of every blob record: with one path per put, it must
// equal the number of paths (a half-applied put would break it).
uint64_t total_refs(const Index& index) {
  uint64_t n = 0;
  for (const auto& [s, b] : index.list_blobs()) n += b.refs;
  return n;
}

// A map that may not grow past its limit: the write that does not fit fails
// alone with ENOSPC and leaves nothing behind; the index stays readable, and
// once there is room again (a higher limit) writes succeed.
TEST_F(IndexTest, AFullMapAtItsLimitFailsTheWriteWithEnospcCleanly) {
  index_.reset();
  Index::Options o;
  o.map_size = 64 * 1024;
  o.max_map_size = 256 * 1024;  // two doublings, then the limit
  auto idx = Index::open(env_dir_, o);
  ASSERT_TRUE(idx) << idx.error().message;
  index_ = std::move(idx).value();
  const std::string etag(200, 'e');
  auto name = [](int i) { return "full/" + std::to_string(i) + std::string(100, 'p'); };
  int stored = 0;
  Result<void> r;
  for (; stored < 5000; ++stored) {
    r = index_->put_path(name(stored), entry(sha(stored % 10), 1, etag));
    if (!r) break;
  }
  ASSERT_FALSE(r) << "a 256 KiB map held 5000 fat entries";
  EXPECT_EQ(r.error().code, ENOSPC) << r.error().message;
  ASSERT_GT(stored, 100) << "the map did not grow up to its limit";
  EXPECT_FALSE(index_->get_path(name(stored))) << "the failed put left its entry";
  EXPECT_EQ(index_->stats().paths, static_cast<uint64_t>(stored));
  EXPECT_EQ(total_refs(*index_), static_cast<uint64_t>(stored)) << "the failed put moved a ref";
  // Still full: the same write fails the same way, reads still work.
  auto again = index_->put_path(name(stored), entry(sha(1), 1, etag));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ENOSPC);
  EXPECT_TRUE(index_->get_path(name(0)));
  struct stat st {};
  ASSERT_EQ(::stat((env_dir_ + "/data.mdb").c_str(), &st), 0);
  EXPECT_LE(st.st_size, 256 * 1024) << "the map grew past its limit";

  // Even a delete copies pages (LMDB reuses freed pages only two commits
  // later), so at the limit removals may fail too, but only with ENOSPC and
  // without half-applying.
  for (int i = 0; i < 20; ++i) {
    auto rm = index_->remove_path(name(i));
    if (!rm) {
      EXPECT_EQ(rm.error().code, ENOSPC) << rm.error().message;
    }
  }
  EXPECT_EQ(total_refs(*index_), index_->stats().paths);

  // A higher limit: the map grows again and takes what did not fit.
  index_.reset();
  o.max_map_size = 1024 * 1024;
  idx = Index::open(env_dir_, o);
  ASSERT_TRUE(idx) << idx.error().message;
  index_ = std::move(idx).value();
  ASSERT_TRUE(index_->put_path(name(stored), entry(sha(1), 1, etag)));
  for (int i = stored + 1; i < stored + 1 + stored; ++i) {
    auto w = index_->put_path(name(i), entry(sha(i % 10), 1, etag));
    ASSERT_TRUE(w) << i << ": " << w.error().message;
  }
  EXPECT_EQ(total_refs(*index_), index_->stats().paths);
  ASSERT_TRUE(index_->remove_path(name(0)));
}

// The disk under the index fills up (the map itself has room): the commit
// fails with ENOSPC, nothing of it is kept, and once space is freed the same
// write succeeds on the same open index, and a reopen sees a sound index.
TEST_F(IndexTest, ADiskFullCommitFailsWithEnospcAndLaterWritesWork) {
  index_.reset();
  const std::string small = dir_ + "/small";
  ASSERT_EQ(::mkdir(small.c_str(), 0755), 0);
  if (::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=512k") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here: " << std::strerror(errno);
  }
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount{small};
  {
    Index::Options o;
    o.map_size = 8 * 1024 * 1024;  // larger than the disk: the disk fills first
    auto idx = Index::open(small + "/index", o);
    ASSERT_TRUE(idx) << idx.error().message;
    auto& index = *idx.value();
    const std::string etag(200, 'e');
    auto name = [](int i) { return "disk/" + std::to_string(i) + std::string(100, 'p'); };
    ASSERT_TRUE(index.put_path(name(0), entry(sha(0), 1, etag)));
    // Fill what is left of the disk.
    const std::string filler_path = small + "/filler";
    {
      const int fd = ::open(filler_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      ASSERT_GE(fd, 0);
      const std::string chunk(4096, 'x');
      while (::write(fd, chunk.data(), chunk.size()) > 0) {
      }
      ::close(fd);
    }
    int stored = 1;
    Result<void> r;
    for (; stored < 3000; ++stored) {
      r = index.put_path(name(stored), entry(sha(stored % 10), 1, etag));
      if (!r) break;
    }
    ASSERT_FALSE(r) << "3000 entries fitted on a full disk";
    EXPECT_EQ(r.error().code, ENOSPC) << r.error().message;
    EXPECT_FALSE(index.get_path(name(stored)));
    EXPECT_EQ(index.stats().paths, static_cast<uint64_t>(stored));
    EXPECT_EQ(total_refs(index), static_cast<uint64_t>(stored));

    ASSERT_EQ(::unlink(filler_path.c_str()), 0);
    auto w = index.put_path(name(stored), entry(sha(1), 1, etag));
    ASSERT_TRUE(w) << "the index did not recover from a full disk: " << w.error().message;
    for (int i = stored + 1; i < stored + 50; ++i) {
      ASSERT_TRUE(index.put_path(name(i), entry(sha(i % 10), 1, etag)));
    }
    stored += 50;
    EXPECT_EQ(index.stats().paths, static_cast<uint64_t>(stored));
  }
  Index::Options o;
  o.map_size = 8 * 1024 * 1024;
  auto idx = Index::open(small + "/index", o);
  ASSERT_TRUE(idx) << idx.error().message;
  EXPECT_EQ(total_refs(**idx), (*idx)->stats().paths);
  EXPECT_TRUE((*idx)->get_path("disk/0" + std::string(100, 'p')));
}

}  // namespace
}  // namespace netbootfs::cache
