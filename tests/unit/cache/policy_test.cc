// plan_resume and max_resumes (cache/fetch/policy.h): the back-off of a
// broken transfer's resumes, and the bound a test of a file that never
// completes may count.
#include "cache/fetch/policy.h"

#include <gtest/gtest.h>

#include <string>

namespace netbootfs::cache {
namespace {

TEST(PlanResume, Table) {
  struct Case {
    bool resumable;
    int attempt;
    int64_t since_progress, stall;
    std::optional<int64_t> retry_after;
    double jitter;
    std::optional<int64_t> want;
  };
  const Case cases[] = {
      {true, 0, 0, 35000, std::nullopt, 0.0, 100},  // base 200 ms: [100, 200)
      {true, 0, 0, 35000, std::nullopt, 0.5, 150},
      {true, 1, 0, 35000, std::nullopt, 0.0, 200},
      {true, 4, 0, 35000, std::nullopt, 0.0, 1600},
      {true, 5, 0, 35000, std::nullopt, 0.0, 2500},  // capped at 5 s
      {true, 5, 0, 35000, std::nullopt, 0.999, 4997},
      {true, 40, 0, 35000, std::nullopt, 0.0, 2500},  // no overflow however many
      {true, 0, 0, 35000, std::nullopt, 7.0, 199},    // jitter clamped below 1
      {true, 0, 0, 35000, std::nullopt, -1.0, 100},
      {true, 0, 0, 35000, int64_t{3}, 0.0, 3000},  // Retry-After honoured
      {true, 0, 0, 4000, int64_t{3}, 0.0, 2000},   // ... up to half the stall budget
      {true, 5, 0, 35000, int64_t{1}, 0.0, 2500},  // shorter than the back-off: ignored
      {true, 0, 0, 35000, int64_t{0}, 0.0, 100},
      {true, 0, 0, 35000, int64_t{INT64_MAX / 1000}, 0.0, 17500},  // huge: no overflow
      {true, 3, 34999, 35000, std::nullopt, 0.0, 800},           // progress just inside the budget
      {true, 3, 35000, 35000, std::nullopt, 0.0, std::nullopt},  // stalled: give up
      {true, 0, 0, 0, std::nullopt, 0.0, std::nullopt},          // no budget at all
      {false, 0, 0, 35000, std::nullopt, 0.0, std::nullopt},     // weak ETag / no size
      {true, -1, 0, 35000, std::nullopt, 0.0, std::nullopt},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(
        plan_resume(c.resumable, c.attempt, c.since_progress, c.stall, c.retry_after, c.jitter),
        c.want)
        << c.resumable << " attempt " << c.attempt << " since " << c.since_progress << " stall "
        << c.stall << " jitter " << c.jitter;
  }
}

TEST(JudgeName, Table) {
  using O = http::Outcome;
  using V = NameVerdict;
  const std::string d = "http://s/tftp/images";
  struct Case {
    O outcome;
    long status;
    std::string effective;
    V want;
  } cases[] = {
      {O::kOk, 200, d, V::kFile},
      {O::kOk, 200, "", V::kFile},              // no redirect information
      {O::kOk, 200, d + "/", V::kDirectory},    // D -> D/, listed
      {O::kOk, 403, d + "/", V::kDirectory},    // nginx autoindex off
      {O::kOk, 404, d + "/", V::kDirectory},    // servers that 404 the directory URL
      {O::kOk, 401, d + "/", V::kDirectory},
      {O::kOk, 405, d + "/", V::kDirectory},
      {O::kOk, 500, d + "/", V::kFailed},       // a failure, not a verdict on the name
      {O::kOk, 403, d, V::kFailed},             // a file we may not read: EACCES
      {O::kOk, 404, d, V::kFailed},
      {O::kOk, 403, "http://s/tftp/other/", V::kFailed},  // elsewhere, refused
      {O::kOk, 403, d + "//", V::kFailed},
      {O::kOk, 403, "http://t/tftp/images/", V::kFailed},  // another host
      {O::kOk, 200, "http://s/tftp/other/", V::kDirectory},  // as before (a listing)
      {O::kTimeout, 0, d + "/", V::kFailed},
      {O::kConnectFailed, 0, "", V::kFailed},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(judge_name(c.outcome, c.status, d, c.effective), c.want)
        << c.status << " " << c.effective;
  }
  EXPECT_EQ(judge_name(O::kOk, 403, "http://s/", "http://s//"), V::kFailed) << "the root";
}

TEST(ReadEnd, Table) {
  struct Case {
    uint64_t offset, len, size, want;
  } cases[] = {
      {0, 100, 1000, 100},
      {900, 100, 1000, 1000},                                // up to the last byte
      {950, 100, 1000, 1000},                                // clamped to the size
      {1000, 100, 1000, 1000},                               // at EOF: empty
      {5000, 100, 1000, 5000},                               // past EOF: empty, never before offset
      {10, 0, 1000, 10},                                     // zero length
      {0, 0, 0, 0},                                          // an empty file
      {UINT64_MAX - 1, UINT64_MAX, UINT64_MAX, UINT64_MAX},  // no overflow
      {5, UINT64_MAX, UINT64_MAX, UINT64_MAX},               // an unknown size
      {UINT64_MAX, 1, 1000, UINT64_MAX},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(read_end(c.offset, c.len, c.size), c.want)
        << c.offset << "+" << c.len << " of " << c.size;
  }
}

TEST(MaxResumes, EveryResumeAtItsShortestDelay) {
  // Decided at 0, 0.1, 0.3, 0.7, 1.5, 3.1 s, then every 2.5 s: 18 before 35 s.
  EXPECT_EQ(max_resumes(35000), 18);
  EXPECT_EQ(max_resumes(1), 1);  // the first is decided at once
  EXPECT_EQ(max_resumes(100), 1);
  EXPECT_EQ(max_resumes(101), 2);
  EXPECT_EQ(max_resumes(3100), 5);
  EXPECT_EQ(max_resumes(3101), 6);
  EXPECT_EQ(max_resumes(0), 0);
  // The bound agrees with plan_resume itself: walk it with jitter 0.
  for (int64_t stall : {500, 5000, 35000, 150000}) {
    int n = 0;
    int64_t t = 0;
    while (auto d = plan_resume(true, n, t, stall, std::nullopt, 0.0)) {
      t += *d;
      ++n;
    }
    EXPECT_EQ(n, max_resumes(stall)) << stall;
  }
}

}  // namespace
}  // namespace netbootfs::cache
