// http::Exchange: one request's side of the Sink contract (client.h), without
// libcurl. It turns the header lines and body bytes the transport hands over
// into the sink's calls, and decides how the exchange ended.
//
// Contract
// - Owns the request, the sink (until the client moves it out to call
//   on_done) and what was received: the response head, an in-memory body, the
//   reason it was stopped. The transport (client.cc) owns the connection and
//   calls on_done; an Exchange never calls it.
// - on_head at most once, for the final response only (not 1xx, not a
//   redirect being followed); a 2xx with a Content-Encoding is refused before
//   the sink sees it. Bytes of a non-2xx response never reach the sink.
// - A false or kRefused answer tells the transport to stop the transfer; the
//   reason is in `stop` and `detail`, and settle() makes the outcome of it.
// - Not thread-safe: the Client's worker thread alone uses it, from the moment
//   the request leaves the start() queue.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "cache/http/client.h"
#include "cache/http/header_parser.h"
#include "cache/http/rate_bucket.h"

namespace netbootfs::http {

struct Exchange {
  enum class Stop { kNone, kSinkRefused, kProtocol, kStalled };
  enum class Body { kTaken, kRefused, kPause };  // what on_body_bytes tells the transport

  virtual ~Exchange() = default;

  uint64_t id = 0;
  Request req;
  std::shared_ptr<Sink> sink;

  // The response being received; reset by each status line so that only the
  // final response after redirects and 1xx counts.
  ResponseHead response;

  bool head_delivered = false;
  // No byte for idle_limit once the request is sent is a stall.
  std::chrono::milliseconds idle_limit{0};
  int64_t last_received = -1;  // body bytes so far, as the transport counts them
  RateBucket::TimePoint last_change{};
  bool cancelled = false;  // cancel() from a callback: refuse further bytes
  Stop stop = Stop::kNone;
  std::string detail;
  std::string body;  // body_in_memory

  // A body transfer (what max_downloads and max_rate limit).
  bool counted = false;          // holds a max_downloads slot
  RateBucket* bucket = nullptr;  // max_rate: the shared bucket
  bool paused = false;           // waits in the bucket for tokens

  bool in_memory() const { return req.body_in_memory; }
  bool is_body() const { return req.method == Request::Method::kGet && !req.body_in_memory; }
  const char* method() const { return req.method == Request::Method::kHead ? "HEAD" : "GET"; }

  // One header line as received. False: stop the transfer.
  bool on_header_line(std::string_view line, const HeaderContext& context);
  // Body bytes as received, at `now` for the rate bucket.
  Body on_body_bytes(const char* data, size_t len, RateBucket::TimePoint now);
  // No status line yet, nothing refused or cancelled: a replay of the request
  // would be invisible to the sink.
  bool nothing_seen() const {
    return !cancelled && !head_delivered && response.head.status == 0 && stop == Stop::kNone;
  }
  // About once a second: true when `received` has not changed for idle_limit.
  bool idle_too_long(int64_t received, RateBucket::TimePoint now);
  // Hands the final response's head to the sink (once); false stops the transfer.
  bool deliver_head();
  // How the exchange ended, from what the transport says of it (`transport`:
  // kOk when it completed), whether it was aborted (cancel, shutdown), and
  // whether it failed for memory with a status line seen (libcurl before 8.6
  // ends so on headers over its limit). Fills `detail` where it decides why.
  Outcome settle(Outcome transport, bool aborted, bool shut_down, bool out_of_memory);

  // Fills response.head.effective_url (the transport knows it); called just
  // before the sink sees the head.
  virtual void refresh_effective_url() {}
};

}  // namespace netbootfs::http
