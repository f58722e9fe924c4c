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

}  // namespace
}  // namespace netbootfs::cache
