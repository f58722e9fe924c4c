#include "fs/config_file.h"

#include <gtest/gtest.h>

namespace netbootfs::fs {
namespace {

TEST(ConfigMirrors, AbsentIsEmpty) {
  auto r = config_mirrors_from("rewrite_max_size = \"4M\"\n", "c.toml");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->empty());
}

TEST(ConfigMirrors, ListedInOrderAndNormalised) {
  auto r = config_mirrors_from(
      "mirrors = [\"http://m1.example.com/tftp\", \"https://m2.example.com:8443/tftp/\"]\n"
      "[[rewrite]]\nname = \"x\"\nfiles = [\"*.ipxe\"]\nreplace = [{from = \"a\", to = \"b\"}]\n",
      "c.toml");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0], "http://m1.example.com/tftp/");
  EXPECT_EQ((*r)[1], "https://m2.example.com:8443/tftp/");
}

TEST(ConfigMirrors, WrongShapesNameTheKey) {
  for (const char* text : {"mirrors = \"http://m1/\"\n", "mirrors = [1]\n",
                           "mirrors = [\"ftp://m1/\"]\n", "mirrors = [\n"}) {
    auto r = config_mirrors_from(text, "c.toml");
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.error().message.rfind("c.toml: ", 0), 0u) << r.error().message;
    EXPECT_EQ(r.error().message.find('\n'), std::string::npos);
  }
  auto r = config_mirrors_from("mirrors = [\"http://ok/\", 7]\n", "c.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("mirrors[1]"), std::string::npos) << r.error().message;
}

TEST(ConfigMirrors, AnUnreadableFileIsAnError) {
  auto r = config_mirrors("/nonexistent/netbootfs.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
}

}  // namespace
}  // namespace netbootfs::fs
