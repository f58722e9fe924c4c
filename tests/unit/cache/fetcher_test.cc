// The Fetcher against a real HTTP exchange (an in-process upstream): single
// flight, listings and negative entries, revalidation, versions, resume,
// stale-if-error and shutdown. No FUSE: these are the decisions the mount
// relies on, driven directly. Run under TSan by contrib/check.sh.
#include "cache/fetcher.h"
#include "cache/prefetch.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <random>
#include <thread>

#include "cache/util/delay_point.h"
#include "tests/unit/support/test_http_server.h"

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;
using testing::TestHttpServer;

// While it lives, this process's writes past `bytes` fail (EFBIG), as they
// would on a full disk; lift() ends that early.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::signal(SIGXFSZ, SIG_IGN);
    if (::getrlimit(RLIMIT_FSIZE, &old_) != 0) return;
    rlimit small = old_;
    small.rlim_cur = bytes;
    set_ = ::setrlimit(RLIMIT_FSIZE, &small) == 0;
  }
  ~FileSizeLimit() { lift(); }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;
  bool set() const { return set_; }
  void lift() {
    if (set_) ::setrlimit(RLIMIT_FSIZE, &old_);
    set_ = false;
  }

 private:
  rlimit old_{};
  bool set_ = false;
};

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

template <class T>
T await(std::future<T>& f, std::chrono::milliseconds limit = 10s) {
  if (f.wait_for(limit) != std::future_status::ready) {
    ADD_FAILURE() << "timed out";
    std::abort();  // a callback that never comes would hang the suite
  }
  return f.get();
}

class FetcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/netbootfs-fetcher-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    start(FetcherOptions{});
  }
  void TearDown() override {
    stop();
    std::filesystem::remove_all(dir_);
  }

  void start(FetcherOptions o) {
    o.base_url = server_.url();
    if (o.read_stall_timeout == FetcherOptions{}.read_stall_timeout) o.read_stall_timeout = 3s;
    blobs_ = std::move(BlobStore::open(dir_).value());
    index_ = std::move(Index::open(dir_ + "/index", Index::Options{}).value());
    http::Options ho;
    ho.connect_timeout = 2s;
    ho.request_timeout = 5s;
    ho.low_speed_time = 2s;
    client_ = std::make_unique<http::Client>(ho);
    fetcher_ = std::make_unique<Fetcher>(o, *client_, *index_, *blobs_);
  }
  void stop() {
    if (fetcher_) fetcher_->shutdown();
    fetcher_.reset();
    evictor_.reset();
    client_.reset();
    index_.reset();
    blobs_.reset();
  }
  void restart(FetcherOptions o) {
    stop();
    start(o);
  }

  Result<Attr> lookup(const std::string& path) {
    std::promise<Result<Attr>> p;
    auto f = p.get_future();
    fetcher_->lookup(path, [&p](Result<Attr> r) { p.set_value(std::move(r)); });
    return await(f);
  }
  Result<std::vector<DirEntry>> list_dir(const std::string& path) {
    std::promise<Result<std::vector<DirEntry>>> p;
    auto f = p.get_future();
    fetcher_->list_dir(path, [&p](Result<std::vector<DirEntry>> r) { p.set_value(std::move(r)); });
    return await(f);
  }
  Result<std::unique_ptr<OpenFile>> open(const std::shared_ptr<FileVersion>& v) {
    std::promise<Result<std::unique_ptr<OpenFile>>> p;
    auto f = p.get_future();
    fetcher_->open(v, [&p](Result<std::unique_ptr<OpenFile>> r) { p.set_value(std::move(r)); });
    return await(f);
  }
  // Reads the whole file in `chunk` pieces, as the kernel would.
  Result<std::string> read_all(OpenFile& of, size_t chunk = 128 * 1024) {
    std::string out;
    for (uint64_t off = 0;; off += chunk) {
      std::promise<Result<Slice>> p;
      auto f = p.get_future();
      of.read(off, chunk, [&p](Result<Slice> r) { p.set_value(std::move(r)); });
      auto r = await(f);
      if (!r) return r.error();
      const Slice s = r.value();
      if (s.len == 0) break;
      std::string piece(s.len, '\0');
      if (::pread(s.fd, piece.data(), s.len, static_cast<off_t>(s.offset)) !=
          static_cast<ssize_t>(s.len)) {
        return Error{EIO, "pread"};
      }
      out += piece;
      if (s.len < chunk) break;
    }
    return out;
  }
  Result<std::string> cat(const std::string& path) {
    auto a = lookup(path);
    if (!a) return a.error();
    auto of = open(a->version);
    if (!of) return of.error();
    return read_all(*of.value());
  }
  // cat() as the kernel walks a path: an ESTALE open (the version it looked
  // up was evicted or replaced in between) sends it back to LOOKUP once.
  Result<std::string> cat_revalidating(const std::string& path) {
    auto r = cat(path);
    if (!r && r.error().code == ESTALE) r = cat(path);
    return r;
  }
  // Polls (bounded) until a probe or a request marks upstream up again.
  bool wait_until_up(std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    const auto t0 = std::chrono::steady_clock::now();
    while (!fetcher_->upstream_up() && std::chrono::steady_clock::now() - t0 < limit) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return fetcher_->upstream_up();
  }

  std::string dir_;
  TestHttpServer server_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<Index> index_;
  std::unique_ptr<http::Client> client_;
  std::unique_ptr<Fetcher> fetcher_;
  std::unique_ptr<Evictor> evictor_;  // outlives nothing but the Fetcher
};

// --- Bounded cache ----------------------------------------------------------

class FetcherEvictionTest : public FetcherTest {
 protected:
  void limit(uint64_t bytes, std::vector<std::string> pins = {}) {
    FetcherOptions o;
    o.revalidate = 60s;  // hits ask upstream nothing: GET counts are downloads
    restart(o);
    EvictorOptions eo;
    eo.limit = bytes;
    eo.pins = std::move(pins);
    evictor_ = std::make_unique<Evictor>(eo, *index_, *blobs_);
    fetcher_->set_evictor(evictor_.get());
  }
  bool cached(const std::string& path) { return index_->get_path(path).has_value(); }
  // Background passes run on a worker: poll (bounded).
  bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds limit = 5s) {
    const auto t0 = std::chrono::steady_clock::now();
    while (!cond()) {
      if (std::chrono::steady_clock::now() - t0 > limit) return false;
      std::this_thread::sleep_for(10ms);
    }
    return true;
  }
  uint64_t cache_bytes() { return index_->stats().blob_bytes; }
};

TEST_F(FetcherEvictionTest, TheLeastRecentlyReadGoFirstAndComeBackByteIdentical) {
  limit(10000);  // high 9000, low 8000
  for (const char* f : {"a", "b", "c", "d"}) server_.put(f, random_bytes(2500, f[0]));
  auto old_b = lookup("b");
  ASSERT_EQ(cat("a").value(), random_bytes(2500, 'a'));
  // Access times are kept in seconds.
  std::this_thread::sleep_for(1100ms);
  ASSERT_EQ(cat("b").value(), random_bytes(2500, 'b'));
  std::this_thread::sleep_for(1100ms);
  ASSERT_EQ(cat("a").value(), random_bytes(2500, 'a'));  // a hit: a is recent again
  std::this_thread::sleep_for(1100ms);
  ASSERT_EQ(cat("c").value(), random_bytes(2500, 'c'));
  EXPECT_TRUE(cached("a") && cached("b") && cached("c"));
  // d's 2500 bytes would take the cache to 10000 > 9000: room is made first.
  ASSERT_EQ(cat("d").value(), random_bytes(2500, 'd'));
  ASSERT_TRUE(eventually([&] { return !cached("b"); }));
  EXPECT_TRUE(cached("a") && cached("c") && cached("d"));
  EXPECT_LE(cache_bytes(), 8000u);
  EXPECT_EQ(evictor_->evictions.load(), 1u);
  EXPECT_EQ(evictor_->evicted_bytes.load(), 2500u);
  // The version the kernel knew is stale; a fresh lookup downloads again.
  auto stale = open(old_b->version);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ESTALE);
  // The pass may still be forgetting b when the index already has it gone.
  ASSERT_EQ(cat_revalidating("b").value(), random_bytes(2500, 'b'));
  EXPECT_EQ(server_.count("GET", "b", 200), 2u);
  EXPECT_EQ(server_.count("GET", "a", 200), 1u);
  EXPECT_TRUE(cached("b"));
}

TEST_F(FetcherEvictionTest, AnOpenFileIsNeverEvictedAndStaysReadable) {
  limit(6000);  // high 5400, low 4800
  for (const char* f : {"a", "b", "c", "d"}) server_.put(f, random_bytes(2500, f[0]));
  auto va = lookup("a");
  auto ha = open(va->version);
  ASSERT_TRUE(ha);
  ASSERT_EQ(read_all(*ha.value()).value(), random_bytes(2500, 'a'));
  ASSERT_EQ(cat("b").value(), random_bytes(2500, 'b'));
  ASSERT_EQ(cat("c").value(), random_bytes(2500, 'c'));
  ASSERT_EQ(cat("d").value(), random_bytes(2500, 'd'));
  // a (in use) counts for nothing and stays; b and c made room for d.
  ASSERT_TRUE(eventually([&] { return !cached("b") && !cached("c"); }));
  EXPECT_TRUE(cached("a"));
  EXPECT_TRUE(cached("d"));
  EXPECT_EQ(read_all(*ha.value()).value(), random_bytes(2500, 'a'));
  ASSERT_EQ(cat("a").value(), random_bytes(2500, 'a'));
  EXPECT_EQ(server_.count("GET", "a", 200), 1u);
}

TEST_F(FetcherEvictionTest, AFileLargerThanTheLimitIsServedThenDroppedOnClose) {
  limit(1000);
  const std::string big = random_bytes(3000, 7);
  server_.put("big", big);
  auto v = lookup("big");
  auto h = open(v->version);
  ASSERT_TRUE(h);
  EXPECT_EQ(read_all(*h.value()).value(), big);
  // Published, open: kept.
  ASSERT_TRUE(eventually([&] { return cached("big"); }));
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(cached("big"));
  EXPECT_EQ(read_all(*h.value()).value(), big);
  h.value().reset();
  // The pass drops the path's record before the blob's: wait for both.
  ASSERT_TRUE(eventually([&] { return !cached("big") && cache_bytes() == 0; }));
  EXPECT_EQ(cache_bytes(), 0u);
  // The index drops the record before the pass forgets the version it
  // held in memory: a lookup in between returns the old version and its open
  // ESTALE, which the kernel answers with a fresh LOOKUP.
  ASSERT_EQ(cat_revalidating("big").value(), big);  // served again
}

TEST_F(FetcherEvictionTest, PinnedPathsStay) {
  limit(6000, {"boot/*"});
  server_.put("boot/pxelinux.0", random_bytes(2500, 1));
  for (const char* f : {"b", "c", "d"}) server_.put(f, random_bytes(2500, f[0]));
  ASSERT_EQ(cat("boot/pxelinux.0").value(), random_bytes(2500, 1));
  std::this_thread::sleep_for(1100ms);  // the oldest
  for (const char* f : {"b", "c", "d"}) ASSERT_EQ(cat(f).value(), random_bytes(2500, f[0]));
  ASSERT_TRUE(eventually([&] { return cache_bytes() <= 4800u + 2500u; }));
  EXPECT_TRUE(cached("boot/pxelinux.0"));
  EXPECT_TRUE(cached("d"));
  EXPECT_FALSE(cached("b") && cached("c"));
}

TEST_F(FetcherEvictionTest, ConcurrentReadersUnderATightLimit) {
  limit(20000);
  constexpr int kFiles = 24;
  for (int i = 0; i < kFiles; ++i) server_.put("f" + std::to_string(i), random_bytes(3000, i));
  std::vector<std::thread> readers;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      for (int k = 0; k < kFiles; ++k) {
        const int i = (k * 7 + t * 5) % kFiles;
        // An eviction between lookup and open sends the caller back to lookup.
        auto r = cat_revalidating("f" + std::to_string(i));
        if (!r || r.value() != random_bytes(3000, i)) bad++;
      }
    });
  }
  for (auto& r : readers) r.join();
  EXPECT_EQ(bad.load(), 0);
  ASSERT_TRUE(eventually([&] { return cache_bytes() <= 20000u * 9 / 10; }));
  EXPECT_EQ(evictor_->reserved(), 0u) << "every download released its reservation";
  const auto totals = index_->check_totals();
  EXPECT_EQ(totals.kept.blob_bytes, totals.counted.blob_bytes);
  for (const auto& [p, e] : index_->list_paths()) {
    EXPECT_TRUE(std::filesystem::exists(blobs_->blob_path(e.sha256))) << p;
  }
}

TEST_F(FetcherEvictionTest, DownloadsInFlightReserveTheirAnnouncedSizesTogether) {
  limit(10u << 20);  // high 9 MiB, low 8 MiB
  server_.put("old", random_bytes(4 << 20, 'o'));
  server_.put("x", random_bytes(3 << 20, 'x'));
  server_.put("y", random_bytes(3 << 20, 'y'));
  ASSERT_EQ(cat("old").value(), random_bytes(4 << 20, 'o'));
  auto ax = lookup("x");
  auto ay = lookup("y");
  ASSERT_TRUE(ax && ay);
  // Two slow downloads at once: 4 + 3 fits under 9 MiB for each alone, but
  // 4 + 3 + 3 does not, so "old" must go before their bytes arrive.
  const auto open_slow = [&](const std::shared_ptr<FileVersion>& v) {
    std::promise<Result<std::unique_ptr<OpenFile>>> p;
    auto f = p.get_future();
    fetcher_->open(v, 1 << 20, [&p](Result<std::unique_ptr<OpenFile>> r) { p.set_value(std::move(r)); });
    return await(f);
  };
  auto hx = open_slow(ax->version);
  auto hy = open_slow(ay->version);
  ASSERT_TRUE(hx && hy);
  // Both sizes are announced (the opens were answered) and neither file is
  // complete (3 MiB at 1 MiB/s): both are reserved, and "old" is gone.
  EXPECT_EQ(evictor_->reserved(), uint64_t{6} << 20);
  EXPECT_FALSE(cached("old"));
  EXPECT_FALSE(cached("x") || cached("y"));
  ASSERT_EQ(read_all(*hx.value()).value(), random_bytes(3 << 20, 'x'));
  ASSERT_EQ(read_all(*hy.value()).value(), random_bytes(3 << 20, 'y'));
  // Published: the bytes are in the index, the reservations released.
  ASSERT_TRUE(eventually([&] { return evictor_->reserved() == 0; }));
  EXPECT_TRUE(cached("x") && cached("y"));
  EXPECT_EQ(cache_bytes(), uint64_t{6} << 20);
}

// A publish that waits on the disk (its fsync, under the gc lock) must not
// stop another download: the eviction pass that download's size calls for
// runs on a worker, never on the HTTP thread, which keeps receiving bytes.
TEST_F(FetcherEvictionTest, ASlowPublishDoesNotStallAnotherDownload) {
  limit(10u << 20);  // high 9 MiB
  server_.put("old", random_bytes(4 << 20, 'o'));
  server_.put("small", random_bytes(1000, 's'));
  server_.put("big", random_bytes(6 << 20, 'b'));
  ASSERT_EQ(cat("old").value(), random_bytes(4 << 20, 'o'));
  auto small = lookup("small");
  auto big = lookup("big");
  ASSERT_TRUE(small && big);
  arm_delay_point(DelayPoint::kPublishLocked, 2000);
  auto small_read = std::async(std::launch::async, [&] {
    auto of = open(small->version);
    return of ? read_all(*of.value()) : Result<std::string>(of.error());
  });
  ASSERT_TRUE(eventually([] { return delay_point_hits() == 1; }));
  // 4 + 6 MiB is over the high watermark: "big" calls for a pass, which
  // waits for the gc lock that the slow publish holds.
  std::promise<Result<std::unique_ptr<OpenFile>>> opened;
  auto big_open = opened.get_future();
  const uint64_t before = fetcher_->stats().download_bytes.load();
  fetcher_->open(big->version, 2 << 20, [&opened](Result<std::unique_ptr<OpenFile>> r) {
    opened.set_value(std::move(r));
  });
  std::this_thread::sleep_for(1000ms);
  const uint64_t during = fetcher_->stats().download_bytes.load() - before;
  EXPECT_GE(during, uint64_t{512} << 10) << "the HTTP thread stopped while a publish was slow";
  EXPECT_EQ(delay_point_hits(), 1u);
  EXPECT_EQ(small_read.get().value(), random_bytes(1000, 's'));
  auto hb = await(big_open);
  ASSERT_TRUE(hb) << hb.error().message;
  EXPECT_FALSE(cached("old")) << "the pass made room before the size was announced";
  EXPECT_EQ(read_all(*hb.value()).value(), random_bytes(6 << 20, 'b'));
}

TEST_F(FetcherEvictionTest, AFailedDownloadReleasesItsReservation) {
  limit(64u << 20);
  const std::string body = random_bytes(3 << 20, 7);
  server_.put("huge", body);
  auto a = lookup("huge");
  ASSERT_TRUE(a);
  // Writes past 1 MiB fail: the download fails after announcing its size.
  FileSizeLimit full(1 << 20);
  ASSERT_TRUE(full.set());
  {
    auto of = open(a->version);
    ASSERT_TRUE(of) << of.error().message;
    ASSERT_TRUE(eventually([&] { return fetcher_->stats().write_failures.load() == 1; }));
    full.lift();
    EXPECT_EQ(evictor_->reserved(), 0u);
  }
  EXPECT_FALSE(cached("huge"));
}

TEST_F(FetcherTest, AttributesComeFromTheListingWithoutHeads) {
  server_.put("pxelinux.cfg/default", "DEFAULT linux\n");
  auto a = lookup("pxelinux.cfg/default");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_FALSE(a->is_dir);
  EXPECT_EQ(a->size, 14u);
  auto d = lookup("pxelinux.cfg");
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->is_dir);
  // The pxelinux probe ladder: names absent from a fresh listing cost nothing.
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < 20; ++i) {
      auto m = lookup("pxelinux.cfg/0A00000" + std::to_string(i));
      ASSERT_FALSE(m);
      EXPECT_EQ(m.error().code, ENOENT);
    }
  }
  for (const auto& r : server_.requests()) EXPECT_NE(r.method, "HEAD") << r.path;
  EXPECT_EQ(server_.count("GET", "pxelinux.cfg/"), 1u);
  EXPECT_EQ(server_.count("GET", "pxelinux.cfg/default"), 0u) << "a lookup never fetches a body";
}

TEST_F(FetcherTest, WithoutAListingAMissingNameCostsOneHeadPerWindow) {
  // The test upstream answers 404 for a listing of a directory that does not exist.
  for (int i = 0; i < 10; ++i) {
    auto m = lookup("nodir/x");
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().code, ENOENT);
  }
  EXPECT_EQ(server_.count("GET", "nodir/"), 1u);
  EXPECT_EQ(server_.count("HEAD", "nodir/x"), 1u);
}

TEST_F(FetcherTest, PeekAnswersFromTheListingAndNeverAsksForOne) {
  server_.put("boot/vmlinuz", "kernel");
  server_.put("boot/efi/grubx64.efi", "grub");
  auto before = fetcher_->peek("boot/vmlinuz");
  ASSERT_FALSE(before);
  EXPECT_EQ(before.error().code, EWOULDBLOCK);
  EXPECT_TRUE(server_.requests().empty()) << "peek sent " << server_.requests()[0].path;

  ASSERT_TRUE(list_dir("boot"));
  auto f = fetcher_->peek("boot/vmlinuz");
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_FALSE(f->is_dir);
  EXPECT_EQ(f->size, 6u);
  auto d = fetcher_->peek("boot/efi");
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_TRUE(d->is_dir);
  auto gone = fetcher_->peek("boot/initrd");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ENOENT);
  // What a lookup answers next: the same version, no request of its own.
  auto a = lookup("boot/vmlinuz");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->version, f->version);
  ASSERT_EQ(server_.requests().size(), 1u);
  EXPECT_EQ(server_.count("GET", "boot/"), 1u);
}

TEST_F(FetcherTest, PeekSendsNoHeadWhereTheListingHasNoSize) {
  server_.no_listing("plain/");
  server_.put("plain/kernel", "12345678");
  ASSERT_TRUE(lookup("plain"));     // known as a directory from the root listing
  EXPECT_FALSE(list_dir("plain"));  // no listing, nothing cached below it
  for (int i = 0; i < 3; ++i) {
    auto p = fetcher_->peek("plain/kernel");
    ASSERT_FALSE(p);
    EXPECT_EQ(p.error().code, EWOULDBLOCK);
  }
  EXPECT_EQ(server_.count("HEAD", "plain/kernel"), 0u);
  auto a = lookup("plain/kernel");  // the one HEAD
  ASSERT_TRUE(a) << a.error().message;
  auto p = fetcher_->peek("plain/kernel");
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->size, 8u);
  EXPECT_EQ(p->version, a->version);
  EXPECT_EQ(server_.count("HEAD", "plain/kernel"), 1u);
}

TEST_F(FetcherTest, ConcurrentOpensOfAColdFileShareOneDownload) {
  const std::string body = random_bytes(3 << 20, 1);
  server_.put("images/initrd", body);
  auto a = lookup("images/initrd");
  ASSERT_TRUE(a);
  server_.hold("images/initrd");
  constexpr int kReaders = 24;
  std::vector<std::future<std::string>> readers;
  for (int i = 0; i < kReaders; ++i) {
    readers.push_back(std::async(std::launch::async, [&, i] {
      auto of = open(a->version);
      if (!of) return std::string("open failed: ") + of.error().message;
      auto data = read_all(*of.value(), 4096 << (i % 6));
      return data ? data.value() : "read failed: " + data.error().message;
    }));
  }
  ASSERT_TRUE(server_.wait_arrived("images/initrd"));
  std::this_thread::sleep_for(100ms);  // let the other opens park behind the held response
  server_.release();
  for (auto& r : readers) {
    const std::string got = r.get();
    ASSERT_EQ(got.size(), body.size()) << got.substr(0, 80);
    EXPECT_TRUE(got == body);
  }
  EXPECT_EQ(server_.count("GET", "images/initrd"), 1u);
  // Published: the index points at a blob of the right size.
  auto e = index_->get_path("images/initrd");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->size, body.size());
}

TEST_F(FetcherTest, RevalidationAnswers304WhileUnchanged) {
  FetcherOptions o;
  o.revalidate = 0ms;
  restart(o);
  server_.put("grub/grub.cfg", "menuentry x {}\n");
  ASSERT_EQ(cat("grub/grub.cfg").value(), "menuentry x {}\n");
  ASSERT_EQ(cat("grub/grub.cfg").value(), "menuentry x {}\n");
  ASSERT_EQ(cat("grub/grub.cfg").value(), "menuentry x {}\n");
  EXPECT_EQ(server_.count("GET", "grub/grub.cfg", 200), 1u);
  EXPECT_EQ(server_.count("GET", "grub/grub.cfg", 304), 2u);
}

TEST_F(FetcherTest, WithinTheRevalidateWindowOpensAskNothing) {
  FetcherOptions o;
  o.revalidate = 60s;
  restart(o);
  server_.put("k", "kernel");
  for (int i = 0; i < 20; ++i) ASSERT_EQ(cat("k").value(), "kernel");
  EXPECT_EQ(server_.count("GET", "k"), 1u);
}

TEST_F(FetcherTest, AChangedFileIsANewVersionAndOldHandlesKeepTheirBytes) {
  FetcherOptions o;
  o.revalidate = 0ms;
  restart(o);
  server_.put("initrd", "old bytes");
  auto v1 = lookup("initrd");
  ASSERT_TRUE(v1);
  auto h1 = open(v1->version);
  ASSERT_TRUE(h1);
  ASSERT_EQ(read_all(*h1.value()).value(), "old bytes");

  server_.put("initrd", "new bytes, longer");
  auto again = open(v1->version);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ESTALE) << "open must send the kernel back to LOOKUP";
  auto v2 = lookup("initrd");
  ASSERT_TRUE(v2);
  EXPECT_NE(v2->version, v1->version);
  EXPECT_EQ(v2->size, 17u);
  auto h2 = open(v2->version);
  ASSERT_TRUE(h2) << h2.error().message;
  EXPECT_EQ(read_all(*h2.value()).value(), "new bytes, longer");
  // The snapshot: the first handle still reads the version it opened.
  EXPECT_EQ(read_all(*h1.value()).value(), "old bytes");
}

TEST_F(FetcherTest, ABrokenTransferResumesWithRange) {
  const std::string body = random_bytes(1 << 20, 2);
  server_.put("linux", body);
  server_.cut("linux", 300000, 1);
  auto got = cat("linux");
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_TRUE(got.value() == body);
  bool ranged = false;
  for (const auto& r : server_.requests()) {
    if (r.path == "linux" && r.range == "bytes=300000-") {
      ranged = true;
      EXPECT_EQ(r.status, 206);
      EXPECT_FALSE(r.if_range.empty());
    }
  }
  EXPECT_TRUE(ranged);
}

TEST_F(FetcherTest, CachedFilesAreServedWhenUpstreamIsGoneAndMissesFailFast) {
  FetcherOptions o;
  o.revalidate = 0ms;
  restart(o);
  server_.put("pxelinux.0", "bootloader");
  server_.put("other", "never read");
  ASSERT_EQ(cat("pxelinux.0").value(), "bootloader");
  auto other = lookup("other");  // known from the listing, never downloaded
  ASSERT_TRUE(other);
  server_.stop();
  ASSERT_EQ(cat("pxelinux.0").value(), "bootloader") << "stale-if-error";
  EXPECT_EQ(fetcher_->stats().stale_served.load(), 1u);
  const auto t0 = std::chrono::steady_clock::now();
  auto miss = open(other->version);
  ASSERT_FALSE(miss);
  EXPECT_EQ(miss.error().code, EIO);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

TEST_F(FetcherTest, ShutdownAnswersEveryWaiter) {
  server_.put("slow", "x");
  auto a = lookup("slow");
  ASSERT_TRUE(a);
  server_.hold("slow");
  std::promise<Result<std::unique_ptr<OpenFile>>> p;
  auto f = p.get_future();
  fetcher_->open(a->version, [&p](auto r) { p.set_value(std::move(r)); });
  ASSERT_TRUE(server_.wait_arrived("slow"));
  fetcher_->shutdown();
  auto r = await(f, 15s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EIO);
  server_.release();
}

TEST_F(FetcherTest, WithoutContentLengthTheSizeComesFromTheWholeBody) {
  const std::string body = random_bytes(700000, 3);
  server_.put("dir/dynamic", body);
  server_.no_length("dir/dynamic");
  auto a = lookup("dir/dynamic");  // the listing has the size, but upstream's GET has none
  ASSERT_TRUE(a);
  auto of = open(a->version);
  ASSERT_TRUE(of) << of.error().message << ": the same size is the same version";
  EXPECT_TRUE(read_all(*of.value()).value() == body);
  server_.put("nolist/dynamic", body);
  server_.no_length("nolist/dynamic");
  server_.no_listing("nolist/");
  auto b = lookup("nolist/dynamic");  // HEAD without length: fetched whole before answering
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(b->size, body.size());
  EXPECT_TRUE(index_->get_path("nolist/dynamic")) << "complete before lookup answered";
  auto got = cat("nolist/dynamic");
  ASSERT_TRUE(got);
  EXPECT_TRUE(got.value() == body);
}

TEST_F(FetcherTest, TheCacheSurvivesARestart) {
  server_.put("boot/ldlinux.c32", "ldlinux");
  ASSERT_EQ(cat("boot/ldlinux.c32").value(), "ldlinux");
  restart(FetcherOptions{});
  server_.stop();
  // Upstream is gone: lookup and open are served from the index and the blob.
  auto got = cat("boot/ldlinux.c32");
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got.value(), "ldlinux");
}

// --- Retries of transient failures -----------------------------------------

TEST_F(FetcherTest, AMissIsRetriedThrough503sAndHonoursRetryAfter) {
  const std::string body = random_bytes(200000, 4);
  server_.put("images/linux", body);
  auto a = lookup("images/linux");
  ASSERT_TRUE(a);
  server_.fail_status("images/linux", 503, 2, 1);
  const auto t0 = std::chrono::steady_clock::now();
  auto got = cat("images/linux");
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_TRUE(got.value() == body);
  EXPECT_EQ(server_.count("GET", "images/linux"), 3u);
  EXPECT_EQ(server_.count("GET", "images/linux", 503), 2u);
  EXPECT_GE(took, 1900ms) << "Retry-After: 1 was not honoured";
  EXPECT_EQ(fetcher_->stats().retries.load(), 2u);
  EXPECT_TRUE(index_->get_path("images/linux"));
}

TEST_F(FetcherTest, CoalescedOpensWaitForTheOneRetriedRequest) {
  const std::string body = random_bytes(300000, 5);
  server_.put("initrd", body);
  auto a = lookup("initrd");
  ASSERT_TRUE(a);
  server_.fail_status("initrd", 502, 3);
  std::vector<std::future<std::string>> readers;
  for (int i = 0; i < 8; ++i) {
    readers.push_back(std::async(std::launch::async, [&] {
      auto of = open(a->version);
      if (!of) return "open failed: " + of.error().message;
      auto data = read_all(*of.value());
      return data ? data.value() : "read failed: " + data.error().message;
    }));
  }
  for (auto& r : readers) {
    const std::string got = r.get();
    ASSERT_EQ(got.size(), body.size()) << got.substr(0, 80);
    EXPECT_TRUE(got == body);
  }
  EXPECT_EQ(server_.count("GET", "initrd"), 4u) << "one request at a time for the path";
}

TEST_F(FetcherTest, NotFoundAndForbiddenAreNeverRetried) {
  server_.put("gone", "x");
  server_.put("denied", "y");
  ASSERT_TRUE(lookup("gone"));
  ASSERT_TRUE(lookup("denied"));
  server_.fail_status("gone", 404, -1);
  server_.fail_status("denied", 403, -1);
  auto g = cat("gone");
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().code, ENOENT);
  auto d = cat("denied");
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, EACCES);
  EXPECT_EQ(server_.count("GET", "gone"), 1u);
  EXPECT_EQ(server_.count("GET", "denied"), 1u);
  EXPECT_EQ(fetcher_->stats().retries.load(), 0u);
}

TEST_F(FetcherTest, AnUpstreamThatKeepsFailingFailsWithinRetryTimeout) {
  FetcherOptions o;
  o.retry_timeout = 1500ms;
  restart(o);
  server_.put("k", "kernel");
  ASSERT_TRUE(lookup("k"));
  server_.fail_status("k", 503, -1);
  const auto t0 = std::chrono::steady_clock::now();
  auto got = cat("k");
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, EIO);
  EXPECT_LT(took, 1500ms + 1500ms);
  EXPECT_GE(server_.count("GET", "k"), 3u);
  EXPECT_FALSE(index_->get_path("k")) << "nothing cached";
  EXPECT_TRUE(fetcher_->upstream_up()) << "HTTP answers are not connection failures";
}

TEST_F(FetcherTest, AHeadIsRetried) {
  server_.put("nolist/f", "abc");
  server_.no_listing("nolist/");
  server_.fail_status("nolist/f", 504, 1);
  auto a = lookup("nolist/f");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->size, 3u);
  EXPECT_EQ(server_.count("HEAD", "nolist/f"), 2u);
}

TEST_F(FetcherTest, AFailedRevalidationServesStaleWithoutRetrying) {
  FetcherOptions o;
  o.revalidate = 0ms;
  restart(o);
  server_.put("menu", "m");
  ASSERT_EQ(cat("menu").value(), "m");
  server_.fail_status("menu", 503, -1);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(cat("menu").value(), "m");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(server_.count("GET", "menu"), 2u);
  EXPECT_EQ(fetcher_->stats().stale_served.load(), 1u);
}

TEST_F(FetcherTest, AResumeAnswered503IsResumedAgain) {
  const std::string body = random_bytes(1 << 20, 6);
  server_.put("big", body);
  ASSERT_TRUE(lookup("big"));
  server_.cut("big", 300000, 1);
  auto reader = std::async(std::launch::async, [&] { return cat("big"); });
  // The resume comes after a back-off of at least 100 ms: fail it once.
  ASSERT_TRUE(server_.wait_for([](const auto& log) { return !log.empty(); }));
  ASSERT_TRUE(server_.wait_for([](const auto& log) {
    return std::count_if(log.begin(), log.end(), [](auto& r) { return r.path == "big"; }) >= 1;
  }));
  server_.fail_status("big", 503, 1);
  auto got = reader.get();
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_TRUE(got.value() == body);
  EXPECT_EQ(server_.count("GET", "big", 503), 1u);
  EXPECT_EQ(server_.count("GET", "big", 206), 1u) << "resumed after the 503, not restarted";
  EXPECT_EQ(server_.count("GET", "big", 200), 1u);
}

// --- missing_grace ------------------------------------------------------------

TEST_F(FetcherTest, ACachedFileGoneUpstreamIsServedUntilMissingGraceEnds) {
  FetcherOptions o;
  o.revalidate = 0ms;
  o.missing_grace = 1500ms;
  restart(o);
  server_.put("boot/menu", "menu v1");
  ASSERT_EQ(cat("boot/menu").value(), "menu v1");
  server_.remove("boot/menu");
  for (int i = 0; i < 3; ++i) {
    auto got = cat("boot/menu");
    ASSERT_TRUE(got) << got.error().message;
    EXPECT_EQ(got.value(), "menu v1");
  }
  EXPECT_GE(fetcher_->stats().missing_served.load(), 3u);
  std::this_thread::sleep_for(1600ms);
  auto gone = cat("boot/menu");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ENOENT);
  EXPECT_TRUE(server_.wait_for([&](const auto&) { return !index_->get_path("boot/menu"); }, 2s))
      << "removed from the cache after the grace";
  EXPECT_EQ(fetcher_->stats().missing_removed.load(), 1u);
  auto again = lookup("boot/menu");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ENOENT);
}

TEST_F(FetcherTest, AnAnswerInTheGraceWindowClearsIt) {
  FetcherOptions o;
  o.revalidate = 0ms;
  o.missing_grace = 1200ms;
  restart(o);
  server_.put("cfg", "same");
  ASSERT_EQ(cat("cfg").value(), "same");
  server_.fail_status("cfg", 404, 1);  // a sync deleting and recreating the tree
  ASSERT_EQ(cat("cfg").value(), "same");
  ASSERT_EQ(cat("cfg").value(), "same");  // 304: the window is cleared
  std::this_thread::sleep_for(800ms);
  server_.fail_status("cfg", 410, 1);  // a new window starts now
  std::this_thread::sleep_for(600ms);  // 1.4 s after the first 404
  auto got = cat("cfg");
  ASSERT_TRUE(got) << got.error().message << ": the first window should have been cleared";
  EXPECT_EQ(got.value(), "same");
}

TEST_F(FetcherTest, ACachedFileAbsentFromAFreshListingIsServedThroughTheGrace) {
  FetcherOptions o;
  o.listing_ttl = 400ms;
  o.revalidate = 0ms;
  o.missing_grace = 1000ms;
  restart(o);
  server_.put("d/a", "aaa");
  server_.put("d/b", "bbb");
  ASSERT_EQ(cat("d/a").value(), "aaa");
  server_.remove("d/a");
  // A lookup past listing_ttl answers from the cache and refreshes the
  // listing; the next one judges the fresh listing.
  auto refreshed_lookup = [&](size_t listings) {
    std::this_thread::sleep_for(450ms);
    EXPECT_TRUE(lookup("d/a"));
    EXPECT_TRUE(server_.wait_for([&](const auto& log) {
      return static_cast<size_t>(std::count_if(log.begin(), log.end(), [](const auto& r) {
               return r.method == "GET" && r.path == "d/";
             })) >= listings;
    }));
    std::this_thread::sleep_for(50ms);
    return lookup("d/a");
  };
  auto a = refreshed_lookup(2);
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->size, 3u);
  EXPECT_EQ(fetcher_->stats().missing_served.load(), 1u);
  std::this_thread::sleep_for(600ms);
  auto gone = refreshed_lookup(3);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ENOENT);
  ASSERT_TRUE(server_.wait_for([&](const auto&) { return !index_->get_path("d/a"); }, 2s))
      << "removed from the cache";
  EXPECT_EQ(cat("d/b").value(), "bbb") << "its neighbours are not affected";
}

TEST_F(FetcherTest, AnUncachedFileThat404sIsENOENTAtOnce) {
  server_.put("x/y", "z");
  ASSERT_TRUE(lookup("x/y"));
  server_.fail_status("x/y", 404, -1);
  auto r = cat("x/y");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_EQ(fetcher_->stats().missing_served.load(), 0u);
}

// --- Upstream health ------------------------------------------------------------

TEST_F(FetcherTest, AfterConnectionFailuresUpstreamIsDownUntilAProbeAnswers) {
  FetcherOptions o;
  o.revalidate = 0ms;
  o.down_after = 2;
  o.probe_interval = 200ms;
  restart(o);
  server_.put("cached", "cached bytes");
  server_.put("later", "later bytes");
  ASSERT_EQ(cat("cached").value(), "cached bytes");
  auto later = lookup("later");
  ASSERT_TRUE(later);
  const int port = server_.port();
  server_.stop();
  // Revalidations fail (connection refused) and serve the cache.
  ASSERT_EQ(cat("cached").value(), "cached bytes");
  ASSERT_EQ(cat("cached").value(), "cached bytes");
  EXPECT_FALSE(fetcher_->upstream_up());
  EXPECT_EQ(fetcher_->stats().upstream_down_events.load(), 1u);
  const uint64_t failures = fetcher_->stats().upstream_failures.load();
  // While down: no request at all, cached files served, misses fail at once.
  for (int i = 0; i < 5; ++i) ASSERT_EQ(cat("cached").value(), "cached bytes");
  auto miss = open(later->version);
  ASSERT_FALSE(miss);
  EXPECT_EQ(miss.error().code, EIO);
  EXPECT_GE(fetcher_->stats().down_fast_failures.load(), 1u);
  EXPECT_LE(fetcher_->stats().upstream_failures.load(), failures + 3) << "only probes ask";
  // Upstream comes back on the same port: a probe flips it up.
  testing::TestHttpServer back(port);
  back.put("later", "later bytes");
  back.put("cached", "cached bytes");
  ASSERT_TRUE(wait_until_up());
  EXPECT_GE(back.count("HEAD", ""), 1u) << "the probe is a HEAD of the base URL";
  auto later_bytes = cat("later");
  ASSERT_TRUE(later_bytes) << later_bytes.error().message;
  EXPECT_EQ(later_bytes.value(), "later bytes");
}

TEST_F(FetcherTest, ZeroDownAfterNeverMarksDown) {
  FetcherOptions o;
  o.down_after = 0;
  o.retry_timeout = 0ms;
  restart(o);
  server_.put("f", "x");
  ASSERT_TRUE(lookup("f"));
  server_.stop();
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(cat("g" + std::to_string(i)));
  EXPECT_TRUE(fetcher_->upstream_up());
}

// --- Mirrors --------------------------------------------------------------------

TEST_F(FetcherTest, APrimaryRefusingConnectionsIsReplacedByTheMirrorInOneOpen) {
  testing::TestHttpServer mirror;
  FetcherOptions o;
  o.mirrors = {mirror.url()};
  restart(o);
  const std::string body = random_bytes(600 * 1024, 7);
  server_.put("images/kernel", body);
  mirror.put("images/kernel", body);
  server_.put("images/initrd", "initrd bytes");
  mirror.put("images/initrd", "initrd bytes");
  auto a = lookup("images/kernel");  // the listing comes from the primary
  ASSERT_TRUE(a) << a.error().message;
  server_.stop();
  auto of = open(a->version);
  ASSERT_TRUE(of) << of.error().message;
  EXPECT_EQ(read_all(*of.value()).value(), body);
  EXPECT_EQ(mirror.count("GET", "images/kernel", 200), 1u);
  EXPECT_TRUE(fetcher_->upstream_up()) << "a working mirror keeps upstream up";
  // The primary is backing off: the next miss goes straight to the mirror.
  const uint64_t retries = fetcher_->stats().retries.load();
  ASSERT_EQ(cat("images/initrd").value(), "initrd bytes");
  EXPECT_EQ(mirror.count("GET", "images/initrd", 200), 1u);
  EXPECT_EQ(fetcher_->stats().retries.load(), retries) << "no attempt at the primary";
  EXPECT_EQ(fetcher_->stats().upstream_down_events.load(), 0u);
}

TEST_F(FetcherTest, APrimaryAnswering503IsReplacedByTheMirror) {
  testing::TestHttpServer mirror;
  FetcherOptions o;
  o.mirrors = {mirror.url()};
  restart(o);
  server_.put("f", "the bytes");
  mirror.put("f", "the bytes");
  server_.fail_status("f", 503, -1);
  ASSERT_EQ(cat("f").value(), "the bytes");
  EXPECT_GE(server_.count("GET", "f", 503), 1u);
  EXPECT_EQ(mirror.count("GET", "f", 200), 1u);
}

TEST_F(FetcherTest, APrimaryAnswering404IsFinalAndTheMirrorIsNotAsked) {
  testing::TestHttpServer mirror;
  FetcherOptions o;
  o.mirrors = {mirror.url()};
  restart(o);
  server_.put("f", "the bytes");
  mirror.put("f", "the bytes");
  auto a = lookup("f");
  ASSERT_TRUE(a);
  server_.fail_status("f", 404, -1);
  auto of = open(a->version);
  ASSERT_FALSE(of);
  EXPECT_EQ(of.error().code, ENOENT);
  EXPECT_EQ(server_.count("GET", "f", 404), 1u);
  EXPECT_TRUE(mirror.requests().empty()) << "a 404 is an answer about the file";
}

TEST_F(FetcherTest, AfterItsBackoffTheHealthyPrimaryIsUsedAgain) {
  testing::TestHttpServer mirror;
  FetcherOptions o;
  o.mirrors = {mirror.url()};
  o.mirror_backoff = 300ms;
  o.mirror_backoff_max = 300ms;
  restart(o);
  const int port = server_.port();
  server_.stop();
  mirror.put("a", "a bytes");
  mirror.put("b", "b bytes");
  ASSERT_EQ(cat("a").value(), "a bytes");  // listing and GET from the mirror
  EXPECT_EQ(mirror.count("GET", "a", 200), 1u);
  testing::TestHttpServer back(port);
  back.put("a", "a bytes");
  back.put("b", "b bytes");
  std::this_thread::sleep_for(600ms);
  ASSERT_EQ(cat("b").value(), "b bytes");
  EXPECT_EQ(back.count("GET", "b", 200), 1u) << "the preferred origin again";
  EXPECT_EQ(mirror.count("GET", "b"), 0u);
}

TEST_F(FetcherTest, ABrokenDownloadMayResumeAtTheMirror) {
  testing::TestHttpServer mirror;
  FetcherOptions o;
  o.mirrors = {mirror.url()};
  restart(o);
  const std::string body = random_bytes(900 * 1024, 11);
  server_.put("big", body);  // the same bytes, the same ETag ("v1") on both
  mirror.put("big", body);
  server_.cut("big", 300 * 1024);
  ASSERT_EQ(cat("big").value(), body);
  const auto reqs = mirror.requests();
  const bool resumed = std::any_of(reqs.begin(), reqs.end(), [](const auto& r) {
    return r.method == "GET" && r.path == "big" && !r.range.empty() && r.if_range == "\"v1\"";
  });
  EXPECT_TRUE(resumed) << "the resume (Range + If-Range) went to the mirror";
  EXPECT_EQ(server_.count("GET", "big"), 1u);
  EXPECT_GE(fetcher_->stats().resumes.load(), 1u);
}

TEST_F(FetcherTest, UpstreamIsDownOnlyWhenEveryOriginFails) {
  testing::TestHttpServer mirror;
  FetcherOptions o;
  o.mirrors = {mirror.url()};
  o.down_after = 2;
  o.mirror_backoff = 50ms;
  o.mirror_backoff_max = 50ms;
  o.retry_timeout = 1000ms;
  o.probe_interval = 100ms;
  restart(o);
  server_.stop();
  const int mirror_port = mirror.port();
  mirror.put("m", "m bytes");
  for (int i = 0; i < 6; ++i) mirror.put("x" + std::to_string(i), "x");
  // Failed connections to the primary, but the mirror answers: up.
  ASSERT_EQ(cat("m").value(), "m bytes");
  EXPECT_TRUE(fetcher_->upstream_up());
  EXPECT_GE(fetcher_->stats().upstream_failures.load(), 1u);
  mirror.stop();
  for (int i = 0; i < 6 && fetcher_->upstream_up(); ++i) {
    auto r = cat("x" + std::to_string(i));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EIO);
  }
  EXPECT_FALSE(fetcher_->upstream_up());
  EXPECT_EQ(fetcher_->stats().upstream_down_events.load(), 1u);
  // Probes ask the origins in turn: the mirror alone coming back is enough.
  testing::TestHttpServer back(mirror_port);
  back.put("x5", "x5 bytes");
  ASSERT_TRUE(wait_until_up());
  EXPECT_GE(back.count("HEAD", ""), 1u);
  auto x5 = cat("x5");
  ASSERT_TRUE(x5) << x5.error().message;
  EXPECT_EQ(x5.value(), "x5 bytes");
}

// --- Cache write failures -------------------------------------------------------

TEST_F(FetcherTest, AFailedCacheWriteFailsReadersAfterTheStallTimeoutAndTheNextOpenStartsOver) {
  FetcherOptions o;
  o.read_stall_timeout = 1500ms;
  restart(o);
  const std::string body = random_bytes(3 << 20, 7);
  server_.put("huge", body);
  auto a = lookup("huge");
  ASSERT_TRUE(a);
  // A full disk, as far as this process is concerned: writes past 1 MiB fail.
  FileSizeLimit full(1 << 20);
  ASSERT_TRUE(full.set());
  const auto t0 = std::chrono::steady_clock::now();
  {
    auto of = open(a->version);
    ASSERT_TRUE(of) << of.error().message;
    auto got = read_all(*of.value(), 1 << 20);
    full.lift();
    ASSERT_FALSE(got);
    EXPECT_EQ(got.error().code, EIO);
    // Not before the stall timeout: a TFTP client must see a timeout, not
    // the short read an early error becomes in the page cache.
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 1400ms);
    // A read of missing bytes on the same handle, which already stalled,
    // fails at once.
    std::promise<Result<Slice>> p;
    auto f = p.get_future();
    of.value()->read(2 << 20, 4096, [&p](Result<Slice> r) { p.set_value(std::move(r)); });
    auto r = await(f, 2s);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EIO);
  }
  full.lift();
  EXPECT_EQ(fetcher_->stats().write_failures.load(), 1u);
  // The handle is gone: so is the temp file (once the HTTP thread has let
  // go of the failed transfer, a moment after the readers were answered).
  auto temps = [&] {
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator(dir_ + "/tmp")) {
      n += e.path().filename().string().rfind("dl-", 0) == 0;
    }
    return n;
  };
  for (int i = 0; i < 100 && temps() > 0; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(temps(), 0u);
  auto again = cat("huge");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_TRUE(again.value() == body);
  EXPECT_EQ(server_.count("GET", "huge"), 2u);
}


// --- invalidate -------------------------------------------------------------------

TEST_F(FetcherTest, InsideTheRevalidateWindowAnInvalidatedFileRevalidatesAtItsNextOpen) {
  FetcherOptions o;
  o.revalidate = 3600s;
  o.listing_ttl = 3600s;
  restart(o);
  server_.put("boot/initrd", "old bytes");
  server_.put("other", "x");
  ASSERT_EQ(cat("boot/initrd").value(), "old bytes");
  ASSERT_EQ(cat("other").value(), "x");
  server_.put("boot/initrd", "new bytes, longer");
  EXPECT_EQ(cat("boot/initrd").value(), "old bytes") << "inside the window nothing is asked";
  const auto r = fetcher_->invalidate("boot");
  EXPECT_EQ(r.files, 1u);
  EXPECT_EQ(r.listings, 2u) << "the listings of boot/ and of its parent, the root";
  EXPECT_NE(std::find(r.listing_paths.begin(), r.listing_paths.end(), "boot"),
            r.listing_paths.end());
  EXPECT_NE(std::find(r.listing_paths.begin(), r.listing_paths.end(), ""), r.listing_paths.end());
  auto got = cat_revalidating("boot/initrd");
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(got.value(), "new bytes, longer");
  // The other path was not under the prefix: still not asked again.
  EXPECT_EQ(cat("other").value(), "x");
  EXPECT_EQ(server_.count("GET", "other"), 1u);
}

TEST_F(FetcherTest, InvalidatingOneFileDropsItsDirectorysListing) {
  FetcherOptions o;
  o.listing_ttl = 3600s;
  o.negative_ttl = 3600s;
  restart(o);
  server_.put("pxelinux.cfg/default", "d");
  ASSERT_EQ(cat("pxelinux.cfg/default").value(), "d");
  auto m = lookup("pxelinux.cfg/01-aa");
  ASSERT_FALSE(m) << "absent from the listing";
  server_.put("pxelinux.cfg/01-aa", "host");
  ASSERT_FALSE(lookup("pxelinux.cfg/01-aa")) << "the listing is trusted for an hour";
  const size_t listed = server_.count("GET", "pxelinux.cfg/");
  // Not the new file itself: a file beside it, as an admin would after a sync.
  const auto r = fetcher_->invalidate("pxelinux.cfg/default");
  EXPECT_EQ(r.listings, 1u) << "the listing of pxelinux.cfg/";
  ASSERT_EQ(r.listing_paths.size(), 1u);
  EXPECT_EQ(r.listing_paths[0], "pxelinux.cfg");
  EXPECT_EQ(cat("pxelinux.cfg/01-aa").value(), "host");
  EXPECT_EQ(server_.count("GET", "pxelinux.cfg/"), listed + 1);
}

TEST_F(FetcherTest, AnInvalidatedUnchangedFileSendsAConditionalRequest) {
  FetcherOptions o;
  o.revalidate = 3600s;
  restart(o);
  server_.put("k", "kernel");
  ASSERT_EQ(cat("k").value(), "kernel");
  ASSERT_EQ(cat("k").value(), "kernel");
  EXPECT_EQ(server_.count("GET", "k"), 1u);
  EXPECT_EQ(fetcher_->invalidate("").files, 1u);
  ASSERT_EQ(cat("k").value(), "kernel");
  EXPECT_EQ(server_.count("GET", "k", 200), 1u);
  EXPECT_EQ(server_.count("GET", "k", 304), 1u) << "a conditional GET, answered 304";
  ASSERT_EQ(cat("k").value(), "kernel");
  EXPECT_EQ(server_.count("GET", "k"), 2u) << "validated again: the window applies again";
}

TEST_F(FetcherTest, InvalidateCoversPathsLoadedFromTheIndexLater) {
  FetcherOptions o;
  o.revalidate = 3600s;
  restart(o);
  server_.put("a/b", "one");
  ASSERT_EQ(cat("a/b").value(), "one");
  restart(o);  // a fresh Fetcher: the path is in the index only
  EXPECT_EQ(fetcher_->invalidate("a").files, 0u);
  ASSERT_EQ(cat("a/b").value(), "one");
  EXPECT_EQ(server_.count("GET", "a/b", 304), 1u);
}

TEST_F(FetcherTest, InvalidateDropsNegativeEntries) {
  FetcherOptions o;
  o.negative_ttl = 3600s;
  o.listing_ttl = 3600s;
  restart(o);
  server_.put("pxelinux.cfg/default", "d");
  auto m = lookup("pxelinux.cfg/01-aa");
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, ENOENT);
  server_.put("pxelinux.cfg/01-aa", "host");
  ASSERT_FALSE(lookup("pxelinux.cfg/01-aa")) << "remembered as missing";
  const auto r = fetcher_->invalidate("");
  EXPECT_EQ(r.negatives, 1u);
  ASSERT_EQ(r.negative_paths.size(), 1u);
  EXPECT_EQ(r.negative_paths[0], "pxelinux.cfg/01-aa");
  EXPECT_EQ(cat("pxelinux.cfg/01-aa").value(), "host");
}

TEST(PathAtOrUnder, Table) {
  EXPECT_TRUE(path_at_or_under("a/b", ""));
  EXPECT_TRUE(path_at_or_under("a/b", "a"));
  EXPECT_TRUE(path_at_or_under("a/b", "a/b"));
  EXPECT_FALSE(path_at_or_under("ab/c", "a"));
  EXPECT_FALSE(path_at_or_under("a", "a/b"));
  EXPECT_FALSE(path_at_or_under("b", "a"));
}


// --- prefetch ---------------------------------------------------------------------

TEST(ParseRate, Table) {
  EXPECT_EQ(parse_rate("2000").value(), 2000u);
  EXPECT_EQ(parse_rate("512K").value(), 512u * 1024);
  EXPECT_EQ(parse_rate("10M").value(), 10u << 20);
  EXPECT_EQ(parse_rate("1G").value(), 1u << 30);
  EXPECT_EQ(parse_rate("1.5M").value(), 3u << 19);
  EXPECT_FALSE(parse_rate(""));
  EXPECT_FALSE(parse_rate("fast"));
  EXPECT_FALSE(parse_rate("10X"));
  EXPECT_FALSE(parse_rate("-1"));
  EXPECT_FALSE(parse_rate("0"));
}

TEST_F(FetcherTest, PrefetchWalksTheTreeAndFetchesEachFileOnce) {
  server_.put("a/one", random_bytes(300000, 3));
  server_.put("a/b/two", "two");
  server_.put("a/b/c/three", "three");
  server_.put("top", "t");
  PrefetchOptions po;
  po.recursive = true;
  po.jobs = 3;
  std::atomic<int> calls{0};
  auto s = prefetch(*fetcher_, {"", "missing"}, po, [&](const PrefetchProgress&) { calls++; },
                    [] { return false; });
  EXPECT_EQ(s.files, 4u);
  EXPECT_EQ(s.failures, 1u) << "the missing path";
  ASSERT_EQ(s.failed.size(), 1u);
  EXPECT_EQ(s.failed[0].first, "missing");
  EXPECT_EQ(s.bytes, 300000u + 3 + 5 + 1);
  EXPECT_EQ(calls.load(), 5);
  for (const char* p : {"a/one", "a/b/two", "a/b/c/three", "top"}) {
    EXPECT_TRUE(index_->get_path(p)) << p << " not cached";
    EXPECT_EQ(server_.count("GET", p), 1u) << p;
  }
  // Without recursive only the named directory's files.
  restart(FetcherOptions{});
  server_.put("d/f", "f");
  server_.put("d/sub/g", "g");
  s = prefetch(*fetcher_, {"d"}, PrefetchOptions{}, nullptr, nullptr);
  EXPECT_EQ(s.files, 1u);
  EXPECT_EQ(server_.count("GET", "d/sub/g"), 0u);
}

TEST_F(FetcherTest, PrefetchWithAMaxRateTakesAtLeastSizeOverRate) {
  // Large enough that libcurl cannot take it in one read loop before pacing.
  const std::string body = random_bytes(4 << 20, 4);
  server_.put("slow", body);
  PrefetchOptions po;
  po.jobs = 1;
  po.max_rate = 2 << 20;
  const auto t0 = std::chrono::steady_clock::now();
  auto s = prefetch(*fetcher_, {"slow"}, po, nullptr, nullptr);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(s.files, 1u);
  EXPECT_GE(secs, 0.8 * 2) << "4 MiB at 2 MiB/s";
}

TEST_F(FetcherTest, DescribeFollowsAFileFromRemoteToCachedToStaleWithoutRequests) {
  FetcherOptions o;
  o.revalidate = 0ms;
  o.down_after = 1;
  o.probe_interval = 60s;
  restart(o);
  const std::string body = "kernel bytes";
  server_.put("boot/vmlinuz", body);
  auto a = lookup("boot/vmlinuz");
  ASSERT_TRUE(a) << a.error().message;
  const size_t before = server_.requests().size();
  VersionInfo info = fetcher_->describe(a->version);
  EXPECT_EQ(info.state, VersionInfo::State::kRemote);
  EXPECT_TRUE(info.sha256.empty());
  EXPECT_EQ(info.validated_at, 0);
  EXPECT_EQ(info.source_url, server_.url() + "boot/vmlinuz");
  EXPECT_EQ(server_.requests().size(), before) << "describe never asks upstream";

  const int64_t t0 = ::time(nullptr);
  ASSERT_EQ(cat("boot/vmlinuz").value(), body);
  a = lookup("boot/vmlinuz");
  ASSERT_TRUE(a);
  info = fetcher_->describe(a->version);
  EXPECT_EQ(info.state, VersionInfo::State::kCached);
  const auto entry = index_->get_path("boot/vmlinuz");
  ASSERT_TRUE(entry);
  EXPECT_EQ(info.sha256, entry->sha256);
  EXPECT_EQ(info.etag, entry->etag);
  EXPECT_TRUE(blobs_->blob_size(info.sha256).has_value());
  EXPECT_FALSE(info.etag.empty());
  EXPECT_EQ(info.etag.front(), '"');
  EXPECT_GE(info.validated_at, t0 - 1);
  EXPECT_LE(info.validated_at, ::time(nullptr) + 1);
  EXPECT_FALSE(info.rewritten);
  EXPECT_TRUE(info.upstream_sha256.empty());

  server_.stop();
  ASSERT_EQ(cat("boot/vmlinuz").value(), body);  // marks upstream down, served stale
  ASSERT_FALSE(fetcher_->upstream_up());
  info = fetcher_->describe(a->version);
  EXPECT_EQ(info.state, VersionInfo::State::kStale);
  EXPECT_EQ(info.sha256.size(), 64u);
}

TEST_F(FetcherTest, DescribeNamesTheMirrorABodyCameFrom) {
  testing::TestHttpServer mirror;
  FetcherOptions o;
  o.mirrors = {mirror.url()};
  restart(o);
  server_.put("images/initrd", "initrd bytes");
  mirror.put("images/initrd", "initrd bytes");
  auto a = lookup("images/initrd");
  ASSERT_TRUE(a);
  server_.stop();
  ASSERT_EQ(cat("images/initrd").value(), "initrd bytes");
  auto b = lookup("images/initrd");
  ASSERT_TRUE(b);
  const VersionInfo info = fetcher_->describe(b->version);
  EXPECT_EQ(info.source_url, mirror.url() + "images/initrd");
  EXPECT_EQ(info.state, VersionInfo::State::kCached);
}


TEST_F(FetcherTest, ResponsesAreCountedByMethodAndStatus) {
  FetcherOptions o;
  o.retry_timeout = 0ms;
  restart(o);
  server_.put("a", "aaa");
  server_.no_listing("");
  ASSERT_EQ(cat("a").value(), "aaa");
  auto missing = lookup("nope");
  ASSERT_FALSE(missing);
  const auto& st = fetcher_->stats();
  auto n = [&](int m, const char* label) {
    for (size_t i = 0; i < FetcherStats::kStatusCount; ++i) {
      if (std::string(FetcherStats::kStatusLabels[i]) == label) return st.responses[m][i].load();
    }
    ADD_FAILURE() << "no label " << label;
    return uint64_t{0};
  };
  EXPECT_EQ(n(0, "200"), server_.count("GET", "", 200) + server_.count("GET", "a", 200));
  EXPECT_GE(n(0, "200"), 1u);
  EXPECT_EQ(n(1, "404"), server_.count("HEAD", "nope", 404));
  EXPECT_GE(n(1, "404"), 1u);
  EXPECT_EQ(n(0, "error"), 0u);
  server_.stop();
  auto down = lookup("other");
  ASSERT_FALSE(down);
  EXPECT_GE(n(1, "error") + n(0, "error"), 1u) << "a refused connection counts as error";
  EXPECT_EQ(FetcherStats::status_slot(418), FetcherStats::kStatusCount - 2);
  EXPECT_EQ(FetcherStats::status_slot(0), FetcherStats::kStatusCount - 1);
}

}  // namespace
}  // namespace netbootfs::cache
