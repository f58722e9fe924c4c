// The derived-key scheme and the removal of paths with their blobs and
// rewritten outputs (cache/derived_keys.h, cache/maintenance.h): what the
// fetcher and netbootfsctl evict share.
#include "cache/maintenance.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "cache/derived_keys.h"

namespace netbootfs::cache {
namespace {

TEST(DerivedKeys, TheKeyNamesItsSourceAndIsInternal) {
  const std::string k = derived_key("fp1", "abc");
  EXPECT_EQ(k, std::string(1, '\x01') + "filtered/fp1/abc");
  EXPECT_EQ(k[1], 'f') << "not the byte 0x1F that a greedy hex escape makes";
  EXPECT_TRUE(is_internal_key(k));
  EXPECT_EQ(derived_source(k), "abc");
}

TEST(DerivedKeys, SourceOfEveryKindOfKey) {
  struct Case {
    std::string key;
    std::optional<std::string> source;
  } cases[] = {
      {derived_key("fp", "sha"), "sha"},
      {derived_key("", "sha"), "sha"},            // an empty fingerprint still names it
      {derived_key("a/b", "sha"), "sha"},         // the source is after the last slash
      {std::string(kDerivedPrefix), std::nullopt},  // no source at all
      {std::string(kDerivedPrefix) + "fp/", std::nullopt},
      {std::string(kDerivedPrefix) + "sha", std::nullopt},  // no fingerprint part
      {"\x1f" "iltered/fp/sha", std::nullopt},    // what the greedy escape spelled
      {"filtered/fp/sha", std::nullopt},          // an upstream path of that name
      {"", std::nullopt},
  };
  for (const auto& c : cases) EXPECT_EQ(derived_source(c.key), c.source) << c.key;
  EXPECT_FALSE(is_internal_key(""));
  EXPECT_FALSE(is_internal_key("pxelinux.cfg/default"));
  EXPECT_TRUE(is_internal_key("\x01other"));
}

class MaintenanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/netbootfs-maintenance-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto b = BlobStore::open(dir_);
    ASSERT_TRUE(b) << b.error().message;
    blobs_ = std::move(b).value();
    auto i = Index::open(dir_ + "/index", Index::Options{});
    ASSERT_TRUE(i) << i.error().message;
    index_ = std::move(i).value();
  }
  void TearDown() override {
    index_.reset();
    blobs_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  // Stores `bytes` as a blob and points `key` at it; returns its sha256.
  std::string cached(const std::string& key, const std::string& bytes) {
    auto tmp = blobs_->create_temp();
    EXPECT_TRUE(tmp);
    EXPECT_TRUE(tmp->append(bytes.data(), bytes.size()));
    auto sha = blobs_->publish(tmp.value());
    EXPECT_TRUE(sha);
    PathEntry e;
    e.sha256 = sha.value();
    e.size = bytes.size();
    EXPECT_TRUE(index_->put_path(key, e));
    return sha.value();
  }
  bool blob_gone(const std::string& sha) const {
    return !blobs_->blob_size(sha) && !index_->get_blob(sha);
  }

  std::string dir_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<Index> index_;
};

TEST_F(MaintenanceTest, RemovingAMenuRemovesItsRewrittenOutputs) {
  const std::string src = cached("pxelinux.cfg/default", "KERNEL http://server/linux\n");
  const std::string out1 = cached(derived_key("fp1", src), "KERNEL http://proxy/linux\n");
  const std::string out2 = cached(derived_key("fp2", src), "KERNEL http://other/linux\n");
  const std::string other = cached("grub/grub.cfg", "menuentry\n");
  cached(derived_key("fp1", other), "menuentry proxy\n");

  auto r = remove_paths(*index_, *blobs_, {"pxelinux.cfg/default"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->entries, 1u);
  EXPECT_EQ(r->outputs, 2u);
  EXPECT_EQ(r->blobs, 3u);
  EXPECT_FALSE(index_->get_path(derived_key("fp1", src)));
  EXPECT_FALSE(index_->get_path(derived_key("fp2", src)));
  EXPECT_TRUE(blob_gone(src) && blob_gone(out1) && blob_gone(out2));
  EXPECT_TRUE(index_->get_path(derived_key("fp1", other))) << "another menu's output stays";
  EXPECT_TRUE(blobs_->blob_size(other));
}

TEST_F(MaintenanceTest, ABlobAnotherPathSharesStaysWithItsOutputs) {
  const std::string sha = cached("a/linux", "kernel bytes");
  cached("b/linux", "kernel bytes");
  const std::string out = cached(derived_key("fp", sha), "rewritten");

  auto r = remove_paths(*index_, *blobs_, {"a/linux", "not/cached"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->entries, 1u) << "a path without an entry is skipped";
  EXPECT_EQ(r->blobs, 0u);
  EXPECT_EQ(r->bytes, 0u);
  EXPECT_TRUE(blobs_->blob_size(sha));
  EXPECT_TRUE(index_->get_path(derived_key("fp", sha))) << "its source is still used";
  EXPECT_TRUE(blobs_->blob_size(out));

  r = remove_paths(*index_, *blobs_, {"b/linux"});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->blobs, 2u);
  EXPECT_EQ(r->bytes, std::string("kernel bytes").size() + std::string("rewritten").size());
  EXPECT_TRUE(blob_gone(sha) && blob_gone(out));
  EXPECT_EQ(index_->stats().blobs, 0u);
}

TEST_F(MaintenanceTest, CollectBlobKeepsAReferencedBlobAndToleratesAMissingOne) {
  const std::string sha = cached("x", "bytes");
  Removed r;
  collect_blob(*index_, *blobs_, sha, r);
  EXPECT_EQ(r.blobs, 0u);
  EXPECT_TRUE(blobs_->blob_size(sha));
  collect_blob(*index_, *blobs_, std::string(64, 'a'), r);  // neither record nor file
  EXPECT_EQ(r.blobs, 0u);
}

}  // namespace
}  // namespace netbootfs::cache
