#include "fs/ctl/format.h"

#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <iostream>

#include "cache/evictor.h"

namespace netbootfs::fs::ctl {
namespace {

using control::count;

unsigned long long ull(uint64_t v) { return static_cast<unsigned long long>(v); }

__attribute__((format(printf, 1, 2))) std::string strprintf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list again;
  va_copy(again, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::string out(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(out.data(), out.size() + 1, fmt, again);
  va_end(again);
  return out;
}

}  // namespace

int fail(const std::string& msg) {
  std::fprintf(stderr, "netbootfsctl: %s\n", msg.c_str());
  return 2;
}

void print_json(const nlohmann::json& j) { std::cout << j.dump(2) << "\n"; }

std::string iso_time(int64_t t) {
  if (t <= 0) return "-";
  std::time_t tt = t;
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    u++;
  }
  return strprintf(u ? "%.1f %s" : "%.0f %s", b, units[u]);
}

std::string progress_line(const control::PrefetchCounts& c, double seconds) {
  const uint64_t done = c.files + c.failures;
  const uint64_t total = done + c.queued;
  const int width = 30;
  const int filled = total ? static_cast<int>(width * done / total) : 0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  return strprintf("\r[%s] %llu/%llu files, %s, %llu failed, %.0f s ", bar.c_str(), ull(done),
                   ull(total), human_bytes(static_cast<double>(c.bytes)).c_str(), ull(c.failures),
                   seconds);
}

ProgressBar::ProgressBar(bool enabled)
    : enabled_(enabled), start_(std::chrono::steady_clock::now()) {}

void ProgressBar::draw(const control::PrefetchCounts& c) const {
  if (!enabled_) return;
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::fputs(progress_line(c, secs).c_str(), stdout);
  std::fflush(stdout);
}

void ProgressBar::end() const {
  if (enabled_) std::printf("\n");
}

std::string summary_line(const char* verb, const cache::BundleSummary& s, const std::string& inside,
                         const std::string& after) {
  return strprintf("%s %llu entries (%llu blobs, %llu bytes%s)%s", verb, ull(s.entries),
                   ull(s.blobs), ull(s.bytes), inside.c_str(), after.c_str());
}

nlohmann::json summary_json(const cache::BundleSummary& s) {
  return {{"entries", s.entries},
          {"blobs", s.blobs},
          {"bytes", s.bytes},
          {"blobs_present", s.blobs_present}};
}

std::string gc_line(const nlohmann::json& r) {
  return strprintf(
      "gc: limit %s; evicted %llu blobs (%llu bytes, %llu entries); cache holds %s in %llu blobs",
      cache::format_size(count(r, control::kLimit)).c_str(), ull(count(r, control::kEvictedBlobs)),
      ull(count(r, control::kEvictedBytes)), ull(count(r, control::kRemovedEntries)),
      cache::format_size(count(r, control::kBytes)).c_str(), ull(count(r, control::kObjects)));
}

void print_gc(const nlohmann::json& r, bool json) {
  if (json) return print_json(r);
  std::printf("%s\n", gc_line(r).c_str());
}

std::string invalidate_line(const nlohmann::json& r) {
  return strprintf(
      "invalidated: %llu cached files will revalidate, %llu negative entries and %llu "
      "listings dropped (%llu kernel notifications)",
      ull(count(r, control::kFiles)), ull(count(r, control::kNegatives)),
      ull(count(r, control::kListings)), ull(count(r, control::kKernelNotifications)));
}

std::string live_status_text(const nlohmann::json& live) {
  std::string out = strprintf(
      "mount:      live at %s, pid %lld, up %.0f s\n"
      "upstream:   %s (%s)\n"
      "hits:       %llu\nmisses:     %llu\nhit ratio:  %.3f\n"
      "downloads:  %llu (%llu bytes)\n",
      live.value(control::kMountpoint, "?").c_str(),
      static_cast<long long>(live.value(control::kPid, int64_t{0})),
      live.value(control::kUptimeSeconds, 0.0), live.value(control::kUrl, "?").c_str(),
      live.value(control::kUpstreamUp, false) ? "up" : "down", ull(count(live, control::kHits)),
      ull(count(live, control::kMisses)), live.value(control::kHitRatio, 0.0),
      ull(count(live, control::kDownloads)), ull(count(live, control::kDownloadBytes)));
  if (live.contains(control::kCacheLimit)) {
    out += strprintf("limit:      %s (%llu evictions)\n",
                     cache::format_size(count(live, control::kCacheLimit)).c_str(),
                     ull(count(live, control::kEvictions)));
  }
  return out;
}

int report_prefetch(nlohmann::json result, const std::string& via, bool json) {
  const uint64_t failures = count(result, control::kFailures);
  if (json) {
    result["via"] = via;
    print_json(result);
    return failures ? 1 : 0;
  }
  for (const auto& f : result.value(control::kFailed, nlohmann::json::array())) {
    std::fprintf(stderr, "netbootfsctl: %s: %s\n", f.value(control::kPath, "").c_str(),
                 f.value(control::kError, "").c_str());
  }
  std::printf("prefetched %llu files (%s), %llu failed, in %.1f s, %s\n",
              ull(count(result, control::kFiles)),
              human_bytes(static_cast<double>(count(result, control::kBytes))).c_str(),
              ull(failures), result.value(control::kSeconds, 0.0), via.c_str());
  return failures ? 1 : 0;
}

}  // namespace netbootfs::fs::ctl
