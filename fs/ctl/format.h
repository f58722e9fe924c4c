// format: what netbootfsctl prints, as text its commands share and tests
// can compare (sizes, times, the progress bar, the summary lines), and the
// two ways it prints (a JSON document on stdout, an error line on stderr).
//
// Contract
// - The *_line() and *_text() functions are pure: the same input gives the
//   same bytes, without the trailing newline unless they say otherwise. They
//   are netbootfsctl's output: scripts read it, so it does not change.
// - Replies from the mount are read with control::count() and friends: a
//   field an older mount does not send reads as 0.
// - fail() and print_json() write to stderr and stdout; ProgressBar draws on
//   stdout. Not thread-safe (stdio of one command).
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "cache/bundle.h"
#include "fs/control_protocol.h"

namespace netbootfs::fs::ctl {

// "netbootfsctl: MSG" on stderr; returns 2, the exit code of a usage or I/O
// error.
int fail(const std::string& msg);

// `j` indented by two, and a newline, on stdout (--json).
void print_json(const nlohmann::json& j);

// Unix seconds as "2026-11-30T12:00:00Z" (UTC); "-" for 0 or less (unknown).
std::string iso_time(int64_t t);

// "512 B", "1.5 KiB", ... up to TiB, one decimal above bytes.
std::string human_bytes(double bytes);

// One frame of the prefetch progress bar, starting with '\r' (it redraws
// the terminal line): "[####....] DONE/TOTAL files, BYTES, N failed, S s ".
std::string progress_line(const control::PrefetchCounts& c, double seconds);

// Draws progress_line() frames when enabled (stdout is a terminal, no
// --json); the seconds count from construction.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled);
  bool enabled() const { return enabled_; }
  void draw(const control::PrefetchCounts& c) const;
  // Ends the bar's line (a newline), when enabled.
  void end() const;

 private:
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
};

// A bundle's counts: "VERB N entries (B blobs, X bytes<inside>)<after>".
std::string summary_line(const char* verb, const cache::BundleSummary& s, const std::string& inside,
                         const std::string& after);
nlohmann::json summary_json(const cache::BundleSummary& s);

// gc's result (the mount's reply, or the same fields from an unmounted gc):
// "gc: limit L; evicted ...; cache holds X in N blobs".
std::string gc_line(const nlohmann::json& r);
// gc_line() or, with --json, every field.
void print_gc(const nlohmann::json& r, bool json);

// invalidate's reply: "invalidated: N cached files will revalidate, ...".
std::string invalidate_line(const nlohmann::json& r);

// The live part of `status` from the mount's status reply: "mount:",
// "upstream:", counters, and "limit:" when the mount has one. Several lines,
// each ending with a newline.
std::string live_status_text(const nlohmann::json& live);

// prefetch's outcome (the mount's reply or control::prefetch_reply() of an
// unmounted one), fetched `via` ("through the mount", "directly from URL"):
// with --json the reply and "via"; otherwise one stderr line per failed
// file and "prefetched N files (...) ..." on stdout. The exit code: 1 when
// some file failed, else 0.
int report_prefetch(nlohmann::json result, const std::string& via, bool json);

}  // namespace netbootfs::fs::ctl
