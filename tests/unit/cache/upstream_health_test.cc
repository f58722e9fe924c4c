// UpstreamHealth (cache/fetch/upstream_health.h): down after down_after
// connection failures while every origin failed, up at any answer, and the
// origin each request goes to, on an injected clock.
#include "cache/fetch/upstream_health.h"

#include <gtest/gtest.h>

namespace netbootfs::cache {
namespace {

using O = http::Outcome;
using Change = UpstreamHealth::Change;

UpstreamHealth make(std::vector<std::string> bases, int down_after = 3) {
  UpstreamHealth::Options o;
  o.down_after = down_after;
  o.origins = Origins::Options{1000, 8000};
  return UpstreamHealth(std::move(bases), o);
}

TEST(UpstreamHealth, DownAfterConnectionFailuresInARowAndUpAtAnyAnswer) {
  auto h = make({"http://a/"});
  struct Step {
    bool answered;
    O outcome;
    long status;
    bool conn_failure;
    Change change;
    bool down_after;
  };
  const Step steps[] = {
      {false, O::kConnectFailed, 0, true, Change::kNone, false},
      {false, O::kTimeout, 0, true, Change::kNone, false},
      {true, O::kOk, 503, false, Change::kNone, false},  // an answer resets the run
      {false, O::kTls, 0, true, Change::kNone, false},
      {false, O::kConnectFailed, 0, true, Change::kNone, false},
      {false, O::kConnectFailed, 0, true, Change::kWentDown, true},
      {false, O::kConnectFailed, 0, true, Change::kNone, true},  // said once
      {true, O::kTimeout, 0, false, Change::kWentUp, false},  // headers came: alive
      {true, O::kOk, 200, false, Change::kNone, false},
  };
  int i = 0;
  for (const auto& s : steps) {
    const auto n = h.note(0, s.answered, s.outcome, s.status, 1000);
    EXPECT_EQ(n.connection_failure, s.conn_failure) << "step " << i;
    EXPECT_EQ(n.change, s.change) << "step " << i;
    EXPECT_EQ(h.down(), s.down_after) << "step " << i;
    ++i;
  }
}

TEST(UpstreamHealth, NotDownWhileAMirrorStillAnswers) {
  auto h = make({"http://a/", "http://b/"}, 2);
  h.note(1, true, O::kOk, 200, 0);
  for (int i = 0; i < 5; ++i) h.note(0, false, O::kConnectFailed, 0, 0);
  EXPECT_FALSE(h.down()) << "b's last answer was not a failure";
  EXPECT_EQ(h.note(1, false, O::kConnectFailed, 0, 0).change, Change::kWentDown);
}

TEST(UpstreamHealth, DownAfterZeroNeverGoesDown) {
  auto h = make({"http://a/"}, 0);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(h.note(0, false, O::kTimeout, 0, 0).change, Change::kNone);
  EXPECT_FALSE(h.down());
}

TEST(UpstreamHealth, ATransientFailureSendsTheNextRequestToTheNextOriginForItsBackoff) {
  auto h = make({"http://a/", "http://b/"});
  EXPECT_EQ(h.pick_url("x/y", false, 0), (std::pair<size_t, std::string>{0, "http://a/x/y"}));
  EXPECT_EQ(h.pick_url("x", true, 0).second, "http://a/x/");
  EXPECT_EQ(h.pick_url("", false, 0).second, "http://a/");
  h.note(0, true, O::kOk, 503, 0);  // transient: a backs off 1 s
  EXPECT_EQ(h.pick_url("x", false, 500).first, 1u);
  EXPECT_EQ(h.pick_url("x", false, 1000).first, 0u) << "the back-off ended";
  h.note(0, true, O::kOk, 404, 1000);  // an answer about the file, not the origin
  EXPECT_EQ(h.pick_url("x", false, 1001).first, 0u);
}

TEST(UpstreamHealth, ProbesAskEachOriginInTurn) {
  auto h = make({"http://a/", "http://b/", "http://c/"});
  EXPECT_EQ(h.next_probe_origin(), 0u);
  EXPECT_EQ(h.next_probe_origin(), 1u);
  EXPECT_EQ(h.next_probe_origin(), 2u);
  EXPECT_EQ(h.next_probe_origin(), 0u);
}

}  // namespace
}  // namespace netbootfs::cache
