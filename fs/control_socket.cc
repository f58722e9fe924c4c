#include "fs/control_socket.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "cache/util/log.h"

namespace netbootfs::fs {
namespace {

auto log() { return logger("control"); }

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Writes all of `s` (the socket is blocking, with a send timeout).
bool write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

bool send_line(int fd, const nlohmann::json& j) {
  return write_all(fd, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

nlohmann::json error_line(const std::string& msg) {
  return {{control::kOk, false}, {control::kError, msg}};
}

}  // namespace

bool peer_allowed(uid_t peer_uid, uid_t self_uid, bool allow_root) {
  return peer_uid == self_uid || (allow_root && peer_uid == 0);
}

bool ControlSocket::Reply::send(const nlohmann::json& line) {
  if (broken_ || stopping_.load()) return false;
  if (!send_line(fd_, line)) broken_ = true;
  return !broken_;
}

bool ControlSocket::Reply::cancelled() const {
  if (broken_ || stopping_.load()) return true;
  // A client that hung up: its end reads as EOF (or an error).
  pollfd p{fd_, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

Result<std::unique_ptr<ControlSocket>> ControlSocket::start(
    Options options, std::map<std::string, Handler> handlers) {
  if (!options.override_uid) options.self_uid = ::geteuid();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (options.path.empty() || options.path.size() >= sizeof(addr.sun_path)) {
    return Error{ENAMETOOLONG, "control socket path '" + options.path + "' is empty or longer than " +
                                   std::to_string(sizeof(addr.sun_path) - 1) + " bytes"};
  }
  std::memcpy(addr.sun_path, options.path.c_str(), options.path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Error{errno, std::string("control socket: ") + std::strerror(errno)};
  struct stat st{};
  if (::lstat(options.path.c_str(), &st) == 0) {
    // We hold the cache lock: whatever is there was left by a dead mount.
    if (!S_ISSOCK(st.st_mode)) {
      return Error{EEXIST, "control socket " + options.path + " exists and is not a socket"};
    }
    if (::unlink(options.path.c_str()) != 0) {
      return Error{errno, "cannot remove stale control socket " + options.path + ": " +
                              std::strerror(errno)};
    }
  }
  const mode_t old = ::umask(0177);
  const int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const int bind_errno = errno;
  ::umask(old);
  if (rc != 0) {
    return Error{bind_errno, "cannot bind control socket " + options.path + ": " +
                                 std::strerror(bind_errno)};
  }
  if (::stat(options.path.c_str(), &st) != 0 || (st.st_mode & 0777) != 0600) {
    if (::chmod(options.path.c_str(), 0600) != 0 || ::stat(options.path.c_str(), &st) != 0 ||
        (st.st_mode & 0777) != 0600) {
      ::unlink(options.path.c_str());
      return Error{EPERM, "control socket " + options.path + " is not mode 0600"};
    }
  }
  if (::listen(fd.get(), 16) != 0) {
    const int e = errno;
    ::unlink(options.path.c_str());
    return Error{e, "listen on control socket: " + std::string(std::strerror(e))};
  }
  std::unique_ptr<ControlSocket> cs(new ControlSocket(std::move(options), std::move(handlers)));
  cs->listen_fd_ = std::move(fd);
  cs->wake_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!cs->wake_fd_.valid()) {
    ::unlink(cs->opt_.path.c_str());
    return Error{errno, "eventfd: " + std::string(std::strerror(errno))};
  }
  cs->acceptor_ = std::thread([p = cs.get()] { p->accept_loop(); });
  return cs;
}

ControlSocket::~ControlSocket() { stop(); }

void ControlSocket::request_stop() {
  if (stopping_.exchange(true)) return;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
}

void ControlSocket::stop() {
  if (joined_) return;
  joined_ = true;
  request_stop();
  if (acceptor_.joinable()) acceptor_.join();
  std::list<std::unique_ptr<Conn>> conns;
  {
    std::lock_guard lk(mu_);
    conns.swap(conns_);
  }
  for (auto& c : conns) {
    if (c->thread.joinable()) c->thread.join();
  }
  ::unlink(opt_.path.c_str());
}

void ControlSocket::accept_loop() {
  for (;;) {
    pollfd p[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    const int n = ::poll(p, 2, 1000);
    if (stopping_) return;
    {
      // Join the connections that finished.
      std::lock_guard lk(mu_);
      for (auto it = conns_.begin(); it != conns_.end();) {
        if ((*it)->done) {
          (*it)->thread.join();
          it = conns_.erase(it);
        } else {
          ++it;
        }
      }
    }
    if (n <= 0 || !(p[0].revents & POLLIN)) continue;
    UniqueFd c(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!c.valid()) continue;
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(opt_.idle_timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((opt_.idle_timeout.count() % 1000) * 1000);
    ::setsockopt(c.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (::getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
        !peer_allowed(cred.uid, opt_.self_uid, opt_.allow_root)) {
      log()->warn("control: refused a client with uid {} (pid {})", cred.uid, cred.pid);
      send_line(c.get(), error_line("permission denied: only root and uid " +
                                    std::to_string(opt_.self_uid) + " may use this socket"));
      continue;
    }
    std::lock_guard lk(mu_);
    if (conns_.size() >= opt_.max_connections) {
      send_line(c.get(), error_line("busy: too many control connections"));
      continue;
    }
    auto conn = std::make_unique<Conn>();
    Conn* self = conn.get();
    conn->thread = std::thread([this, fd = c.release(), self]() mutable {
      serve(UniqueFd(fd), self);
    });
    conns_.push_back(std::move(conn));
  }
}

void ControlSocket::serve(UniqueFd fd, Conn* self) {
  struct Done {
    Conn* c;
    ~Done() { c->done = true; }
  } done{self};
  std::string buf;
  int64_t last = now_ms();
  char chunk[4096];
  while (!stopping_) {
    // Complete lines first.
    for (size_t nl; (nl = buf.find('\n')) != std::string::npos;) {
      std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      if (line.empty()) continue;
      Reply out(fd.get(), stopping_);
      const nlohmann::json final_line = dispatch(line, out);
      if (!out.send(final_line)) return;
      last = now_ms();
    }
    if (buf.size() > opt_.max_request) {
      log()->warn("control: dropped a client whose request exceeds {} bytes", opt_.max_request);
      send_line(fd.get(), error_line("request longer than " + std::to_string(opt_.max_request) +
                                     " bytes"));
      return;
    }
    const int64_t left = opt_.idle_timeout.count() - (now_ms() - last);
    if (left <= 0) {
      send_line(fd.get(), error_line("timed out waiting for a request"));
      return;
    }
    pollfd p[2] = {{fd.get(), POLLIN, 0}, {wake_fd_.get(), POLLIN, 0}};
    const int n = ::poll(p, 2, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (n < 0 && errno != EINTR) return;
    if (n <= 0 || !(p[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    const ssize_t got = ::recv(fd.get(), chunk, sizeof(chunk), 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return;  // the client closed
    buf.append(chunk, static_cast<size_t>(got));
    last = now_ms();
  }
}

nlohmann::json ControlSocket::dispatch(const std::string& line, Reply& out) {
  nlohmann::json req = nlohmann::json::parse(line, nullptr, false);
  if (req.is_discarded() || !req.is_object()) return error_line("the request is not a JSON object");
  if (!req.contains(control::kCmd) || !req[control::kCmd].is_string()) {
    return error_line("the request has no \"cmd\"");
  }
  const std::string cmd = req[control::kCmd].get<std::string>();
  auto it = handlers_.find(cmd);
  if (it == handlers_.end()) return error_line("unknown command '" + cmd + "'");
  try {
    auto r = it->second(req, out);
    if (!r) return error_line(r.error().message);
    nlohmann::json j = std::move(r).value();
    if (!j.is_object()) j = nlohmann::json::object();
    j[control::kOk] = true;
    return j;
  } catch (const std::exception& e) {
    // A malformed field (wrong JSON type) in a request.
    return error_line(std::string("bad request: ") + e.what());
  }
}

}  // namespace netbootfs::fs
