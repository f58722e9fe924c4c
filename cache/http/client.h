// http::Client: every upstream request of the process goes through one worker
// thread that owns a libcurl multi handle.
//
// Contract
// - start() may be called from any thread; it queues the request and wakes the
//   worker (curl_multi_wakeup). It never blocks on the network.
// - Sink callbacks run on the worker thread, in this order: on_head once (the
//   final response after redirects), on_data zero or more times with body bytes
//   in order, then on_done exactly once (also after cancel(), an abort from the
//   sink, or ~Client). Callbacks must not block for long and must not call back
//   into the Client except start()/cancel(), which are safe from callbacks.
// - Connections are reused between requests to the same host. A request that
//   fails on a reused connection before any status line arrived (a keep-alive
//   the server had closed, or bytes a previous response sent beyond its
//   Content-Length) is replayed once on a new connection. No
//   Accept-Encoding is sent; a response that carries a Content-Encoding is
//   refused (Outcome::kProtocol): the bytes must be the file's.
// - Only http and https URLs are fetched, including redirect targets; at most
//   Options::max_redirects redirects are followed. TLS peers are verified
//   unless Options::insecure.
// - Timeouts: connect_timeout for connecting; low_speed_limit/low_speed_time
//   for every transfer (a stalled body: once the request is sent, no byte at
//   all for low_speed_time is a kTimeout, however fast the bytes before came;
//   a rate under the limit is libcurl's averaged check); request_timeout as a
//   total limit only for HEAD and in-memory requests, never for streamed
//   bodies (a slow 1 GB download must not be killed for taking long).
// - Outcome tells how the exchange ended; the HTTP status is in Head::status.
//   An HTTP error status (404, 500...) is Outcome::kOk with that status: the
//   caller decides what a status means.
// - WAN limits (Options::max_downloads, max_rate) apply to body transfers
//   only: streamed GETs, resumes included. HEADs and in-memory GETs
//   (listings) are never queued or slowed. A body over max_downloads waits
//   in a FIFO queue (not started, no connection) until one ends; cancel()
//   of a queued one answers it kAborted without a request.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace netbootfs::http {

enum class Outcome {
  kOk,              // the exchange completed; see Head::status
  kConnectFailed,   // name resolution, refused or unreachable
  kTimeout,         // connect, low-speed or total timeout
  kTransferBroken,  // reset, closed early, fewer body bytes than Content-Length
  kTls,             // certificate or handshake failure
  kProtocol,        // malformed or refused response (Content-Encoding, bad redirect, ...)
  kAborted,         // the sink returned false, or cancel()/shutdown
  kLocal,           // a local failure (out of memory, curl misuse)
};

const char* to_string(Outcome outcome);

// Transient outcomes are worth retrying (with back-off); the others are not.
bool is_transient(Outcome outcome);

struct Options {
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds request_timeout{30000};  // HEAD and in-memory GETs only
  long low_speed_limit = 1;                          // bytes per second ...
  std::chrono::seconds low_speed_time{30};           // ... below which for this long = timeout
  long max_redirects = 5;
  std::string proxy;        // empty: libcurl's default (the *_proxy environment variables)
  std::string ca_file;      // empty: the system CA store
  std::string client_cert;  // PEM, optional
  std::string client_key;   // PEM, optional
  bool insecure = false;    // disables TLS verification
  // A stalled transfer holds its connection: leave room for many.
  long max_host_connections = 64;
  long max_total_connections = 128;
  std::string user_agent = "netbootfs";
  // Body transfers running at once; 0: no limit (more wait, first come first served).
  int max_downloads = 0;
  // Bytes per second of all body transfers together; 0: no limit.
  uint64_t max_rate = 0;
};

struct Request {
  enum class Method { kGet, kHead };
  Method method = Method::kGet;
  std::string url;
  std::string if_none_match;                // If-None-Match when non-empty
  std::optional<int64_t> if_modified_since;  // If-Modified-Since, unix seconds
  std::optional<uint64_t> range_from;       // Range: bytes=N-
  std::string if_range;                     // with range_from: an ETag (or HTTP date)
  bool body_in_memory = false;  // collect the body for on_done (listings); total timeout applies
  size_t max_memory_body = 32u << 20;  // larger in-memory bodies fail with kProtocol
  uint64_t max_recv_speed = 0;  // bytes per second for this transfer; 0: unlimited
};

struct Head {
  long status = 0;
  std::optional<uint64_t> content_length;
  std::string etag;                          // as sent, quotes included
  std::optional<int64_t> last_modified;      // unix seconds
  std::optional<uint64_t> range_start;       // from Content-Range on a 206
  std::optional<uint64_t> range_total;       // total size from Content-Range, when given
  std::string content_type;
  std::optional<int64_t> retry_after;        // seconds, from Retry-After
  std::string effective_url;                 // after redirects
};

class Sink {
 public:
  virtual ~Sink() = default;
  // The final response's headers. Return false to abort the transfer.
  virtual bool on_head(const Head& head) = 0;
  // Body bytes in order (not called for body_in_memory requests). Return false to abort.
  virtual bool on_data(const char* data, size_t len) = 0;
  // Exactly once, last. `body` holds the body of a body_in_memory request.
  // `detail` is a human-readable reason when outcome != kOk.
  virtual void on_done(Outcome outcome, const Head& head, std::string body,
                       std::string detail) = 0;
};

class Client {
 public:
  explicit Client(Options options);
  ~Client();  // aborts what is in flight (each sink gets on_done(kAborted)) and joins
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Returns an id for cancel(). The sink is kept alive until on_done returned.
  uint64_t start(Request request, std::shared_ptr<Sink> sink);
  // The sink gets on_done(kAborted) soon, unless the request already finished.
  void cancel(uint64_t id);

  // Synchronous helper for tools and tests: runs one request to completion.
  struct Response {
    Outcome outcome = Outcome::kLocal;
    Head head;
    std::string body;  // in-memory body, or the streamed body collected
    std::string detail;
  };
  Response fetch(Request request);

  const Options& options() const;
  // Body transfers waiting for a max_downloads slot.
  size_t queued_bodies() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace netbootfs::http
