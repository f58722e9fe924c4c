#include "cache/http/client.h"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cache/http/collecting_sink.h"
#include "cache/http/exchange.h"
#include "cache/http/header_parser.h"
#include "cache/http/rate_bucket.h"
#include "cache/util/log.h"

namespace netbootfs::http {
namespace {

std::shared_ptr<spdlog::logger> http_log() {
  static const auto log = logger("http");
  return log;
}

struct EasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
struct MultiDeleter {
  void operator()(CURLM* multi) const { curl_multi_cleanup(multi); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using EasyPtr = std::unique_ptr<CURL, EasyDeleter>;
using MultiPtr = std::unique_ptr<CURLM, MultiDeleter>;
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

// Bounds how long the worker sleeps when nothing happens; curl_multi_poll
// shortens it by itself when a transfer has a timer due sooner.
constexpr int kIdlePollMs = 1000;
// Bigger reads than libcurl's 16 KiB: fewer callbacks per kernel or initrd.
constexpr long kReceiveBuffer = 64 * 1024;

// The date grammar of the header parser: libcurl's, which takes the three
// forms of RFC 9110 and the looser ones old servers send.
std::optional<int64_t> parse_http_date(std::string_view value) {
  const std::string text(value);  // curl_getdate wants a C string
  const time_t t = curl_getdate(text.c_str(), nullptr);
  if (t < 0) return std::nullopt;
  return static_cast<int64_t>(t);
}

// --- outcomes -------------------------------------------------------------------

Outcome outcome_of(CURLcode code) {
  switch (code) {
    case CURLE_OK:
      return Outcome::kOk;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_PROXY:
      return Outcome::kConnectFailed;
    case CURLE_OPERATION_TIMEDOUT:
      return Outcome::kTimeout;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_QUIC_CONNECT_ERROR:
      return Outcome::kTransferBroken;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED:
      return Outcome::kTls;
    case CURLE_WRITE_ERROR:  // only our callbacks refuse bytes; finish() tells which one
    case CURLE_ABORTED_BY_CALLBACK:
      return Outcome::kAborted;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_URL_MALFORMAT:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_FILESIZE_EXCEEDED:
    case CURLE_RANGE_ERROR:
#if LIBCURL_VERSION_NUM >= 0x080600
    case CURLE_TOO_LARGE:  // e.g. a header over libcurl's 100 KiB limit
#endif
      return Outcome::kProtocol;
    default:
      // Out of memory, bad options, missing features: nothing the network did.
      return Outcome::kLocal;
  }
}

// --- one request ----------------------------------------------------------------

// An exchange with what libcurl needs for it. Owned by the worker thread from
// the moment it leaves the queue.
struct Transfer : Exchange {
  EasyPtr easy;
  SlistPtr headers;
  bool added = false;          // to the multi handle
  bool retried_fresh = false;  // replayed once on a new connection (retry_fresh)
  char errbuf[CURL_ERROR_SIZE] = {};

  void refresh_effective_url() override {
    char* url = nullptr;
    if (curl_easy_getinfo(easy.get(), CURLINFO_EFFECTIVE_URL, &url) == CURLE_OK && url) {
      response.head.effective_url = url;
    }
  }
};

size_t on_header_line(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * count;
  const HeaderContext context{static_cast<int64_t>(std::time(nullptr)), parse_http_date};
  return t->on_header_line(std::string_view(data, len), context) ? len : 0;
}

size_t on_body_bytes(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * count;
  switch (t->on_body_bytes(data, len, std::chrono::steady_clock::now())) {
    case Exchange::Body::kTaken:
      return len;
    case Exchange::Body::kPause:
      return CURL_WRITEFUNC_PAUSE;
    case Exchange::Body::kRefused:
      break;
  }
  return 0;
}

// Sets easy options in order until one fails; rc is that failure.
struct OptionSetter {
  CURL* easy;
  CURLcode rc = CURLE_OK;
  template <typename Value>
  void operator()(CURLoption option, Value value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(easy, option, value);
  }
};

// libcurl's low-speed check averages the rate over the last ~5 s, so a body
// that stops after a burst counts as slow only seconds after low_speed_time.
// This watches for "no byte at all" directly: a transfer that was sent (the
// connect phase has its own timeout) and then receives nothing for
// low_speed_time is stopped as a timeout. Called about once a second when idle.
int on_progress(void* user, curl_off_t /*dltotal*/, curl_off_t dlnow, curl_off_t /*ultotal*/,
                curl_off_t /*ulnow*/) {
  auto* t = static_cast<Transfer*>(user);
  const auto now = std::chrono::steady_clock::now();
  if (!t->idle_too_long(dlnow, now)) return 0;
  curl_off_t sent_at = 0;
  if (curl_easy_getinfo(t->easy.get(), CURLINFO_PRETRANSFER_TIME_T, &sent_at) != CURLE_OK ||
      sent_at <= 0) {
    t->last_change = now;  // still connecting: connect_timeout's business
    return 0;
  }
  t->stop = Exchange::Stop::kStalled;
  t->detail = "no byte received for " + std::to_string(t->idle_limit.count()) + " ms";
  return 1;
}

}  // namespace

// --- the worker -------------------------------------------------------------------

struct Client::Impl {
  explicit Impl(Options o) : options(std::move(o)) {
    static std::once_flag global_init;
    std::call_once(global_init, [] {
      if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        throw std::runtime_error("curl_global_init failed");  // start-up: may throw
      }
    });
    multi.reset(curl_multi_init());
    if (!multi) throw std::runtime_error("curl_multi_init failed");
    curl_multi_setopt(multi.get(), CURLMOPT_MAX_HOST_CONNECTIONS, options.max_host_connections);
    curl_multi_setopt(multi.get(), CURLMOPT_MAX_TOTAL_CONNECTIONS, options.max_total_connections);
    // Idle connections stay cached up to the same bound, so a burst of opens
    // does not end in a burst of new TCP and TLS handshakes.
    curl_multi_setopt(multi.get(), CURLMOPT_MAXCONNECTS, options.max_total_connections);
    if (options.max_rate > 0) {
      const auto rate = static_cast<double>(options.max_rate);
      bucket = RateBucket(rate, std::max(rate / 10, static_cast<double>(kReceiveBuffer)),
                          std::chrono::steady_clock::now());
    }
    worker = std::thread([this] { run(); });
  }

  ~Impl() {
    {
      std::lock_guard lock(mu);
      stopping = true;
    }
    curl_multi_wakeup(multi.get());
    worker.join();
  }

  bool on_worker() const { return std::this_thread::get_id() == worker.get_id(); }

  uint64_t start(Request request, std::shared_ptr<Sink> sink) {
    auto t = std::make_unique<Transfer>();
    t->req = std::move(request);
    t->sink = std::move(sink);
    uint64_t id;
    {
      std::lock_guard lock(mu);
      id = t->id = next_id++;
      if (!closed) queue.push_back(std::move(t));
    }
    if (t) {
      // Only reachable when start() races with ~Client: the worker is gone,
      // and the sink must still hear of its request once.
      t->sink->on_done(Outcome::kAborted, t->response.head, {}, "the HTTP client is shut down");
      return id;
    }
    curl_multi_wakeup(multi.get());
    return id;
  }

  void cancel(uint64_t id) {
    if (on_worker()) {
      // From a callback: stop feeding the sink now rather than after the
      // rest of this curl_multi_perform round.
      if (auto it = active.find(id); it != active.end()) it->second->cancelled = true;
    }
    {
      std::lock_guard lock(mu);
      cancels.push_back(id);
    }
    curl_multi_wakeup(multi.get());
  }

  // Returns the first failing option, CURLE_OK when all were taken.
  CURLcode configure(Transfer* t) {
    OptionSetter set{t->easy.get()};
    set_connection(t, set);
    set_transfer_limits(t, set);
    set_callbacks_and_tls(t, set);
    if (set.rc != CURLE_OK) return set.rc;

    for (const auto& line : request_header_lines(t->req)) {
      curl_slist* grown = curl_slist_append(t->headers.get(), line.c_str());
      if (!grown) return CURLE_OUT_OF_MEMORY;
      (void)t->headers.release();  // now owned through `grown`
      t->headers.reset(grown);
    }
    if (t->headers) set(CURLOPT_HTTPHEADER, t->headers.get());
    return set.rc;
  }

  // Where to, which protocols and redirects, how long to connect and to stall.
  void set_connection(Transfer* t, OptionSetter& set) const {
    set(CURLOPT_URL, t->req.url.c_str());
    set(CURLOPT_PRIVATE, static_cast<void*>(t));
    set(CURLOPT_ERRORBUFFER, t->errbuf);
    set(CURLOPT_NOSIGNAL, 1L);
    set(CURLOPT_PROTOCOLS_STR, "http,https");
    set(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    set(CURLOPT_FOLLOWLOCATION, 1L);
    set(CURLOPT_MAXREDIRS, options.max_redirects);
    set(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options.connect_timeout.count()));
    set(CURLOPT_LOW_SPEED_LIMIT, options.low_speed_limit);
    set(CURLOPT_LOW_SPEED_TIME, static_cast<long>(options.low_speed_time.count()));
    t->idle_limit = options.low_speed_time;
    t->last_change = std::chrono::steady_clock::now();
  }

  // What this request may take: its speed, total time, body size and buffer.
  void set_transfer_limits(Transfer* t, OptionSetter& set) const {
    const bool head_only = t->req.method == Request::Method::kHead;
    if (t->req.max_recv_speed > 0) {
      set(CURLOPT_MAX_RECV_SPEED_LARGE, static_cast<curl_off_t>(t->req.max_recv_speed));
    }
    set(CURLOPT_XFERINFOFUNCTION, on_progress);
    set(CURLOPT_XFERINFODATA, static_cast<void*>(t));
    set(CURLOPT_NOPROGRESS, 0L);
    if (head_only || t->req.body_in_memory) {
      set(CURLOPT_TIMEOUT_MS, static_cast<long>(options.request_timeout.count()));
    }
    if (t->req.body_in_memory) {
      // Refuses an announced oversize body before any byte of it.
      set(CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(t->req.max_memory_body));
    }
    if (head_only) set(CURLOPT_NOBODY, 1L);
    set(CURLOPT_TCP_KEEPALIVE, 1L);
    // libcurl paces a rate-limited transfer between rounds of up to 100
    // buffer-sized reads: a smaller buffer keeps a round's burst at about a
    // quarter second of the rate (else a few MB on loopback pass unpaced).
    long buffer = kReceiveBuffer;
    if (t->req.max_recv_speed > 0) {
      buffer = static_cast<long>(std::clamp<uint64_t>(t->req.max_recv_speed / 400, 1024,
                                                      static_cast<uint64_t>(kReceiveBuffer)));
    }
    set(CURLOPT_BUFFERSIZE, buffer);
  }

  void set_callbacks_and_tls(Transfer* t, OptionSetter& set) const {
    set(CURLOPT_USERAGENT, options.user_agent.c_str());
    set(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);  // a proxy's CONNECT reply is not the response
    set(CURLOPT_HEADERFUNCTION, on_header_line);
    set(CURLOPT_HEADERDATA, static_cast<void*>(t));
    set(CURLOPT_WRITEFUNCTION, on_body_bytes);
    set(CURLOPT_WRITEDATA, static_cast<void*>(t));
    if (!options.proxy.empty()) set(CURLOPT_PROXY, options.proxy.c_str());
    if (!options.ca_file.empty()) set(CURLOPT_CAINFO, options.ca_file.c_str());
    if (!options.client_cert.empty()) set(CURLOPT_SSLCERT, options.client_cert.c_str());
    if (!options.client_key.empty()) set(CURLOPT_SSLKEY, options.client_key.c_str());
    if (options.insecure) {
      set(CURLOPT_SSL_VERIFYPEER, 0L);
      set(CURLOPT_SSL_VERIFYHOST, 0L);
    }
  }

  // A fresh request: started, or queued behind max_downloads bodies.
  void admit(std::unique_ptr<Transfer> t) {
    if (t->is_body()) {
      if (!slots.has_free()) {
        slots.wait(std::move(t));
        return;
      }
      t->counted = true;
      slots.acquire();
      if (options.max_rate > 0) t->bucket = &bucket;
    }
    add(std::move(t));
  }

  // Starts queued bodies while slots are free (FIFO).
  void admit_waiting() {
    while (auto t = slots.next_ready()) admit(std::move(t));
  }

  // max_rate: unpauses the paused bodies once the bucket has tokens again.
  void unpause() {
    for (uint64_t id : bucket.resume(std::chrono::steady_clock::now())) {
      auto it = active.find(id);
      if (it == active.end() || !it->second->paused) continue;
      it->second->paused = false;
      // May call the write callback at once, which may pause it again.
      curl_easy_pause(it->second->easy.get(), CURLPAUSE_CONT);
    }
  }

  void add(std::unique_ptr<Transfer> t) {
    t->easy.reset(curl_easy_init());
    CURLcode rc = t->easy ? configure(t.get()) : CURLE_FAILED_INIT;
    if (rc == CURLE_OK) {
      const CURLMcode mc = curl_multi_add_handle(multi.get(), t->easy.get());
      if (mc != CURLM_OK) {
        t->detail = std::string("curl_multi_add_handle: ") + curl_multi_strerror(mc);
        rc = CURLE_FAILED_INIT;
      }
    } else {
      t->detail = std::string("setting up the request: ") + curl_easy_strerror(rc);
    }
    if (rc != CURLE_OK) {
      finish(std::move(t), rc, false);
      return;
    }
    t->added = true;
    http_log()->trace("{} {} started (#{})", t->method(), t->req.url, t->id);
    const uint64_t id = t->id;
    active.emplace(id, std::move(t));
  }

  // Ends a transfer: exactly one on_done, after the easy handle is gone.
  void finish(std::unique_ptr<Transfer> t, CURLcode code, bool aborted) {
    if (t->added) curl_multi_remove_handle(multi.get(), t->easy.get());
    if (t->counted) {
      t->counted = false;
      slots.release();
    }
    const Outcome outcome =
        t->settle(outcome_of(code), aborted, stopping_seen, code == CURLE_OUT_OF_MEMORY);
    if (t->easy) t->refresh_effective_url();
    if (outcome != Outcome::kOk && t->detail.empty()) {
      t->detail = t->errbuf[0] ? t->errbuf : curl_easy_strerror(code);
    }
    http_log()->debug("{} {} -> {} status {}{}{}", t->method(), t->req.url, to_string(outcome),
                      t->response.head.status, t->detail.empty() ? "" : ": ", t->detail);

    auto sink = std::move(t->sink);
    Head head = std::move(t->response.head);
    std::string body = std::move(t->body);
    std::string detail = std::move(t->detail);
    // The easy handle goes first: the callback may start a request at once.
    t.reset();
    if (outcome != Outcome::kOk) body.clear();
    sink->on_done(outcome, head, std::move(body), std::move(detail));
  }

  void abort(uint64_t id) {
    auto it = active.find(id);
    if (it == active.end()) {
      // Not in the line either: finished already, or never ours.
      auto t = slots.take_if([id](const auto& w) { return w->id == id; });
      if (t) finish(std::move(t), CURLE_OK, true);
      return;
    }
    auto t = std::move(it->second);
    active.erase(it);
    finish(std::move(t), CURLE_OK, true);
  }

  // A reused connection can fail a request before its status line: the
  // server closed it while idle, or an earlier response sent more than its
  // Content-Length and the surplus sits where this answer should be (curl:
  // "Received HTTP/0.9"). Nothing of this request was seen, so it is replayed
  // once on a new connection rather than failing a file whose upstream is
  // fine. True when replayed.
  bool retry_fresh(Transfer* t, CURLcode code) {
    if (t->retried_fresh || !t->nothing_seen()) return false;
    switch (code) {
      case CURLE_UNSUPPORTED_PROTOCOL:  // "Received HTTP/0.9" before curl 8
      case CURLE_WEIRD_SERVER_REPLY:
      case CURLE_GOT_NOTHING:
      case CURLE_RECV_ERROR:
      case CURLE_SEND_ERROR:
        break;
      default:
        return false;
    }
    long new_connections = -1;
    char* ip = nullptr;
    CURL* e = t->easy.get();
    if (curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &new_connections) != CURLE_OK ||
        new_connections != 0 || curl_easy_getinfo(e, CURLINFO_PRIMARY_IP, &ip) != CURLE_OK || !ip ||
        !*ip) {
      return false;  // a connection of its own failed it, or none was made
    }
    curl_multi_remove_handle(multi.get(), e);
    http_log()->debug("{} {}: {} on a reused connection; retrying on a new one", t->method(),
                      t->req.url, t->errbuf[0] ? t->errbuf : curl_easy_strerror(code));
    t->retried_fresh = true;
    t->response = ResponseHead{};
    t->errbuf[0] = '\0';
    t->last_received = -1;
    t->last_change = std::chrono::steady_clock::now();
    if (curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L) != CURLE_OK ||
        curl_multi_add_handle(multi.get(), e) != CURLM_OK) {
      t->added = false;
      return false;
    }
    return true;
  }

  void reap() {
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi.get(), &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      Transfer* raw = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &raw);
      const CURLcode code = msg->data.result;
      auto it = raw ? active.find(raw->id) : active.end();
      if (it == active.end()) continue;
      if (retry_fresh(it->second.get(), code)) continue;
      auto t = std::move(it->second);
      active.erase(it);
      finish(std::move(t), code, false);
    }
  }

  // Every request still known gets on_done(kAborted), including the ones
  // those callbacks start; then start() answers by itself.
  void shut_down(std::vector<std::unique_ptr<Transfer>> fresh) {
    stopping_seen = true;
    std::vector<uint64_t> ids;
    ids.reserve(active.size());
    for (const auto& entry : active) ids.push_back(entry.first);
    for (uint64_t id : ids) abort(id);
    while (auto t = slots.take_first()) finish(std::move(t), CURLE_OK, true);
    for (;;) {
      for (auto& t : fresh) finish(std::move(t), CURLE_OK, true);
      fresh.clear();
      std::lock_guard lock(mu);
      if (queue.empty()) {
        closed = true;
        return;
      }
      fresh.swap(queue);
    }
  }

  void run() {
    for (;;) {
      std::vector<std::unique_ptr<Transfer>> fresh;
      std::vector<uint64_t> cancelled;
      bool stop;
      {
        std::lock_guard lock(mu);
        fresh.swap(queue);
        cancelled.swap(cancels);
        stop = stopping;
      }
      if (stop) {
        shut_down(std::move(fresh));
        return;
      }
      for (auto& t : fresh) admit(std::move(t));
      for (uint64_t id : cancelled) abort(id);
      admit_waiting();
      unpause();

      int running = 0;
      CURLMcode mc = curl_multi_perform(multi.get(), &running);
      if (mc != CURLM_OK) http_log()->error("curl_multi_perform: {}", curl_multi_strerror(mc));
      reap();
      admit_waiting();
      // Paused bodies wait for tokens: come back soon to unpause them.
      const int wait_ms = bucket.has_paused() ? 10 : kIdlePollMs;
      mc = curl_multi_poll(multi.get(), nullptr, 0, wait_ms, nullptr);
      if (mc != CURLM_OK) {
        // Not expected to happen; without the pause the loop would spin.
        http_log()->error("curl_multi_poll: {}", curl_multi_strerror(mc));
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }

  const Options options;
  MultiPtr multi;

  // Lock order: mu is a leaf; never held across a curl call or a callback.
  std::mutex mu;
  std::vector<std::unique_ptr<Transfer>> queue;  // guarded by mu
  std::vector<uint64_t> cancels;                 // guarded by mu
  uint64_t next_id = 1;                          // guarded by mu
  bool stopping = false;                         // guarded by mu
  bool closed = false;                           // guarded by mu

  // Worker thread only (but slots.waiting(), for any thread).
  std::unordered_map<uint64_t, std::unique_ptr<Transfer>> active;
  DownloadSlots<std::unique_ptr<Transfer>> slots{options.max_downloads};
  RateBucket bucket;  // max_rate
  bool stopping_seen = false;

  std::thread worker;  // started by the constructor once the members above exist
};

Client::Client(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Client::~Client() = default;

uint64_t Client::start(Request request, std::shared_ptr<Sink> sink) {
  return impl_->start(std::move(request), std::move(sink));
}

void Client::cancel(uint64_t id) { impl_->cancel(id); }

size_t Client::queued_bodies() const { return impl_->slots.waiting(); }

const Options& Client::options() const { return impl_->options; }

Client::Response Client::fetch(Request request) {
  if (impl_->on_worker()) {
    // Waiting here would wait for ourselves.
    Response refused;
    refused.outcome = Outcome::kLocal;
    refused.detail = "fetch() called from an HTTP callback";
    return refused;
  }
  auto sink = std::make_shared<CollectingSink>();
  auto result = sink->future();
  start(std::move(request), sink);
  return result.get();
}

}  // namespace netbootfs::http
