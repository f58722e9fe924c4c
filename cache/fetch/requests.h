// Requests: every upstream request of the fetcher starts here, so that each
// answer is counted (method and status) and told to upstream health before
// its sink decides what to do, and so that shutdown can cancel what is in
// flight and wait until no sink callback can run any more.
//
// Contract
// - start() hands the request to the HTTP client; the sink's callbacks run on
//   the HTTP worker thread. Before the sink's on_done, the exchange is
//   counted in FetcherStats::responses and passed to `noted` (with upstream
//   health's verdict), so a retry decision sees the new health.
// - cancel_all() cancels every request in flight and waits (at most 10 s)
//   until each sink's on_done has returned.
// - Locks: mu_, a leaf (never held across a client call or a callback).
#pragma once

#include <tsl/robin_map.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "cache/fetch/upstream_health.h"
#include "cache/http/client.h"

namespace netbootfs::cache {

struct FetcherStats;

// A sink for small answers (listings, HEADs, probes): the body in memory,
// handed to one callback at the end.
class MemorySink : public http::Sink {
 public:
  using Done = std::function<void(http::Outcome, const http::Head&, std::string, std::string)>;
  explicit MemorySink(Done done) : done_(std::move(done)) {}
  bool on_head(const http::Head&) override { return true; }
  bool on_data(const char*, size_t) override { return true; }
  void on_done(http::Outcome o, const http::Head& h, std::string body,
               std::string detail) override {
    done_(o, h, std::move(body), std::move(detail));
  }

 private:
  Done done_;
};

class Requests {
 public:
  using Noted = std::function<void(const UpstreamHealth::Noted&)>;
  Requests(http::Client& client, UpstreamHealth& health, FetcherStats& stats, Noted noted)
      : client_(client), health_(health), stats_(stats), noted_(std::move(noted)) {}

  void start(http::Request req, std::shared_ptr<http::Sink> sink, size_t origin);
  void cancel_all();

 private:
  http::Client& client_;
  UpstreamHealth& health_;
  FetcherStats& stats_;
  const Noted noted_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t inflight_ = 0;
  tsl::robin_map<uint64_t, bool> ids_;
};

}  // namespace netbootfs::cache
