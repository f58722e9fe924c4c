// Start-up recovery and verify: every state a crash (or a damaged disk) can
// leave is brought back to the invariant, and verify() sees what is wrong.
//
// The invariant after recover(): every path entry points at a blob file of
// its recorded size with a blob record; every blob file has a record with
// refs > 0; refcounts equal the entries pointing at each blob; tmp/ is empty.
#include "cache/recovery.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <lmdb.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cache/blob_store.h"
#include "cache/index.h"

namespace netbootfs::cache {
namespace {

namespace fsys = std::filesystem;

// BlobEntry in its stored form (format 1; see index.cc).
std::string raw_blob_record(uint64_t size, uint32_t refs) {
  std::string raw(1 + 8 + 4 + 8, '\0');
  raw[0] = 1;
  std::memcpy(&raw[1], &size, 8);
  std::memcpy(&raw[9], &refs, 4);
  return raw;
}

// Public: the table rows below drive the fixture through a reference.
class RecoveryTest : public ::testing::Test {
 public:
  void SetUp() override {
    char tmpl[] = "/tmp/netbootfs-recovery-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto b = BlobStore::open(dir_);
    ASSERT_TRUE(b) << b.error().message;
    blobs_ = std::move(b).value();
    open_index();
  }
  void TearDown() override {
    index_.reset();
    blobs_.reset();
    std::error_code ec;
    fsys::remove_all(dir_, ec);
  }
  void open_index() {
    index_.reset();
    auto idx = Index::open(dir_ + "/index", Index::Options{});
    ASSERT_TRUE(idx) << idx.error().message;
    index_ = std::move(idx).value();
  }
  std::string store(const std::string& bytes) {
    auto t = blobs_->create_temp();
    EXPECT_TRUE(t);
    EXPECT_TRUE(t->append(bytes.data(), bytes.size()));
    auto sha = blobs_->publish(t.value());
    EXPECT_TRUE(sha) << sha.error().message;
    return sha.value();
  }
  // A file stored and indexed at `path`, as a completed download leaves it.
  std::string cached(const std::string& path, const std::string& bytes) {
    const std::string sha = store(bytes);
    PathEntry e;
    e.sha256 = sha;
    e.size = bytes.size();
    e.etag = "\"" + path + "\"";
    EXPECT_TRUE(index_->put_path(path, e));
    return sha;
  }
  // Writes a raw LMDB value (or deletes it), as a crash between two writes or
  // a damaged record would leave it. Closes and reopens the Index around it:
  // one environment per file per process.
  void poke(const char* db, std::string_view key, std::optional<std::string> value) {
    index_.reset();
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    ASSERT_EQ(mdb_env_open(env, (dir_ + "/index").c_str(), 0, 0644), 0);
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    MDB_dbi dbi;
    ASSERT_EQ(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k{key.size(), const_cast<char*>(key.data())};
    if (value) {
      MDB_val v{value->size(), value->data()};
      ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
    } else {
      ASSERT_EQ(mdb_del(txn, dbi, &k, nullptr), 0);
    }
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    open_index();
  }
  size_t files_under(const std::string& sub) const {
    size_t n = 0;
    for (auto& e : fsys::recursive_directory_iterator(dir_ + "/" + sub)) n += e.is_regular_file();
    return n;
  }
  // Checked directly, not through verify(): the two must agree.
  void expect_invariant() {
    std::map<std::string, uint32_t> count;
    for (const auto& [path, e] : index_->list_paths()) {
      count[e.sha256]++;
      EXPECT_EQ(blobs_->blob_size(e.sha256), e.size) << path;
      auto rec = index_->get_blob(e.sha256);
      ASSERT_TRUE(rec) << path;
      EXPECT_EQ(rec->size, e.size) << path;
    }
    for (const auto& [sha, b] : index_->list_blobs()) {
      EXPECT_EQ(b.refs, count[sha]) << sha;
      EXPECT_GT(b.refs, 0u) << "no garbage record kept: " << sha;
    }
    for (const auto& sha : blobs_->list()) {
      EXPECT_TRUE(index_->get_blob(sha)) << "orphan blob file " << sha;
    }
    EXPECT_EQ(files_under("tmp"), 0u);
    const auto problems = verify(*index_, *blobs_);
    EXPECT_TRUE(problems.empty()) << problems.front();
  }

  std::string dir_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<Index> index_;
};

TEST_F(RecoveryTest, ACleanCacheIsLeftAlone) {
  const std::string a = cached("boot/linux", "kernel");
  cached("boot/initrd", "initrd");
  cached("other/linux", "kernel");  // shared content
  EXPECT_TRUE(verify(*index_, *blobs_).empty());
  auto rep = recover(*index_, *blobs_);
  ASSERT_TRUE(rep) << rep.error().message;
  EXPECT_EQ(rep->temp_files_removed, 0u);
  EXPECT_EQ(rep->entries_dropped, 0u);
  EXPECT_EQ(rep->blobs_removed, 0u);
  EXPECT_EQ(index_->stats().paths, 3u);
  EXPECT_EQ(index_->get_blob(a)->refs, 2u);
  expect_invariant();
}

// After a clean stop: tmp/ and blob files without a record go; the entries
// are taken as the clean run left them, unchecked (that walk is what a clean
// start-up saves), so even one whose blob was removed by hand stays.
TEST_F(RecoveryTest, AfterACleanStopOnlyTempFilesAndOrphansGo) {
  const std::string a = cached("boot/linux", "kernel");
  const std::string b = cached("boot/initrd", "initrd");
  const std::string orphan = store("published, never indexed");
  { std::ofstream(dir_ + "/tmp/dl-left") << "partial"; }
  ASSERT_TRUE(fsys::remove(blobs_->blob_path(b)));
  auto rep = recover_after_clean_stop(*index_, *blobs_);
  ASSERT_TRUE(rep) << rep.error().message;
  EXPECT_EQ(rep->temp_files_removed, 1u);
  EXPECT_EQ(rep->blobs_removed, 1u);
  EXPECT_EQ(rep->entries_dropped, 0u);
  EXPECT_FALSE(blobs_->blob_size(orphan));
  EXPECT_EQ(files_under("tmp"), 0u);
  EXPECT_EQ(blobs_->blob_size(a), 6u);
  EXPECT_TRUE(index_->get_path("boot/initrd")) << "not checked after a clean stop";
  // The full recovery does check it.
  auto full = recover(*index_, *blobs_);
  ASSERT_TRUE(full) << full.error().message;
  EXPECT_EQ(full->entries_dropped, 1u);
  expect_invariant();
}

// One row per crash point (or damage); each starts from the same good cache,
// which must come through untouched.
TEST_F(RecoveryTest, EveryCrashPointRecoversToTheInvariant) {
  struct Expect {
    uint64_t temps, dropped, removed;
    std::vector<std::string> paths_left;  // besides "good"
    // tmp/ holds live downloads while mounted, so verify() does not look there.
    bool verify_sees = true;
  };
  struct Case {
    const char* name;
    std::function<void(RecoveryTest&)> crash;
    Expect want;
  };
  const Case cases[] = {
      {"a download's temp file is left in tmp/",
       [](RecoveryTest& t) {
         auto tmp = t.blobs_->create_temp();
         ASSERT_TRUE(tmp->append("partial", 7));
         // Keep the file as a crash would: a second name outlives the destructor.
         ASSERT_EQ(::link(tmp->path().c_str(), (t.dir_ + "/tmp/crashed").c_str()), 0);
       },
       {1, 0, 0, {}, /*verify_sees=*/false}},
      {"the blob was renamed into place but never indexed",
       [](RecoveryTest& t) { t.store("published, then the crash"); },
       {0, 0, 1, {}}},
      {"the index points at a blob that is missing",
       [](RecoveryTest& t) {
         const std::string s = t.cached("lost", "rename lost with the directory");
         ASSERT_TRUE(t.blobs_->remove(s));
       },
       {0, 1, 0, {}}},
      {"the blob has the wrong size",
       [](RecoveryTest& t) {
         const std::string s = t.cached("torn", "a torn write");
         ASSERT_EQ(::truncate(t.blobs_->blob_path(s).c_str(), 3), 0);
       },
       {0, 1, 1, {}}},
      {"a torn blob shared by two paths",
       [](RecoveryTest& t) {
         const std::string s = t.cached("torn1", "shared and torn");
         t.cached("torn2", "shared and torn");
         ASSERT_EQ(::truncate(t.blobs_->blob_path(s).c_str(), 30), 0);  // longer, zero-filled
       },
       {0, 2, 1, {}}},
      {"a refcount that is too high",
       [](RecoveryTest& t) {
         const std::string s = t.cached("hi", "counted too often");
         t.poke("blobs", s, raw_blob_record(17, 9));
       },
       {0, 0, 0, {"hi"}}},
      {"a refcount of zero on a blob that paths use",
       [](RecoveryTest& t) {
         const std::string s = t.cached("lo1", "counted too rarely");
         t.cached("lo2", "counted too rarely");
         t.poke("blobs", s, raw_blob_record(18, 0));
       },
       {0, 0, 0, {"lo1", "lo2"}}},
      {"an entry without a blob record",
       [](RecoveryTest& t) {
         const std::string s = t.cached("norec", "record lost");
         t.poke("blobs", s, std::nullopt);
       },
       {0, 0, 0, {"norec"}}},
      {"an unreferenced blob (refs 0) with its file",
       [](RecoveryTest& t) {
         t.cached("old", "old version");
         ASSERT_TRUE(t.index_->remove_path("old"));
       },
       {0, 0, 1, {}}},
      {"a blob record whose file is gone",
       [](RecoveryTest& t) {
         const std::string s = t.cached("evicted", "evicted halfway");
         ASSERT_TRUE(t.index_->remove_path("evicted"));
         ASSERT_TRUE(t.blobs_->remove(s));
       },
       {0, 0, 0, {}}},
      {"everything at once",
       [](RecoveryTest& t) {
         std::ofstream(t.dir_ + "/tmp/dl-one") << "x";
         std::ofstream(t.dir_ + "/tmp/dl-two") << "y";
         t.store("orphan");
         const std::string lost = t.cached("lost", "lost bytes");
         ASSERT_TRUE(t.blobs_->remove(lost));
         const std::string torn = t.cached("torn", "torn bytes");
         ASSERT_EQ(::truncate(t.blobs_->blob_path(torn).c_str(), 1), 0);
         const std::string hi = t.cached("hi", "high count");
         t.poke("blobs", hi, raw_blob_record(10, 5));
       },
       {2, 2, 2, {"hi"}}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    TearDown();
    SetUp();
    const std::string good = cached("good", "good bytes");
    c.crash(*this);
    ASSERT_FALSE(HasFatalFailure());
    EXPECT_EQ(verify(*index_, *blobs_).empty(), !c.want.verify_sees);

    auto rep = recover(*index_, *blobs_);
    ASSERT_TRUE(rep) << rep.error().message;
    EXPECT_EQ(rep->temp_files_removed, c.want.temps);
    EXPECT_EQ(rep->entries_dropped, c.want.dropped);
    EXPECT_EQ(rep->blobs_removed, c.want.removed);
    expect_invariant();

    std::vector<std::string> left;
    for (const auto& [p, e] : index_->list_paths()) left.push_back(p);
    std::vector<std::string> want = c.want.paths_left;
    want.push_back("good");
    std::sort(want.begin(), want.end());
    EXPECT_EQ(left, want);
    EXPECT_EQ(index_->get_path("good")->sha256, good);
    EXPECT_EQ(blobs_->blob_size(good), 10u);

    // Recovery is idempotent, and its result survives a reopen.
    open_index();
    auto again = recover(*index_, *blobs_);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->temp_files_removed + again->entries_dropped + again->blobs_removed, 0u);
    expect_invariant();
  }
}

TEST_F(RecoveryTest, VerifyFindsACorruptedByte) {
  const std::string a = cached("x", "aaaa");
  cached("y", "aaaa");
  cached("z", "other");
  ASSERT_TRUE(verify(*index_, *blobs_).empty());
  {
    const int fd = ::open(blobs_->blob_path(a).c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "b", 1, 2), 1);
    ::close(fd);
  }
  const auto problems = verify(*index_, *blobs_);
  ASSERT_EQ(problems.size(), 1u) << "same size, so only the hash can tell";
  EXPECT_NE(problems[0].find(a), std::string::npos) << problems[0];
  EXPECT_NE(problems[0].find("hashes to " + Sha256::of("aaba")), std::string::npos) << problems[0];
}

TEST_F(RecoveryTest, VerifyNamesEachKindOfProblem) {
  struct Case {
    const char* name;
    std::function<void(RecoveryTest&)> damage;
    const char* needle;
  };
  const Case cases[] = {
      {"missing blob",
       [](RecoveryTest& t) { ASSERT_TRUE(t.blobs_->remove(t.cached("p", "bytes"))); },
       "is missing"},
      {"wrong size",
       [](RecoveryTest& t) {
         ASSERT_EQ(::truncate(t.blobs_->blob_path(t.cached("p", "bytes")).c_str(), 1), 0);
       },
       "the entry says 5"},
      {"refcount",
       [](RecoveryTest& t) { t.poke("blobs", t.cached("p", "bytes"), raw_blob_record(5, 3)); },
       "refcount 3, 1 entries"},
      {"no record", [](RecoveryTest& t) { t.poke("blobs", t.cached("p", "bytes"), std::nullopt); },
       "no blob record"},
      {"orphan file", [](RecoveryTest& t) { t.store("orphan"); }, "without a blob record"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    TearDown();
    SetUp();
    c.damage(*this);
    ASSERT_FALSE(HasFatalFailure());
    const auto problems = verify(*index_, *blobs_);
    ASSERT_FALSE(problems.empty());
    bool found = false;
    for (const auto& p : problems) found = found || p.find(c.needle) != std::string::npos;
    EXPECT_TRUE(found) << problems.front();
  }
}

// A rewritten output, keyed as the Fetcher keys it, derived from `source`.
std::string derived_key(const std::string& source) {
  return std::string("\x01") + "filtered/fp1/" + source;
}

TEST_F(RecoveryTest, RepairDropsTheRewrittenOutputsOfACorruptSource) {
  const std::string src = cached("pxelinux.cfg/default", "menu upstream.example");
  const std::string out = cached(derived_key(src), "menu proxy.example");
  const std::string keep = cached("keep", "other");
  {
    const int fd = ::open(blobs_->blob_path(src).c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "X", 1, 0), 1);
    ::close(fd);
  }
  auto rep = repair(*index_, *blobs_);
  ASSERT_TRUE(rep) << rep.error().message;
  EXPECT_EQ(rep->corrupt_blobs_removed, 1u);
  EXPECT_EQ(rep->entries_dropped, 2u) << "the path and its rewritten output";
  EXPECT_FALSE(index_->get_path("pxelinux.cfg/default"));
  EXPECT_FALSE(index_->get_path(derived_key(src)));
  EXPECT_FALSE(blobs_->blob_size(out)) << "the output's blob went with it";
  EXPECT_FALSE(index_->get_blob(out));
  EXPECT_TRUE(index_->get_path("keep") && blobs_->blob_size(keep));
  bool named = false;
  for (const auto& a : rep->actions) {
    named = named || a.find("dropped rewritten output filtered/fp1/" + src) != std::string::npos;
  }
  EXPECT_TRUE(named) << ::testing::PrintToString(rep->actions);
  expect_invariant();
}

TEST_F(RecoveryTest, AnOutputWhoseSourcePathWentIsFoundAndDropped) {
  const std::string src = cached("grub/grub.cfg", "set root=upstream");
  const std::string out = cached(derived_key(src), "set root=proxy");
  cached("copy/grub.cfg", "set root=upstream");  // the same source blob, another path
  ASSERT_TRUE(verify(*index_, *blobs_).empty()) << "a path still points at the source";
  ASSERT_TRUE(index_->remove_path("copy/grub.cfg"));
  ASSERT_TRUE(verify(*index_, *blobs_).empty());
  // The last path goes (a missing file removed) and the output stays behind.
  ASSERT_TRUE(index_->remove_path("grub/grub.cfg"));
  const auto problems = verify(*index_, *blobs_);
  bool found = false;
  for (const auto& p : problems) found = found || p.find("no path points at its source") != std::string::npos;
  EXPECT_TRUE(found) << ::testing::PrintToString(problems);
  auto rep = recover(*index_, *blobs_);
  ASSERT_TRUE(rep) << rep.error().message;
  EXPECT_EQ(rep->derived_dropped, std::vector<std::string>{derived_key(src)});
  EXPECT_FALSE(index_->get_path(derived_key(src)));
  EXPECT_FALSE(blobs_->blob_size(out) || blobs_->blob_size(src));
  expect_invariant();
}

TEST_F(RecoveryTest, WrongTotalsAreReportedAndRepaired) {
  cached("a", "aaaa");
  cached("b", "bbbbbb");
  std::string raw(17, '\0');  // meta "totals": format 1, bytes, records (see index.cc)
  raw[0] = 1;
  const uint64_t bytes = 3, records = 7;
  std::memcpy(&raw[1], &bytes, 8);
  std::memcpy(&raw[9], &records, 8);
  poke("meta", "totals", raw);
  EXPECT_EQ(index_->stats().blob_bytes, 3u);
  const auto problems = verify(*index_, *blobs_);
  ASSERT_EQ(problems.size(), 1u) << ::testing::PrintToString(problems);
  EXPECT_NE(problems[0].find("index totals say 7 blobs (3 bytes), the blob records hold 2 (10 bytes)"),
            std::string::npos)
      << problems[0];
  auto rep = repair(*index_, *blobs_);
  ASSERT_TRUE(rep) << rep.error().message;
  ASSERT_EQ(rep->actions.size(), 1u) << ::testing::PrintToString(rep->actions);
  EXPECT_NE(rep->actions[0].find("recounted the index totals"), std::string::npos);
  EXPECT_EQ(index_->stats().blob_bytes, 10u);
  EXPECT_EQ(index_->stats().blobs, 2u);
  expect_invariant();
}

}  // namespace
}  // namespace netbootfs::cache
