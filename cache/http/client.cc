#include "cache/http/client.h"

#include <curl/curl.h>

#include <cctype>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cache/util/log.h"

namespace netbootfs::http {
namespace {

std::shared_ptr<spdlog::logger> log() {
  static auto l = logger("http");
  return l;
}

struct EasyDeleter {
  void operator()(CURL* e) const { curl_easy_cleanup(e); }
};
struct MultiDeleter {
  void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using EasyPtr = std::unique_ptr<CURL, EasyDeleter>;
using MultiPtr = std::unique_ptr<CURLM, MultiDeleter>;
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

std::string http_date(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday],
                tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::optional<uint64_t> parse_u64(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    if (v > (UINT64_MAX - 9) / 10) return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

Outcome outcome_of(CURLcode code) {
  switch (code) {
    case CURLE_OK: return Outcome::kOk;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT: return Outcome::kConnectFailed;
    case CURLE_OPERATION_TIMEDOUT: return Outcome::kTimeout;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_USE_SSL_FAILED: return Outcome::kTls;
    case CURLE_WRITE_ERROR:
    case CURLE_ABORTED_BY_CALLBACK: return Outcome::kAborted;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_URL_MALFORMAT:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_FILESIZE_EXCEEDED: return Outcome::kProtocol;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_FAILED_INIT: return Outcome::kLocal;
    default: return Outcome::kTransferBroken;  // resets, short bodies, HTTP/2 stream errors
  }
}

}  // namespace

const char* to_string(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk: return "ok";
    case Outcome::kConnectFailed: return "connect-failed";
    case Outcome::kTimeout: return "timeout";
    case Outcome::kTransferBroken: return "transfer-broken";
    case Outcome::kTls: return "tls";
    case Outcome::kProtocol: return "protocol";
    case Outcome::kAborted: return "aborted";
    case Outcome::kLocal: return "local";
  }
  return "?";
}

bool is_transient(Outcome outcome) {
  return outcome == Outcome::kConnectFailed || outcome == Outcome::kTimeout ||
         outcome == Outcome::kTransferBroken;
}

// One request in flight. Owned by the worker thread.
struct Transfer {
  uint64_t id = 0;
  Request req;
  std::shared_ptr<Sink> sink;
  EasyPtr easy;
  SlistPtr headers;
  Head head;
  bool head_delivered = false;
  bool sink_refused = false;   // a sink callback returned false
  bool protocol_error = false;
  std::string detail;
  std::string body;  // in-memory requests
  char errbuf[CURL_ERROR_SIZE] = {};

  bool deliver_head() {
    if (head_delivered) return !sink_refused;
    head_delivered = true;
    for (const auto& enc : content_encodings) {
      if (!iequals(enc, "identity")) {
        protocol_error = true;
        detail = "refused Content-Encoding: " + enc;
        return false;
      }
    }
    char* eff = nullptr;
    if (curl_easy_getinfo(easy.get(), CURLINFO_EFFECTIVE_URL, &eff) == CURLE_OK && eff) {
      head.effective_url = eff;
    }
    if (!sink->on_head(head)) sink_refused = true;
    return !sink_refused;
  }

  std::vector<std::string> content_encodings;
};

namespace {

size_t on_header(char* data, size_t size, size_t n, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  const size_t len = size * n;
  std::string_view line(data, len);
  if (line.rfind("HTTP/", 0) == 0) {
    // A new response (after a redirect or a 100): only the last one counts.
    t->head = Head{};
    t->content_encodings.clear();
    const auto sp = line.find(' ');
    if (sp != std::string_view::npos) {
      t->head.status = static_cast<long>(parse_u64(trim(line.substr(sp + 1, 3))).value_or(0));
    }
    return len;
  }
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) return len;
  const std::string_view name = line.substr(0, colon);
  const std::string value = trim(line.substr(colon + 1));
  if (iequals(name, "Content-Length")) {
    t->head.content_length = parse_u64(value);
  } else if (iequals(name, "ETag")) {
    t->head.etag = value;
  } else if (iequals(name, "Last-Modified")) {
    const time_t lm = curl_getdate(value.c_str(), nullptr);
    if (lm >= 0) t->head.last_modified = lm;
  } else if (iequals(name, "Content-Type")) {
    t->head.content_type = value;
  } else if (iequals(name, "Content-Encoding")) {
    t->content_encodings.push_back(value);
  } else if (iequals(name, "Content-Range")) {
    // "bytes FIRST-LAST/TOTAL" or "bytes */TOTAL"
    std::string_view v(value);
    if (v.rfind("bytes ", 0) == 0) v.remove_prefix(6);
    const auto dash = v.find('-');
    const auto slash = v.find('/');
    if (dash != std::string_view::npos) t->head.range_start = parse_u64(v.substr(0, dash));
    if (slash != std::string_view::npos) t->head.range_total = parse_u64(v.substr(slash + 1));
  } else if (iequals(name, "Retry-After")) {
    if (auto secs = parse_u64(value)) {
      t->head.retry_after = static_cast<int64_t>(*secs);
    } else {
      const time_t when = curl_getdate(value.c_str(), nullptr);
      if (when >= 0) t->head.retry_after = std::max<int64_t>(0, when - std::time(nullptr));
    }
  }
  return len;
}

size_t on_body(char* data, size_t size, size_t n, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  const size_t len = size * n;
  if (!t->deliver_head()) return 0;
  if (t->head.status >= 400) return len;  // error bodies are not the file
  if (t->req.body_in_memory) {
    if (t->body.size() + len > t->req.max_memory_body) {
      t->protocol_error = true;
      t->detail = "response body too large";
      return 0;
    }
    t->body.append(data, len);
    return len;
  }
  if (!t->sink->on_data(data, len)) {
    t->sink_refused = true;
    return 0;
  }
  return len;
}

}  // namespace

struct Client::Impl {
  explicit Impl(Options o) : options(std::move(o)) {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    multi.reset(curl_multi_init());
    curl_multi_setopt(multi.get(), CURLMOPT_MAX_HOST_CONNECTIONS, options.max_host_connections);
    curl_multi_setopt(multi.get(), CURLMOPT_MAX_TOTAL_CONNECTIONS, options.max_total_connections);
    worker = std::thread([this] { run(); });
  }

  ~Impl() {
    {
      std::lock_guard lk(mu);
      stopping = true;
    }
    curl_multi_wakeup(multi.get());
    worker.join();
  }

  uint64_t start(Request request, std::shared_ptr<Sink> sink) {
    auto t = std::make_unique<Transfer>();
    t->req = std::move(request);
    t->sink = std::move(sink);
    uint64_t id;
    {
      std::lock_guard lk(mu);
      id = t->id = next_id++;
      queue.push_back(std::move(t));
    }
    curl_multi_wakeup(multi.get());
    return id;
  }

  void cancel(uint64_t id) {
    {
      std::lock_guard lk(mu);
      cancels.push_back(id);
    }
    curl_multi_wakeup(multi.get());
  }

  void setup(Transfer& t) {
    t.easy.reset(curl_easy_init());
    CURL* e = t.easy.get();
    const bool bounded = t.req.method == Request::Method::kHead || t.req.body_in_memory;
    curl_easy_setopt(e, CURLOPT_URL, t.req.url.c_str());
    curl_easy_setopt(e, CURLOPT_PRIVATE, &t);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, options.max_redirects);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(options.connect_timeout.count()));
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, options.low_speed_limit);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options.low_speed_time.count()));
    if (bounded) {
      curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(options.request_timeout.count()));
    }
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, options.user_agent.c_str());
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t.errbuf);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &t);
    if (t.req.method == Request::Method::kHead) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    if (!options.proxy.empty()) curl_easy_setopt(e, CURLOPT_PROXY, options.proxy.c_str());
    if (!options.ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, options.ca_file.c_str());
    if (!options.client_cert.empty()) {
      curl_easy_setopt(e, CURLOPT_SSLCERT, options.client_cert.c_str());
    }
    if (!options.client_key.empty()) curl_easy_setopt(e, CURLOPT_SSLKEY, options.client_key.c_str());
    if (options.insecure) {
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    curl_slist* h = nullptr;
    if (!t.req.if_none_match.empty()) {
      h = curl_slist_append(h, ("If-None-Match: " + t.req.if_none_match).c_str());
    }
    if (t.req.if_modified_since) {
      h = curl_slist_append(h, ("If-Modified-Since: " + http_date(*t.req.if_modified_since)).c_str());
    }
    if (t.req.range_from) {
      h = curl_slist_append(h, ("Range: bytes=" + std::to_string(*t.req.range_from) + "-").c_str());
      if (!t.req.if_range.empty()) h = curl_slist_append(h, ("If-Range: " + t.req.if_range).c_str());
    }
    t.headers.reset(h);
    if (h) curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
  }

  void finish(std::unique_ptr<Transfer> t, CURLcode code, bool cancelled) {
    curl_multi_remove_handle(multi.get(), t->easy.get());
    Outcome outcome = cancelled ? Outcome::kAborted : outcome_of(code);
    if (!cancelled && code == CURLE_OK && !t->head_delivered && t->head.status != 0) {
      t->deliver_head();  // responses without a body: HEAD, 304, empty files
    }
    if (t->protocol_error) {
      outcome = Outcome::kProtocol;
    } else if (t->sink_refused) {
      outcome = Outcome::kAborted;
    }
    std::string detail = t->detail;
    if (detail.empty() && outcome != Outcome::kOk) {
      detail = t->errbuf[0] ? t->errbuf : (cancelled ? "cancelled" : curl_easy_strerror(code));
    }
    log()->debug("{} {} -> {} {} {}", t->req.method == Request::Method::kHead ? "HEAD" : "GET",
                 t->req.url, to_string(outcome), t->head.status, detail);
    auto sink = std::move(t->sink);
    Head head = std::move(t->head);
    std::string body = std::move(t->body);
    t.reset();  // the easy handle goes before the callback may start another
    sink->on_done(outcome, head, std::move(body), std::move(detail));
  }

  void run() {
    std::unordered_map<uint64_t, std::unique_ptr<Transfer>> active;
    for (;;) {
      std::deque<std::unique_ptr<Transfer>> fresh;
      std::vector<uint64_t> cancelled;
      bool stop;
      {
        std::lock_guard lk(mu);
        fresh.swap(queue);
        cancelled.swap(cancels);
        stop = stopping;
      }
      if (stop) {
        for (auto& t : fresh) active.emplace(t->id, std::move(t));
        for (auto& [id, t] : active) {
          if (!t->easy) setup(*t);  // finish() expects a handle
          finish(std::move(t), CURLE_OK, true);
        }
        return;
      }
      for (auto& t : fresh) {
        setup(*t);
        curl_multi_add_handle(multi.get(), t->easy.get());
        const uint64_t id = t->id;
        active.emplace(id, std::move(t));
      }
      for (uint64_t id : cancelled) {
        auto it = active.find(id);
        if (it == active.end()) continue;
        auto t = std::move(it->second);
        active.erase(it);
        finish(std::move(t), CURLE_OK, true);
      }
      int running = 0;
      curl_multi_perform(multi.get(), &running);
      int left = 0;
      while (CURLMsg* msg = curl_multi_info_read(multi.get(), &left)) {
        if (msg->msg != CURLMSG_DONE) continue;
        Transfer* raw = nullptr;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &raw);
        const CURLcode code = msg->data.result;
        auto it = active.find(raw->id);
        auto t = std::move(it->second);
        active.erase(it);
        finish(std::move(t), code, false);
      }
      curl_multi_poll(multi.get(), nullptr, 0, 1000, nullptr);
    }
  }

  Options options;
  MultiPtr multi;
  std::mutex mu;
  std::deque<std::unique_ptr<Transfer>> queue;
  std::vector<uint64_t> cancels;
  uint64_t next_id = 1;
  bool stopping = false;
  std::thread worker;
};

Client::Client(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Client::~Client() = default;

uint64_t Client::start(Request request, std::shared_ptr<Sink> sink) {
  return impl_->start(std::move(request), std::move(sink));
}

void Client::cancel(uint64_t id) { impl_->cancel(id); }

const Options& Client::options() const { return impl_->options; }

namespace {

class CollectingSink : public Sink {
 public:
  bool on_head(const Head&) override { return true; }
  bool on_data(const char* data, size_t len) override {
    body_.append(data, len);
    return true;
  }
  void on_done(Outcome outcome, const Head& head, std::string body, std::string detail) override {
    Client::Response r;
    r.outcome = outcome;
    r.head = head;
    r.body = body.empty() ? std::move(body_) : std::move(body);
    r.detail = std::move(detail);
    promise_.set_value(std::move(r));
  }
  std::future<Client::Response> future() { return promise_.get_future(); }

 private:
  std::string body_;
  std::promise<Client::Response> promise_;
};

}  // namespace

Client::Response Client::fetch(Request request) {
  auto sink = std::make_shared<CollectingSink>();
  auto f = sink->future();
  start(std::move(request), sink);
  return f.get();
}

}  // namespace netbootfs::http
