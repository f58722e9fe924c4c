// The Fetcher's pure decisions: when an open revalidates, what an upstream
// answer to a conditional GET means, and which errno an answer becomes.
#include <gtest/gtest.h>

#include "cache/fetcher.h"

namespace netbootfs::cache {
namespace {

using std::chrono::milliseconds;
using O = http::Outcome;

TEST(PlanOpen, Table) {
  struct Case {
    bool cached;
    int64_t validated, now;
    int64_t revalidate_ms;
    OpenPlan want;
  };
  const Case cases[] = {
      {false, 0, 1000, 1000, OpenPlan::kDownload},
      {true, 1000, 1500, 1000, OpenPlan::kServeCached},   // inside the window
      {true, 1000, 1999, 1000, OpenPlan::kServeCached},
      {true, 1000, 2000, 1000, OpenPlan::kRevalidate},    // the window is half-open
      {true, 1000, 9000, 1000, OpenPlan::kRevalidate},
      {true, 1000, 1000, 0, OpenPlan::kRevalidate},       // revalidate=0: every open
      {true, 5000, 1000, 1000, OpenPlan::kRevalidate},    // clock went back: do not trust
      {true, 0, 999, 1000, OpenPlan::kServeCached},       // validated at the epoch, just inside
  };
  for (const auto& c : cases) {
    EXPECT_EQ(plan_open(c.cached, c.validated, c.now, milliseconds(c.revalidate_ms)), c.want)
        << c.cached << " " << c.validated << " " << c.now << " " << c.revalidate_ms;
  }
}

TEST(JudgeRevalidation, Table) {
  struct Case {
    O outcome;
    long status;
    RevalidationVerdict want;
  };
  const Case cases[] = {
      {O::kOk, 304, RevalidationVerdict::kNotModified},
      {O::kOk, 200, RevalidationVerdict::kChanged},
      {O::kOk, 404, RevalidationVerdict::kDeleted},
      {O::kOk, 410, RevalidationVerdict::kDeleted},
      {O::kOk, 403, RevalidationVerdict::kDenied},
      {O::kOk, 500, RevalidationVerdict::kServeStale},
      {O::kOk, 503, RevalidationVerdict::kServeStale},
      {O::kOk, 429, RevalidationVerdict::kServeStale},
      {O::kConnectFailed, 0, RevalidationVerdict::kServeStale},
      {O::kTimeout, 0, RevalidationVerdict::kServeStale},
      {O::kTransferBroken, 200, RevalidationVerdict::kServeStale},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(judge_revalidation(c.outcome, c.status), c.want) << c.status;
  }
}

TEST(ErrnoFor, Table) {
  EXPECT_EQ(errno_for(O::kOk, 404), ENOENT);
  EXPECT_EQ(errno_for(O::kOk, 410), ENOENT);
  EXPECT_EQ(errno_for(O::kOk, 403), EACCES);
  EXPECT_EQ(errno_for(O::kOk, 401), EACCES);
  EXPECT_EQ(errno_for(O::kOk, 500), EIO);
  EXPECT_EQ(errno_for(O::kTimeout, 0), EIO);
  EXPECT_EQ(errno_for(O::kConnectFailed, 0), EIO);
  EXPECT_EQ(errno_for(O::kProtocol, 200), EIO);
}

TEST(IsRetryable, Table) {
  EXPECT_TRUE(is_retryable(O::kConnectFailed, 0));
  EXPECT_TRUE(is_retryable(O::kTimeout, 0));
  EXPECT_TRUE(is_retryable(O::kTransferBroken, 200));
  for (long st : {500L, 502L, 503L, 504L, 429L}) EXPECT_TRUE(is_retryable(O::kOk, st)) << st;
  for (long st : {200L, 206L, 304L, 400L, 401L, 403L, 404L, 410L, 416L, 501L}) {
    EXPECT_FALSE(is_retryable(O::kOk, st)) << st;
  }
  EXPECT_FALSE(is_retryable(O::kTls, 0)) << "a certificate does not fix itself";
  EXPECT_FALSE(is_retryable(O::kProtocol, 200));
  EXPECT_FALSE(is_retryable(O::kAborted, 0));
  EXPECT_TRUE(is_connection_failure(O::kConnectFailed));
  EXPECT_TRUE(is_connection_failure(O::kTimeout));
  EXPECT_TRUE(is_connection_failure(O::kTls));
  EXPECT_FALSE(is_connection_failure(O::kOk));
  EXPECT_FALSE(is_connection_failure(O::kTransferBroken)) << "upstream answered";
}

TEST(PlanRetry, Table) {
  struct Case {
    int attempt;
    int64_t elapsed, budget;
    std::optional<int64_t> retry_after;
    double jitter;
    std::optional<int64_t> want;
  };
  const std::optional<int64_t> no;
  const Case cases[] = {
      {0, 0, 5000, no, 0.0, 100},        // base 200 ms: [100, 200)
      {0, 0, 5000, no, 0.999, 199},
      {1, 0, 5000, no, 0.0, 200},        // doubles
      {2, 0, 5000, no, 0.5, 600},        // base 800
      {4, 0, 50000, no, 0.0, 1600},      // base 3200: the cap
      {9, 0, 50000, no, 0.0, 1600},      // stays capped (no shift overflow)
      {40, 0, 50000, no, 0.999, 3198},
      {0, 0, 5000, 1, 0.0, 1000},        // Retry-After: 1 s honoured
      {0, 3000, 5000, 1, 0.0, 1000},     // still fits
      {0, 4000, 5000, 1, 0.0, no},       // would end at the budget: give up
      {0, 0, 5000, 120, 0.0, no},        // asks for more than the budget allows
      {3, 0, 5000, 0, 0.0, 800},         // Retry-After: 0 is no constraint
      {0, 4950, 5000, no, 0.0, no},      // the budget is spent
      {0, 0, 0, no, 0.0, no},            // retry_timeout=0: never
      {-1, 0, 5000, no, 0.0, no},
      {0, 0, 5000, no, 7.0, 199},        // jitter clamped
  };
  for (const auto& c : cases) {
    EXPECT_EQ(plan_retry(c.attempt, c.elapsed, c.budget, c.retry_after, c.jitter), c.want)
        << c.attempt << " " << c.elapsed << " " << c.budget << " "
        << c.retry_after.value_or(-1) << " " << c.jitter;
  }
  // The whole schedule of a dead upstream stays within the budget.
  int64_t t = 0;
  int n = 0;
  while (auto d = plan_retry(n, t, 5000, std::nullopt, 0.999)) {
    t += *d;
    ++n;
  }
  EXPECT_LT(t, 5000);
  EXPECT_GE(n, 4);
}

}  // namespace
}  // namespace netbootfs::cache
