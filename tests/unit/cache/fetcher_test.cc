// The Fetcher against a real HTTP exchange (an in-process upstream): single
// flight, listings and negative entries, revalidation, versions, resume,
// stale-if-error and shutdown. No FUSE: these are the decisions the mount
// relies on, driven directly. Run under TSan by contrib/check.sh.
#include "cache/fetcher.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <random>
#include <thread>

#include "tests/unit/support/test_http_server.h"

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;
using testing::TestHttpServer;

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

  std::string dir_;
  TestHttpServer server_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<Index> index_;
  std::unique_ptr<http::Client> client_;
  std::unique_ptr<Fetcher> fetcher_;
};

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

}  // namespace
}  // namespace netbootfs::cache
