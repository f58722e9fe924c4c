// A small HTTP/1.1 upstream for unit tests, on 127.0.0.1 with an ephemeral
// port. It serves files from memory with ETag/Last-Modified, answers
// If-None-Match with 304, Range with 206 (If-Range honoured), directories
// ("path/") with an nginx-style JSON listing, and records every request.
// Faults per path: hold the response until release() (or stop), or cut the
// connection after N body bytes for the next K requests.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace netbootfs::testing {

class TestHttpServer {
 public:
  struct Request {
    std::string method, path, if_none_match, range, if_range;
    int status = 0;
  };

  // `port` 0: an ephemeral one; else that port (an upstream that comes back).
  explicit TestHttpServer(int port = 0) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(listen_fd_, 128);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~TestHttpServer() { stop(); }

  void stop() {
    {
      std::lock_guard lk(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    ::shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    ::close(listen_fd_);
    std::vector<std::thread> conns;
    {
      std::lock_guard lk(mu_);
      for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
      conns.swap(conns_);
    }
    for (auto& t : conns) t.join();
  }

  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/"; }

  // Files are "a/b" (no leading slash); the ETag changes with each put.
  void put(const std::string& path, std::string body, int64_t mtime = 1700000000) {
    std::lock_guard lk(mu_);
    files_[path] = File{std::move(body), "\"v" + std::to_string(++etag_counter_) + "\"", mtime};
  }
  void remove(const std::string& path) {
    std::lock_guard lk(mu_);
    files_.erase(path);
  }
  // Extra response header lines for `path` ("Content-Encoding: gzip").
  void add_header(const std::string& path, const std::string& line) {
    std::lock_guard lk(mu_);
    extra_headers_[path] += line + "\r\n";
  }
  // `path` is sent without Content-Length, delimited by closing the connection.
  void no_length(const std::string& path) {
    std::lock_guard lk(mu_);
    no_length_.push_back(path);
  }
  // The listing of directory `dir` ("a/b/") answers 404, as with autoindex off.
  void no_listing(const std::string& dir) {
    std::lock_guard lk(mu_);
    no_listing_.push_back(dir);
  }
  // `path` answers 302 to `location`.
  void redirect(const std::string& path, const std::string& location) {
    std::lock_guard lk(mu_);
    redirects_[path] = location;
  }
  // Responses for `path` wait until release().
  void hold(const std::string& path) {
    std::lock_guard lk(mu_);
    held_.push_back(path);
  }
  void release() {
    std::lock_guard lk(mu_);
    held_.clear();
    cv_.notify_all();
  }
  // The next `times` GETs of `path` close the connection after `after` body bytes.
  void cut(const std::string& path, size_t after, int times = 1) {
    std::lock_guard lk(mu_);
    cuts_[path] = {after, times};
  }

  // The next `times` requests (any method; -1: until cleared with times=0) of
  // `path` answer `status` with an empty body, with Retry-After when given.
  void fail_status(const std::string& path, int status, int times = 1, int retry_after = -1) {
    std::lock_guard lk(mu_);
    status_faults_[path] = StatusFault{status, times, retry_after};
  }

  std::vector<Request> requests() const {
    std::lock_guard lk(mu_);
    return log_;
  }
  size_t count(const std::string& method, const std::string& path, int status = 0) const {
    std::lock_guard lk(mu_);
    return std::count_if(log_.begin(), log_.end(), [&](const Request& r) {
      return r.method == method && r.path == path && (status == 0 || r.status == status);
    });
  }
  // Waits (bounded) until a request for `path` has arrived (held or not).
  bool wait_arrived(const std::string& path,
                    std::chrono::milliseconds limit = std::chrono::seconds(10)) const {
    std::unique_lock lk(mu_);
    return log_cv_.wait_for(lk, limit, [&] {
      return std::find(arrived_.begin(), arrived_.end(), path) != arrived_.end();
    });
  }
  // Waits (bounded) until `pred(requests())` holds.
  template <class Pred>
  bool wait_for(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) const {
    std::unique_lock lk(mu_);
    return log_cv_.wait_for(lk, limit, [&] { return pred(log_); });
  }

 private:
  struct File {
    std::string body, etag;
    int64_t mtime;
  };
  struct StatusFault {
    int status, times, retry_after;
  };

  void accept_loop() {
    for (;;) {
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      std::lock_guard lk(mu_);
      if (stopping_) {
        ::close(fd);
        return;
      }
      open_fds_.push_back(fd);
      conns_.emplace_back([this, fd] { serve(fd); });
    }
  }

  static bool send_all(int fd, const char* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  }

  static std::string header(const std::string& head, const char* name) {
    std::istringstream in(head);
    std::string line;
    const size_t nlen = std::strlen(name);
    while (std::getline(in, line)) {
      if (line.size() > nlen && strncasecmp(line.c_str(), name, nlen) == 0 && line[nlen] == ':') {
        std::string v = line.substr(nlen + 1);
        v.erase(0, v.find_first_not_of(' '));
        while (!v.empty() && (v.back() == '\r' || v.back() == ' ')) v.pop_back();
        return v;
      }
    }
    return {};
  }

  static std::string decode(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '%' && i + 2 < s.size()) {
        out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        out += s[i];
      }
    }
    return out;
  }

  void serve(int fd) {
    std::string buf;
    char tmp[8192];
    for (;;) {
      size_t end;
      while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
        ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0) return finish(fd);
        buf.append(tmp, static_cast<size_t>(n));
      }
      const std::string head = buf.substr(0, end + 4);
      buf.erase(0, end + 4);
      std::istringstream first(head);
      Request req;
      std::string target;
      first >> req.method >> target;
      req.path = decode(target.substr(1));
      req.if_none_match = header(head, "If-None-Match");
      req.range = header(head, "Range");
      req.if_range = header(head, "If-Range");
      if (!respond(fd, req)) return finish(fd);
    }
  }

  void finish(int fd) {
    std::lock_guard lk(mu_);
    open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), fd), open_fds_.end());
    ::close(fd);
  }

  void record(Request r) {
    std::lock_guard lk(mu_);
    log_.push_back(std::move(r));
    log_cv_.notify_all();
  }

  // Returns false when the connection must close.
  bool respond(int fd, Request req) {
    std::unique_lock lk(mu_);
    arrived_.push_back(req.path);
    log_cv_.notify_all();
    cv_.wait(lk, [&] {
      return stopping_ || std::find(held_.begin(), held_.end(), req.path) == held_.end();
    });
    if (stopping_) return false;
    std::string status_line, extra, body;
    std::optional<size_t> cut_after;
    auto sf = status_faults_.find(req.path);
    if (sf != status_faults_.end() && sf->second.times != 0) {
      if (sf->second.times > 0) sf->second.times--;
      status_line = std::to_string(sf->second.status) + " Injected";
      if (sf->second.retry_after >= 0) {
        extra = "Retry-After: " + std::to_string(sf->second.retry_after) + "\r\n";
      }
    } else if (auto r = redirects_.find(req.path); r != redirects_.end()) {
      status_line = "302 Found";
      extra = "Location: " + r->second + "\r\n";
    } else if (req.path.empty() || req.path.back() == '/') {
      const std::string prefix = req.path;
      std::map<std::string, std::pair<bool, size_t>> entries;
      for (auto& [p, f] : files_) {
        if (p.compare(0, prefix.size(), prefix) != 0 || p.size() == prefix.size()) continue;
        std::string rest = p.substr(prefix.size());
        auto slash = rest.find('/');
        if (slash == std::string::npos) {
          entries[rest] = {false, f.body.size()};
        } else {
          entries[rest.substr(0, slash)] = {true, 0};
        }
      }
      const bool hidden =
          std::find(no_listing_.begin(), no_listing_.end(), prefix) != no_listing_.end();
      if ((entries.empty() && !prefix.empty()) || hidden) {
        status_line = "404 Not Found";
      } else {
        body = "[";
        bool first = true;
        for (auto& [name, e] : entries) {
          body += first ? "" : ",";
          first = false;
          body += "{\"name\":\"" + name + "\",\"type\":\"" + (e.first ? "directory" : "file") +
                  "\",\"mtime\":\"Tue, 14 Nov 2023 22:13:20 GMT\"";
          if (!e.first) body += ",\"size\":" + std::to_string(e.second);
          body += "}";
        }
        body += "]";
        status_line = "200 OK";
        extra = "Content-Type: application/json\r\n";
      }
    } else if (auto it = files_.find(req.path); it == files_.end()) {
      status_line = "404 Not Found";
    } else {
      const File& f = it->second;
      extra = "ETag: " + f.etag + "\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n";
      if (!req.if_none_match.empty() && req.if_none_match == f.etag) {
        status_line = "304 Not Modified";
      } else if (!req.range.empty() && (req.if_range.empty() || req.if_range == f.etag)) {
        const size_t from = std::stoul(req.range.substr(req.range.find('=') + 1));
        status_line = "206 Partial Content";
        extra += "Content-Range: bytes " + std::to_string(from) + "-" +
                 std::to_string(f.body.size() - 1) + "/" + std::to_string(f.body.size()) + "\r\n";
        body = f.body.substr(std::min(from, f.body.size()));
      } else {
        status_line = "200 OK";
        body = f.body;
      }
      if (auto h = extra_headers_.find(req.path); h != extra_headers_.end()) extra += h->second;
      if (req.method == "GET") {
        if (auto c = cuts_.find(req.path); c != cuts_.end() && c->second.second > 0) {
          c->second.second--;
          cut_after = c->second.first;
        }
      }
    }
    const bool close_delimited =
        std::find(no_length_.begin(), no_length_.end(), req.path) != no_length_.end();
    lk.unlock();
    req.status = std::stoi(status_line);
    std::string out = "HTTP/1.1 " + status_line + "\r\n" + extra;
    if (close_delimited) {
      out += "Connection: close\r\n\r\n";
      record(req);
      if (send_all(fd, out.data(), out.size()) && req.method != "HEAD") {
        send_all(fd, body.data(), body.size());
      }
      return false;
    }
    if (status_line.rfind("304", 0) != 0) out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    out += "\r\n";
    record(req);
    if (!send_all(fd, out.data(), out.size())) return false;
    if (req.method == "HEAD" || status_line[0] == '3') return true;  // 302 bodies are empty
    if (cut_after && *cut_after < body.size()) {
      send_all(fd, body.data(), *cut_after);
      return false;
    }
    return send_all(fd, body.data(), body.size());
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::thread acceptor_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  mutable std::condition_variable log_cv_;
  bool stopping_ = false;
  std::vector<std::thread> conns_;
  std::vector<int> open_fds_;
  std::map<std::string, File> files_;
  std::vector<std::string> held_;
  std::map<std::string, std::pair<size_t, int>> cuts_;
  std::map<std::string, std::string> extra_headers_;
  std::map<std::string, std::string> redirects_;
  std::map<std::string, StatusFault> status_faults_;
  std::vector<std::string> no_length_;
  std::vector<std::string> no_listing_;
  std::vector<Request> log_;
  std::vector<std::string> arrived_;
  uint64_t etag_counter_ = 0;
};

}  // namespace netbootfs::testing
