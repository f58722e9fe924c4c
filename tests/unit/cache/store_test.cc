// The blob store, the LMDB index and start-up recovery: atomic publish,
// content addressing, refcounts, grouped writes, and a consistent cache after
// a crash at any point of a publish.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cache/blob_store.h"
#include "cache/index.h"
#include "cache/recovery.h"

namespace netbootfs::cache {
namespace {

namespace fsys = std::filesystem;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/netbootfs-store-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    open_all();
  }
  void TearDown() override {
    index_.reset();
    blobs_.reset();
    fsys::remove_all(dir_);
  }
  void open_all(size_t map_size = size_t{1} << 30) {
    index_.reset();
    blobs_ = std::move(BlobStore::open(dir_).value());
    Index::Options o;
    o.map_size = map_size;
    auto idx = Index::open(dir_ + "/index", o);
    ASSERT_TRUE(idx) << idx.error().message;
    index_ = std::move(idx).value();
  }
  std::string store(const std::string& bytes) {
    auto t = blobs_->create_temp();
    EXPECT_TRUE(t);
    EXPECT_TRUE(t->append(bytes.data(), bytes.size()));
    auto sha = blobs_->publish(t.value());
    EXPECT_TRUE(sha);
    return sha.value();
  }
  PathEntry entry_for(const std::string& sha, uint64_t size) {
    PathEntry e;
    e.sha256 = sha;
    e.size = size;
    e.etag = "\"e\"";
    e.validated_at = 1700000000;
    return e;
  }
  size_t files_in(const std::string& sub) {
    size_t n = 0;
    for (auto& p : fsys::recursive_directory_iterator(dir_ + "/" + sub)) n += p.is_regular_file();
    return n;
  }

  std::string dir_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<Index> index_;
};

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(Sha256::of(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256::of("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 h;
  h.update("a", 1);
  h.update("bc", 2);
  EXPECT_EQ(h.hex_digest(), Sha256::of("abc"));
  EXPECT_TRUE(is_sha256_hex(Sha256::of("x")));
  EXPECT_FALSE(is_sha256_hex("../../etc/passwd"));
  EXPECT_FALSE(is_sha256_hex(std::string(64, 'A')));
}

TEST_F(StoreTest, PublishIsAtomicContentAddressedAndKeepsTheFd) {
  auto t = blobs_->create_temp();
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->append("hello ", 6));
  ASSERT_TRUE(t->append("world", 5));
  EXPECT_EQ(t->size(), 11u);
  EXPECT_EQ(files_in("tmp"), 1u);
  EXPECT_EQ(files_in("blobs"), 0u) << "nothing is visible before publish";
  const int fd = t->fd();
  auto sha = blobs_->publish(t.value());
  ASSERT_TRUE(sha);
  EXPECT_EQ(sha.value(), Sha256::of("hello world"));
  EXPECT_EQ(files_in("tmp"), 0u);
  EXPECT_TRUE(fsys::exists(dir_ + "/blobs/" + sha->substr(0, 2) + "/" + sha.value()));
  char buf[11];
  ASSERT_EQ(::pread(fd, buf, 11, 0), 11) << "the temp fd reads the published bytes";
  EXPECT_EQ(std::string(buf, 11), "hello world");
  EXPECT_EQ(blobs_->blob_size(sha.value()), 11u);
  // The same content again: one file, the existing one kept.
  EXPECT_EQ(store("hello world"), sha.value());
  EXPECT_EQ(files_in("blobs"), 1u);
  EXPECT_EQ(files_in("tmp"), 0u);
}

TEST_F(StoreTest, AnUnpublishedTempFileIsRemovedAndResetStartsOver) {
  {
    auto t = blobs_->create_temp();
    ASSERT_TRUE(t->append("partial", 7));
    ASSERT_TRUE(t->reset());
    EXPECT_EQ(t->size(), 0u);
    ASSERT_TRUE(t->append("xyz", 3));
    EXPECT_EQ(files_in("tmp"), 1u);
  }
  EXPECT_EQ(files_in("tmp"), 0u);
  EXPECT_EQ(store("xyz"), Sha256::of("xyz")) << "reset drops the hash state too";
}

TEST_F(StoreTest, BlobNamesCannotEscape) {
  for (const char* bad : {"../../etc/passwd", "ab", "", "ZZ"}) {
    auto fd = blobs_->open_blob(bad);
    ASSERT_FALSE(fd) << bad;
    EXPECT_EQ(fd.error().code, EINVAL);
  }
}

TEST_F(StoreTest, NoSpaceIsReportedAsENOSPC) {
  const std::string small = dir_ + "/small";
  fsys::create_directories(small);
  if (::system(("mount -t tmpfs -o size=64k tmpfs " + small + " 2>/dev/null").c_str()) != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here";
  }
  {
    auto store = BlobStore::open(small);
    ASSERT_TRUE(store);
    auto t = (*store)->create_temp();
    ASSERT_TRUE(t);
    std::string chunk(16384, 'z');
    Result<void> r;
    for (int i = 0; i < 16 && r.ok(); ++i) r = t->append(chunk.data(), chunk.size());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ENOSPC);
  }
  ASSERT_EQ(::system(("umount " + small).c_str()), 0);
}

TEST_F(StoreTest, IndexRoundTripAndRefcounts) {
  const std::string a = store("kernel"), b = store("initrd");
  ASSERT_TRUE(index_->put_path("images/linux", entry_for(a, 6)));
  ASSERT_TRUE(index_->put_path("other/linux", entry_for(a, 6)));  // same content twice
  ASSERT_TRUE(index_->put_path("images/initrd", entry_for(b, 6)));
  auto e = index_->get_path("images/linux");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->sha256, a);
  EXPECT_EQ(e->etag, "\"e\"");
  EXPECT_EQ(e->validated_at, 1700000000);
  EXPECT_EQ(index_->get_blob(a)->refs, 2u);
  // Re-putting the same blob does not count twice.
  ASSERT_TRUE(index_->put_path("images/linux", entry_for(a, 6)));
  EXPECT_EQ(index_->get_blob(a)->refs, 2u);
  // Pointing a path elsewhere moves its reference.
  ASSERT_TRUE(index_->put_path("other/linux", entry_for(b, 6)));
  EXPECT_EQ(index_->get_blob(a)->refs, 1u);
  EXPECT_EQ(index_->get_blob(b)->refs, 2u);
  ASSERT_TRUE(index_->remove_path("images/linux"));
  EXPECT_EQ(index_->get_blob(a)->refs, 0u);
  EXPECT_EQ(index_->unreferenced_blobs(), std::vector<std::string>{a});
  auto busy = index_->remove_blob(b);
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, EBUSY);
  ASSERT_TRUE(index_->remove_blob(a));
  EXPECT_FALSE(index_->get_blob(a));
  ASSERT_TRUE(index_->set_validated("images/initrd", 1800000000));
  EXPECT_EQ(index_->get_path("images/initrd")->validated_at, 1800000000);
  EXPECT_FALSE(index_->set_validated("nope", 1));
  const auto st = index_->stats();
  EXPECT_EQ(st.paths, 2u);
  EXPECT_EQ(st.blobs, 1u);
}

TEST_F(StoreTest, ListPathsPrefixIsAWholeDirectory) {
  const std::string a = store("x");
  for (const char* p : {"a", "a/x", "a/y/z", "ab/x", "a b", "a-c", "b"}) {
    ASSERT_TRUE(index_->put_path(p, entry_for(a, 1)));
  }
  std::vector<std::string> got;
  for (auto& [p, e] : index_->list_paths("a")) got.push_back(p);
  EXPECT_EQ(got, (std::vector<std::string>{"a", "a/x", "a/y/z"}));
  EXPECT_EQ(index_->list_paths("").size(), 7u);
  EXPECT_TRUE(index_->list_paths("zzz").empty());
}

TEST_F(StoreTest, ConcurrentWritersAreAllDurable) {
  const std::string a = store("shared");
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        if (!index_->put_path("t" + std::to_string(t) + "/f" + std::to_string(i), entry_for(a, 6))) {
          failures++;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(index_->get_blob(a)->refs, 1600u);
  open_all();  // reopen: every write was committed
  EXPECT_EQ(index_->stats().paths, 1600u);
  EXPECT_EQ(index_->get_blob(a)->refs, 1600u);
}

TEST_F(StoreTest, AccessTimesAreBatched) {
  const std::string a = store("k");
  ASSERT_TRUE(index_->put_path("k", entry_for(a, 1)));
  const int64_t before = index_->get_blob(a)->last_access;
  index_->note_access(a, 1900000000);
  index_->note_access(a, 1800000000);  // older: ignored
  EXPECT_EQ(index_->get_blob(a)->last_access, before) << "noted in memory only";
  ASSERT_TRUE(index_->flush_access());
  EXPECT_EQ(index_->get_blob(a)->last_access, 1900000000);
  index_->note_access(std::string(64, 'f'), 5);  // unknown blob: skipped
  EXPECT_TRUE(index_->flush_access());
}

TEST_F(StoreTest, TheMapGrowsWhenFull) {
  open_all(64 * 1024);
  const std::string a = store("x");
  for (int i = 0; i < 3000; ++i) {
    auto r = index_->put_path("some/rather/long/path/name/number/" + std::to_string(i),
                              entry_for(a, 1));
    ASSERT_TRUE(r) << i << ": " << r.error().message;
  }
  EXPECT_EQ(index_->stats().paths, 3000u);
}

// Writes one raw value into the index's LMDB environment, as another
// version of netbootfs (or a crash between two writes) would have left it.
void poke(const std::string& env_dir, const char* db, std::string_view key, std::string value) {
  MDB_env* env = nullptr;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 4);
  ASSERT_EQ(mdb_env_open(env, env_dir.c_str(), 0, 0644), 0);
  MDB_txn* txn = nullptr;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  MDB_dbi dbi;
  ASSERT_EQ(mdb_dbi_open(txn, db, 0, &dbi), 0);
  MDB_val k{key.size(), const_cast<char*>(key.data())}, v{value.size(), value.data()};
  ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

TEST_F(StoreTest, ASchemaMismatchIsRefusedClearly) {
  index_.reset();
  uint32_t other = 999;
  poke(dir_ + "/index", "meta", "schema", std::string(reinterpret_cast<char*>(&other), 4));
  auto idx = Index::open(dir_ + "/index", Index::Options{});
  ASSERT_FALSE(idx);
  EXPECT_NE(idx.error().message.find("999"), std::string::npos) << idx.error().message;
  EXPECT_NE(idx.error().message.find(std::to_string(Index::kSchemaVersion)), std::string::npos);
}

// Crash points of a publish, in order: temp written; blob renamed but not
// indexed; indexed. Each state must recover to a consistent cache.
TEST_F(StoreTest, RecoveryAfterACrashAtEveryPointOfAPublish) {
  const std::string good = store("good bytes");
  ASSERT_TRUE(index_->put_path("good", entry_for(good, 10)));
  // 1. a temp file left behind
  {
    auto t = blobs_->create_temp();
    ASSERT_TRUE(t->append("partial", 7));
    // simulate the crash: keep the file by linking it elsewhere before the destructor
    ::link(t->path().c_str(), (dir_ + "/tmp/leftover").c_str());
  }
  // 2. a blob renamed but never indexed
  const std::string orphan = store("orphan bytes");
  // 3. an entry whose blob is missing, and one whose blob has the wrong size
  const std::string gone = store("gone");
  ASSERT_TRUE(index_->put_path("gone", entry_for(gone, 4)));
  ASSERT_TRUE(blobs_->remove(gone));
  const std::string shrunk = store("shrunk!");
  ASSERT_TRUE(index_->put_path("shrunk", entry_for(shrunk, 7)));
  ASSERT_EQ(::truncate(blobs_->blob_path(shrunk).c_str(), 3), 0);
  EXPECT_FALSE(verify(*index_, *blobs_).empty());

  auto rep = recover(*index_, *blobs_);
  ASSERT_TRUE(rep) << rep.error().message;
  EXPECT_EQ(rep->temp_files_removed, 1u);
  EXPECT_EQ(rep->entries_dropped, 2u);
  EXPECT_GE(rep->blobs_removed, 2u);  // the orphan and the truncated one
  EXPECT_TRUE(verify(*index_, *blobs_).empty()) << verify(*index_, *blobs_).front();
  EXPECT_TRUE(index_->get_path("good"));
  EXPECT_FALSE(index_->get_path("gone"));
  EXPECT_FALSE(index_->get_path("shrunk"));
  EXPECT_FALSE(blobs_->blob_size(orphan));
  EXPECT_EQ(files_in("tmp"), 0u);
}

TEST_F(StoreTest, RecoveryRecountsRefcountsAndVerifyFindsCorruption) {
  const std::string a = store("aaaa");
  ASSERT_TRUE(index_->put_path("x", entry_for(a, 4)));
  ASSERT_TRUE(index_->put_path("y", entry_for(a, 4)));
  // A wrong refcount on disk (format 1: u8 1, u64 size, u32 refs, i64 last access).
  index_.reset();
  std::string raw(1 + 8 + 4 + 8, '\0');
  raw[0] = 1;
  const uint64_t size = 4;
  const uint32_t refs = 7;
  std::memcpy(&raw[1], &size, 8);
  std::memcpy(&raw[9], &refs, 4);
  poke(dir_ + "/index", "blobs", a, raw);
  open_all();
  EXPECT_EQ(index_->get_blob(a)->refs, 7u);
  EXPECT_FALSE(verify(*index_, *blobs_).empty());
  ASSERT_TRUE(recover(*index_, *blobs_));
  EXPECT_EQ(index_->get_blob(a)->refs, 2u);
  EXPECT_TRUE(verify(*index_, *blobs_).empty());
  // One flipped byte: the blob no longer hashes to its name.
  const int fd = ::open(blobs_->blob_path(a).c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "b", 1, 0), 1);
  ::close(fd);
  auto problems = verify(*index_, *blobs_);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("hashes to"), std::string::npos);
}

}  // namespace
}  // namespace netbootfs::cache
