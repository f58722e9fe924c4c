#include "fs/options.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace netbootfs::fs {
namespace {

struct Parsed {
  Result<void> result;
  MountOptions opts;
  std::vector<std::string> fuse_args;
};

Parsed parse(std::vector<std::string> argv) {
  argv.insert(argv.begin(), "netbootfs");
  std::vector<char*> raw;
  for (auto& a : argv) raw.push_back(a.data());
  Parsed p{Result<void>{}, MountOptions{}, {}};
  fuse_args args{};
  p.result = parse_mount_args(static_cast<int>(raw.size()), raw.data(), p.opts, args);
  for (int i = 0; i < args.argc; ++i) p.fuse_args.emplace_back(args.argv[i]);
  fuse_opt_free_args(&args);
  return p;
}

bool has_arg(const Parsed& p, const std::string& needle) {
  for (const auto& a : p.fuse_args) {
    if (a.find(needle) != std::string::npos) return true;
  }
  return false;
}

TEST(Options, PositionalsAndOwnOptions) {
  auto p = parse({"http://server/tftp", "/mnt", "-f", "-o",
                  "cache_dir=/c,revalidate=0.5,negative_ttl=3,uid=7,gid=8,umask=027,allow_other"});
  ASSERT_TRUE(p.result.ok()) << p.result.error().message;
  EXPECT_EQ(p.opts.url, "http://server/tftp/");
  EXPECT_EQ(p.opts.mountpoint, "/mnt");
  EXPECT_EQ(p.opts.cache_dir, "/c");
  EXPECT_DOUBLE_EQ(p.opts.revalidate, 0.5);
  EXPECT_DOUBLE_EQ(p.opts.negative_ttl, 3);
  EXPECT_EQ(p.opts.uid, 7u);
  EXPECT_EQ(p.opts.gid, 8u);
  EXPECT_EQ(p.opts.umask, 027u);
  EXPECT_TRUE(p.opts.foreground);
  // Ours are consumed; FUSE's pass through; ro is forced.
  EXPECT_FALSE(has_arg(p, "cache_dir"));
  EXPECT_TRUE(has_arg(p, "allow_other"));
  EXPECT_TRUE(has_arg(p, "-oro"));
  EXPECT_TRUE(has_arg(p, "subtype=netbootfs"));
}

TEST(Options, DefaultsAreDocumentedValues) {
  auto p = parse({"https://h/", "/m"});
  ASSERT_TRUE(p.result.ok());
  EXPECT_DOUBLE_EQ(p.opts.revalidate, 1);
  EXPECT_DOUBLE_EQ(p.opts.negative_ttl, 10);
  EXPECT_DOUBLE_EQ(p.opts.read_stall_timeout, 150);
  EXPECT_EQ(p.opts.cache_dir, "/var/cache/netbootfs");
  EXPECT_EQ(p.opts.umask, 0022u);
}

TEST(Options, FlagsAndRewriteOptions) {
  auto p = parse({"http://h/", "/tmp", "-o",
                  "insecure,no_default_rewrite,proxy_host=px,upstream_ip=10.0.0.5,config=/c.toml"});
  ASSERT_TRUE(p.result.ok()) << p.result.error().message;
  EXPECT_TRUE(p.opts.insecure);
  EXPECT_FALSE(p.opts.rewrite_default);
  EXPECT_EQ(p.opts.proxy_host, "px");
  EXPECT_EQ(p.opts.upstream_ip, "10.0.0.5");
  EXPECT_EQ(p.opts.config, "/c.toml");
  auto q = parse({"http://h/", "/tmp"});
  ASSERT_TRUE(q.result.ok());
  EXPECT_FALSE(q.opts.insecure);
  EXPECT_TRUE(q.opts.rewrite_default);
}

TEST(Options, UpstreamResilienceOptions) {
  auto d = parse({"http://h/", "/m"});
  ASSERT_TRUE(d.result.ok());
  EXPECT_DOUBLE_EQ(d.opts.retry_timeout, 5);
  EXPECT_DOUBLE_EQ(d.opts.missing_grace, 60);
  EXPECT_EQ(d.opts.down_after, 3u);
  EXPECT_DOUBLE_EQ(d.opts.probe_interval, 5);
  auto p = parse({"http://h/", "/m", "-o",
                  "retry_timeout=2.5,missing_grace=0.5,down_after=0,probe_interval=0.25"});
  ASSERT_TRUE(p.result.ok()) << p.result.error().message;
  EXPECT_DOUBLE_EQ(p.opts.retry_timeout, 2.5);
  EXPECT_DOUBLE_EQ(p.opts.missing_grace, 0.5);
  EXPECT_EQ(p.opts.down_after, 0u);
  EXPECT_DOUBLE_EQ(p.opts.probe_interval, 0.25);
  EXPECT_FALSE(has_arg(p, "retry_timeout"));
  EXPECT_FALSE(has_arg(p, "probe_interval"));
  auto bad = parse({"http://h/", "/m", "-o", "probe_interval=0"});
  ASSERT_FALSE(bad.result.ok());
  EXPECT_NE(bad.result.error().message.find("probe_interval"), std::string::npos);
}

TEST(Options, MetricsOptions) {
  auto d = parse({"http://h/", "/m"});
  ASSERT_TRUE(d.result.ok());
  EXPECT_TRUE(d.opts.metrics.empty());
  EXPECT_TRUE(d.opts.metrics_file.empty());
  EXPECT_DOUBLE_EQ(d.opts.metrics_interval, 15);
  auto p = parse({"http://h/", "/m", "-o",
                  "metrics=9555,metrics_file=/run/nbfs.prom,metrics_interval=2.5"});
  ASSERT_TRUE(p.result.ok()) << p.result.error().message;
  EXPECT_EQ(p.opts.metrics, "9555");
  EXPECT_EQ(p.opts.metrics_file, "/run/nbfs.prom");
  EXPECT_DOUBLE_EQ(p.opts.metrics_interval, 2.5);
  EXPECT_FALSE(has_arg(p, "metrics"));
  auto bad = parse({"http://h/", "/m", "-o", "metrics_interval=0"});
  ASSERT_FALSE(bad.result.ok());
  EXPECT_NE(bad.result.error().message.find("metrics_interval"), std::string::npos);
}

TEST(Options, MirrorsAreRepeatableInOrderAndNormalised) {
  auto d = parse({"http://h/", "/m"});
  ASSERT_TRUE(d.result.ok());
  EXPECT_TRUE(d.opts.mirrors.empty());
  EXPECT_EQ(d.opts.mirror_backoff, 30);
  auto p = parse({"http://h/", "/m", "-o", "mirror=http://m1/tftp,allow_other", "-o",
                  "mirror=http://m2:8080/x/,mirror_backoff=5"});
  ASSERT_TRUE(p.result.ok()) << p.result.error().message;
  ASSERT_EQ(p.opts.mirrors.size(), 2u);
  EXPECT_EQ(p.opts.mirrors[0], "http://m1/tftp/");
  EXPECT_EQ(p.opts.mirrors[1], "http://m2:8080/x/");
  EXPECT_EQ(p.opts.mirror_backoff, 5);
  EXPECT_TRUE(has_arg(p, "allow_other"));
  EXPECT_FALSE(has_arg(p, "mirror"));
  auto bad = parse({"http://h/", "/m", "-o", "mirror=ftp://m/"});
  ASSERT_FALSE(bad.result.ok());
  EXPECT_NE(bad.result.error().message.find("bad mirror URL 'ftp://m/'"), std::string::npos)
      << bad.result.error().message;
  EXPECT_FALSE(parse({"http://h/", "/m", "-o", "mirror_backoff=0.5"}).result.ok());
}

TEST(Options, MountAndFstabNoiseIsAccepted) {
  auto p = parse({"http://h/", "/m", "-o", "rw,_netdev,nofail,defaults,noauto,x-systemd.automount"});
  ASSERT_TRUE(p.result.ok()) << p.result.error().message;
  EXPECT_FALSE(has_arg(p, "_netdev"));
  EXPECT_FALSE(has_arg(p, "x-systemd"));
  EXPECT_FALSE(has_arg(p, "-orw"));
}

TEST(Options, Errors) {
  struct Case {
    std::vector<std::string> argv;
    const char* message_part;
  };
  const Case cases[] = {
      {{"/mnt"}, "missing argument"},
      {{"ftp://h/x", "/mnt"}, "bad upstream URL"},
      {{"http://h/", "/mnt", "-o", "log_level=chatty"}, "log_level"},
      {{"http://h/", "/mnt", "/extra"}, "too many"},
  };
  for (const auto& c : cases) {
    auto p = parse(c.argv);
    ASSERT_FALSE(p.result.ok()) << c.message_part;
    EXPECT_NE(p.result.error().message.find(c.message_part), std::string::npos)
        << p.result.error().message;
  }
}


TEST(Options, WanLimits) {
  auto p = parse({"http://h/", "/tmp", "-o", "max_rate=20M,max_downloads=4"});
  ASSERT_TRUE(p.result.ok()) << p.result.error().message;
  EXPECT_EQ(p.opts.max_rate, 20u << 20);
  EXPECT_EQ(p.opts.max_downloads, 4);
  EXPECT_FALSE(has_arg(p, "max_rate"));
  auto d = parse({"http://h/", "/tmp"});
  EXPECT_EQ(d.opts.max_rate, 0u);
  EXPECT_EQ(d.opts.max_downloads, 0);
  EXPECT_EQ(parse({"http://h/", "/tmp", "-o", "max_rate=3k"}).opts.max_rate, 3072u);
  EXPECT_EQ(parse({"http://h/", "/tmp", "-o", "max_rate=0"}).opts.max_rate, 0u) << "no limit";
  for (const char* bad : {"max_rate=", "max_rate=M", "max_rate=-3", "max_rate=12x"}) {
    EXPECT_FALSE(parse({"http://h/", "/tmp", "-o", bad}).result.ok()) << bad;
  }
  EXPECT_FALSE(parse({"http://h/", "/tmp", "-o", "max_rate=fast"}).result.ok());
  EXPECT_FALSE(parse({"http://h/", "/tmp", "-o", "max_downloads=-2"}).result.ok());
}

}  // namespace
}  // namespace netbootfs::fs

namespace netbootfs::fs {
namespace {

TEST(Options, CacheSizePinsAndWatermarks) {
  auto d = parse({"http://h/", "/m"});
  ASSERT_TRUE(d.result.ok());
  EXPECT_EQ(d.opts.max_cache_size, 0u);
  EXPECT_FALSE(d.opts.max_cache_size_given);
  EXPECT_TRUE(d.opts.pins.empty());
  EXPECT_EQ(d.opts.cache_high_watermark, 90u);
  EXPECT_EQ(d.opts.cache_low_watermark, 80u);
  auto p = parse({"http://h/", "/m", "-o", "max_cache_size=20G,pin=pxelinux.0,allow_other", "-o",
                  "pin=grub/*,cache_high_watermark=95,cache_low_watermark=70"});
  ASSERT_TRUE(p.result.ok()) << p.result.error().message;
  EXPECT_EQ(p.opts.max_cache_size, 20ull << 30);
  EXPECT_TRUE(p.opts.max_cache_size_given);
  EXPECT_EQ(p.opts.pins, (std::vector<std::string>{"pxelinux.0", "grub/*"}));
  EXPECT_EQ(p.opts.cache_high_watermark, 95u);
  EXPECT_EQ(p.opts.cache_low_watermark, 70u);
  EXPECT_TRUE(has_arg(p, "allow_other"));
  EXPECT_FALSE(has_arg(p, "pin"));
  EXPECT_FALSE(has_arg(p, "max_cache_size"));
  auto bad = parse({"http://h/", "/m", "-o", "max_cache_size=lots"});
  ASSERT_FALSE(bad.result.ok());
  EXPECT_EQ(bad.result.error().message.rfind("max_cache_size: bad size 'lots'", 0), 0u)
      << bad.result.error().message;
  EXPECT_FALSE(parse({"http://h/", "/m", "-o", "cache_low_watermark=90"}).result.ok());
  EXPECT_FALSE(parse({"http://h/", "/m", "-o", "cache_high_watermark=101"}).result.ok());
}

}  // namespace
}  // namespace netbootfs::fs

namespace netbootfs::fs {
namespace {

// Every error of parse_mount_args after fuse_opt, byte for byte (a prefix where
// the rest comes from another module's parser).
TEST(Options, ErrorMessagesBySite) {
  struct Case {
    std::vector<std::string> argv;
    const char* message;
    bool exact;
  };
  const Case cases[] = {
      {{"http://h/", "/m", "/x"}, "too many arguments (expected URL MOUNTPOINT)", true},
      {{"http://h/", "/m", "-o", "max_rate=fast"}, "max_rate: ", false},
      {{"http://h/", "/m", "-o", "max_downloads=-2"}, "max_downloads must be 0 (no limit) or more",
       true},
      {{"http://h/", "/m", "-o", "max_cache_size=lots"}, "max_cache_size: ", false},
      {{"http://h/", "/m", "-o", "cache_high_watermark=101"},
       "cache watermarks must satisfy 0 <= cache_low_watermark < cache_high_watermark <= 100", true},
      {{"http://h/", "/m", "-o", "cache_high_watermark=0"},
       "cache watermarks must satisfy 0 <= cache_low_watermark < cache_high_watermark <= 100", true},
      {{"http://h/", "/m", "-o", "pin="}, "pin= needs a glob", true},
      {{"/m"}, "missing argument: expected URL MOUNTPOINT", true},
      {{"ftp://h/x", "/m"}, "bad upstream URL 'ftp://h/x': ", false},
      {{"http://h/", "/m", "-o", "mirror=ftp://m/"}, "bad mirror URL 'ftp://m/': ", false},
      {{"http://h/", "/m", "-o", "mirror_backoff=0.5"}, "mirror_backoff must be at least 1", true},
      {{"http://h/", "/m", "-o", "cache_dir="}, "cache_dir must not be empty", true},
      {{"http://h/", "/m", "-o", "probe_interval=0.01"}, "probe_interval must be at least 0.05",
       true},
      {{"http://h/", "/m", "-o", "metrics_interval=0.05"}, "metrics_interval must be at least 0.1",
       true},
      {{"http://h/", "/m", "-o", "log_level=chatty"}, "unknown log_level 'chatty'", true},
  };
  for (const auto& c : cases) {
    auto p = parse(c.argv);
    ASSERT_FALSE(p.result.ok()) << c.message;
    EXPECT_EQ(p.result.error().code, EINVAL) << c.message;
    if (c.exact) {
      EXPECT_EQ(p.result.error().message, c.message);
    } else {
      EXPECT_EQ(p.result.error().message.rfind(c.message, 0), 0u) << p.result.error().message;
    }
  }
}

// With two errors the one checked first is reported; -h and -V skip all
// checks after the WAN limits.
TEST(Options, ErrorPrecedenceAndHelp) {
  struct Case {
    std::vector<std::string> argv;
    const char* message_start;  // nullptr: parses
  };
  const Case cases[] = {
      {{"http://h/", "/m", "-o", "max_rate=fast,max_downloads=-2"}, "max_rate: "},
      {{"http://h/", "/m", "-o", "max_downloads=-2,max_cache_size=lots"}, "max_downloads"},
      {{"/m", "-o", "max_cache_size=lots"}, "max_cache_size: "},
      {{"/m", "-o", "pin="}, "pin= needs a glob"},
      {{"ftp://h/x", "/m", "-o", "mirror=ftp://m/"}, "bad upstream URL"},
      {{"http://h/", "/m", "-o", "mirror=ftp://m/,mirror_backoff=0.5"}, "bad mirror URL"},
      {{"http://h/", "/m", "-o", "mirror_backoff=0.5,log_level=chatty"}, "mirror_backoff"},
      {{"http://h/", "/m", "-o", "cache_dir=,probe_interval=0"}, "cache_dir"},
      {{"http://h/", "/m", "-o", "probe_interval=0,metrics_interval=0"}, "probe_interval"},
      {{"http://h/", "/m", "-o", "metrics_interval=0,log_level=chatty"}, "metrics_interval"},
      {{"-h"}, nullptr},
      {{"-V", "-o", "max_cache_size=lots,pin=,log_level=chatty"}, nullptr},
      {{"-h", "ftp://h/x", "/m", "-o", "cache_high_watermark=101"}, nullptr},
      {{"-h", "-o", "max_rate=fast"}, "max_rate: "},
      {{"-V", "-o", "max_downloads=-2"}, "max_downloads"},
  };
  for (const auto& c : cases) {
    auto p = parse(c.argv);
    std::string argv;
    for (const auto& a : c.argv) argv += a + " ";
    if (c.message_start == nullptr) {
      EXPECT_TRUE(p.result.ok()) << argv << ": " << p.result.error().message;
      continue;
    }
    ASSERT_FALSE(p.result.ok()) << argv;
    EXPECT_EQ(p.result.error().message.rfind(c.message_start, 0), 0u)
        << argv << ": " << p.result.error().message;
  }
}

TEST(Options, HelpAndVersionAreReported) {
  EXPECT_TRUE(parse({"-h"}).opts.show_help);
  EXPECT_TRUE(parse({"--help"}).opts.show_help);
  EXPECT_TRUE(parse({"-V"}).opts.show_version);
  EXPECT_FALSE(parse({"http://h/", "/m"}).opts.show_help);
}

}  // namespace
}  // namespace netbootfs::fs
