#include "fs/inode_table.h"

#include <gtest/gtest.h>

#include "cache/fetcher.h"

namespace netbootfs::fs {
namespace {

// FileVersion is created only by the Fetcher; tests get versions through a
// tiny friend-free route: lookups of a real Fetcher are not needed for the
// table, so a dir-only and a version-keyed path are exercised separately.
cache::Attr dir_attr() { return cache::Attr{true, 0, 0, nullptr}; }

TEST(InodeTable, RootExistsAndIsNeverForgotten) {
  InodeTable t;
  auto root = t.get(FUSE_ROOT_ID);
  ASSERT_TRUE(root);
  EXPECT_TRUE(root->is_dir);
  EXPECT_EQ(root->path, "");
  t.forget(FUSE_ROOT_ID, 100);
  EXPECT_TRUE(t.get(FUSE_ROOT_ID));
}

TEST(InodeTable, OneInodePerDirectoryPathUntilForgotten) {
  InodeTable t;
  const fuse_ino_t a = t.ref("boot", dir_attr());
  const fuse_ino_t b = t.ref("boot", dir_attr());
  const fuse_ino_t c = t.ref("grub", dir_attr());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(t.size(), 3u);  // root, boot, grub
  t.forget(a, 1);
  EXPECT_TRUE(t.get(a));  // one reference left
  t.forget(a, 1);
  EXPECT_FALSE(t.get(a));
  // A new reference after the kernel forgot gets a fresh number, never a reused one.
  const fuse_ino_t d = t.ref("boot", dir_attr());
  EXPECT_NE(d, a);
  EXPECT_NE(d, c);
}

TEST(InodeTable, ForgetMoreThanHeldErases) {
  InodeTable t;
  const fuse_ino_t a = t.ref("x", dir_attr());
  t.forget(a, 5);
  EXPECT_FALSE(t.get(a));
  t.forget(a, 1);  // unknown inode: ignored
  EXPECT_EQ(t.size(), 1u);
}

}  // namespace
}  // namespace netbootfs::fs
