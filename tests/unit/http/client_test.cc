// The HTTP client against a scripted in-process HTTP/1.1 server: callback
// order, validators, ranges, refused responses, failures, timeouts,
// cancellation, shutdown and connection reuse.
#include "cache/http/client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace netbootfs::http {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// --- the scripted server ---------------------------------------------------------

// How the server answers one request.
struct Reply {
  int status = 200;
  std::vector<std::string> headers;  // extra "Name: value" lines
  std::string body;
  bool send_length = true;             // else the body ends when the connection closes
  std::optional<size_t> cut_after;     // send this many body bytes, then close
  std::optional<size_t> hang_after;    // send this many body bytes, then wait for stop()
  bool hang = false;                   // read the request and never answer
  size_t chunk = 0;                    // with pause: send the body in chunks ...
  std::chrono::milliseconds pause{0};  // ... this far apart
  std::string extra;                   // sent after the body, beyond Content-Length
};

struct Seen {
  std::string method, target;
  std::map<std::string, std::string> headers;  // names in lower case
  int connection = 0;                          // 1 for the first accepted

  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
  bool has(const std::string& name) const { return headers.count(name) != 0; }
};

class TestServer {
 public:
  using Handler = std::function<Reply(const Seen&)>;

  TestServer() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listen_fd_, 256), 0);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~TestServer() { stop(); }

  std::string url(const std::string& path = "") const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/" + path;
  }
  int port() const { return port_; }

  void on(const std::string& path, Handler handler) {
    std::lock_guard lock(mu_);
    handlers_["/" + path] = std::move(handler);
  }
  void on(const std::string& path, Reply reply) {
    on(path, [reply](const Seen&) { return reply; });
  }

  std::vector<Seen> requests() {
    std::lock_guard lock(mu_);
    return seen_;
  }
  int connections() {
    std::lock_guard lock(mu_);
    return accepted_;
  }
  bool wait_requests(size_t n, std::chrono::milliseconds timeout = 3s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return seen_.size() >= n; });
  }

  // Ends every connection, hung ones included.
  void stop() {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
      for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    cv_.notify_all();
    ::shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    ::close(listen_fd_);
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

 private:
  void accept_loop() {
    for (;;) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;  // stop() shut the socket down
      std::lock_guard lock(mu_);
      if (stopping_) {
        ::close(fd);
        return;
      }
      const int number = ++accepted_;
      open_fds_.insert(fd);
      threads_.emplace_back([this, fd, number] { serve(fd, number); });
    }
  }

  bool send_all(int fd, const char* data, size_t len) {
    while (len > 0) {
      const ssize_t n = ::send(fd, data, len, MSG_NOSIGNAL);
      if (n <= 0) return false;
      data += n;
      len -= static_cast<size_t>(n);
    }
    return true;
  }

  // Waits for stop(), or `limit`; true when stopping.
  bool idle(std::chrono::milliseconds limit) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return stopping_; });
  }

  void serve(int fd, int number) {
    std::string buffer;
    while (serve_one(fd, number, &buffer)) {
    }
    {
      std::lock_guard lock(mu_);
      open_fds_.erase(fd);
    }
    ::close(fd);
  }

  // One request and its reply; false when the connection is done.
  bool serve_one(int fd, int number, std::string* buffer) {
    size_t end;
    while ((end = buffer->find("\r\n\r\n")) == std::string::npos) {
      char chunk[4096];
      const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0) return false;
      buffer->append(chunk, static_cast<size_t>(n));
      if (static_cast<unsigned char>((*buffer)[0]) == 0x16) {
        // A TLS ClientHello on a plain-HTTP port: answer like nginx does.
        const std::string bad = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n";
        send_all(fd, bad.data(), bad.size());
        return false;
      }
    }
    Seen seen;
    seen.connection = number;
    const std::string head = buffer->substr(0, end);
    buffer->erase(0, end + 4);
    size_t pos = head.find("\r\n");
    const std::string request_line = head.substr(0, pos);
    const auto sp1 = request_line.find(' ');
    const auto sp2 = request_line.find(' ', sp1 + 1);
    seen.method = request_line.substr(0, sp1);
    seen.target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
    while (pos != std::string::npos) {
      const size_t start = pos + 2;
      pos = head.find("\r\n", start);
      const std::string line = head.substr(start, pos == std::string::npos ? pos : pos - start);
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      std::transform(name.begin(), name.end(), name.begin(), ::tolower);
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      seen.headers[name] = value;
    }
    // A proxied request names the whole URL: serve it by its path.
    std::string path = seen.target;
    if (path.rfind("http://", 0) == 0) path = path.substr(path.find('/', 7));
    path = path.substr(0, path.find('?'));

    Handler handler;
    {
      std::lock_guard lock(mu_);
      seen_.push_back(seen);
      auto it = handlers_.find(path);
      if (it != handlers_.end()) handler = it->second;
    }
    cv_.notify_all();
    Reply reply;
    if (handler) {
      reply = handler(seen);
    } else {
      reply.status = 404;
      reply.body = "no such file";
    }
    if (reply.hang) {
      idle(30s);
      return false;
    }
    const bool no_body = seen.method == "HEAD" || reply.status == 304 || reply.status == 204;
    std::string out = "HTTP/1.1 " + std::to_string(reply.status) + " Whatever\r\n";
    for (const auto& h : reply.headers) out += h + "\r\n";
    if (reply.send_length) {
      out += "Content-Length: " + std::to_string(reply.body.size()) + "\r\n";
    } else {
      out += "Connection: close\r\n";
    }
    out += "\r\n";
    if (!send_all(fd, out.data(), out.size())) return false;
    if (no_body) return reply.send_length;

    size_t limit = reply.body.size();
    if (reply.cut_after) limit = std::min(limit, *reply.cut_after);
    if (reply.hang_after) limit = std::min(limit, *reply.hang_after);
    const size_t step = reply.chunk ? reply.chunk : std::max<size_t>(limit, 1);
    for (size_t sent = 0; sent < limit; sent += step) {
      if (sent > 0 && reply.pause.count() > 0 && idle(reply.pause)) return false;
      if (!send_all(fd, reply.body.data() + sent, std::min(step, limit - sent))) return false;
    }
    if (reply.hang_after) {
      idle(30s);
      return false;
    }
    if (!reply.extra.empty()) {
      // Overlong: the surplus stays unread on a connection the client may
      // reuse; the next request's answer would come after it.
      if (!send_all(fd, reply.extra.data(), reply.extra.size())) return false;
      buffer->clear();
    }
    return !reply.cut_after && reply.send_length;
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::thread acceptor_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Handler> handlers_;
  std::vector<Seen> seen_;
  std::vector<std::thread> threads_;
  std::set<int> open_fds_;
  int accepted_ = 0;
  bool stopping_ = false;
};

// --- helpers -----------------------------------------------------------------------

Options fast() {
  Options o;
  o.connect_timeout = 2s;
  o.request_timeout = 2s;
  o.low_speed_time = 1s;
  o.user_agent = "netbootfs-test";
  return o;
}

Request get(std::string url) {
  Request r;
  r.url = std::move(url);
  return r;
}

Request head(std::string url) {
  Request r = get(std::move(url));
  r.method = Request::Method::kHead;
  return r;
}

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7 + i / 251) % 256);
  return s;
}

// Records the callbacks; events_ reads like "HDDDE".
class RecordingSink : public Sink {
 public:
  bool on_head(const Head& h) override {
    std::lock_guard lock(mu_);
    events_ += 'H';
    threads_.insert(std::this_thread::get_id());
    head_ = h;
    return !refuse_head_;
  }
  bool on_data(const char* data, size_t len) override {
    std::unique_lock lock(mu_);
    events_ += 'D';
    threads_.insert(std::this_thread::get_id());
    data_calls_++;
    body_.append(data, len);
    const bool keep = body_.size() < refuse_after_;
    cv_.notify_all();
    lock.unlock();
    if (on_data_hook_) on_data_hook_();
    return keep;
  }
  void on_done(Outcome o, const Head& h, std::string body, std::string detail) override {
    {
      std::lock_guard lock(mu_);
      events_ += 'E';
      threads_.insert(std::this_thread::get_id());
      done_count_++;
      outcome_ = o;
      final_head_ = h;
      memory_ = std::move(body);
      detail_ = std::move(detail);
    }
    cv_.notify_all();
    if (on_done_hook_) on_done_hook_();
  }

  bool wait_done(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return done_count_ > 0; });
  }
  bool wait_bytes(size_t n, std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return body_.size() >= n || done_count_ > 0; }) &&
           body_.size() >= n;
  }

  // Read after wait_done(), or after the Client is gone.
  std::mutex mu_;
  std::condition_variable cv_;
  std::string events_, body_, memory_, detail_;
  Head head_, final_head_;
  Outcome outcome_ = Outcome::kLocal;
  int done_count_ = 0;
  int data_calls_ = 0;
  std::set<std::thread::id> threads_;
  // Set before start().
  bool refuse_head_ = false;
  size_t refuse_after_ = SIZE_MAX;
  std::function<void()> on_data_hook_;
  std::function<void()> on_done_hook_;
};

// Runs one request through start() and waits for it.
std::shared_ptr<RecordingSink> run(Client& client, Request request,
                                   std::shared_ptr<RecordingSink> sink = nullptr) {
  if (!sink) sink = std::make_shared<RecordingSink>();
  client.start(std::move(request), sink);
  EXPECT_TRUE(sink->wait_done()) << "no on_done in time";
  return sink;
}

// A local port where nothing listens: bound, never listening, so the kernel
// refuses connections and no other test can take the port meanwhile.
class ClosedPort {
 public:
  ClosedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~ClosedPort() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// --- outcomes ----------------------------------------------------------------------

TEST(Outcome, NamesAndTransience) {
  struct Case {
    Outcome outcome;
    const char* name;
    bool transient;
  };
  const Case cases[] = {
      {Outcome::kOk, "ok", false},           {Outcome::kConnectFailed, "connect-failed", true},
      {Outcome::kTimeout, "timeout", true},  {Outcome::kTransferBroken, "transfer-broken", true},
      {Outcome::kTls, "tls", false},         {Outcome::kProtocol, "protocol", false},
      {Outcome::kAborted, "aborted", false}, {Outcome::kLocal, "local", false},
  };
  for (const auto& c : cases) {
    EXPECT_STREQ(to_string(c.outcome), c.name);
    EXPECT_EQ(is_transient(c.outcome), c.transient) << c.name;
  }
}

// --- responses -----------------------------------------------------------------------

TEST(Client, StreamsTheBodyInOrderAfterTheHead) {
  TestServer server;
  const std::string body = pattern(3 << 20);
  Reply r;
  r.body = body;
  r.headers = {"ETag: \"v1\"", "Last-Modified: Tue, 14 Nov 2023 22:13:20 GMT",
               "Content-Type: application/octet-stream"};
  server.on("images/linux", r);
  Client client(fast());
  auto s = run(client, get(server.url("images/linux")));
  EXPECT_EQ(s->outcome_, Outcome::kOk) << s->detail_;
  ASSERT_GE(s->events_.size(), 3u);
  EXPECT_EQ(s->events_.front(), 'H');
  EXPECT_EQ(s->events_.back(), 'E');
  EXPECT_EQ(s->events_.find_first_not_of('D', 1), s->events_.size() - 1) << s->events_;
  EXPECT_GT(s->data_calls_, 1) << "a 3 MiB body arrives in pieces";
  EXPECT_TRUE(s->body_ == body) << "bytes differ or are out of order";
  EXPECT_TRUE(s->memory_.empty()) << "a streamed body is not also collected";
  EXPECT_EQ(s->head_.status, 200);
  EXPECT_EQ(s->head_.content_length, body.size());
  EXPECT_EQ(s->head_.etag, "\"v1\"");
  EXPECT_EQ(s->head_.last_modified, 1700000000);
  EXPECT_EQ(s->head_.content_type, "application/octet-stream");
  EXPECT_EQ(s->head_.effective_url, server.url("images/linux"));
  EXPECT_EQ(s->final_head_.etag, "\"v1\"");
  // Every callback runs on the one worker thread, never the caller's.
  ASSERT_EQ(s->threads_.size(), 1u);
  EXPECT_NE(*s->threads_.begin(), std::this_thread::get_id());

  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].method, "GET");
  EXPECT_EQ(seen[0].target, "/images/linux");
  EXPECT_EQ(seen[0].header("user-agent"), "netbootfs-test");
  EXPECT_FALSE(seen[0].has("accept-encoding")) << "the bytes must be the file's";
  EXPECT_FALSE(seen[0].has("range"));
  EXPECT_FALSE(seen[0].has("if-none-match"));
}

TEST(Client, HeadGivesTheLengthWithoutABody) {
  TestServer server;
  Reply r;
  r.body = std::string(12345, 'x');  // the server sends only its length on HEAD
  server.on("k", r);
  Client client(fast());
  auto s = run(client, head(server.url("k")));
  EXPECT_EQ(s->outcome_, Outcome::kOk) << s->detail_;
  EXPECT_EQ(s->events_, "HE");
  EXPECT_EQ(s->head_.status, 200);
  EXPECT_EQ(s->head_.content_length, 12345u);
  EXPECT_TRUE(s->body_.empty());
  ASSERT_EQ(server.requests().size(), 1u);
  EXPECT_EQ(server.requests()[0].method, "HEAD");

  auto missing = run(client, head(server.url("nothing")));
  EXPECT_EQ(missing->outcome_, Outcome::kOk);
  EXPECT_EQ(missing->events_, "HE");
  EXPECT_EQ(missing->head_.status, 404);
}

TEST(Client, ValidatorsAreSentAndA304IsReported) {
  TestServer server;
  server.on("menu", [](const Seen& seen) {
    Reply r;
    if (seen.header("if-none-match") == "\"v7\"") {
      r.status = 304;
      r.headers = {"ETag: \"v7\""};
    } else {
      r.body = "DEFAULT x\n";
    }
    return r;
  });
  Client client(fast());
  Request r = get(server.url("menu"));
  r.if_none_match = "\"v7\"";
  r.if_modified_since = 1700000000;
  auto s = run(client, r);
  EXPECT_EQ(s->outcome_, Outcome::kOk) << s->detail_;
  EXPECT_EQ(s->events_, "HE") << "a 304 has a head and no body";
  EXPECT_EQ(s->head_.status, 304);
  EXPECT_EQ(s->head_.etag, "\"v7\"");
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].header("if-none-match"), "\"v7\"");
  EXPECT_EQ(seen[0].header("if-modified-since"), "Tue, 14 Nov 2023 22:13:20 GMT");

  // Without validators, none are sent and the body comes.
  auto plain = run(client, get(server.url("menu")));
  EXPECT_EQ(plain->head_.status, 200);
  EXPECT_EQ(plain->body_, "DEFAULT x\n");
  EXPECT_FALSE(server.requests()[1].has("if-modified-since"));
}

TEST(Client, RangeWithIfRangeAndContentRange) {
  TestServer server;
  server.on("initrd", [](const Seen& seen) {
    Reply r;
    if (seen.header("range") == "bytes=4-" && seen.header("if-range") == "\"v1\"") {
      r.status = 206;
      r.headers = {"Content-Range: bytes 4-9/10", "ETag: \"v1\""};
      r.body = "456789";
    } else {
      r.headers = {"ETag: \"v2\""};
      r.body = "0123456789";
    }
    return r;
  });
  Client client(fast());
  Request r = get(server.url("initrd"));
  r.range_from = 4;
  r.if_range = "\"v1\"";
  auto part = run(client, r);
  EXPECT_EQ(part->outcome_, Outcome::kOk) << part->detail_;
  EXPECT_EQ(part->head_.status, 206);
  EXPECT_EQ(part->head_.range_start, 4u);
  EXPECT_EQ(part->head_.range_total, 10u);
  EXPECT_EQ(part->head_.content_length, 6u);
  EXPECT_EQ(part->body_, "456789");
  EXPECT_EQ(server.requests().back().header("range"), "bytes=4-");
  EXPECT_EQ(server.requests().back().header("if-range"), "\"v1\"");

  // A changed validator: the whole new file, without range fields.
  r.if_range = "\"v0\"";
  auto whole = run(client, r);
  EXPECT_EQ(whole->head_.status, 200);
  EXPECT_FALSE(whole->head_.range_start);
  EXPECT_EQ(whole->body_, "0123456789");

  // If-Range goes only with a range.
  Request no_range = get(server.url("initrd"));
  no_range.if_range = "\"v1\"";
  run(client, no_range);
  EXPECT_FALSE(server.requests().back().has("if-range"));
  EXPECT_FALSE(server.requests().back().has("range"));
}

TEST(Client, ParsesResponseHeaders) {
  char future_date[64];
  const std::time_t in_100s = std::time(nullptr) + 100;
  std::tm tm{};
  gmtime_r(&in_100s, &tm);
  std::strftime(future_date, sizeof future_date, "%a, %d %b %Y %H:%M:%S GMT", &tm);

  struct Case {
    std::string header;
    std::function<void(const Head&)> check;
  };
  const std::vector<Case> cases = {
      {"Content-Range: bytes 4-9/*",
       [](const Head& h) {
         EXPECT_EQ(h.range_start, 4u);
         EXPECT_FALSE(h.range_total);
       }},
      {"Content-Range: bytes */10",
       [](const Head& h) {
         EXPECT_FALSE(h.range_start);
         EXPECT_EQ(h.range_total, 10u);
       }},
      {"content-range: bytes 0-0/123456789012",
       [](const Head& h) {
         EXPECT_EQ(h.range_start, 0u);
         EXPECT_EQ(h.range_total, 123456789012u);
       }},
      {"Retry-After: 120", [](const Head& h) { EXPECT_EQ(h.retry_after, 120); }},
      {std::string("Retry-After: ") + future_date,
       [](const Head& h) {
         ASSERT_TRUE(h.retry_after);
         EXPECT_GE(*h.retry_after, 95);
         EXPECT_LE(*h.retry_after, 100);
       }},
      {"Retry-After: Sun, 06 Nov 1994 08:49:37 GMT",
       [](const Head& h) { EXPECT_EQ(h.retry_after, 0); }},
      {"Retry-After: soon", [](const Head& h) { EXPECT_FALSE(h.retry_after); }},
      {"Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT",
       [](const Head& h) { EXPECT_EQ(h.last_modified, 784111777); }},
      {"Last-Modified: yesterday", [](const Head& h) { EXPECT_FALSE(h.last_modified); }},
      {"etag:   W/\"weak\"  ", [](const Head& h) { EXPECT_EQ(h.etag, "W/\"weak\""); }},
      {"Content-Type: text/plain; charset=utf-8",
       [](const Head& h) { EXPECT_EQ(h.content_type, "text/plain; charset=utf-8"); }},
  };
  TestServer server;
  Client client(fast());
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].header);
    Reply r;
    r.status = 503;  // Retry-After's usual company; any status parses the same
    r.headers = {cases[i].header};
    server.on("h" + std::to_string(i), r);
    auto s = run(client, get(server.url("h" + std::to_string(i))));
    EXPECT_EQ(s->outcome_, Outcome::kOk) << s->detail_;
    EXPECT_EQ(s->head_.status, 503);
    cases[i].check(s->head_);
  }
}

TEST(Client, ErrorStatusesDeliverTheHeadButNotTheBody) {
  TestServer server;
  Reply r;
  r.status = 500;
  r.body = "<html>Internal Server Error</html>";
  r.headers = {"Retry-After: 5"};
  server.on("broken", r);
  Client client(fast());
  auto missing = run(client, get(server.url("nothing")));
  EXPECT_EQ(missing->outcome_, Outcome::kOk);
  EXPECT_EQ(missing->events_, "HE") << "an error page is not the file";
  EXPECT_EQ(missing->head_.status, 404);
  EXPECT_EQ(missing->final_head_.status, 404);

  auto broken = run(client, get(server.url("broken")));
  EXPECT_EQ(broken->events_, "HE");
  EXPECT_EQ(broken->head_.status, 500);
  EXPECT_EQ(broken->head_.retry_after, 5);

  Request listing = get(server.url("broken"));
  listing.body_in_memory = true;
  auto in_memory = run(client, listing);
  EXPECT_EQ(in_memory->head_.status, 500);
  EXPECT_TRUE(in_memory->memory_.empty());
}

TEST(Client, AContentEncodingIsRefused) {
  TestServer server;
  Reply gz;
  gz.body = std::string(5000, 'z');
  gz.headers = {"Content-Encoding: gzip"};
  server.on("initrd.gz", gz);
  Reply id;
  id.body = "plain";
  id.headers = {"Content-Encoding: identity"};
  server.on("plain", id);
  Reply gone;
  gone.status = 404;
  gone.body = "compressed error page";
  gone.headers = {"Content-Encoding: gzip"};
  server.on("gone", gone);
  Client client(fast());

  auto s = run(client, get(server.url("initrd.gz")));
  EXPECT_EQ(s->outcome_, Outcome::kProtocol) << s->detail_;
  EXPECT_EQ(s->events_, "E") << "no head and no byte of an encoded body reach the sink";
  EXPECT_NE(s->detail_.find("gzip"), std::string::npos) << s->detail_;

  auto h = run(client, head(server.url("initrd.gz")));
  EXPECT_EQ(h->outcome_, Outcome::kProtocol) << "its Content-Length is not the file's size";

  auto plain = run(client, get(server.url("plain")));
  EXPECT_EQ(plain->outcome_, Outcome::kOk) << plain->detail_;
  EXPECT_EQ(plain->body_, "plain");

  // The status of an error matters, its (unused) body's encoding does not.
  auto error = run(client, get(server.url("gone")));
  EXPECT_EQ(error->outcome_, Outcome::kOk) << error->detail_;
  EXPECT_EQ(error->head_.status, 404);
}

TEST(Client, RedirectsAreFollowedAndOnlyTheFinalResponseCounts) {
  TestServer server;
  Reply moved;
  moved.status = 302;
  moved.headers = {"Location: /real/pxelinux.0", "ETag: \"redirect\"", "Content-Type: text/html"};
  moved.body = "<a href=...>moved</a>";
  server.on("pxelinux.0", moved);
  Reply real;
  real.body = "boot";
  server.on("real/pxelinux.0", real);
  Client client(fast());
  auto s = run(client, get(server.url("pxelinux.0")));
  EXPECT_EQ(s->outcome_, Outcome::kOk) << s->detail_;
  EXPECT_EQ(s->events_, "HDE");
  EXPECT_EQ(s->head_.status, 200);
  EXPECT_EQ(s->body_, "boot") << "the redirect's own body is not the file";
  EXPECT_EQ(s->head_.effective_url, server.url("real/pxelinux.0"));
  EXPECT_EQ(s->final_head_.effective_url, server.url("real/pxelinux.0"));
  EXPECT_TRUE(s->head_.etag.empty()) << "headers of the redirect leaked into the final head";
  EXPECT_TRUE(s->head_.content_type.empty());
  ASSERT_EQ(server.requests().size(), 2u);
  EXPECT_EQ(server.requests()[1].target, "/real/pxelinux.0");
}

TEST(Client, RedirectsStayWithinHttpAndTheLimit) {
  TestServer server;
  auto redirect = [&](const std::string& from, const std::string& to) {
    Reply r;
    r.status = 301;
    r.headers = {"Location: " + to};
    server.on(from, r);
  };
  redirect("to-ftp", "ftp://127.0.0.1/pxelinux.0");
  redirect("to-file", "file:///etc/passwd");
  redirect("hop1", server.url("hop2"));
  redirect("hop2", server.url("hop3"));
  redirect("hop3", server.url("end"));
  Reply end;
  end.body = "end";
  server.on("end", end);
  Options o = fast();
  o.max_redirects = 2;
  Client client(o);
  for (const char* path : {"to-ftp", "to-file", "hop1"}) {
    SCOPED_TRACE(path);
    auto s = run(client, get(server.url(path)));
    EXPECT_EQ(s->outcome_, Outcome::kProtocol) << s->detail_;
    EXPECT_FALSE(is_transient(s->outcome_));
    EXPECT_TRUE(s->body_.empty());
  }
  auto two_hops = run(client, get(server.url("hop2")));
  EXPECT_EQ(two_hops->outcome_, Outcome::kOk) << two_hops->detail_;
  EXPECT_EQ(two_hops->body_, "end");

  for (const char* url : {"file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://h/x"}) {
    auto s = run(client, get(url));
    EXPECT_EQ(s->outcome_, Outcome::kProtocol) << url;
  }
}

// --- failures ---------------------------------------------------------------------------

TEST(Client, ABodyCutShortIsATransferBroken) {
  TestServer server;
  const std::string body = pattern(100000);
  Reply r;
  r.body = body;
  r.cut_after = 30000;
  server.on("big", r);
  Client client(fast());
  auto s = run(client, get(server.url("big")));
  EXPECT_EQ(s->outcome_, Outcome::kTransferBroken) << s->detail_;
  EXPECT_TRUE(is_transient(s->outcome_));
  EXPECT_EQ(s->body_.size(), 30000u);
  EXPECT_TRUE(s->body_ == body.substr(0, 30000));
  EXPECT_FALSE(s->detail_.empty());
}

TEST(Client, ABodyWithoutLengthEndsWithTheConnection) {
  TestServer server;
  Reply r;
  r.body = pattern(70000);
  r.send_length = false;
  server.on("stream", r);
  Client client(fast());
  auto s = run(client, get(server.url("stream")));
  EXPECT_EQ(s->outcome_, Outcome::kOk) << s->detail_;
  EXPECT_FALSE(s->head_.content_length);
  EXPECT_TRUE(s->body_ == r.body);
}

TEST(Client, ARefusedConnectionFailsFast) {
  ClosedPort closed;
  Client client(fast());
  const auto t0 = Clock::now();
  auto s = run(client, get("http://127.0.0.1:" + std::to_string(closed.port()) + "/x"));
  EXPECT_EQ(s->outcome_, Outcome::kConnectFailed) << s->detail_;
  EXPECT_TRUE(is_transient(s->outcome_));
  EXPECT_EQ(s->events_, "E");
  EXPECT_LT(Clock::now() - t0, 1s);
}

TEST(Client, TlsToAPlainHttpPortIsATlsFailure) {
  TestServer server;
  Client client(fast());
  auto s = run(client, get("https://127.0.0.1:" + std::to_string(server.port()) + "/x"));
  EXPECT_EQ(s->outcome_, Outcome::kTls) << s->detail_;
  EXPECT_FALSE(is_transient(s->outcome_));
}

TEST(Client, AStalledServerTimesOut) {
  TestServer server;
  Reply silent;
  silent.hang = true;
  server.on("silent", silent);
  Reply stalls;
  stalls.body = pattern(10000);
  stalls.hang_after = 1000;
  server.on("stalls", stalls);
  Options o = fast();
  o.request_timeout = 300ms;
  o.low_speed_time = 1s;
  // libcurl averages the speed over the last few seconds: with a limit of
  // 1 B/s the 1000 bytes sent before the stall would hide it for 5 s.
  o.low_speed_limit = 10000;
  Client client(o);

  // HEAD: the total limit.
  auto t0 = Clock::now();
  auto h = run(client, head(server.url("silent")));
  EXPECT_EQ(h->outcome_, Outcome::kTimeout) << h->detail_;
  EXPECT_TRUE(is_transient(h->outcome_));
  EXPECT_LT(Clock::now() - t0, 900ms);

  // Streamed GETs: the low-speed limit, before the head and mid-body.
  t0 = Clock::now();
  auto silent_get = std::make_shared<RecordingSink>();
  auto stalled_get = std::make_shared<RecordingSink>();
  client.start(get(server.url("silent")), silent_get);
  client.start(get(server.url("stalls")), stalled_get);
  ASSERT_TRUE(silent_get->wait_done());
  ASSERT_TRUE(stalled_get->wait_done());
  EXPECT_EQ(silent_get->outcome_, Outcome::kTimeout) << silent_get->detail_;
  EXPECT_EQ(stalled_get->outcome_, Outcome::kTimeout) << stalled_get->detail_;
  EXPECT_EQ(stalled_get->body_.size(), 1000u);
  EXPECT_EQ(stalled_get->events_.front(), 'H');
  EXPECT_GE(Clock::now() - t0, 900ms) << "the low-speed window is 1 s";
  EXPECT_LT(Clock::now() - t0, 2800ms);
}

// With the default limit of 1 B/s, libcurl's averaged rate alone would see a
// stall after a fast burst only ~5 s late; no byte for low_speed_time is a
// timeout whatever came before. A slow but steady body is not one.
TEST(Client, NoByteForLowSpeedTimeAfterABurstTimesOut) {
  TestServer server;
  Reply burst;
  burst.body = pattern(2000000);
  burst.hang_after = 1000000;
  server.on("burst", burst);
  Reply steady;
  steady.body = pattern(3000);
  steady.chunk = 500;
  steady.pause = 400ms;  // 2.4 s in all, never 1 s without a byte
  server.on("steady", steady);
  Options o = fast();
  o.low_speed_limit = 1;
  o.low_speed_time = 1s;
  Client client(o);
  const auto t0 = Clock::now();
  auto stalled = std::make_shared<RecordingSink>();
  auto slow = std::make_shared<RecordingSink>();
  client.start(get(server.url("burst")), stalled);
  client.start(get(server.url("steady")), slow);
  ASSERT_TRUE(stalled->wait_done());
  EXPECT_EQ(stalled->outcome_, Outcome::kTimeout) << stalled->detail_;
  EXPECT_TRUE(is_transient(stalled->outcome_));
  EXPECT_EQ(stalled->body_.size(), 1000000u);
  EXPECT_GE(Clock::now() - t0, 900ms);
  EXPECT_LT(Clock::now() - t0, 3500ms) << "the stall was seen late: " << stalled->detail_;
  ASSERT_TRUE(slow->wait_done());
  EXPECT_EQ(slow->outcome_, Outcome::kOk) << slow->detail_;
  EXPECT_EQ(slow->body_, steady.body);
}

TEST(Client, TheTotalLimitSparesStreamedBodies) {
  TestServer server;
  Reply slow;
  slow.body = pattern(8000);
  slow.chunk = 1000;
  slow.pause = 100ms;  // about 700 ms in all
  server.on("slow", slow);
  Options o = fast();
  o.request_timeout = 250ms;
  Client client(o);
  auto streamed = run(client, get(server.url("slow")));
  EXPECT_EQ(streamed->outcome_, Outcome::kOk) << "a slow download is not killed for taking long";
  EXPECT_TRUE(streamed->body_ == slow.body);

  Request listing = get(server.url("slow"));
  listing.body_in_memory = true;
  auto in_memory = run(client, listing);
  EXPECT_EQ(in_memory->outcome_, Outcome::kTimeout) << "in-memory requests have a total limit";
}

// --- cancellation and sinks ----------------------------------------------------------------

TEST(Client, CancelMidTransferEndsItOnce) {
  TestServer server;
  Reply r;
  r.body = pattern(100000);
  r.hang_after = 5000;
  server.on("slow", r);
  auto s = std::make_shared<RecordingSink>();
  {
    Client client(fast());
    const uint64_t id = client.start(get(server.url("slow")), s);
    ASSERT_TRUE(s->wait_bytes(5000));
    client.cancel(id);
    ASSERT_TRUE(s->wait_done(2s));
    client.cancel(id);         // finished: nothing more happens
    client.cancel(id + 1000);  // never existed
    // Another request still works after a cancel.
    Reply small;
    small.body = "ok";
    server.on("small", small);
    auto after = run(client, get(server.url("small")));
    EXPECT_EQ(after->body_, "ok");
  }  // the worker is joined: no callback can come any more
  EXPECT_EQ(s->outcome_, Outcome::kAborted);
  EXPECT_EQ(s->done_count_, 1);
  EXPECT_EQ(s->events_.back(), 'E');
  EXPECT_EQ(s->body_.size(), 5000u);
}

TEST(Client, CancelFromInsideOnDataStopsTheBytes) {
  TestServer server;
  Reply r;
  r.body = pattern(4 << 20);  // more than one round of callbacks
  server.on("big", r);
  Client client(fast());
  auto s = std::make_shared<RecordingSink>();
  std::promise<uint64_t> id_promise;
  std::shared_future<uint64_t> id = id_promise.get_future().share();
  std::atomic<int> calls_after_cancel{0};
  std::atomic<bool> cancelled{false};
  s->on_data_hook_ = [&] {
    if (cancelled) {
      calls_after_cancel++;
      return;
    }
    ASSERT_EQ(id.wait_for(5s), std::future_status::ready);
    client.cancel(id.get());
    cancelled = true;
  };
  id_promise.set_value(client.start(get(server.url("big")), s));
  ASSERT_TRUE(s->wait_done());
  EXPECT_EQ(s->outcome_, Outcome::kAborted) << s->detail_;
  EXPECT_EQ(calls_after_cancel, 0);
  EXPECT_EQ(s->data_calls_, 1);
  EXPECT_LT(s->body_.size(), r.body.size());
}

TEST(Client, ASinkThatRefusesAborts) {
  TestServer server;
  Reply r;
  r.body = pattern(2 << 20);
  server.on("f", r);
  Client client(fast());

  auto data = std::make_shared<RecordingSink>();
  data->refuse_after_ = 1;  // the first on_data returns false
  run(client, get(server.url("f")), data);
  EXPECT_EQ(data->outcome_, Outcome::kAborted) << data->detail_;
  EXPECT_EQ(data->events_, "HDE") << "no on_data after one returned false";
  EXPECT_EQ(data->done_count_, 1);

  auto head_refused = std::make_shared<RecordingSink>();
  head_refused->refuse_head_ = true;
  run(client, get(server.url("f")), head_refused);
  EXPECT_EQ(head_refused->outcome_, Outcome::kAborted);
  EXPECT_EQ(head_refused->events_, "HE");

  auto head_only = std::make_shared<RecordingSink>();
  head_only->refuse_head_ = true;
  run(client, head(server.url("f")), head_only);
  EXPECT_EQ(head_only->outcome_, Outcome::kAborted);
}

TEST(Client, InMemoryBodiesAreCollectedWithinTheirLimit) {
  TestServer server;
  Reply listing;
  listing.body = "[{\"name\":\"pxelinux.0\",\"type\":\"file\"}]";
  listing.headers = {"Content-Type: application/json"};
  server.on("dir/", listing);
  Reply big;
  big.body = std::string(1000, 'b');
  server.on("big/", big);
  Reply big_unsized = big;
  big_unsized.send_length = false;
  server.on("unsized/", big_unsized);
  Client client(fast());

  Request r = get(server.url("dir/"));
  r.body_in_memory = true;
  auto s = run(client, r);
  EXPECT_EQ(s->outcome_, Outcome::kOk) << s->detail_;
  EXPECT_EQ(s->events_, "HE") << "on_data is not called for in-memory requests";
  EXPECT_EQ(s->memory_, listing.body);
  EXPECT_EQ(s->head_.content_type, "application/json");
  auto fetched = client.fetch(r);
  EXPECT_EQ(fetched.outcome, Outcome::kOk);
  EXPECT_EQ(fetched.body, listing.body);

  for (const char* path : {"big/", "unsized/"}) {
    Request limited = get(server.url(path));
    limited.body_in_memory = true;
    limited.max_memory_body = 100;
    auto over = run(client, limited);
    EXPECT_EQ(over->outcome_, Outcome::kProtocol) << path << ": " << over->detail_;
    EXPECT_TRUE(over->memory_.empty());
  }
}

TEST(Client, FetchCollectsAStreamedBody) {
  TestServer server;
  Reply r;
  r.body = pattern(200000);
  server.on("kernel", r);
  Client client(fast());
  auto response = client.fetch(get(server.url("kernel")));
  EXPECT_EQ(response.outcome, Outcome::kOk) << response.detail;
  EXPECT_EQ(response.head.status, 200);
  EXPECT_TRUE(response.body == r.body);
  EXPECT_TRUE(response.detail.empty());
}

TEST(Client, CallbacksMayStartButNotFetch) {
  TestServer server;
  Reply r;
  r.body = "x";
  server.on("a", r);
  server.on("b", r);
  Client client(fast());
  auto second = std::make_shared<RecordingSink>();
  auto first = std::make_shared<RecordingSink>();
  Client::Response nested;
  first->on_done_hook_ = [&] {
    nested = client.fetch(get(server.url("b")));  // would wait for itself
    client.start(get(server.url("b")), second);
  };
  run(client, get(server.url("a")), first);
  ASSERT_TRUE(second->wait_done());
  EXPECT_EQ(nested.outcome, Outcome::kLocal);
  EXPECT_EQ(second->outcome_, Outcome::kOk);
  EXPECT_EQ(second->body_, "x");
}

// --- concurrency and connections --------------------------------------------------------------

TEST(Client, ManyConcurrentRequestsAllComplete) {
  TestServer server;
  constexpr int kCount = 50;
  for (int i = 0; i < kCount; ++i) {
    Reply r;
    r.body = std::to_string(i) + pattern(static_cast<size_t>(i) * 1000);
    server.on("f" + std::to_string(i), r);
  }
  Client client(fast());
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  std::vector<std::thread> starters;
  std::mutex sinks_mu;
  sinks.resize(kCount);
  // Started from several threads at once: start() is thread-safe.
  for (int t = 0; t < 5; ++t) {
    starters.emplace_back([&, t] {
      for (int i = t; i < kCount; i += 5) {
        auto s = std::make_shared<RecordingSink>();
        {
          std::lock_guard lock(sinks_mu);
          sinks[i] = s;
        }
        client.start(get(server.url("f" + std::to_string(i))), s);
      }
    });
  }
  for (auto& t : starters) t.join();
  for (int i = 0; i < kCount; ++i) {
    ASSERT_TRUE(sinks[i]->wait_done()) << i;
    EXPECT_EQ(sinks[i]->outcome_, Outcome::kOk) << i << ": " << sinks[i]->detail_;
    EXPECT_TRUE(sinks[i]->body_ == std::to_string(i) + pattern(static_cast<size_t>(i) * 1000)) << i;
    EXPECT_EQ(sinks[i]->done_count_, 1);
  }
}

TEST(Client, ConnectionsAreCappedPerHost) {
  TestServer server;
  Reply r;
  r.body = pattern(50000);
  r.chunk = 10000;
  r.pause = 10ms;  // long enough for requests to overlap
  server.on("f", r);
  Options o = fast();
  o.max_host_connections = 2;
  Client client(o);
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (int i = 0; i < 10; ++i) {
    sinks.push_back(std::make_shared<RecordingSink>());
    client.start(get(server.url("f")), sinks.back());
  }
  for (auto& s : sinks) {
    ASSERT_TRUE(s->wait_done());
    EXPECT_EQ(s->outcome_, Outcome::kOk) << s->detail_;
  }
  EXPECT_LE(server.connections(), 2);
  EXPECT_EQ(server.requests().size(), 10u);
}

TEST(Client, SequentialRequestsReuseOneConnection) {
  TestServer server;
  Reply r;
  r.body = "menu";
  server.on("menu", r);
  server.on("other", r);
  Client client(fast());
  for (int i = 0; i < 5; ++i) {
    auto response = client.fetch(get(server.url(i % 2 ? "menu" : "other")));
    EXPECT_EQ(response.outcome, Outcome::kOk);
  }
  client.fetch(head(server.url("menu")));
  client.fetch(get(server.url("missing")));  // a 404 keeps the connection too
  client.fetch(get(server.url("menu")));
  EXPECT_EQ(server.requests().size(), 8u);
  EXPECT_EQ(server.connections(), 1);
}

// A server that sends more than Content-Length leaves bytes on the
// connection: the next request on it must not read them as its answer (curl
// says "Received HTTP/0.9"), and the surplus never reaches the sink.
TEST(Client, BytesBeyondContentLengthDoNotPoisonTheNextRequest) {
  TestServer server;
  Reply overlong;
  overlong.body = pattern(5000);
  overlong.extra = std::string(4096, 'X');
  server.on("overlong", overlong);
  Reply menu;
  menu.body = "menu";
  server.on("menu", menu);
  Client client(fast());
  auto first = client.fetch(get(server.url("overlong")));
  EXPECT_EQ(first.outcome, Outcome::kOk) << first.detail;
  EXPECT_EQ(first.body, overlong.body);
  for (int i = 0; i < 3; ++i) {
    auto next = client.fetch(get(server.url(i == 1 ? "overlong" : "menu")));
    EXPECT_EQ(next.outcome, Outcome::kOk) << i << ": " << next.detail;
    EXPECT_EQ(next.head.status, 200) << i;
    EXPECT_EQ(next.body, i == 1 ? overlong.body : menu.body) << i;
  }
  auto h = client.fetch(head(server.url("menu")));
  EXPECT_EQ(h.outcome, Outcome::kOk) << h.detail;
  EXPECT_EQ(h.head.content_length, 4u);
}

// A 256 KiB header is over libcurl's limit: a refused response (not a local
// failure, not worth retrying), and the connection still serves what follows.
TEST(Client, AHugeHeaderIsAProtocolError) {
  TestServer server;
  Reply big;
  big.body = "body";
  big.headers = {"X-Padding: " + std::string(262144, 'x')};
  server.on("big", big);
  Reply menu;
  menu.body = "menu";
  server.on("menu", menu);
  Client client(fast());
  const auto t0 = Clock::now();
  auto r = client.fetch(get(server.url("big")));
  EXPECT_EQ(r.outcome, Outcome::kProtocol) << r.detail;
  EXPECT_FALSE(is_transient(r.outcome));
  EXPECT_TRUE(r.body.empty());
  EXPECT_LT(Clock::now() - t0, 1500ms);
  auto h = client.fetch(head(server.url("big")));
  EXPECT_EQ(h.outcome, Outcome::kProtocol) << h.detail;
  auto next = client.fetch(get(server.url("menu")));
  EXPECT_EQ(next.outcome, Outcome::kOk) << next.detail;
  EXPECT_EQ(next.body, "menu");
}

TEST(Client, AProxyIsUsedWhenConfigured) {
  TestServer proxy;
  Reply r;
  r.body = "via proxy";
  proxy.on("tftp/pxelinux.0", r);
  Options o = fast();
  o.proxy = proxy.url();
  Client client(o);
  auto response = client.fetch(get("http://upstream.invalid/tftp/pxelinux.0"));
  EXPECT_EQ(response.outcome, Outcome::kOk) << response.detail;
  EXPECT_EQ(response.body, "via proxy");
  ASSERT_EQ(proxy.requests().size(), 1u);
  EXPECT_EQ(proxy.requests()[0].target, "http://upstream.invalid/tftp/pxelinux.0");
}

// --- shutdown ---------------------------------------------------------------------------------

TEST(Client, DestructionAbortsEverythingOnce) {
  TestServer server;
  Reply silent;
  silent.hang = true;
  server.on("silent", silent);
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  auto chained = std::make_shared<RecordingSink>();
  Options o = fast();
  o.low_speed_time = 30s;  // only the destructor may end these
  {
    Client client(o);
    for (int i = 0; i < 3; ++i) sinks.push_back(std::make_shared<RecordingSink>());
    // A sink that starts another request from its on_done, as a retry would.
    sinks[0]->on_done_hook_ = [&] { client.start(get(server.url("silent")), chained); };
    for (auto& s : sinks) client.start(get(server.url("silent")), s);
    ASSERT_TRUE(server.wait_requests(3));
    // And some that the worker may not even have picked up yet.
    for (int i = 0; i < 3; ++i) {
      sinks.push_back(std::make_shared<RecordingSink>());
      client.start(get(server.url("silent")), sinks.back());
    }
  }
  for (auto& s : sinks) {
    EXPECT_EQ(s->done_count_, 1);
    EXPECT_EQ(s->outcome_, Outcome::kAborted);
  }
  EXPECT_EQ(chained->done_count_, 1);
  EXPECT_EQ(chained->outcome_, Outcome::kAborted);
}

TEST(Client, KeepsTheSinkAliveUntilOnDone) {
  TestServer server;
  Reply r;
  r.body = "xy";
  r.hang_after = 1;
  server.on("f", r);
  Client client(fast());
  std::weak_ptr<RecordingSink> weak;
  uint64_t id;
  {
    auto s = std::make_shared<RecordingSink>();
    weak = s;
    id = client.start(get(server.url("f")), s);
  }
  ASSERT_TRUE(server.wait_requests(1));
  EXPECT_FALSE(weak.expired()) << "the client holds the sink while the request runs";
  auto keep = weak.lock();
  ASSERT_TRUE(keep);
  client.cancel(id);
  ASSERT_TRUE(keep->wait_done());
  EXPECT_EQ(keep->outcome_, Outcome::kAborted);
}


// --- WAN limits ----------------------------------------------------------------------

size_t count_gets(TestServer& server, const std::string& target) {
  size_t n = 0;
  for (const auto& s : server.requests()) n += s.method == "GET" && s.target == target;
  return n;
}

TEST(ClientLimits, MaxDownloadsQueuesTheExtraBodyButNeverAHeadOrAListing) {
  TestServer server;
  Reply slow;
  slow.body = pattern(2000);
  slow.chunk = 200;
  slow.pause = 100ms;  // about 1 s per body
  server.on("slow", slow);
  Reply small;
  small.body = "listing";
  server.on("dir/", small);
  Options o = fast();
  o.max_downloads = 2;
  Client client(o);
  std::vector<std::shared_ptr<RecordingSink>> bodies;
  for (int i = 0; i < 3; ++i) {
    bodies.push_back(std::make_shared<RecordingSink>());
    client.start(get(server.url("slow")), bodies.back());
  }
  ASSERT_TRUE(bodies[0]->wait_bytes(200) && bodies[1]->wait_bytes(200));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(count_gets(server, "/slow"), 2u) << "the third body waits";
  EXPECT_EQ(client.queued_bodies(), 1u);
  const auto t0 = Clock::now();
  auto h = run(client, head(server.url("slow")));
  Request listing = get(server.url("dir/"));
  listing.body_in_memory = true;
  auto l = run(client, listing);
  EXPECT_EQ(h->outcome_, Outcome::kOk);
  EXPECT_EQ(l->memory_, "listing");
  EXPECT_LT(Clock::now() - t0, 500ms) << "HEAD and listing are not queued behind bodies";
  {
    std::lock_guard lk(bodies[2]->mu_);
    EXPECT_EQ(bodies[2]->done_count_, 0);
    EXPECT_TRUE(bodies[2]->events_.empty()) << "not started yet";
  }
  for (auto& b : bodies) ASSERT_TRUE(b->wait_done(10s));
  for (auto& b : bodies) {
    EXPECT_EQ(b->outcome_, Outcome::kOk) << b->detail_;
    EXPECT_TRUE(b->body_ == slow.body);
  }
  EXPECT_EQ(count_gets(server, "/slow"), 3u);
  EXPECT_EQ(client.queued_bodies(), 0u);
}

TEST(ClientLimits, ACancelledQueuedBodyIsAbortedWithoutARequest) {
  TestServer server;
  Reply slow;
  slow.body = pattern(1000);
  slow.chunk = 100;
  slow.pause = 50ms;
  server.on("slow", slow);
  Options o = fast();
  o.max_downloads = 1;
  Client client(o);
  auto first = std::make_shared<RecordingSink>();
  auto second = std::make_shared<RecordingSink>();
  client.start(get(server.url("slow")), first);
  ASSERT_TRUE(first->wait_bytes(100));
  const uint64_t id = client.start(get(server.url("slow")), second);
  client.cancel(id);
  ASSERT_TRUE(second->wait_done());
  EXPECT_EQ(second->outcome_, Outcome::kAborted);
  EXPECT_EQ(second->events_, "E");
  ASSERT_TRUE(first->wait_done());
  EXPECT_EQ(first->outcome_, Outcome::kOk);
  EXPECT_EQ(count_gets(server, "/slow"), 1u);
}

TEST(ClientLimits, MaxRateBoundsTheTotalOfConcurrentBodies) {
  TestServer server;
  Reply big;
  big.body = pattern(300000);
  server.on("a", big);
  server.on("b", big);
  Options o = fast();
  o.max_rate = 300000;  // bytes/s for both together
  Client client(o);
  const auto t0 = Clock::now();
  auto a = std::make_shared<RecordingSink>();
  auto b = std::make_shared<RecordingSink>();
  client.start(get(server.url("a")), a);
  client.start(get(server.url("b")), b);
  ASSERT_TRUE(a->wait_done(10s) && b->wait_done(10s));
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(a->outcome_, Outcome::kOk) << a->detail_;
  EXPECT_EQ(b->outcome_, Outcome::kOk) << b->detail_;
  EXPECT_TRUE(a->body_ == big.body && b->body_ == big.body);
  // 600000 bytes at 300000 B/s: at least 0.8 x 2 s (the lower bound only).
  EXPECT_GE(secs, 0.8 * 600000 / 300000) << "took " << secs << " s";
  std::printf("max_rate 300000 B/s, 2 x 300000 bytes: %.2f s\n", secs);
}

TEST(ClientLimits, MaxRateLeavesHeadsAlone) {
  TestServer server;
  Reply big;
  big.body = pattern(400000);
  server.on("a", big);
  Options o = fast();
  o.max_rate = 100000;
  Client client(o);
  auto a = std::make_shared<RecordingSink>();
  client.start(get(server.url("a")), a);
  ASSERT_TRUE(a->wait_bytes(65536));
  const auto t0 = Clock::now();
  auto h = run(client, head(server.url("a")));
  EXPECT_EQ(h->outcome_, Outcome::kOk);
  EXPECT_LT(Clock::now() - t0, 500ms);
}

}  // namespace
}  // namespace netbootfs::http
