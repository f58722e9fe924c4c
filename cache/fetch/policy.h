// Pure decisions of the fetch path: what an open does, what an upstream
// answer means, when a failed request is sent again and when a broken
// transfer resumes. No state, no I/O, no clock: every input is a parameter,
// so each is table-tested (tests/unit/cache/fetcher_decisions_test.cc,
// tests/unit/cache/policy_test.cc). Safe from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "cache/http/client.h"

namespace netbootfs::cache {

// The revalidation decision of an open.
enum class OpenPlan { kServeCached, kRevalidate, kDownload };
OpenPlan plan_open(bool cached, int64_t validated_at_ms, int64_t now_ms,
                   std::chrono::milliseconds revalidate);

// What a conditional GET's answer means for a cached file.
enum class RevalidationVerdict { kNotModified, kChanged, kDeleted, kDenied, kServeStale };
RevalidationVerdict judge_revalidation(http::Outcome outcome, long status);

// errno for an upstream answer that is not a success.
int errno_for(http::Outcome outcome, long status);

// Whether a failed exchange may succeed if sent again: transient outcomes and
// 500, 502, 503, 504, 429. Never 404/403/410/401.
bool is_retryable(http::Outcome outcome, long status);
// A failure that says upstream cannot be reached at all (connect, timeout,
// TLS): what upstream health counts.
bool is_connection_failure(http::Outcome outcome);

// The delay before retry number `attempt` (0 = the first retry), or nullopt
// to give up: capped exponential back-off 200 ms, 400 ms, ... 3.2 s with
// `jitter` in [0, 1) spreading it over [base/2, base); a Retry-After (seconds)
// longer than that is honoured when it fits. Gives up when the retry would
// start after `elapsed_ms` + delay >= `budget_ms`.
std::optional<int64_t> plan_retry(int attempt, int64_t elapsed_ms, int64_t budget_ms,
                                  std::optional<int64_t> retry_after_s, double jitter);

// What a HEAD of a name says it is. A redirect from NAME to NAME/ (the same
// URL with a slash added, which nginx and Apache send for a directory
// whether or not they list it) makes it a directory, whatever the directory
// URL then answers (200 listing, or 401/403/404/405 from a server that does
// not list). A 200 from any other directory URL is a directory too; any
// other 200 is a file; anything else failed (errno_for).
enum class NameVerdict { kFile, kDirectory, kFailed };
NameVerdict judge_name(http::Outcome outcome, long status, std::string_view url,
                       std::string_view effective_url);

// Where the answer to a read of `len` bytes at `offset` ends in a file of
// `size` bytes: the whole range clamped to the size, `offset` itself (an
// empty answer) at or past the end. Never overflows.
uint64_t read_end(uint64_t offset, uint64_t len, uint64_t size);

// The delay before resume number `attempt` (0 = the first) of a transfer
// broken after its size was reported, or nullopt to give up: when it cannot
// resume (`resumable`: a strong ETag and a known size) or made no progress
// for `stall_ms` (`since_progress_ms`). Capped exponential back-off 200 ms,
// 400 ms, ... 5 s with `jitter` in [0, 1) spreading it over [base/2, base);
// a Retry-After (seconds) longer than that is honoured up to stall_ms / 2.
std::optional<int64_t> plan_resume(bool resumable, int attempt, int64_t since_progress_ms,
                                   int64_t stall_ms, std::optional<int64_t> retry_after_s,
                                   double jitter);
// The most resumes plan_resume() allows a transfer that never progresses:
// every one with its shortest delay, the last one decided just before
// stall_ms ran out. What a test of a file that never completes may count.
int max_resumes(int64_t stall_ms);

}  // namespace netbootfs::cache
