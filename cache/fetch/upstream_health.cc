#include "cache/fetch/upstream_health.h"

#include <algorithm>

#include "cache/fetch/policy.h"
#include "cache/http/url.h"
#include "cache/util/log.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return cache_log(); }

}  // namespace

UpstreamHealth::UpstreamHealth(std::vector<std::string> bases, Options options)
    : options_(options),
      origins_(std::move(bases), options.origins),
      origin_failed_(origins_.size(), false) {}

std::pair<size_t, std::string> UpstreamHealth::pick_url(const std::string& rel, bool directory,
                                                        int64_t now) const {
  const size_t o = origins_.pick(now);
  const std::string& base = origins_.base(o);
  return {o, rel.empty() ? base : http::join_url(base, rel, directory)};
}

size_t UpstreamHealth::next_probe_origin() { return probe_next_++ % origins_.size(); }

void UpstreamHealth::note_origin(size_t origin, http::Outcome raw, long status, int64_t now) {
  if (origins_.size() <= 1) return;
  if (is_retryable(raw, raw == http::Outcome::kOk ? status : 0)) {
    if (int64_t d = origins_.failed(origin, now)) {
      log()->warn("origin {}: {} {}: using the next origin for {} ms", origins_.base(origin),
                  http::to_string(raw), status, d);
    }
  } else if (raw == http::Outcome::kOk && origins_.succeeded(origin)) {
    log()->info("origin {} answers again", origins_.base(origin));
  }
}

UpstreamHealth::Noted UpstreamHealth::note(size_t origin, bool answered, http::Outcome raw,
                                           long status, int64_t now) {
  note_origin(origin, raw, status, now);
  // Health: a transfer that stalls after the headers came from a live origin.
  const http::Outcome o = answered ? http::Outcome::kOk : raw;
  Noted out;
  std::lock_guard lk(mu_);
  if (o == http::Outcome::kOk) {
    conn_failures_ = 0;
    origin_failed_[origin] = false;
    if (down_.exchange(false)) out.change = Change::kWentUp;
  } else if (is_connection_failure(o)) {
    out.connection_failure = true;
    ++conn_failures_;
    origin_failed_[origin] = true;
    // Down: no origin is left that could answer (requests in flight to
    // one failing origin do not make a working mirror "down").
    const bool all =
        std::all_of(origin_failed_.begin(), origin_failed_.end(), [](bool f) { return f; });
    if (options_.down_after > 0 && conn_failures_ >= options_.down_after && all && !down_.load()) {
      down_.store(true);
      out.change = Change::kWentDown;
    }
  }
  if (out.change == Change::kWentDown) {
    log()->warn(
        "upstream {} is down after {} connection failures: serving the cache only, "
        "probing every {} ms",
        origins_.base(0), options_.down_after, options_.probe_interval_ms);
  } else if (out.change == Change::kWentUp) {
    log()->info("upstream {} is up again", origins_.base(0));
  }
  return out;
}

}  // namespace netbootfs::cache
