// Evictor: size parsing, the default limit, LRU selection (table-driven:
// order, pins, in-use blobs, watermarks, a blob larger than the limit), and
// enforce() on a real Index + BlobStore (paths, derived outputs, pins,
// not-yet-flushed accesses, the in-use hook and the eviction callback).
#include "cache/evictor.h"

#include <gtest/gtest.h>

#include "cache/derived_keys.h"

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace netbootfs::cache {
namespace {

namespace fsys = std::filesystem;

TEST(ParseSize, AcceptsSuffixesInPowersOf1024) {
  struct Case {
    const char* text;
    uint64_t want;
  } cases[] = {
      {"4096", 4096},          {"1K", 1024},          {"4M", 4ull << 20},
      {"20G", 20ull << 30},    {"2T", 2ull << 40},    {"1.5G", 3ull << 29},
      {"512m", 512ull << 20},  {"8MiB", 8ull << 20},  {"3KB", 3072},
      {"100B", 100},
  };
  for (const auto& c : cases) {
    auto r = parse_size(c.text);
    ASSERT_TRUE(r) << c.text;
    EXPECT_EQ(*r, c.want) << c.text;
  }
}

TEST(ParseSize, RejectsGarbageWithOneLineNamingIt) {
  for (const char* bad : {"", "G", "abc", "-1G", "0", "0G", "12Q", "1.5", "1G2", " 4M", "4 M",
                          "99999999999T"}) {
    auto r = parse_size(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message.find(std::string("'") + bad + "'"), std::string::npos)
        << r.error().message;
    EXPECT_EQ(r.error().message.find('\n'), std::string::npos);
  }
}

TEST(DefaultLimit, IsEightyPercentOfFreePlusHeld) {
  EXPECT_EQ(default_cache_limit(1000, 0), 800u);
  EXPECT_EQ(default_cache_limit(600, 400), 800u);
  EXPECT_EQ(default_cache_limit(0, 0), 0u);
  EXPECT_EQ(default_cache_limit(1ull << 62, 1ull << 62), 7378697629483820646ull);  // floor(0.8 * 2^63)
  EXPECT_EQ(default_cache_limit(UINT64_MAX, 5), UINT64_MAX / 100 * 80 + UINT64_MAX % 100 * 80 / 100);
}

TEST(ResolveLimit, ConfiguredMustFitDefaultIsTheFraction) {
  EXPECT_EQ(resolve_cache_limit(std::nullopt, 1000, 250).value(), 1000u);
  EXPECT_EQ(resolve_cache_limit(1250, 1000, 250).value(), 1250u);  // exactly the room
  auto r = resolve_cache_limit(4ull << 20, 1ull << 20, 1024);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOSPC);
  EXPECT_EQ(r.error().message,
            "max_cache_size 4.0 MiB (4194304 bytes) does not fit on the cache filesystem: "
            "1.0 MiB (1048576 bytes) free + 1.0 KiB (1024 bytes) held by the cache");
}

EvictCandidate blob(const char* sha, uint64_t size, int64_t at, bool in_use = false,
                    bool pinned = false) {
  return EvictCandidate{sha, size, at, in_use, pinned};
}

TEST(SelectEvictions, Table) {
  const Watermarks wm{90, 80};
  struct Case {
    const char* name;
    std::vector<EvictCandidate> blobs;
    uint64_t limit;
    std::vector<std::string> want;
    uint64_t after;
  } cases[] = {
      {"under the high watermark: nothing",
       {blob("a", 30, 1), blob("b", 30, 2), blob("c", 30, 3)}, 100, {}, 90},
      {"past high: oldest first down to low",
       {blob("c", 30, 3), blob("a", 30, 1), blob("b", 35, 2)}, 100, {"a"}, 65},
      {"down to low takes as many as needed",
       {blob("a", 30, 1), blob("b", 30, 2), blob("c", 30, 3), blob("d", 30, 4)}, 100,
       {"a", "b"}, 60},
      {"in use: skipped, and not counted",
       {blob("a", 50, 1, true), blob("b", 50, 2), blob("c", 45, 3)}, 100, {"b"}, 45},
      {"in use alone over the limit: nothing to do",
       {blob("a", 500, 1, true)}, 100, {}, 0},
      {"pinned: counted, never evicted",
       {blob("a", 50, 1, false, true), blob("b", 30, 2), blob("c", 30, 3)}, 100, {"b"}, 80},
      {"pinned alone past the limit: still kept",
       {blob("a", 150, 1, false, true), blob("b", 10, 2)}, 100, {"b"}, 150},
      {"large but within the limit, under the watermark: kept",
       {blob("big", 150, 9), blob("b", 10, 2)}, 1000, {}, 160},
      {"larger than the limit, closed: evicted even when recent",
       {blob("big", 250, 9), blob("b", 10, 2), blob("c", 10, 3)}, 200, {"big"}, 20},
      {"larger than the limit, closed, oldest",
       {blob("big", 150, 1), blob("b", 10, 2)}, 100, {"big"}, 10},
      {"larger than the limit, open: kept",
       {blob("big", 150, 9, true), blob("b", 10, 2)}, 100, {}, 10},
      {"ties: larger first, then sha256",
       {blob("y", 20, 5), blob("x", 20, 5), blob("z", 40, 5), blob("w", 19, 6)}, 90, {"z"}, 59},
      {"no limit: nothing", {blob("a", 1000, 1)}, 0, {}, 1000},
  };
  for (const auto& c : cases) {
    auto sel = select_evictions(c.blobs, c.limit, wm);
    EXPECT_EQ(sel.victims, c.want) << c.name;
    EXPECT_EQ(sel.counted_after, c.after) << c.name;
  }
}

TEST(SelectEvictions, WatermarksAreTheCallers) {
  std::vector<EvictCandidate> b{blob("a", 25, 1), blob("b", 25, 2), blob("c", 25, 3),
                                blob("d", 20, 4)};  // 95 of 100
  EXPECT_TRUE(select_evictions(b, 100, {100, 50}).victims.empty());
  EXPECT_EQ(select_evictions(b, 100, {90, 50}).victims, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(select_evictions(b, 100, {90, 70}).victims, (std::vector<std::string>{"a"}));
  // low above high is clamped to high.
  EXPECT_EQ(select_evictions(b, 100, {80, 95}).victims, (std::vector<std::string>{"a"}));
}

class EvictorStore : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fsys::temp_directory_path() /
           ("nbfs-evictor-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fsys::remove_all(dir_);
    fsys::create_directories(dir_ / "index");
    blobs_ = BlobStore::open(dir_.string()).value();
    index_ = Index::open((dir_ / "index").string(), Index::Options{}).value();
  }
  void TearDown() override {
    index_.reset();
    blobs_.reset();
    fsys::remove_all(dir_);
  }
  // Stores `size` bytes of `fill` under `path`, last read at `at`.
  std::string put(const std::string& path, size_t size, char fill, int64_t at) {
    auto t = blobs_->create_temp().value();
    std::string bytes(size, fill);
    EXPECT_TRUE(t.append(bytes.data(), bytes.size()));
    auto sha = blobs_->publish(t).value();
    PathEntry e;
    e.sha256 = sha;
    e.size = size;
    EXPECT_TRUE(index_->put_path(path, e));
    index_->note_access(sha, at);
    EXPECT_TRUE(index_->flush_access());
    return sha;
  }
  bool has(const std::string& path) { return index_->get_path(path).has_value(); }
  bool file(const std::string& sha) { return fsys::exists(blobs_->blob_path(sha)); }

  fsys::path dir_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<Index> index_;
};

TEST_F(EvictorStore, EvictsLeastRecentlyUsedAndReportsThePaths) {
  const auto a = put("a", 300, 'a', 100);
  const auto b = put("b", 300, 'b', 200);
  const auto c = put("c", 300, 'c', 300);
  EvictorOptions o;
  o.limit = 950;  // 900 > 90% of 950
  Evictor ev(o, *index_, *blobs_);
  std::vector<std::string> gone;
  ev.set_on_evicted([&](const std::vector<std::string>& p) { gone = p; });
  auto r = ev.enforce();
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->blobs, 1u);
  EXPECT_EQ(r->bytes, 300u);
  EXPECT_EQ(r->cache_bytes, 600u);
  EXPECT_EQ(ev.evictions.load(), 1u);
  EXPECT_EQ(ev.evicted_bytes.load(), 300u);
  EXPECT_EQ(ev.cache_bytes.load(), 600u);
  EXPECT_EQ(ev.cache_objects.load(), 2u);
  EXPECT_EQ(gone, std::vector<std::string>{"a"});
  EXPECT_FALSE(has("a"));
  EXPECT_FALSE(file(a));
  EXPECT_FALSE(index_->get_blob(a));
  EXPECT_TRUE(has("b") && file(b));
  EXPECT_TRUE(has("c") && file(c));
  // Under the high watermark now: a second pass does nothing.
  r = ev.enforce();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->blobs, 0u);
}

TEST_F(EvictorStore, UnflushedAccessCountsAsRecent) {
  const auto a = put("a", 300, 'a', 100);
  const auto b = put("b", 300, 'b', 200);
  put("c", 300, 'c', 300);
  index_->note_access(a, 400);  // read just now, not flushed
  EvictorOptions o;
  o.limit = 950;
  Evictor ev(o, *index_, *blobs_);
  ASSERT_TRUE(ev.enforce());
  EXPECT_TRUE(has("a") && file(a));
  EXPECT_FALSE(has("b") || file(b));
}

TEST_F(EvictorStore, PinsAndInUseBlobsStay) {
  const auto boot = put("pxelinux.0", 300, 'p', 1);
  const auto menu = put("grub/grub.cfg", 300, 'g', 2);
  const auto open = put("open", 300, 'o', 3);
  const auto other = put("other", 300, 'x', 4);
  EvictorOptions o;
  o.limit = 950;
  o.pins = {"pxelinux.0", "grub/*"};
  Evictor ev(o, *index_, *blobs_);
  ev.set_in_use([&] { return std::unordered_set<std::string>{open}; });
  ASSERT_TRUE(ev.enforce());
  EXPECT_TRUE(has("pxelinux.0") && file(boot));
  EXPECT_TRUE(has("grub/grub.cfg") && file(menu));
  EXPECT_TRUE(has("open") && file(open));
  EXPECT_FALSE(has("other") || file(other));
  EXPECT_TRUE(ev.pinned("grub/x/y"));  // fnmatch without FNM_PATHNAME
  EXPECT_FALSE(ev.pinned("pxelinux.cfg/default"));
}

TEST_F(EvictorStore, SharedBlobGoesWithAllItsPathsAndDerivedOutputs) {
  const auto src = put("menu.cfg", 400, 'm', 1);
  put("copy/menu.cfg", 400, 'm', 1);  // same bytes, same blob
  const auto keep = put("keep", 300, 'k', 50);
  // A rewritten output of src, stored the way the Fetcher stores it.
  auto t = blobs_->create_temp().value();
  std::string out(200, 'r');
  ASSERT_TRUE(t.append(out.data(), out.size()));
  const auto out_sha = blobs_->publish(t).value();
  PathEntry d;
  d.sha256 = out_sha;
  d.size = out.size();
  ASSERT_TRUE(index_->put_path(std::string("\x01") + "filtered/fp1/" + src, d));
  EvictorOptions o;
  o.limit = 950;  // 900 counted
  Evictor ev(o, *index_, *blobs_);
  auto r = ev.enforce();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->entries, 2u);
  EXPECT_EQ(r->blobs, 2u);
  EXPECT_EQ(r->bytes, 600u);
  EXPECT_FALSE(has("menu.cfg") || has("copy/menu.cfg"));
  EXPECT_FALSE(file(src) || file(out_sha));
  EXPECT_FALSE(has(std::string("\x01") + "filtered/fp1/" + src));
  EXPECT_TRUE(has("keep") && file(keep));
}

TEST_F(EvictorStore, IncomingDownloadMakesRoomBeforeTheLimitIsCrossed) {
  put("a", 300, 'a', 1);
  put("b", 300, 'b', 2);
  EvictorOptions o;
  o.limit = 1000;  // 600: under the watermark
  Evictor ev(o, *index_, *blobs_);
  auto r = ev.enforce(0);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->blobs, 0u);
  r = ev.enforce(500);  // 1100 > 900: down to 800 counting the 500 coming
  ASSERT_TRUE(r);
  EXPECT_EQ(r->blobs, 1u);
  EXPECT_FALSE(has("a"));
  EXPECT_TRUE(has("b"));
}

TEST_F(EvictorStore, UnderTheWatermarkAPassScansNothing) {
  put("a", 300, 'a', 1);
  put("b", 300, 'b', 2);
  EvictorOptions o;
  o.limit = 1000;  // high 900
  Evictor ev(o, *index_, *blobs_);
  int scans = 0;  // the in-use hook is asked once per scanning pass
  ev.set_in_use([&] {
    ++scans;
    return std::unordered_set<std::string>{};
  });
  auto r = ev.enforce(300);  // 900: at the watermark
  ASSERT_TRUE(r);
  EXPECT_EQ(scans, 0);
  EXPECT_EQ(r->cache_bytes, 600u);
  EXPECT_EQ(r->cache_objects, 2u);
  r = ev.enforce(301);
  ASSERT_TRUE(r);
  EXPECT_EQ(scans, 1);
  EXPECT_EQ(r->blobs, 1u);
}

TEST_F(EvictorStore, OverTheHighWatermarkSaysWhetherAPassWouldScan) {
  put("a", 300, 'a', 1);
  put("b", 300, 'b', 2);
  EvictorOptions o;
  o.limit = 1000;  // high 900
  Evictor ev(o, *index_, *blobs_);
  EXPECT_FALSE(ev.over_high_watermark());
  auto r = ev.reserve(300);  // 900: at the watermark
  EXPECT_FALSE(ev.over_high_watermark());
  put("c", 1, 'c', 3);
  EXPECT_TRUE(ev.over_high_watermark());
  r.release();
  EXPECT_FALSE(ev.over_high_watermark());
  EvictorOptions none;  // no limit: never
  Evictor unlimited(none, *index_, *blobs_);
  EXPECT_FALSE(unlimited.over_high_watermark());
}

TEST_F(EvictorStore, EveryOutstandingReservationCounts) {
  const auto a = put("a", 300, 'a', 1);
  const auto b = put("b", 300, 'b', 2);
  const auto c = put("c", 100, 'c', 3);
  EvictorOptions o;
  o.limit = 1000;  // high 900, low 800
  Evictor ev(o, *index_, *blobs_);
  // Three downloads announce 100 bytes each: 700 + 300 > 900, though each
  // alone (700 + 100) fits.
  auto r1 = ev.reserve(100);
  auto r2 = ev.reserve(100);
  {
    auto r3 = ev.reserve(100);
    EXPECT_EQ(ev.reserved(), 300u);
    auto r = ev.enforce();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->blobs, 1u);  // 1000 -> 700 <= 800
    EXPECT_FALSE(has("a") || file(a));
    EXPECT_TRUE(has("b") && has("c"));
  }
  EXPECT_EQ(ev.reserved(), 200u) << "released when dropped";
  // With two left (and an unreserved incoming), 400 + 200 + 300 = 900 fits.
  auto r = ev.enforce(300);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->blobs, 0u);
  // Moved, a reservation still counts once; released, never again.
  Evictor::Reservation moved = std::move(r1);
  EXPECT_EQ(ev.reserved(), 200u);
  EXPECT_EQ(moved.bytes(), 100u);
  r = ev.enforce(301);  // 400 + 200 + 301 > 900: down to 800 -> b goes
  ASSERT_TRUE(r);
  EXPECT_FALSE(has("b") || file(b));
  EXPECT_TRUE(has("c") && file(c));
  moved.release();
  moved.release();
  r2 = Evictor::Reservation();
  EXPECT_EQ(ev.reserved(), 0u);
}

TEST_F(EvictorStore, AReservationMayOutliveItsEvictor) {
  Evictor::Reservation held;
  {
    EvictorOptions o;
    o.limit = 1000;
    Evictor ev(o, *index_, *blobs_);
    held = ev.reserve(500);
  }
  held.release();  // no use after free (ASan would say)
  EXPECT_EQ(held.bytes(), 0u);
}

TEST_F(EvictorStore, ARewrittenOutputWhoseSourceIsGoneIsRemoved) {
  const auto src = put("menu.cfg", 100, 'm', 1);
  const auto keep = put("keep", 500, 'k', 2);
  const auto out_of = [&](char fill, const std::string& source, const std::string& fp) {
    auto t = blobs_->create_temp().value();
    std::string bytes(150, fill);
    EXPECT_TRUE(t.append(bytes.data(), bytes.size()));
    const auto sha = blobs_->publish(t).value();
    PathEntry d;
    d.sha256 = sha;
    d.size = bytes.size();
    EXPECT_TRUE(index_->put_path(std::string("\x01") + "filtered/" + fp + "/" + source, d));
    return sha;
  };
  const auto out1 = out_of('1', src, "fp1");
  const auto out2 = out_of('2', src, "fp2");  // an older rule set's output
  const auto busy = out_of('3', src, "fp3");  // one a handle still reads
  // The source path went without its outputs (as a missing file's removal
  // did), and its blob with it.
  ASSERT_TRUE(index_->remove_path("menu.cfg"));
  ASSERT_TRUE(index_->remove_blob(src));
  ASSERT_TRUE(blobs_->remove(src));
  EvictorOptions o;
  o.limit = 1000;  // 950 > 900
  Evictor ev(o, *index_, *blobs_);
  ev.set_in_use([&] { return std::unordered_set<std::string>{busy}; });
  auto r = ev.enforce();
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->blobs, 2u);
  EXPECT_EQ(r->bytes, 300u);
  EXPECT_EQ(r->entries, 0u) << "no path was evicted";
  for (const char* fp : {"fp1", "fp2"}) {
    EXPECT_FALSE(has(std::string("\x01") + "filtered/" + fp + "/" + src)) << fp;
  }
  EXPECT_FALSE(file(out1) || file(out2));
  EXPECT_FALSE(index_->get_blob(out1) || index_->get_blob(out2));
  EXPECT_TRUE(has(std::string("\x01") + "filtered/fp3/" + src) && file(busy));
  EXPECT_TRUE(has("keep") && file(keep)) << "650 fits: nothing else goes";
  EXPECT_EQ(r->cache_bytes, 650u);
  EXPECT_EQ(index_->stats().blob_bytes, index_->check_totals().counted.blob_bytes);
}

TEST_F(EvictorStore, TheIndexTotalsFollowEvictions) {
  for (int i = 0; i < 10; ++i) put("f" + std::to_string(i), 100 + i, static_cast<char>('a' + i), i);
  EvictorOptions o;
  o.limit = 800;
  Evictor ev(o, *index_, *blobs_);
  auto r = ev.enforce();
  ASSERT_TRUE(r);
  EXPECT_GT(r->blobs, 0u);
  const auto c = index_->check_totals();
  EXPECT_EQ(c.kept.blob_bytes, c.counted.blob_bytes);
  EXPECT_EQ(c.kept.blobs, c.counted.blobs);
  EXPECT_EQ(r->cache_bytes, c.counted.blob_bytes);
  EXPECT_EQ(r->cache_objects, c.counted.blobs);
  EXPECT_LE(r->cache_bytes, 640u);
}

TEST_F(EvictorStore, ConcurrentEnforceAndWrites) {
  EvictorOptions o;
  o.limit = 5000;
  Evictor ev(o, *index_, *blobs_);
  std::thread writer([&] {
    for (int i = 0; i < 40; ++i) put("f" + std::to_string(i), 500, static_cast<char>('A' + i), i);
  });
  std::thread evictor([&] {
    for (int i = 0; i < 40; ++i) ASSERT_TRUE(ev.enforce());
  });
  writer.join();
  evictor.join();
  auto r = ev.enforce();
  ASSERT_TRUE(r);
  EXPECT_LE(r->cache_bytes, o.limit);
  // Every remaining path still has its blob.
  for (const auto& [p, e] : index_->list_paths()) EXPECT_TRUE(file(e.sha256)) << p;
}


PathEntry at(const std::string& sha) {
  PathEntry e;
  e.sha256 = sha;
  return e;
}

TEST(GatherRefs, Table) {
  using Paths = std::vector<std::pair<std::string, PathEntry>>;
  using Derived = std::unordered_map<std::string, std::vector<std::pair<std::string, std::string>>>;
  const std::string kOut1 = derived_key("fp1", "src");
  const std::string kOut2 = derived_key("fp2", "src");
  struct Case {
    const char* name;
    Paths paths;
    std::vector<std::string> pins;
    std::unordered_map<std::string, std::vector<std::string>> paths_of;
    Derived derived_of;
    std::unordered_set<std::string> pinned;
  } cases[] = {
      {"nothing", {}, {}, {}, {}, {}},
      {"one path per blob", {{"a", at("A")}, {"b", at("B")}}, {}, {{"A", {"a"}}, {"B", {"b"}}},
       {}, {}},
      {"a shared blob keeps its paths in listing order",
       {{"x/1", at("S")}, {"x/2", at("S")}}, {}, {{"S", {"x/1", "x/2"}}}, {}, {}},
      {"a pin marks the blob its path points at",
       {{"boot/k", at("K")}, {"other", at("O")}}, {"boot/*"}, {{"K", {"boot/k"}}, {"O", {"other"}}},
       {}, {"K"}},
      {"a pin glob crosses slashes", {{"a/b/c", at("C")}}, {"a*"}, {{"C", {"a/b/c"}}}, {}, {"C"}},
      {"derived outputs go under their source, not as paths",
       {{"menu", at("src")}, {kOut1, at("O1")}, {kOut2, at("O2")}}, {},
       {{"src", {"menu"}}}, {{"src", {{kOut1, "O1"}, {kOut2, "O2"}}}}, {}},
      {"a derived key is never pinned, even by a catch-all glob",
       {{kOut1, at("O1")}}, {"*"}, {}, {{"src", {{kOut1, "O1"}}}}, {}},
      {"an internal key that is not derived is skipped",
       {{std::string(1, kInternalMark) + "other/x", at("I")}}, {"*"}, {}, {}, {}},
      {"a derived output of a source no path points at is still gathered",
       {{kOut1, at("O1")}}, {}, {}, {{"src", {{kOut1, "O1"}}}}, {}},
  };
  for (const auto& c : cases) {
    const BlobRefs r = gather_refs(c.paths, c.pins);
    EXPECT_EQ(r.paths_of, c.paths_of) << c.name;
    EXPECT_EQ(r.derived_of, c.derived_of) << c.name;
    EXPECT_EQ(r.pinned, c.pinned) << c.name;
  }
}

std::string describe(const EvictCandidate& c) {
  return c.sha256 + " size=" + std::to_string(c.size) + " at=" + std::to_string(c.last_access) +
         (c.in_use ? " in_use" : "") + (c.pinned ? " pinned" : "");
}

TEST(BuildCandidates, Table) {
  using Blobs = std::vector<std::pair<std::string, BlobEntry>>;
  const auto rec = [](uint64_t size, int64_t last_access) {
    BlobEntry b;
    b.size = size;
    b.refs = 1;
    b.last_access = last_access;
    return b;
  };
  const std::string kOut = derived_key("fp", "S");
  BlobRefs none;
  BlobRefs pinned_a;
  pinned_a.paths_of = {{"A", {"a"}}};
  pinned_a.pinned = {"A"};
  BlobRefs derived;  // S has a path and one output O
  derived.paths_of = {{"S", {"menu"}}};
  derived.derived_of = {{"S", {{kOut, "O"}}}};
  BlobRefs derived_with_path = derived;  // O is also a path's blob
  derived_with_path.paths_of["O"] = {"copy"};
  struct Case {
    const char* name;
    Blobs blobs;
    std::vector<std::pair<std::string, int64_t>> pending;
    const BlobRefs& refs;
    std::unordered_set<std::string> in_use;
    uint64_t coming;
    std::vector<std::string> want;
  } cases[] = {
      {"nothing", {}, {}, none, {}, 0, {}},
      {"one per record, in order", {{"B", rec(20, 2)}, {"A", rec(10, 1)}}, {}, none, {}, 0,
       {"B size=20 at=2", "A size=10 at=1"}},
      {"a later pending access wins", {{"A", rec(10, 5)}}, {{"A", 9}}, none, {}, 0,
       {"A size=10 at=9"}},
      {"an earlier pending access does not", {{"A", rec(10, 5)}}, {{"A", 3}}, none, {}, 0,
       {"A size=10 at=5"}},
      {"of two pending accesses the last listed counts", {{"A", rec(10, 5)}}, {{"A", 9}, {"A", 7}},
       none, {}, 0, {"A size=10 at=7"}},
      {"pending for another blob: ignored", {{"A", rec(10, 5)}}, {{"B", 9}}, none, {}, 0,
       {"A size=10 at=5"}},
      {"pinned and in use from their sets", {{"A", rec(10, 1)}, {"B", rec(10, 2)}}, {}, pinned_a,
       {"B"}, 0, {"A size=10 at=1 pinned", "B size=10 at=2 in_use"}},
      {"an output folds into its source", {{"S", rec(100, 1)}, {"O", rec(30, 8)}}, {}, derived,
       {}, 0, {"S size=130 at=1", "O size=0 at=8 pinned"}},
      {"an output in use makes its source in use", {{"S", rec(100, 1)}, {"O", rec(30, 8)}}, {},
       derived, {"O"}, 0, {"S size=130 at=1 in_use", "O size=0 at=8 in_use pinned"}},
      {"a source in use does not pass it to its output", {{"S", rec(100, 1)}, {"O", rec(30, 8)}},
       {}, derived, {"S"}, 0, {"S size=130 at=1 in_use", "O size=0 at=8 pinned"}},
      {"an output a path points at stays its own candidate",
       {{"S", rec(100, 1)}, {"O", rec(30, 8)}}, {}, derived_with_path, {}, 0,
       {"S size=100 at=1", "O size=30 at=8"}},
      {"an output without a record: nothing to fold", {{"S", rec(100, 1)}}, {}, derived, {}, 0,
       {"S size=100 at=1"}},
      {"a source without a record: its output is not folded", {{"O", rec(30, 8)}}, {}, derived,
       {}, 0, {"O size=30 at=8"}},
      {"coming bytes: a last candidate never chosen", {{"A", rec(10, 1)}}, {}, none, {}, 64,
       {"A size=10 at=1", " size=64 at=9223372036854775807 pinned"}},
  };
  for (const auto& c : cases) {
    std::vector<std::string> got;
    for (const auto& cand : build_candidates(c.blobs, c.pending, c.refs, c.in_use, c.coming)) {
      got.push_back(describe(cand));
    }
    EXPECT_EQ(got, c.want) << c.name;
  }
}

TEST(BuildCandidates, AnOutputOfTwoSourcesCountsOnce) {
  // Which source takes its bytes follows the map's order; that they are
  // counted once does not.
  BlobRefs refs;
  refs.derived_of = {{"S", {{derived_key("fp", "S"), "O"}}},
                     {"T", {{derived_key("fp", "T"), "O"}}}};
  BlobEntry s{100, 1, 1}, t{50, 1, 2}, o{30, 2, 8};
  const auto cands = build_candidates({{"S", s}, {"T", t}, {"O", o}}, {}, refs, {}, 0);
  ASSERT_EQ(cands.size(), 3u);
  EXPECT_EQ(cands[0].size + cands[1].size, 180u);
  EXPECT_TRUE(cands[0].size == 130 || cands[1].size == 80);
  EXPECT_EQ(describe(cands[2]), "O size=0 at=8 pinned");
}

TEST(BuildCandidates, FoldedCandidatesFeedTheSelectionAsOne) {
  // A source with its output is evicted as one blob of both sizes; the
  // output is never chosen on its own.
  BlobRefs refs;
  refs.paths_of = {{"S", {"menu"}}, {"R", {"recent"}}};
  refs.derived_of = {{"S", {{derived_key("fp", "S"), "O"}}}};
  BlobEntry s{60, 1, 1}, o{30, 1, 1}, r{20, 1, 9};
  const auto cands = build_candidates({{"S", s}, {"O", o}, {"R", r}}, {}, refs, {}, 0);
  const auto sel = select_evictions(cands, 100, {90, 80});
  EXPECT_EQ(sel.counted_before, 110u);
  EXPECT_EQ(sel.victims, (std::vector<std::string>{"S"}));
  EXPECT_EQ(sel.counted_after, 20u);
}

}  // namespace
}  // namespace netbootfs::cache
