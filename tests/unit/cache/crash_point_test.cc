// Named crash points: parsing of NETBOOTFS_CRASH_AT, counting to the n-th
// hit, and a real SIGKILL at each point of the store, with the state each
// leaves on disk (the death happens in a forked child; the parent inspects).
#include "cache/util/crash_point.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "cache/blob_store.h"
#include "cache/index.h"

namespace netbootfs::cache {
namespace {

namespace fsys = std::filesystem;

TEST(CrashSpecParse, NamesAndCounts) {
  struct Case {
    const char* spec;
    CrashPoint point;
    uint64_t nth;
  };
  const Case good[] = {
      {"temp_synced", CrashPoint::kTempSynced, 1},
      {"blob_renamed", CrashPoint::kBlobRenamed, 1},
      {"index_before_commit", CrashPoint::kIndexBeforeCommit, 1},
      {"index_after_commit", CrashPoint::kIndexAfterCommit, 1},
      {"temp_synced:1", CrashPoint::kTempSynced, 1},
      {"index_after_commit:17", CrashPoint::kIndexAfterCommit, 17},
  };
  for (const auto& c : good) {
    SCOPED_TRACE(c.spec);
    auto s = parse_crash_spec(c.spec);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->point, c.point);
    EXPECT_EQ(s->nth, c.nth);
    EXPECT_EQ(crash_point_name(s->point),
              std::string(c.spec).substr(0, std::string(c.spec).find(':')));
  }
  for (const char* bad : {"", ":", "none", "temp_synced:", "temp_synced:0", "temp_synced:-1",
                          "temp_synced:x", "temp_synced:1:2", "TEMP_SYNCED", " temp_synced",
                          "temp_synced ", "temp", "temp_synced:1234567890123456789"}) {
    SCOPED_TRACE(bad);
    EXPECT_FALSE(parse_crash_spec(bad));
  }
}

// The test binary runs without the variable: nothing is armed, and reaching
// a point does nothing and counts nothing.
TEST(CrashPoint, UnarmedPointsDoNothing) {
  ASSERT_EQ(std::getenv("NETBOOTFS_CRASH_AT"), nullptr);
  arm_crash_point({});
  for (int i = 0; i < 1000; ++i) crash_point(CrashPoint::kTempSynced);
  EXPECT_EQ(crash_point_hits(), 0u);
}

// Dies only at the n-th hit of the armed point; other points are not counted.
TEST(CrashPointDeathTest, DiesAtTheNthHitOfItsPoint) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        arm_crash_point({CrashPoint::kBlobRenamed, 3});
        for (int i = 0; i < 10; ++i) crash_point(CrashPoint::kTempSynced);
        crash_point(CrashPoint::kBlobRenamed);
        crash_point(CrashPoint::kBlobRenamed);
        if (crash_point_hits() != 2) std::_Exit(3);
        crash_point(CrashPoint::kBlobRenamed);
        std::_Exit(4);  // not reached
      },
      testing::KilledBySignal(SIGKILL), "crash point blob_renamed reached");
}

class CrashStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // "fast": the child is a plain fork that shares dir_ (the "threadsafe"
    // style re-runs SetUp in a new process, with another directory). This
    // process has no other threads here: the child opens everything itself.
    GTEST_FLAG_SET(death_test_style, "fast");
    char tmpl[] = "/tmp/netbootfs-crash-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    arm_crash_point({});
    std::error_code ec;
    fsys::remove_all(dir_, ec);
  }
  size_t files_under(const std::string& sub) const {
    size_t n = 0;
    std::error_code ec;
    for (auto it = fsys::recursive_directory_iterator(dir_ + "/" + sub, ec);
         !ec && it != fsys::recursive_directory_iterator(); it.increment(ec)) {
      n += it->is_regular_file();
    }
    return n;
  }
  // In the child: stores "payload" and indexes it as "a/b"; killed on the way.
  [[noreturn]] void store_and_index(CrashSpec spec) {
    auto blobs = BlobStore::open(dir_);
    auto index = Index::open(dir_ + "/index", {});
    if (!blobs || !index) std::_Exit(10);
    arm_crash_point(spec);
    auto t = (*blobs)->create_temp();
    if (!t || !t->append("payload", 7)) std::_Exit(11);
    auto sha = (*blobs)->publish(t.value());
    if (!sha) std::_Exit(12);
    PathEntry e;
    e.sha256 = sha.value();
    e.size = 7;
    if (!(*index)->put_path("a/b", e)) std::_Exit(13);
    std::_Exit(0);
  }
  std::optional<PathEntry> entry_after() {
    auto index = Index::open(dir_ + "/index", {});
    EXPECT_TRUE(index);
    return index ? (*index)->get_path("a/b") : std::nullopt;
  }
  std::string dir_;
};

TEST_F(CrashStateTest, TempSyncedLeavesOnlyATempFile) {
  EXPECT_EXIT(store_and_index({CrashPoint::kTempSynced, 1}), testing::KilledBySignal(SIGKILL),
              "crash point temp_synced reached");
  EXPECT_EQ(files_under("tmp"), 1u);
  EXPECT_EQ(files_under("blobs"), 0u);
  EXPECT_FALSE(entry_after());
}

TEST_F(CrashStateTest, BlobRenamedLeavesAnUnindexedBlob) {
  EXPECT_EXIT(store_and_index({CrashPoint::kBlobRenamed, 1}), testing::KilledBySignal(SIGKILL),
              "crash point blob_renamed reached");
  EXPECT_EQ(files_under("tmp"), 0u);
  EXPECT_EQ(files_under("blobs"), 1u);
  EXPECT_FALSE(entry_after());
}

// Index::open's own commit does not go through the group commit: the first
// counted write transaction is the put_path.
TEST_F(CrashStateTest, IndexBeforeCommitLosesTheEntry) {
  EXPECT_EXIT(store_and_index({CrashPoint::kIndexBeforeCommit, 1}),
              testing::KilledBySignal(SIGKILL), "crash point index_before_commit reached");
  EXPECT_EQ(files_under("blobs"), 1u);
  EXPECT_FALSE(entry_after());
}

TEST_F(CrashStateTest, IndexAfterCommitKeepsTheEntry) {
  EXPECT_EXIT(store_and_index({CrashPoint::kIndexAfterCommit, 1}), testing::KilledBySignal(SIGKILL),
              "crash point index_after_commit reached");
  auto e = entry_after();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->sha256, Sha256::of("payload"));
  EXPECT_EQ(e->size, 7u);
}

}  // namespace
}  // namespace netbootfs::cache
