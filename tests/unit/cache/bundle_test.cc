// export_bundle / import_bundle: what leaves one cache arrives whole in
// another, and a damaged or hostile bundle imports nothing at all.
#include "cache/bundle.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>

namespace netbootfs::cache {
namespace {

namespace fsys = std::filesystem;

struct Cache {
  std::string dir;
  std::unique_ptr<BlobStore> blobs;
  std::unique_ptr<Index> index;
  explicit Cache(const std::string& d) : dir(d) {
    auto b = BlobStore::open(dir);
    EXPECT_TRUE(b) << b.error().message;
    blobs = std::move(b).value();
    auto i = Index::open(dir + "/index", Index::Options{size_t{1} << 24});
    EXPECT_TRUE(i) << i.error().message;
    index = std::move(i).value();
  }
  // Stores `bytes` under `path` the way a download does.
  void put(const std::string& path, const std::string& bytes, int64_t validated_at,
           const std::string& etag = "\"e1\"") {
    auto t = blobs->create_temp();
    ASSERT_TRUE(t);
    ASSERT_TRUE(t->append(bytes.data(), bytes.size()));
    auto sha = blobs->publish(*t);
    ASSERT_TRUE(sha);
    PathEntry e;
    e.sha256 = *sha;
    e.size = bytes.size();
    e.etag = etag;
    e.last_modified = 1700000000;
    e.validated_at = validated_at;
    ASSERT_TRUE(index->put_path(path, e));
  }
  std::string read(const std::string& path) {
    auto e = index->get_path(path);
    if (!e) return "<absent>";
    std::ifstream in(blobs->blob_path(e->sha256), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
};

class BundleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/netbootfs-bundle-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    src_ = std::make_unique<Cache>(root_ + "/src");
    dst_ = std::make_unique<Cache>(root_ + "/dst");
    src_->put("pxelinux.0", "PXELINUX-BINARY", 1000);
    src_->put("images/sles15/linux", std::string(300000, 'k'), 2000, "\"k1\"");
    src_->put("images/sles15/initrd", "INITRD-BYTES-" + std::string(5000, 'i'), 3000);
    src_->put("images/other/linux", std::string(300000, 'k'), 3000, "\"k2\"");  // same blob
    bundle_ = root_ + "/site.tar";
  }
  void TearDown() override {
    src_.reset();
    dst_.reset();
    std::error_code ec;
    fsys::remove_all(root_, ec);
  }
  std::string slurp(const std::string& f) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  void spit(const std::string& f, const std::string& s) {
    std::ofstream out(f, std::ios::binary | std::ios::trunc);
    out << s;
  }
  void expect_nothing_imported() {
    EXPECT_TRUE(dst_->index->list_paths().empty());
    EXPECT_TRUE(dst_->blobs->list().empty()) << "blobs of a failed import stay behind";
    EXPECT_EQ(dst_->blobs->clear_tmp(), 0u) << "temp files of a failed import stay behind";
  }
  std::string root_, bundle_;
  std::unique_ptr<Cache> src_, dst_;
};

TEST_F(BundleTest, AllEntriesArriveWithTheirValidatorsAndSharedBlobsOnce) {
  auto ex = export_bundle(*src_->index, *src_->blobs, 0, bundle_);
  ASSERT_TRUE(ex) << ex.error().message;
  EXPECT_EQ(ex->entries, 4u);
  EXPECT_EQ(ex->blobs, 3u);  // the two identical kernels are one blob
  EXPECT_FALSE(fsys::exists(bundle_ + ".tmp"));

  auto im = import_bundle(*dst_->index, *dst_->blobs, bundle_);
  ASSERT_TRUE(im) << im.error().message;
  EXPECT_EQ(im->entries, 4u);
  EXPECT_EQ(im->blobs, 3u);
  for (const auto& [path, e] : src_->index->list_paths()) {
    auto got = dst_->index->get_path(path);
    ASSERT_TRUE(got) << path;
    EXPECT_EQ(got->sha256, e.sha256);
    EXPECT_EQ(got->size, e.size);
    EXPECT_EQ(got->etag, e.etag);
    EXPECT_EQ(got->last_modified, e.last_modified);
    EXPECT_EQ(got->validated_at, e.validated_at);
    EXPECT_EQ(dst_->read(path), src_->read(path));
  }
  const std::string kernel_sha = src_->index->get_path("images/other/linux")->sha256;
  auto kernel = dst_->index->get_blob(kernel_sha);
  ASSERT_TRUE(kernel);
  EXPECT_EQ(kernel->refs, 2u);

  // Importing again changes nothing and finds every blob present.
  auto again = import_bundle(*dst_->index, *dst_->blobs, bundle_);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->blobs_present, 3u);
  EXPECT_EQ(dst_->index->get_blob(kernel_sha)->refs, 2u);
  EXPECT_EQ(dst_->index->list_paths().size(), 4u);
}

TEST_F(BundleTest, SinceExportsOnlyWhatWasValidatedSince) {
  auto ex = export_bundle(*src_->index, *src_->blobs, 3000, bundle_);
  ASSERT_TRUE(ex) << ex.error().message;
  EXPECT_EQ(ex->entries, 2u);
  ASSERT_TRUE(import_bundle(*dst_->index, *dst_->blobs, bundle_));
  EXPECT_EQ(dst_->read("images/sles15/initrd"), src_->read("images/sles15/initrd"));
  EXPECT_EQ(dst_->read("images/other/linux"), src_->read("images/other/linux"));
  EXPECT_EQ(dst_->read("pxelinux.0"), "<absent>");
}

TEST_F(BundleTest, OneCorruptedByteRejectsTheWholeBundle) {
  ASSERT_TRUE(export_bundle(*src_->index, *src_->blobs, 0, bundle_));
  std::string tar = slurp(bundle_);
  const auto at = tar.find("INITRD-BYTES-");
  ASSERT_NE(at, std::string::npos);
  tar[at + 3] ^= 0x20;
  spit(bundle_, tar);
  auto im = import_bundle(*dst_->index, *dst_->blobs, bundle_);
  ASSERT_FALSE(im);
  EXPECT_NE(im.error().message.find("does not hash to its name"), std::string::npos)
      << im.error().message;
  EXPECT_NE(im.error().message.find("nothing imported"), std::string::npos);
  expect_nothing_imported();
}

TEST_F(BundleTest, ATruncatedBundleImportsNothing) {
  ASSERT_TRUE(export_bundle(*src_->index, *src_->blobs, 0, bundle_));
  std::string tar = slurp(bundle_);
  spit(bundle_, tar.substr(0, tar.size() / 2));
  ASSERT_FALSE(import_bundle(*dst_->index, *dst_->blobs, bundle_));
  expect_nothing_imported();
}

TEST_F(BundleTest, AManifestPathOutsideTheTreeIsRefused) {
  ASSERT_TRUE(export_bundle(*src_->index, *src_->blobs, 0, bundle_));
  std::string tar = slurp(bundle_);
  // Same length, so the tar headers stay valid: "pxelinux.0" -> "../etc/pw".
  const auto at = tar.find("\"pxelinux.0\"");
  ASSERT_NE(at, std::string::npos);
  tar.replace(at, 12, "\"../etc/pw\" ");
  spit(bundle_, tar);
  auto im = import_bundle(*dst_->index, *dst_->blobs, bundle_);
  ASSERT_FALSE(im);
  EXPECT_NE(im.error().message.find("outside the tree"), std::string::npos) << im.error().message;
  expect_nothing_imported();
}

TEST_F(BundleTest, NotABundle) {
  spit(bundle_, "hello, this is not a tar file at all");
  ASSERT_FALSE(import_bundle(*dst_->index, *dst_->blobs, bundle_));
  ASSERT_FALSE(import_bundle(*dst_->index, *dst_->blobs, root_ + "/missing.tar"));
  expect_nothing_imported();
}

TEST(BundlePath, Table) {
  for (const char* ok : {"pxelinux.0", "a/b/c", "grub/x86_64-efi/normal.mod", "with space"}) {
    EXPECT_TRUE(is_bundle_path(ok)) << ok;
  }
  for (const char* bad : {"", "/etc/passwd", "../x", "a/../b", "a//b", "a/./b", "a/", ".",
                          "\x01" "filtered/x", "a\nb"}) {
    EXPECT_FALSE(is_bundle_path(bad)) << bad;
  }
}


std::string manifest_with(const std::string& entries) {
  return R"({"format": "netbootfs-bundle", "version": 1, "created": 1, "since": 0, "entries": [)" +
         entries + "]}";
}

const std::string kShaA(64, 'a');
const std::string kShaB(64, 'b');

std::string entry(const std::string& path, const std::string& sha, const std::string& size,
                  const std::string& extra = "") {
  return R"({"path": ")" + path + R"(", "sha256": ")" + sha + R"(", "size": )" + size + extra +
         "}";
}

TEST(ParseManifest, RefusesWithOneReason) {
  struct Case {
    const char* name;
    std::string text;
    std::string message;
  } cases[] = {
      {"not JSON", "{not json", "the manifest is not JSON"},
      {"not an object", "[1, 2]", "the manifest is not JSON"},
      {"another format", R"({"format": "tar", "version": 1, "entries": []})",
       "not a netbootfs bundle"},
      {"no format", R"({"version": 1, "entries": []})", "not a netbootfs bundle"},
      {"no version", R"({"format": "netbootfs-bundle", "entries": []})",
       "unsupported bundle version"},
      {"a later version", R"({"format": "netbootfs-bundle", "version": 2, "entries": []})",
       "unsupported bundle version"},
      {"version as a string", R"({"format": "netbootfs-bundle", "version": "1", "entries": []})",
       "unsupported bundle version"},
      {"no entries", R"({"format": "netbootfs-bundle", "version": 1})",
       "the manifest has no entries list"},
      {"entries not a list", R"({"format": "netbootfs-bundle", "version": 1, "entries": {}})",
       "the manifest has no entries list"},
      {"an entry not an object", manifest_with("1"), "a manifest entry lacks path, sha256 or size"},
      {"no size", manifest_with(R"({"path": "a", "sha256": ")" + kShaA + R"("})"),
       "a manifest entry lacks path, sha256 or size"},
      {"a negative size", manifest_with(entry("a", kShaA, "-1")),
       "a manifest entry lacks path, sha256 or size"},
      {"a path not a string",
       manifest_with(R"({"path": 7, "sha256": ")" + kShaA + R"(", "size": 1})"),
       "a manifest entry lacks path, sha256 or size"},
      {"a path outside the tree", manifest_with(entry("../etc/passwd", kShaA, "1")),
       "manifest path outside the tree: ../etc/passwd"},
      {"an absolute path", manifest_with(entry("/boot", kShaA, "1")),
       "manifest path outside the tree: /boot"},
      {"a path twice", manifest_with(entry("a", kShaA, "1") + "," + entry("a", kShaB, "2")),
       "manifest path twice: a"},
      {"a short digest", manifest_with(entry("a", "abc", "1")), "manifest digest malformed for a"},
  };
  for (const auto& c : cases) {
    auto r = parse_manifest(c.text);
    ASSERT_FALSE(r) << c.name;
    EXPECT_EQ(r.error().code, EINVAL) << c.name;
    EXPECT_EQ(r.error().message, c.message) << c.name;
  }
}

TEST(ParseManifest, TakesEntriesAndTheValidatorsOfTheRightType) {
  struct Case {
    const char* name;
    std::string entry;
    std::string etag;
    int64_t last_modified;
    int64_t validated_at;
  } cases[] = {
      {"only the required fields", entry("a", kShaA, "5"), "", 0, 0},
      {"all validators",
       entry("a", kShaA, "5", R"(, "etag": "\"e1\"", "last_modified": 17, "validated_at": 18)"),
       "\"e1\"", 17, 18},
      {"validators of the wrong type are left out",
       entry("a", kShaA, "5", R"(, "etag": 3, "last_modified": "17", "validated_at": 1.5)"), "",
       0, 0},
  };
  for (const auto& c : cases) {
    auto r = parse_manifest(manifest_with(c.entry));
    ASSERT_TRUE(r) << c.name << ": " << r.error().message;
    ASSERT_EQ(r->size(), 1u) << c.name;
    const ManifestEntry& m = r->front();
    EXPECT_EQ(m.path, "a") << c.name;
    EXPECT_EQ(m.entry.sha256, kShaA) << c.name;
    EXPECT_EQ(m.entry.size, 5u) << c.name;
    EXPECT_EQ(m.entry.etag, c.etag) << c.name;
    EXPECT_EQ(m.entry.last_modified, c.last_modified) << c.name;
    EXPECT_EQ(m.entry.validated_at, c.validated_at) << c.name;
  }
  auto empty = parse_manifest(manifest_with(""));
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
  auto two = parse_manifest(manifest_with(entry("b", kShaB, "2") + "," + entry("a", kShaA, "1")));
  ASSERT_TRUE(two);
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[0].path, "b");  // in the manifest's order
  EXPECT_EQ((*two)[1].path, "a");
}

TEST(ManifestBlobs, Table) {
  const auto m = [](const char* path, const std::string& sha, uint64_t size) {
    ManifestEntry e;
    e.path = path;
    e.entry.sha256 = sha;
    e.entry.size = size;
    return e;
  };
  using Blobs = std::map<std::string, uint64_t>;
  struct Case {
    const char* name;
    std::vector<ManifestEntry> manifest;
    std::optional<Blobs> want;  // nullopt: refused
  } cases[] = {
      {"none", {}, Blobs{}},
      {"one per blob", {m("a", kShaA, 1), m("b", kShaB, 2)}, Blobs{{kShaA, 1}, {kShaB, 2}}},
      {"a shared blob once", {m("a", kShaA, 1), m("a2", kShaA, 1)}, Blobs{{kShaA, 1}}},
      {"a shared empty blob once", {m("a", kShaA, 0), m("a2", kShaA, 0)}, Blobs{{kShaA, 0}}},
      {"one blob, two sizes", {m("a", kShaA, 1), m("a2", kShaA, 2)}, std::nullopt},
      {"two sizes after another blob", {m("b", kShaB, 2), m("a", kShaA, 0), m("a2", kShaA, 3)},
       std::nullopt},
  };
  for (const auto& c : cases) {
    auto r = manifest_blobs(c.manifest);
    if (!c.want) {
      ASSERT_FALSE(r) << c.name;
      EXPECT_EQ(r.error().code, EINVAL) << c.name;
      EXPECT_EQ(r.error().message, "two sizes for blob " + kShaA) << c.name;
      continue;
    }
    ASSERT_TRUE(r) << c.name << ": " << r.error().message;
    EXPECT_EQ(*r, *c.want) << c.name;
  }
}

}  // namespace
}  // namespace netbootfs::cache
