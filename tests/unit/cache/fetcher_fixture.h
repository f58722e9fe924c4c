// The fixture of the Fetcher's tests (tests/unit/cache/fetcher_*_test.cc,
// prefetch_test.cc): a Fetcher over a fresh cache directory, an in-process
// upstream (tests/unit/support/test_http_server.h) and the calls a kernel
// would make, each waited for with a bound.
//
// Contract
// - Every wait is bounded: await() aborts the suite after its limit (a
//   callback that never comes would hang it), eventually() and
//   wait_until_up() return false.
// - The arrange helpers (Opts, serve(), add_mirror(), limit()) fail the
//   test when what they set up does not hold: they throw, and GoogleTest
//   reports the exception as the test's failure.
// - Not in an anonymous namespace: the suites FetcherTest and
//   FetcherEvictionTest span several files, and GoogleTest requires one
//   fixture type per suite.
#pragma once

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "cache/fetcher.h"
#include "tests/unit/support/test_http_server.h"

namespace netbootfs::cache {

using netbootfs::testing::TestHttpServer;

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

inline std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

template <class T>
T await(std::future<T>& f, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  if (f.wait_for(limit) != std::future_status::ready) {
    ADD_FAILURE() << "timed out";
    std::abort();  // a callback that never comes would hang the suite
  }
  return f.get();
}

// Polls (bounded) until `cond` holds: background work (eviction passes,
// removals) runs on a worker.
inline bool eventually(const std::function<bool()>& cond,
                       std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  const auto t0 = std::chrono::steady_clock::now();
  while (!cond()) {
    if (std::chrono::steady_clock::now() - t0 > limit) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

class FetcherTest : public ::testing::Test {
 protected:
  using ms = std::chrono::milliseconds;

  // The options a test changes, one call each:
  // restart(Opts().revalidate(0ms).missing_grace(1500ms)).
  class Opts {
   public:
    Opts& revalidate(ms v) { return set(o_.revalidate, v); }
    Opts& negative_ttl(ms v) { return set(o_.negative_ttl, v); }
    Opts& listing_ttl(ms v) { return set(o_.listing_ttl, v); }
    Opts& read_stall_timeout(ms v) { return set(o_.read_stall_timeout, v); }
    Opts& retry_timeout(ms v) { return set(o_.retry_timeout, v); }
    Opts& missing_grace(ms v) { return set(o_.missing_grace, v); }
    Opts& down_after(int v) { return set(o_.down_after, v); }
    Opts& probe_interval(ms v) { return set(o_.probe_interval, v); }
    Opts& mirror_backoff(ms v) { return set(o_.mirror_backoff, v); }
    Opts& mirror_backoff_max(ms v) { return set(o_.mirror_backoff_max, v); }
    Opts& mirrors(std::vector<std::string> v) { return set(o_.mirrors, std::move(v)); }
    operator FetcherOptions() const { return o_; }  // NOLINT: restart(Opts()...) reads best

   private:
    template <class T, class V>
    Opts& set(T& field, V v) {
      field = std::move(v);
      return *this;
    }
    FetcherOptions o_;
  };

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
    if (o.read_stall_timeout == FetcherOptions{}.read_stall_timeout) {
      o.read_stall_timeout = std::chrono::seconds(3);
    }
    blobs_ = std::move(BlobStore::open(dir_).value());
    index_ = std::move(Index::open(dir_ + "/index", Index::Options{}).value());
    http::Options ho;
    ho.connect_timeout = std::chrono::seconds(2);
    ho.request_timeout = std::chrono::seconds(5);
    ho.low_speed_time = std::chrono::seconds(2);
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

  // Upstream gets a mirror (started here, alive until the fixture ends) and
  // the Fetcher restarts with it after base_url.
  TestHttpServer& add_mirror(Opts o = Opts()) {
    mirror_ = std::make_unique<TestHttpServer>();
    restart(o.mirrors({mirror_->url()}));
    return *mirror_;
  }

  // The same file on the upstream and on its mirror (the same ETag only
  // when both saw as many puts).
  void put_on_both(const std::string& path, const std::string& body) {
    server_.put(path, body);
    mirror_->put(path, body);
  }
  // Puts the files on the upstream, then looks each up (puts first: the
  // first lookup fetches the listing that must name them all), and returns
  // their attributes in order. A failed lookup fails the test.
  std::vector<Attr> serve(const std::vector<std::pair<std::string, std::string>>& files) {
    for (const auto& [path, body] : files) server_.put(path, body);
    std::vector<Attr> attrs;
    for (const auto& f : files) {
      auto a = lookup(f.first);
      if (!a) throw std::runtime_error("lookup of " + f.first + " failed: " + a.error().message);
      attrs.push_back(std::move(a).value());
    }
    return attrs;
  }
  Attr serve(const std::string& path, std::string body) {
    return serve({{path, std::move(body)}}).front();
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
  // open() without waiting: the answer, when it comes.
  std::future<Result<std::unique_ptr<OpenFile>>> open_async(const std::shared_ptr<FileVersion>& v) {
    auto p = std::make_shared<std::promise<Result<std::unique_ptr<OpenFile>>>>();
    fetcher_->open(v, [p](Result<std::unique_ptr<OpenFile>> r) { p->set_value(std::move(r)); });
    return p->get_future();
  }
  // open() with a download speed limit (bytes/s).
  Result<std::unique_ptr<OpenFile>> open(const std::shared_ptr<FileVersion>& v,
                                         uint64_t max_rate) {
    std::promise<Result<std::unique_ptr<OpenFile>>> p;
    auto f = p.get_future();
    fetcher_->open(v, max_rate,
                   [&p](Result<std::unique_ptr<OpenFile>> r) { p.set_value(std::move(r)); });
    return await(f);
  }
  // One read of `len` bytes at `offset`, waited for at most `limit`.
  Result<Slice> read_at(OpenFile& of, uint64_t offset, size_t len,
                        std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    std::promise<Result<Slice>> p;
    auto f = p.get_future();
    of.read(offset, len, [&p](Result<Slice> r) { p.set_value(std::move(r)); });
    return await(f, limit);
  }
  // Reads the whole file in `chunk` pieces, as the kernel would.
  Result<std::string> read_all(OpenFile& of, size_t chunk = 128 * 1024) {
    std::string out;
    for (uint64_t off = 0;; off += chunk) {
      auto r = read_at(of, off, chunk);
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
  // netbootfs_errors_total{site}.
  uint64_t errors(FetcherStats::ErrorSite site) const {
    return fetcher_->stats().errors[static_cast<size_t>(site)].load();
  }

  std::string dir_;
  TestHttpServer server_;
  std::unique_ptr<TestHttpServer> mirror_;  // add_mirror()
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
    // Hits ask upstream nothing: GET counts are downloads.
    restart(Opts().revalidate(std::chrono::seconds(60)));
    EvictorOptions eo;
    eo.limit = bytes;
    eo.pins = std::move(pins);
    evictor_ = std::make_unique<Evictor>(eo, *index_, *blobs_);
    fetcher_->set_evictor(evictor_.get());
  }
  bool cached(const std::string& path) { return index_->get_path(path).has_value(); }
  uint64_t cache_bytes() { return index_->stats().blob_bytes; }
};

}  // namespace netbootfs::cache
