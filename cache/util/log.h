// One spdlog logger per module ("http", "cache", "fs", ...), created on first
// use. They share the sinks of the default logger, so choosing the sink
// (stderr or the journal) and the level once at start-up applies to all.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>

namespace netbootfs {

inline std::shared_ptr<spdlog::logger> logger(const char* name) {
  if (auto existing = spdlog::get(name)) return existing;
  auto def = spdlog::default_logger();
  auto made = std::make_shared<spdlog::logger>(name, def->sinks().begin(), def->sinks().end());
  made->set_level(def->level());
  made->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  try {
    spdlog::register_logger(made);
  } catch (const spdlog::spdlog_ex&) {  // another thread registered it first
    return spdlog::get(name);
  }
  return made;
}

// Sends every logger (the default and each module's) to `sink` alone. The
// module loggers copy the default's sinks when first used, so a change of
// sink (to syslog after the daemon forks into the background) must reach
// them too. Call it while no other thread logs.
inline void use_sink_everywhere(const spdlog::sink_ptr& sink) {
  spdlog::apply_all([&sink](const std::shared_ptr<spdlog::logger>& l) {
    l->sinks().clear();
    l->sinks().push_back(sink);
  });
}

// The cache module's logger (cache/ and cache/fetch/).
inline std::shared_ptr<spdlog::logger> cache_log() {
  static auto l = logger("cache");
  return l;
}

}  // namespace netbootfs
