// Module loggers follow a change of sink (cache/util/log.h): the daemon
// moves to syslog after it forks, and every module's lines must go there.
#include "cache/util/log.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

namespace netbootfs {
namespace {

TEST(Log, AModuleLoggerMadeBeforeTheSinkChangesFollowsIt) {
  auto before = logger("log-test-module");  // copies the default's sinks now
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  auto old_sinks = spdlog::default_logger()->sinks();
  use_sink_everywhere(sink);
  before->warn("after the change");
  logger("log-test-module")->warn("looked up again");
  spdlog::default_logger()->warn("the default too");
  EXPECT_NE(out.str().find("after the change"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("looked up again"), std::string::npos);
  EXPECT_NE(out.str().find("the default too"), std::string::npos);
  // Back to what the other tests log to.
  spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& l) { l->sinks() = old_sinks; });
}

}  // namespace
}  // namespace netbootfs
