// UpstreamHealth: whether upstream can be reached, and which origin (the
// base URL, then each mirror) a new request goes to.
//
// Contract
// - note() is told the end of every upstream exchange. A transfer whose
//   headers arrived came from a live origin, whatever came after.
// - Down: after down_after connection-level failures in a row (connect,
//   timeout, TLS; is_connection_failure()) while every origin's last answer
//   was one (an origin never asked counts as not failed). Any HTTP answer
//   brings it up. note() says when either happens, once; the caller probes
//   while down and refreshes what failed on the way down when up.
// - Origins: a transient failure (is_retryable()) puts that origin in
//   back-off (cache/origins.h), any other answer clears it.
// - Times are ms from a clock the caller passes (tests inject it).
// - Locks: mu_, a leaf; Origins' own mutex, a leaf. down() is lock-free.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "cache/http/client.h"
#include "cache/origins.h"

namespace netbootfs::cache {

class UpstreamHealth {
 public:
  struct Options {
    int down_after = 3;                // 0: never down
    int64_t probe_interval_ms = 5000;  // for the log line only
    Origins::Options origins;
  };
  // `bases`: the base URL first, then the mirrors (normalised, with a slash).
  UpstreamHealth(std::vector<std::string> bases, Options options);

  enum class Change { kNone, kWentDown, kWentUp };
  struct Noted {
    bool connection_failure = false;
    Change change = Change::kNone;
  };
  // `answered`: the response's headers arrived.
  Noted note(size_t origin, bool answered, http::Outcome outcome, long status, int64_t now);
  bool down() const { return down_.load(std::memory_order_relaxed); }

  // The origin a new request goes to now and the URL of `rel` there.
  std::pair<size_t, std::string> pick_url(const std::string& rel, bool directory,
                                          int64_t now) const;
  // The origin the next probe asks: each in turn.
  size_t next_probe_origin();
  size_t size() const { return origins_.size(); }
  const std::string& base(size_t origin) const { return origins_.base(origin); }

 private:
  void note_origin(size_t origin, http::Outcome outcome, long status, int64_t now);

  const Options options_;
  Origins origins_;
  std::mutex mu_;
  int conn_failures_ = 0;            // in a row, any origin (mu_)
  std::vector<bool> origin_failed_;  // each origin's last answer was one (mu_)
  std::atomic<size_t> probe_next_{0};
  std::atomic<bool> down_{false};
};

}  // namespace netbootfs::cache
