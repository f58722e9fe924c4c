#include "fs/ctl/control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "fs/control_protocol.h"

namespace netbootfs::fs::ctl {

Result<ControlClient> ControlClient::connect(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof(a.sun_path)) return Error{ENAMETOOLONG, "socket path too long"};
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Error{errno, std::strerror(errno)};
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    return Error{errno, path + ": " + std::strerror(errno)};
  }
  return ControlClient(std::move(fd));
}

Result<nlohmann::json> ControlClient::call(const nlohmann::json& request, const EventFn& on_event,
                                           int timeout_ms) {
  const std::string line = request.dump() + "\n";
  if (::send(fd_.get(), line.data(), line.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(line.size())) {
    return Error{errno, std::string("control socket: ") + std::strerror(errno)};
  }
  char chunk[4096];
  for (;;) {
    for (size_t nl; (nl = buf_.find('\n')) != std::string::npos;) {
      auto j = nlohmann::json::parse(buf_.substr(0, nl), nullptr, false);
      buf_.erase(0, nl + 1);
      if (j.is_discarded() || !j.is_object()) return Error{EPROTO, "bad reply from the mount"};
      if (j.contains(control::kOk)) return j;
      if (on_event) on_event(j);
    }
    pollfd p{fd_.get(), POLLIN, 0};
    const int n = ::poll(&p, 1, timeout_ms);
    if (n == 0) return Error{ETIMEDOUT, "the mount did not answer"};
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error{errno, std::strerror(errno)};
    }
    const ssize_t got = ::recv(fd_.get(), chunk, sizeof chunk, 0);
    if (got <= 0) return Error{EPIPE, "the mount closed the control connection"};
    buf_.append(chunk, static_cast<size_t>(got));
  }
}

bool not_listening(const Error& e) { return e.code == ENOENT || e.code == ECONNREFUSED; }

}  // namespace netbootfs::fs::ctl
