#include <gtest/gtest.h>

#include <string>

#include "fs/ctl/format.h"

namespace netbootfs::fs::ctl {
namespace {

using nlohmann::json;

TEST(CtlFormat, IsoTime) {
  struct Case {
    int64_t t;
    const char* want;
  } cases[] = {
      {0, "-"},
      {-5, "-"},
      {1, "1970-01-01T00:00:01Z"},
      {1700000000, "2023-11-14T22:13:20Z"},
      {1709164800, "2024-02-29T00:00:00Z"},
  };
  for (const auto& c : cases) EXPECT_EQ(iso_time(c.t), c.want) << c.t;
}

TEST(CtlFormat, HumanBytes) {
  struct Case {
    double bytes;
    const char* want;
  } cases[] = {
      {0, "0 B"},
      {1023, "1023 B"},
      {1024, "1.0 KiB"},
      {1536, "1.5 KiB"},
      {1048576, "1.0 MiB"},
      {3.25 * 1073741824.0, "3.2 GiB"},
      {5 * 1099511627776.0, "5.0 TiB"},
      {1024 * 1099511627776.0, "1024.0 TiB"},
  };
  for (const auto& c : cases) EXPECT_EQ(human_bytes(c.bytes), c.want) << c.bytes;
}

TEST(CtlFormat, ProgressLine) {
  struct Case {
    control::PrefetchCounts counts;
    double secs;
    const char* want;
  } cases[] = {
      {{0, 0, 0, 0}, 0, "\r[..............................] 0/0 files, 0 B, 0 failed, 0 s "},
      {{3, 1, 2048, 4},
       12.4,
       "\r[###############...............] 4/8 files, 2.0 KiB, 1 failed, 12 s "},
      {{10, 0, 1048576, 0},
       1.6,
       "\r[##############################] 10/10 files, 1.0 MiB, 0 failed, 2 s "},
      {{1, 0, 5, 99}, 0, "\r[..............................] 1/100 files, 5 B, 0 failed, 0 s "},
  };
  for (const auto& c : cases) EXPECT_EQ(progress_line(c.counts, c.secs), c.want);
}

TEST(CtlFormat, SummaryLine) {
  cache::BundleSummary s;
  s.entries = 3;
  s.blobs = 2;
  s.bytes = 100;
  s.blobs_present = 1;
  EXPECT_EQ(summary_line("exported", s, "", " to /tmp/b.tar"),
            "exported 3 entries (2 blobs, 100 bytes) to /tmp/b.tar");
  EXPECT_EQ(summary_line("imported", s, "; 1 blobs already cached", ""),
            "imported 3 entries (2 blobs, 100 bytes; 1 blobs already cached)");
  EXPECT_EQ(summary_json(s).dump(), R"({"blobs":2,"blobs_present":1,"bytes":100,"entries":3})");
}

TEST(CtlFormat, ReplyLines) {
  struct Case {
    std::string (*line)(const json&);
    const char* reply;
    const char* want;
  } cases[] = {
      {gc_line,
       R"({"limit":2048,"evicted_blobs":2,"evicted_bytes":300,"removed_entries":3,"bytes":700,)"
       R"("objects":5})",
       "gc: limit 2.0 KiB (2048 bytes); evicted 2 blobs (300 bytes, 3 entries); cache holds 700 "
       "bytes in 5 blobs"},
      {gc_line, "{}",
       "gc: limit 0 bytes; evicted 0 blobs (0 bytes, 0 entries); cache holds 0 bytes in 0 blobs"},
      {invalidate_line, R"({"files":2,"negatives":1,"listings":0,"kernel_notifications":5})",
       "invalidated: 2 cached files will revalidate, 1 negative entries and 0 listings dropped "
       "(5 kernel notifications)"},
      {invalidate_line, "{}",
       "invalidated: 0 cached files will revalidate, 0 negative entries and 0 listings dropped "
       "(0 kernel notifications)"},
  };
  for (const auto& c : cases) EXPECT_EQ(c.line(json::parse(c.reply)), c.want) << c.reply;
}

TEST(CtlFormat, LiveStatusFromTheMountsReply) {
  control::StatusReply s;
  s.mountpoint = "/srv/tftpboot";
  s.url = "https://server/tftp/";
  s.pid = 42;
  s.uptime_seconds = 12.2;
  s.upstream_up = true;
  s.hits = 3;
  s.misses = 1;
  s.downloads = 1;
  s.download_bytes = 100;
  s.cache_limit = 1024;
  s.evictions = 2;
  EXPECT_EQ(live_status_text(control::status_reply(s)),
            "mount:      live at /srv/tftpboot, pid 42, up 12 s\n"
            "upstream:   https://server/tftp/ (up)\n"
            "hits:       3\n"
            "misses:     1\n"
            "hit ratio:  0.750\n"
            "downloads:  1 (100 bytes)\n"
            "limit:      1.0 KiB (1024 bytes) (2 evictions)\n");
  // An older mount: no limit, fields missing.
  EXPECT_EQ(live_status_text(json{{"mountpoint", "/m"}}),
            "mount:      live at /m, pid 0, up 0 s\n"
            "upstream:   ? (down)\n"
            "hits:       0\n"
            "misses:     0\n"
            "hit ratio:  0.000\n"
            "downloads:  0 (0 bytes)\n");
}

}  // namespace
}  // namespace netbootfs::fs::ctl
