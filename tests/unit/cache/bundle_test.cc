// export_bundle / import_bundle: what leaves one cache arrives whole in
// another, and a damaged or hostile bundle imports nothing at all.
#include "cache/bundle.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
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

}  // namespace
}  // namespace netbootfs::cache
