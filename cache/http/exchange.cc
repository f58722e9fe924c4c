#include "cache/http/exchange.h"

#include <utility>

namespace netbootfs::http {

bool Exchange::on_header_line(std::string_view line, const HeaderContext& context) {
  if (cancelled) return false;
  if (head_delivered) return true;  // trailers may not change a head already delivered
  if (parse_header_line(line, context, &response) != HeaderLine::kEndOfHead) return true;
  // End of one response's headers: interim and followed responses are skipped.
  if (response.is_interim()) return true;
  return deliver_head();
}

Exchange::Body Exchange::on_body_bytes(const char* data, size_t len, RateBucket::TimePoint now) {
  if (cancelled) return Body::kRefused;
  // Normally delivered at the end of the headers; this covers a response we
  // took for a redirect that libcurl did not follow.
  if (!deliver_head()) return Body::kRefused;
  const long status = response.head.status;
  if (status < 200 || status >= 300) return Body::kTaken;  // an error page is not the file
  if (bucket && !bucket->take(len, now)) {
    paused = true;
    bucket->pause(id);
    return Body::kPause;
  }
  if (in_memory()) {
    if (body.size() + len > req.max_memory_body) {
      stop = Stop::kProtocol;
      detail = "response body larger than " + std::to_string(req.max_memory_body) + " bytes";
      return Body::kRefused;
    }
    body.append(data, len);
    return Body::kTaken;
  }
  if (!sink->on_data(data, len)) {
    stop = Stop::kSinkRefused;
    detail = "the sink refused the body";
    return Body::kRefused;
  }
  return cancelled ? Body::kRefused : Body::kTaken;
}

bool Exchange::idle_too_long(int64_t received, RateBucket::TimePoint now) {
  if (received != last_received) {
    last_received = received;
    last_change = now;
    return false;
  }
  return idle_limit.count() > 0 && now - last_change >= idle_limit;
}

bool Exchange::deliver_head() {
  if (head_delivered) return stop == Stop::kNone && !cancelled;
  head_delivered = true;
  // The bytes of a 2xx are the file's: an encoding would change them. Error
  // and 304 bodies are never passed on, so their encoding does not matter.
  const long status = response.head.status;
  if (status >= 200 && status < 300 && !response.content_encoding.empty()) {
    stop = Stop::kProtocol;
    detail = "refused Content-Encoding: " + response.content_encoding;
    return false;
  }
  refresh_effective_url();
  if (!sink->on_head(response.head)) {
    stop = Stop::kSinkRefused;
    detail = "the sink refused the response head";
    return false;
  }
  return !cancelled;
}

Outcome Exchange::settle(Outcome transport, bool aborted, bool shut_down, bool out_of_memory) {
  if (aborted || cancelled) {
    if (detail.empty()) detail = shut_down ? "the HTTP client is shut down" : "cancelled";
    return Outcome::kAborted;
  }
  if (stop == Stop::kProtocol) return Outcome::kProtocol;
  if (stop == Stop::kStalled) return Outcome::kTimeout;
  if (stop == Stop::kSinkRefused) return Outcome::kAborted;
  if (out_of_memory && response.head.status != 0 && !head_delivered) {
    // Before curl 8.6, headers over libcurl's 100 KiB limit end so: the
    // response is at fault, not this process.
    detail = "response headers too large";
    return Outcome::kProtocol;
  }
  if (transport == Outcome::kOk && !head_delivered) {
    // No body and a head not yet seen as final (e.g. a 304 with a Location).
    if (response.head.status < 200) {
      detail = "no final response";
      return Outcome::kProtocol;
    }
    if (!deliver_head()) return stop == Stop::kProtocol ? Outcome::kProtocol : Outcome::kAborted;
  }
  return transport;
}

const char* to_string(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kConnectFailed:
      return "connect-failed";
    case Outcome::kTimeout:
      return "timeout";
    case Outcome::kTransferBroken:
      return "transfer-broken";
    case Outcome::kTls:
      return "tls";
    case Outcome::kProtocol:
      return "protocol";
    case Outcome::kAborted:
      return "aborted";
    case Outcome::kLocal:
      return "local";
  }
  return "unknown";
}

bool is_transient(Outcome outcome) {
  return outcome == Outcome::kConnectFailed || outcome == Outcome::kTimeout ||
         outcome == Outcome::kTransferBroken;
}

}  // namespace netbootfs::http
