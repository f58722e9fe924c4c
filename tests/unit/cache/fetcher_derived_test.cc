// Rewritten files through the Fetcher (cache/fetch/derived.cc): a
// ContentFilter on a path changes what lookup reports and open reads, while
// the BlobStore keeps upstream's bytes; a changed upstream file or another
// fingerprint derives again, open handles keep what they opened, and the
// filter's limits and failures are served or counted as the contract says.
#include "tests/unit/cache/fetcher_fixture.h"

#include <atomic>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "cache/content_filter.h"

namespace netbootfs::cache {
namespace {

using namespace std::chrono_literals;

// Serves the files under "menu/" with every "upstream" replaced by `with`;
// a file without one is "unchanged". Counts the inputs it was given.
class ReplaceFilter : public ContentFilter {
 public:
  ReplaceFilter(std::string with, std::string fingerprint, size_t max_input = 1 << 20)
      : with_(std::move(with)), fingerprint_(std::move(fingerprint)), max_input_(max_input) {}
  bool matches(std::string_view path) const override { return path.rfind("menu/", 0) == 0; }
  std::string fingerprint() const override { return fingerprint_; }
  size_t max_input() const override { return max_input_; }
  Output apply(std::string_view, std::string_view input) const override {
    applied++;
    Output out;
    out.bytes = rewrite(input);
    out.changed = out.bytes != input;
    out.note = out.changed ? "replaced" : "nothing to replace";
    return out;
  }
  // What this filter serves for `input`.
  std::string rewrite(std::string_view input) const {
    static constexpr std::string_view kFrom = "upstream";
    std::string s(input);
    for (size_t at = s.find(kFrom); at != std::string::npos; at = s.find(kFrom, at + with_.size())) {
      s.replace(at, kFrom.size(), with_);
    }
    return s;
  }
  mutable std::atomic<int> applied{0};

 private:
  const std::string with_;
  const std::string fingerprint_;
  const size_t max_input_;
};

constexpr const char* kMenu = "menu/default";
const std::string kUpstreamMenu = "DEFAULT linux\nAPPEND url=http://upstream/boot initrd=upstream\n";

class FetcherDerivedTest : public FetcherTest {
 protected:
  // Installs a ReplaceFilter and keeps it for the test's assertions.
  std::shared_ptr<ReplaceFilter> use_filter(std::string with, std::string fingerprint,
                                            size_t max_input = 1 << 20) {
    auto f = std::make_shared<ReplaceFilter>(std::move(with), std::move(fingerprint), max_input);
    fetcher_->set_filter(f);
    return f;
  }
  // The upstream blob the index holds for `path`, as stored.
  std::string stored_bytes(const std::string& path) {
    auto e = index_->get_path(path);
    if (!e) return "<not cached>";
    std::ifstream in(blobs_->blob_path(e->sha256), std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }
  // kMenu cached without a filter, its blob then lost from the BlobStore
  // (the index still names it), then a filter installed: the next lookup
  // derives from a source that cannot be read.
  std::shared_ptr<ReplaceFilter> cache_then_lose_the_source() {
    server_.put(kMenu, kUpstreamMenu);
    auto cached = cat(kMenu);
    if (!cached || cached.value() != kUpstreamMenu) throw std::runtime_error("not cached");
    const auto entry = index_->get_path(kMenu);
    if (!entry || !blobs_->remove(entry->sha256)) throw std::runtime_error("blob not removed");
    return use_filter("proxy.lan", "fp1");
  }
  // kMenu served through `filter` and opened: the version and the handle,
  // which has read the filter's output once.
  std::pair<Attr, std::unique_ptr<OpenFile>> open_menu(const ReplaceFilter& filter) {
    const Attr a = serve(kMenu, kUpstreamMenu);
    auto of = open(a.version);
    if (!of) throw std::runtime_error("open failed: " + of.error().message);
    auto got = read_all(*of.value());
    if (!got || got.value() != filter.rewrite(kUpstreamMenu)) {
      throw std::runtime_error("the first read is not the filter's output");
    }
    return {a, std::move(of).value()};
  }
  Result<std::string> read_version(const std::shared_ptr<FileVersion>& v) {
    auto of = open(v);
    if (!of) return of.error();
    return read_all(*of.value());
  }
};

TEST_F(FetcherDerivedTest, ALookupReportsTheSizeOfTheFiltersOutput) {
  auto filter = use_filter("proxy.lan:8080", "fp1");
  const std::string out = filter->rewrite(kUpstreamMenu);
  ASSERT_NE(out.size(), kUpstreamMenu.size());
  const auto attrs = serve({{kMenu, kUpstreamMenu}, {"other", kUpstreamMenu}});
  EXPECT_EQ(attrs[0].size, out.size());
  EXPECT_EQ(attrs[1].size, kUpstreamMenu.size()) << "a path the filter does not match";
  EXPECT_EQ(filter->applied.load(), 1);
  EXPECT_EQ(attrs[0].version->filter_note(), "replaced");
  EXPECT_EQ(server_.count("GET", kMenu, 200), 1u) << "the size comes from the whole body";
}

TEST_F(FetcherDerivedTest, AnOpenReadsTheOutputAndTheBlobStoreKeepsUpstreamsBytes) {
  auto filter = use_filter("proxy.lan:8080", "fp1");
  const Attr a = serve(kMenu, kUpstreamMenu);
  EXPECT_EQ(read_version(a.version).value(), filter->rewrite(kUpstreamMenu));
  EXPECT_EQ(stored_bytes(kMenu), kUpstreamMenu) << "the cached blob is upstream's, unchanged";
  const VersionInfo info = fetcher_->describe(a.version);
  EXPECT_TRUE(info.rewritten);
  EXPECT_EQ(info.upstream_sha256, index_->get_path(kMenu)->sha256);
  EXPECT_NE(info.sha256, info.upstream_sha256);
  EXPECT_EQ(info.size, filter->rewrite(kUpstreamMenu).size());
  EXPECT_EQ(server_.count("GET", kMenu), 1u);
}

TEST_F(FetcherDerivedTest, AChangedUpstreamFileIsDerivedAgainAndTheOldVersionIsStale) {
  restart(Opts().revalidate(0ms));
  auto filter = use_filter("proxy.lan", "fp1");
  const auto [v1, h1] = open_menu(*filter);

  const std::string changed = kUpstreamMenu + "LABEL rescue\nAPPEND upstream=1\n";
  server_.put(kMenu, changed);
  auto again = open(v1.version);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ESTALE);
  auto v2 = lookup(kMenu);
  ASSERT_TRUE(v2) << v2.error().message;
  EXPECT_NE(v2->version, v1.version);
  EXPECT_EQ(v2->size, filter->rewrite(changed).size());
  EXPECT_EQ(read_version(v2->version).value(), filter->rewrite(changed));
  EXPECT_EQ(stored_bytes(kMenu), changed);
  EXPECT_EQ(read_all(*h1).value(), filter->rewrite(kUpstreamMenu))
      << "the old handle keeps the output it opened";
  EXPECT_EQ(filter->applied.load(), 2);
}

TEST_F(FetcherDerivedTest, AnotherFingerprintDerivesAtTheNextLookupAndOpenHandlesKeepTheirBytes) {
  restart(Opts().revalidate(60s));
  auto first = use_filter("alpha", "fp-a");
  const auto [v1, h1] = open_menu(*first);

  auto second = use_filter("beta.example.org", "fp-b");
  auto v2 = lookup(kMenu);
  ASSERT_TRUE(v2) << v2.error().message;
  EXPECT_NE(v2->version, v1.version);
  EXPECT_EQ(v2->size, second->rewrite(kUpstreamMenu).size());
  EXPECT_EQ(read_version(v2->version).value(), second->rewrite(kUpstreamMenu));
  EXPECT_EQ(second->applied.load(), 1);
  EXPECT_EQ(server_.count("GET", kMenu), 1u) << "derived from the cached upstream blob";
  EXPECT_EQ(read_all(*h1).value(), first->rewrite(kUpstreamMenu));
  auto stale = open(v1.version);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ESTALE);

  // Without a filter the next lookup serves upstream's bytes again.
  fetcher_->set_filter(nullptr);
  auto v3 = lookup(kMenu);
  ASSERT_TRUE(v3) << v3.error().message;
  EXPECT_EQ(v3->size, kUpstreamMenu.size());
  EXPECT_EQ(read_version(v3->version).value(), kUpstreamMenu);
}

TEST_F(FetcherDerivedTest, AnUnchangedOutputServesUpstreamsBytes) {
  auto filter = use_filter("proxy.lan", "fp1");
  const std::string plain = "DEFAULT local\n";
  const Attr a = serve(kMenu, plain);
  EXPECT_EQ(a.size, plain.size());
  EXPECT_EQ(read_version(a.version).value(), plain);
  EXPECT_EQ(filter->applied.load(), 1) << "the filter was asked";
  const VersionInfo info = fetcher_->describe(a.version);
  EXPECT_FALSE(info.rewritten);
  EXPECT_EQ(info.sha256, index_->get_path(kMenu)->sha256) << "the upstream blob itself";
  EXPECT_EQ(a.version->filter_note(), "nothing to replace");
}

TEST_F(FetcherDerivedTest, AFileLargerThanMaxInputIsServedUnmodifiedWithoutBeingRead) {
  auto filter = use_filter("proxy.lan", "fp1", /*max_input=*/16);
  ASSERT_GT(kUpstreamMenu.size(), 16u);
  const Attr a = serve(kMenu, kUpstreamMenu);
  EXPECT_EQ(a.size, kUpstreamMenu.size());
  EXPECT_EQ(read_version(a.version).value(), kUpstreamMenu);
  EXPECT_EQ(filter->applied.load(), 0);
  EXPECT_FALSE(fetcher_->describe(a.version).rewritten);
  EXPECT_NE(a.version->filter_note().find("larger than 16"), std::string::npos)
      << a.version->filter_note();
}

TEST_F(FetcherDerivedTest, ASourceBlobGoneBeforeDerivationFailsTheLookupCountedAsRewrite) {
  auto filter = cache_then_lose_the_source();
  auto r = lookup(kMenu);
  ASSERT_FALSE(r);
  EXPECT_EQ(errors(FetcherStats::ErrorSite::kRewrite), 1u);
  EXPECT_EQ(filter->applied.load(), 0);
  // The failure is not remembered: the next lookup fetches the source again.
  auto again = lookup(kMenu);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(read_version(again->version).value(), filter->rewrite(kUpstreamMenu));
  EXPECT_EQ(server_.count("GET", kMenu, 200), 2u);
}

// A derivation that fails is our failure: EIO, whatever errno it came with.
// derive() sees blobs.open_blob()'s ENOENT for a source blob gone from the
// store; handed on, a file that upstream serves would be answered "no such
// file" (which the kernel caches as a negative entry).
TEST_F(FetcherDerivedTest, AFailedDerivationIsEIONotTheSourcesErrno) {
  cache_then_lose_the_source();
  auto r = lookup(kMenu);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EIO) << r.error().message;
}

}  // namespace
}  // namespace netbootfs::cache
