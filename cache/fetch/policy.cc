#include "cache/fetch/policy.h"

#include <algorithm>
#include <cerrno>
#include <cmath>

namespace netbootfs::cache {
namespace {

// [base/2, base) for jitter in [0, 1).
int64_t spread(int64_t base, double jitter) {
  jitter = std::clamp(jitter, 0.0, std::nextafter(1.0, 0.0));
  return base / 2 + static_cast<int64_t>(jitter * static_cast<double>(base / 2));
}

int64_t resume_base(int attempt) {
  return std::min<int64_t>(5000, int64_t{200} << std::clamp(attempt, 0, 5));
}

}  // namespace

OpenPlan plan_open(bool cached, int64_t validated_at_ms, int64_t now,
                   std::chrono::milliseconds revalidate) {
  if (!cached) return OpenPlan::kDownload;
  if (revalidate.count() > 0 && now - validated_at_ms < revalidate.count() &&
      now >= validated_at_ms) {
    return OpenPlan::kServeCached;
  }
  return OpenPlan::kRevalidate;
}

RevalidationVerdict judge_revalidation(http::Outcome outcome, long status) {
  if (outcome != http::Outcome::kOk) return RevalidationVerdict::kServeStale;
  switch (status) {
    case 304:
      return RevalidationVerdict::kNotModified;
    case 200:
      return RevalidationVerdict::kChanged;
    case 404:
    case 410:
      return RevalidationVerdict::kDeleted;
    case 401:
    case 403:
      return RevalidationVerdict::kDenied;
    default:
      return RevalidationVerdict::kServeStale;  // 5xx, 429, surprises
  }
}

int errno_for(http::Outcome outcome, long status) {
  if (outcome != http::Outcome::kOk) return EIO;
  switch (status) {
    case 404:
    case 410:
      return ENOENT;
    case 401:
    case 403:
      return EACCES;
    default:
      return EIO;
  }
}

bool is_retryable(http::Outcome outcome, long status) {
  if (outcome != http::Outcome::kOk) return http::is_transient(outcome);
  switch (status) {
    case 500:
    case 502:
    case 503:
    case 504:
    case 429:
      return true;
    default:
      return false;
  }
}

bool is_connection_failure(http::Outcome outcome) {
  return outcome == http::Outcome::kConnectFailed || outcome == http::Outcome::kTimeout ||
         outcome == http::Outcome::kTls;
}

std::optional<int64_t> plan_retry(int attempt, int64_t elapsed_ms, int64_t budget_ms,
                                  std::optional<int64_t> retry_after_s, double jitter) {
  if (attempt < 0 || budget_ms <= 0) return std::nullopt;
  const int64_t base = std::min<int64_t>(3200, int64_t{200} << std::min(attempt, 4));
  int64_t delay = spread(base, jitter);
  // Upstream asked for more time: coming back earlier would only fail again.
  if (retry_after_s && *retry_after_s > 0) {
    delay = std::max<int64_t>(delay, std::min<int64_t>(*retry_after_s, 86400) * 1000);
  }
  if (elapsed_ms + delay >= budget_ms) return std::nullopt;
  return delay;
}

NameVerdict judge_name(http::Outcome outcome, long status, std::string_view url,
                       std::string_view effective_url) {
  if (outcome != http::Outcome::kOk) return NameVerdict::kFailed;
  const bool to_slash = !url.empty() && url.back() != '/' &&
                        effective_url.size() == url.size() + 1 && effective_url.back() == '/' &&
                        effective_url.compare(0, url.size(), url) == 0;
  if (to_slash) {
    switch (status) {
      case 200:
      case 401:
      case 403:
      case 404:
      case 405:
        return NameVerdict::kDirectory;
      default:
        return NameVerdict::kFailed;
    }
  }
  if (status != 200) return NameVerdict::kFailed;
  // Redirected elsewhere to a directory URL: a directory, as before (what
  // a redirect to another place may be is not decided here).
  if (!effective_url.empty() && effective_url.back() == '/') return NameVerdict::kDirectory;
  return NameVerdict::kFile;
}

uint64_t read_end(uint64_t offset, uint64_t len, uint64_t size) {
  if (offset >= size) return offset;
  return len > size - offset ? size : offset + len;
}

std::optional<int64_t> plan_resume(bool resumable, int attempt, int64_t since_progress_ms,
                                   int64_t stall_ms, std::optional<int64_t> retry_after_s,
                                   double jitter) {
  if (!resumable || attempt < 0 || since_progress_ms >= stall_ms) return std::nullopt;
  int64_t delay = spread(resume_base(attempt), jitter);
  // Upstream answered the last resume 503/429 with Retry-After: wait as
  // asked, within the read stall budget.
  if (retry_after_s && *retry_after_s > 0) {
    delay = std::max<int64_t>(
        delay, std::min<int64_t>(std::min<int64_t>(*retry_after_s, 86400) * 1000, stall_ms / 2));
  }
  return delay;
}

int max_resumes(int64_t stall_ms) {
  // Resume k is decided at the sum of the shortest delays before it; one
  // decided at since_progress < stall_ms is sent even if it starts after.
  int n = 0;
  for (int64_t decided_at = 0; decided_at < stall_ms && n < 1000000; ++n) {
    decided_at += spread(resume_base(n), 0.0);
  }
  return n;
}

}  // namespace netbootfs::cache
