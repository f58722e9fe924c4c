#include "fs/mount_checks.h"

#include <fuse_log.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace netbootfs::fs {
namespace {

namespace fsys = std::filesystem;

TEST(ParseMountinfo, FieldsAndEscapes) {
  const auto e = parse_mountinfo(
      "22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n"
      "40 22 0:35 / /srv/tftp\\040boot rw - fuse.netbootfs http://u/ ro,user_id=0\n"
      "41 22 254:1 /data/tftp /srv/vol rw master:1 shared:2 - ext4 /dev/vda1 rw\n"
      "garbage line\n"
      "42 22 0:36 / /back\\134slash rw - tmpfs none rw");
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[0].mount_point, "/proc");
  EXPECT_EQ(e[0].type, "proc");
  EXPECT_EQ(e[1].mount_point, "/srv/tftp boot");
  EXPECT_EQ(e[1].type, "fuse.netbootfs");
  EXPECT_EQ(e[1].source, "http://u/");
  EXPECT_EQ(e[1].root, "/");
  EXPECT_EQ(e[2].root, "/data/tftp");  // optional fields skipped up to "-"
  EXPECT_EQ(e[2].type, "ext4");
  EXPECT_EQ(e[2].source, "/dev/vda1");
  EXPECT_EQ(e[3].mount_point, "/back\\slash");
}

TEST(ParseMountinfo, TruncatedLinesAreSkipped) {
  EXPECT_TRUE(parse_mountinfo("").empty());
  EXPECT_TRUE(parse_mountinfo("1 2 3 / /x rw -\n").empty());
  EXPECT_TRUE(parse_mountinfo("1 2 3 / /x rw - tmpfs\n").empty());
}

class PrepareMountpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/nbfs-mount-checks.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fsys::remove_all(dir_); }
  std::string dir_;
};

TEST_F(PrepareMountpoint, EmptyDirectoryIsAccepted) {
  EXPECT_TRUE(prepare_mountpoint(dir_).ok());
  EXPECT_TRUE(prepare_mountpoint(dir_ + "/").ok());
}

TEST_F(PrepareMountpoint, MissingPathIsRefused) {
  const auto r = prepare_mountpoint(dir_ + "/nope");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_EQ(r.error().message, "mountpoint " + dir_ + "/nope: No such file or directory");
}

TEST_F(PrepareMountpoint, FileIsRefused) {
  std::ofstream(dir_ + "/f") << "x";
  const auto r = prepare_mountpoint(dir_ + "/f");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "mountpoint " + dir_ + "/f is not a directory");
}

TEST_F(PrepareMountpoint, NonEmptyDirectoryIsRefusedNamingAnEntry) {
  fsys::create_directory(dir_ + "/old");
  std::ofstream(dir_ + "/old/pxelinux.0") << "x";
  auto r = prepare_mountpoint(dir_ + "/old");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOTEMPTY);
  EXPECT_EQ(r.error().message, "mountpoint " + dir_ +
                                   "/old is not empty (it holds 'pxelinux.0'): a mount would hide "
                                   "what is there; empty it or choose another directory");
  std::ofstream(dir_ + "/old/.hidden") << "x";
  r = prepare_mountpoint(dir_ + "/old");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find(" and 1 more)"), std::string::npos) << r.error().message;
}

TEST_F(PrepareMountpoint, SymlinkToEmptyDirectoryIsAccepted) {
  fsys::create_directory(dir_ + "/real");
  fsys::create_directory_symlink(dir_ + "/real", dir_ + "/link");
  EXPECT_TRUE(prepare_mountpoint(dir_ + "/link").ok());
}

TEST(PrepareMountpointMounted, RootOfAFilesystemIsRefused) {
  // /proc is a whole filesystem mounted on every Linux machine.
  const auto r = prepare_mountpoint("/proc");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EBUSY);
  EXPECT_EQ(r.error().message.rfind("mountpoint /proc is already a mount point (proc, source ", 0),
            0u)
      << r.error().message;
}

TEST(FuseErrorLine, UnknownOptionsAreNamed) {
  EXPECT_EQ(fuse_error_line("fuse: unknown option(s): `-o bogus=1'\n", "x"),
            "unknown option 'bogus=1' (netbootfs --help lists the options)");
  EXPECT_EQ(fuse_error_line("fuse: unknown option(s): `-o a,b=2 -x'\n", "x"),
            "unknown options 'a', 'b=2', '-x' (netbootfs --help lists the options)");
  EXPECT_EQ(fuse_error_line("fuse: unknown option(s): `-o nonempty'\n", "x"),
            "unknown option 'nonempty' (FUSE 3 has no nonempty: the mountpoint must be empty) "
            "(netbootfs --help lists the options)");
}

TEST(FuseErrorLine, OtherMessagesOnOneLine) {
  EXPECT_EQ(fuse_error_line("fuse: invalid parameter in option `uid=abc'\n", "x"),
            "invalid parameter in option 'uid=abc'");
  EXPECT_EQ(fuse_error_line("fuse: one\nfuse: two\n", "x"), "one; two");
  EXPECT_EQ(fuse_error_line("", "fallback"), "fallback");
}

TEST(FuseLogCapture, CollectsLibfuseMessagesPieceByPiece) {
  {
    FuseLogCapture capture;
    // libfuse writes its unknown-option line in several calls.
    fuse_log(FUSE_LOG_ERR, "fuse: unknown option(s): `");
    fuse_log(FUSE_LOG_ERR, "%s ", "-o");
    fuse_log(FUSE_LOG_ERR, "%s'\n", "a,b");
    EXPECT_EQ(capture.text(), "fuse: unknown option(s): `-o a,b'\n");
    EXPECT_EQ(fuse_error_line(capture.text(), "x"),
              "unknown options 'a', 'b' (netbootfs --help lists the options)");
    capture.release();
    EXPECT_EQ(capture.text(), "");
  }
  FuseLogCapture again;
  EXPECT_EQ(again.text(), "");
}

}  // namespace
}  // namespace netbootfs::fs
