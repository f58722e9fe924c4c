#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "fs/ctl/args.h"

namespace netbootfs::fs::ctl {
namespace {

TEST(CtlArgs, ParseTime) {
  struct Case {
    const char* in;
    int64_t want;  // -1: rejected
  } cases[] = {
      {"1700000000", 1700000000},
      {"@1700000000", 1700000000},
      {"0", 0},
      {"2023-11-14", 1699920000},
      {"2023-11-14T22:13:20Z", 1700000000},
      {"2023-11-14T22:13:20", 1700000000},
      {"", -1},
      {"@", -1},
      {"yesterday", -1},
      {"2023-11-14 22:13:20", -1},
      {"2023-11-14T22:13:20Zjunk", -1},
      {"17000x", -1},
  };
  for (const auto& c : cases) {
    auto r = parse_time(c.in);
    if (c.want < 0) {
      ASSERT_FALSE(r) << c.in;
      EXPECT_EQ(r.error().code, EINVAL);
      EXPECT_EQ(r.error().message, std::string("bad time '") + c.in +
                                       "' (unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)");
    } else {
      ASSERT_TRUE(r) << c.in << ": " << r.error().message;
      EXPECT_EQ(r.value(), c.want) << c.in;
    }
  }
}

TEST(CtlArgs, ParseDuration) {
  struct Case {
    const char* in;
    int64_t want;  // -1: rejected
  } cases[] = {
      {"3600", 3600}, {"10s", 10},  {"30m", 1800}, {"12h", 43200}, {"7d", 604800},
      {"1.5h", 5400}, {"0", 0},     {"", -1},      {"m", -1},      {"-1", -1},
      {"5w", -1},     {"10 m", -1}, {"1hh", -1},
  };
  for (const auto& c : cases) {
    auto r = parse_duration(c.in);
    if (c.want < 0) {
      ASSERT_FALSE(r) << c.in;
      EXPECT_EQ(r.error().message,
                std::string("bad duration '") + c.in + "' (e.g. 3600, 30m, 12h, 7d)");
    } else {
      ASSERT_TRUE(r) << c.in << ": " << r.error().message;
      EXPECT_EQ(r.value(), c.want) << c.in;
    }
  }
}

// Numbers too large for any clock: a one-line error, never an abort
// (std::stoll threw out of netbootfsctl) or an undefined conversion.
TEST(CtlArgs, TimesAndDurationsOutOfRangeAreRejected) {
  for (const char* in : {"99999999999999999999", "@99999999999999999999"}) {
    auto r = parse_time(in);
    ASSERT_FALSE(r) << in;
    EXPECT_EQ(r.error().code, EINVAL);
    EXPECT_EQ(r.error().message, std::string("bad time '") + in + "': out of range");
  }
  EXPECT_EQ(parse_time("9223372036854775807").value(), INT64_MAX);
  for (const char* in : {"1e300d", "1e300", "400000d", "nan", "inf"}) {
    auto r = parse_duration(in);
    ASSERT_FALSE(r) << in;
    EXPECT_EQ(r.error().code, EINVAL) << in;
  }
  EXPECT_EQ(parse_duration("36500d").value(), int64_t{36500} * 86400);
}

TEST(CtlArgs, GatherPathsFromTheCommandLine) {
  auto r = gather_paths({"/", ".", "", "/boot//initrd/", "pxelinux.cfg/default"}, "");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r.value(),
            (std::vector<std::string>{"", "", "", "boot/initrd", "pxelinux.cfg/default"}));
  auto bad = gather_paths({"boot", "../etc"}, "");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, EINVAL);
  EXPECT_EQ(bad.error().message.rfind("bad path '../etc': ", 0), 0u) << bad.error().message;
}

TEST(CtlArgs, GatherPathsFromAFile) {
  char tmpl[] = "/tmp/netbootfs-ctl-args-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string file = dir + "/paths";
  std::ofstream(file) << "# the kernels\n\nboot/linux  \r\n/boot/initrd\n#grub\ngrub/grub.cfg";
  auto r = gather_paths({"first"}, file);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r.value(),
            (std::vector<std::string>{"first", "boot/linux", "boot/initrd", "grub/grub.cfg"}));
  auto missing = gather_paths({}, dir + "/none");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ENOENT);
  EXPECT_EQ(missing.error().message, "cannot read " + dir + "/none: No such file or directory");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace netbootfs::fs::ctl
