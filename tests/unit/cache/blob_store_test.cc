// BlobStore and TempBlob: hashing, the temp-file life cycle, atomic
// content-addressed publish with dedup, name validation, and ENOSPC.
#include "cache/blob_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace netbootfs::cache {
namespace {

namespace fsys = std::filesystem;

std::string read_fd(int fd, size_t n) {
  std::string out(n, '\0');
  const ssize_t got = ::pread(fd, out.data(), n, 0);
  out.resize(got < 0 ? 0 : static_cast<size_t>(got));
  return out;
}

class BlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/netbootfs-blobstore-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto s = BlobStore::open(dir_);
    ASSERT_TRUE(s) << s.error().message;
    store_ = std::move(s).value();
  }
  void TearDown() override {
    store_.reset();
    if (!mounted_.empty()) ::umount2(mounted_.c_str(), MNT_DETACH);
    std::error_code ec;
    fsys::remove_all(dir_, ec);
  }
  // Returns the sha; fails the test on any error.
  std::string put(const std::string& bytes) {
    auto t = store_->create_temp();
    EXPECT_TRUE(t) << t.error().message;
    if (!t) return {};
    EXPECT_TRUE(t->append(bytes.data(), bytes.size()));
    auto sha = store_->publish(t.value());
    EXPECT_TRUE(sha) << sha.error().message;
    return sha ? sha.value() : std::string();
  }
  size_t files_under(const std::string& sub) const {
    size_t n = 0;
    for (auto& e : fsys::recursive_directory_iterator(dir_ + "/" + sub)) n += e.is_regular_file();
    return n;
  }

  std::string dir_;
  std::string mounted_;  // a tmpfs to unmount in TearDown
  std::unique_ptr<BlobStore> store_;
};

TEST(Sha256Vectors, KnownAnswers) {
  struct Case {
    std::string input;
    const char* digest;
  };
  const Case cases[] = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {"The quick brown fox jumps over the lazy dog",
       "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"},
      {std::string(1000000, 'a'),
       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.input.substr(0, 20));
    EXPECT_EQ(Sha256::of(c.input), c.digest);
    // Fed in uneven pieces, the same digest.
    Sha256 h;
    size_t off = 0, step = 1;
    while (off < c.input.size()) {
      const size_t n = std::min(step, c.input.size() - off);
      h.update(c.input.data() + off, n);
      off += n;
      step = step * 3 + 1;
    }
    EXPECT_EQ(h.hex_digest(), c.digest);
  }
}

TEST(Sha256Vectors, ResetAndMoveReuse) {
  Sha256 h;
  h.update("junk", 4);
  h.reset();
  h.update("abc", 3);
  Sha256 moved(std::move(h));
  EXPECT_EQ(moved.hex_digest(), Sha256::of("abc"));
  moved.reset();
  EXPECT_EQ(moved.hex_digest(), Sha256::of(""));
}

TEST(Sha256Vectors, HexNamesTable) {
  const std::string good = Sha256::of("x");
  struct Case {
    std::string s;
    bool ok;
  };
  std::string upper = good;
  std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
  std::string with_slash = good;
  with_slash[2] = '/';
  const Case cases[] = {
      {good, true},
      {std::string(64, '0'), true},
      {"", false},
      {good.substr(0, 63), false},
      {good + "0", false},
      {upper, false},
      {with_slash, false},
      {"../x", false},
      {"../" + good.substr(3), false},
      {std::string(64, 'g'), false},
      {std::string("ab\0", 3) + good.substr(3), false},
  };
  for (const auto& c : cases) EXPECT_EQ(is_sha256_hex(c.s), c.ok) << "'" << c.s << "'";
}

TEST_F(BlobStoreTest, OpenCreatesTheLayout) {
  EXPECT_TRUE(fsys::is_directory(dir_ + "/blobs"));
  EXPECT_TRUE(fsys::is_directory(dir_ + "/tmp"));
  EXPECT_EQ(store_->dir(), dir_);
  EXPECT_EQ(store_->blob_path(std::string(64, 'a')), dir_ + "/blobs/aa/" + std::string(64, 'a'));
}

TEST_F(BlobStoreTest, TempBlobAppendResetAndSize) {
  auto t = store_->create_temp();
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_TRUE(t->valid());
  EXPECT_EQ(fsys::path(t->path()).parent_path(), fsys::path(dir_ + "/tmp"));
  struct stat st {};
  ASSERT_EQ(::fstat(t->fd(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  EXPECT_TRUE(::fcntl(t->fd(), F_GETFD) & FD_CLOEXEC) << "fds must not leak into children";

  ASSERT_TRUE(t->append("hello ", 6));
  ASSERT_TRUE(t->append("", 0));
  ASSERT_TRUE(t->append("world", 5));
  EXPECT_EQ(t->size(), 11u);
  EXPECT_EQ(read_fd(t->fd(), 64), "hello world");

  ASSERT_TRUE(t->reset());
  EXPECT_EQ(t->size(), 0u);
  EXPECT_EQ(read_fd(t->fd(), 64), "");
  ASSERT_TRUE(t->append("xyz", 3));
  EXPECT_EQ(read_fd(t->fd(), 64), "xyz");
  auto sha = store_->publish(t.value());
  ASSERT_TRUE(sha);
  EXPECT_EQ(sha.value(), Sha256::of("xyz")) << "reset must also restart the hash";
}

TEST_F(BlobStoreTest, TempNamesAreUnique) {
  std::vector<TempBlob> temps;
  for (int i = 0; i < 20; ++i) {
    auto t = store_->create_temp();
    ASSERT_TRUE(t);
    temps.push_back(std::move(t).value());
  }
  std::vector<std::string> names;
  for (auto& t : temps) names.push_back(t.path());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::unique(names.begin(), names.end()), names.end());
  EXPECT_EQ(files_under("tmp"), 20u);
}

TEST_F(BlobStoreTest, PublishAddressesByContentAndKeepsTheFd) {
  auto t = store_->create_temp();
  ASSERT_TRUE(t);
  const std::string body = "kernel image bytes";
  ASSERT_TRUE(t->append(body.data(), body.size()));
  const std::string temp_path = t->path();
  EXPECT_EQ(files_under("blobs"), 0u) << "nothing is visible before publish";

  auto sha = store_->publish(t.value());
  ASSERT_TRUE(sha) << sha.error().message;
  EXPECT_EQ(sha.value(), Sha256::of(body));
  const std::string target = dir_ + "/blobs/" + sha->substr(0, 2) + "/" + sha.value();
  EXPECT_TRUE(fsys::is_regular_file(target));
  EXPECT_EQ(store_->blob_path(sha.value()), target);
  EXPECT_FALSE(fsys::exists(temp_path)) << "the temp file is gone";
  EXPECT_EQ(files_under("tmp"), 0u);
  EXPECT_EQ(read_fd(t->fd(), 100), body) << "the temp fd reads the published bytes";
  EXPECT_EQ(store_->blob_size(sha.value()), body.size());

  auto fd = store_->open_blob(sha.value());
  ASSERT_TRUE(fd);
  EXPECT_EQ(read_fd(fd->get(), 100), body);
  EXPECT_EQ(store_->list(), std::vector<std::string>{sha.value()});

  auto again = store_->publish(t.value());
  ASSERT_FALSE(again) << "a TempBlob is published once";
  EXPECT_EQ(again.error().code, EINVAL);
  ASSERT_FALSE(t->append("x", 1)) << "a published blob is immutable";
}

TEST_F(BlobStoreTest, PublishingKnownContentKeepsTheExistingFile) {
  const std::string sha = put("same bytes");
  struct stat before {};
  ASSERT_EQ(::stat(store_->blob_path(sha).c_str(), &before), 0);

  auto t = store_->create_temp();
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->append("same bytes", 10));
  auto second = store_->publish(t.value());
  ASSERT_TRUE(second);
  EXPECT_EQ(second.value(), sha);
  struct stat after {};
  ASSERT_EQ(::stat(store_->blob_path(sha).c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino) << "the first file (and its page cache) is kept";
  EXPECT_EQ(files_under("blobs"), 1u);
  EXPECT_EQ(files_under("tmp"), 0u);
  EXPECT_EQ(read_fd(t->fd(), 100), "same bytes") << "the dropped temp still reads";
  t = TempBlob();  // destroying a published blob must not unlink its address
  EXPECT_EQ(store_->blob_size(sha), 10u);
}

TEST_F(BlobStoreTest, PublishReplacesATornBlobOfTheWrongSize) {
  const std::string sha = put("complete content");
  ASSERT_EQ(::truncate(store_->blob_path(sha).c_str(), 3), 0);
  EXPECT_EQ(put("complete content"), sha);
  EXPECT_EQ(store_->blob_size(sha), 16u);
}

TEST_F(BlobStoreTest, UnpublishedTempFilesAreRemoved) {
  std::string path;
  {
    auto t = store_->create_temp();
    ASSERT_TRUE(t);
    ASSERT_TRUE(t->append("partial", 7));
    path = t->path();
    EXPECT_TRUE(fsys::exists(path));
  }
  EXPECT_FALSE(fsys::exists(path));

  // Moves transfer ownership: only the last owner unlinks.
  auto a = store_->create_temp();
  ASSERT_TRUE(a);
  path = a->path();
  TempBlob b = std::move(a).value();
  EXPECT_TRUE(fsys::exists(path));
  TempBlob c;
  c = std::move(b);
  EXPECT_TRUE(fsys::exists(path));
  EXPECT_EQ(c.path(), path);
  auto d = store_->create_temp();
  ASSERT_TRUE(d);
  const std::string other = d->path();
  c = std::move(d).value();  // the overwritten temp file is dropped
  EXPECT_FALSE(fsys::exists(path));
  EXPECT_TRUE(fsys::exists(other));
  c = TempBlob();
  EXPECT_FALSE(fsys::exists(other));
  EXPECT_EQ(files_under("tmp"), 0u);
}

TEST_F(BlobStoreTest, CraftedNamesNeverLeaveTheStore) {
  // A file next to the store that a traversal would reach.
  { std::ofstream(dir_ + "/secret") << "x"; }
  const std::string good = Sha256::of("x");
  std::string upper = good;
  std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
  const std::string names[] = {
      "../x",
      "",
      "ab",
      good.substr(0, 63),
      upper,
      "../../secret",
      "../" + good.substr(3),
      std::string("..") + "/" + std::string(61, 'a'),
  };
  for (const auto& bad : names) {
    SCOPED_TRACE(bad);
    auto fd = store_->open_blob(bad);
    ASSERT_FALSE(fd);
    EXPECT_EQ(fd.error().code, EINVAL);
    EXPECT_FALSE(store_->blob_size(bad));
    auto rm = store_->remove(bad);
    ASSERT_FALSE(rm);
    EXPECT_EQ(rm.error().code, EINVAL);
  }
  EXPECT_TRUE(fsys::exists(dir_ + "/secret"));
  auto missing = store_->open_blob(good);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ENOENT);
}

TEST_F(BlobStoreTest, RemoveListAndClearTmp) {
  const std::string a = put("a"), b = put("b");
  // Files that are not at a valid address are not blobs.
  fsys::create_directories(dir_ + "/blobs/zz");
  { std::ofstream(dir_ + "/blobs/zz/" + std::string(64, 'z')) << "x"; }
  const std::string misplaced = std::string("00") + a.substr(2);
  fsys::create_directories(dir_ + "/blobs/" + b.substr(0, 2));
  if (b.substr(0, 2) != "00") {
    std::ofstream(dir_ + "/blobs/" + b.substr(0, 2) + "/" + misplaced) << "x";
  }
  auto listed = store_->list();
  std::sort(listed.begin(), listed.end());
  std::vector<std::string> want{a, b};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(listed, want);

  ASSERT_TRUE(store_->remove(a));
  EXPECT_FALSE(store_->blob_size(a));
  EXPECT_TRUE(store_->remove(a)) << "removing a missing blob is not an error";
  EXPECT_EQ(store_->list(), std::vector<std::string>{b});

  for (int i = 0; i < 3; ++i) std::ofstream(dir_ + "/tmp/left-" + std::to_string(i)) << "x";
  EXPECT_EQ(store_->clear_tmp(), 3u);
  EXPECT_EQ(files_under("tmp"), 0u);
}

TEST_F(BlobStoreTest, NoSpaceComesBackAsENOSPC) {
  const std::string small = dir_ + "/small";
  fsys::create_directories(small);
  if (::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=64k") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here: " << std::strerror(errno);
  }
  mounted_ = small;
  {
    auto s = BlobStore::open(small);
    ASSERT_TRUE(s) << s.error().message;
    auto t = (*s)->create_temp();
    ASSERT_TRUE(t);
    const std::string chunk(10000, 'z');  // not a page multiple: the last write is short
    Result<void> r;
    int appended = 0;
    for (; appended < 100 && r.ok(); ++appended) r = t->append(chunk.data(), chunk.size());
    ASSERT_FALSE(r.ok()) << "64 KiB cannot hold 1 MB";
    EXPECT_EQ(r.error().code, ENOSPC) << r.error().message;
    EXPECT_EQ(t->size(), uint64_t{10000} * (appended - 1)) << "a failed append adds nothing";
    struct stat st {};
    ASSERT_EQ(::fstat(t->fd(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), t->size())
        << "a failed append leaves no partial bytes behind";
  }
  ASSERT_EQ(::umount(small.c_str()), 0);
  mounted_.clear();
}

}  // namespace
}  // namespace netbootfs::cache
