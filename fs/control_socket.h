// ControlSocket: the running mount's command channel for netbootfsctl
// (status, invalidate, prefetch; more handlers may be registered by name).
//
// Contract
// - Listens on a Unix stream socket at Options::path, created with mode 0600
//   (umask around bind, then checked with stat). A file already at the path
//   is removed first: the caller holds the cache lock, so it can only be the
//   leftover of a crashed mount. The file is removed when the socket stops.
// - Each connection's peer is checked with SO_PEERCRED: a uid that is not 0
//   (unless allow_root is false, for tests) and not self_uid gets one error
//   reply and is closed.
// - Requests and replies are newline-delimited JSON objects. A request is
//   {"cmd": NAME, ...}; the reply is zero or more event lines (whatever the
//   handler streams, e.g. {"event":"progress",...}) and then one final line
//   holding "ok" (true, with the handler's fields, or false with "error").
//   A connection may send several requests, one at a time.
// - Bounds: a request line longer than max_request bytes, or a connection
//   that sends nothing for idle_timeout while a request is incomplete or
//   expected, is answered once (when possible) and dropped; at most
//   max_connections are served at once, a further one gets an error and is
//   closed.
// - Threads: one acceptor plus one thread per connection; handlers run on
//   the connection's thread, never on a FUSE worker. stop() (also the
//   destructor) wakes every thread, marks every Reply cancelled, and joins.
//   Handlers must watch Reply::cancelled() when they run long.
// - The messages themselves (command and field names, request checks) are
//   fs/control_protocol.h; paths in requests go through normalize_request_path().
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cache/util/result.h"
#include "cache/util/unique_fd.h"
#include "fs/control_protocol.h"

namespace netbootfs::fs {

// Whether a peer with this uid may use the socket of a daemon running as self_uid.
bool peer_allowed(uid_t peer_uid, uid_t self_uid, bool allow_root = true);

class ControlSocket {
 public:
  struct Options {
    std::string path;
    size_t max_request = 64 * 1024;
    std::chrono::milliseconds idle_timeout{10000};
    size_t max_connections = 8;
    uid_t self_uid = 0;      // set by start() to geteuid() unless override_uid
    bool override_uid = false;
    bool allow_root = true;
  };

  // Streams event lines to the client of one request.
  class Reply {
   public:
    // False once the client is gone or the socket stops.
    bool send(const nlohmann::json& line);
    bool cancelled() const;

   private:
    friend class ControlSocket;
    Reply(int fd, const std::atomic<bool>& stopping) : fd_(fd), stopping_(stopping) {}
    int fd_;
    const std::atomic<bool>& stopping_;
    bool broken_ = false;
  };

  // Returns the final line's fields (ok is added), or an Error (ok:false).
  using Handler = std::function<Result<nlohmann::json>(const nlohmann::json& request, Reply& out)>;

  // Binds and starts serving. Handlers added before start() only.
  static Result<std::unique_ptr<ControlSocket>> start(Options options,
                                                      std::map<std::string, Handler> handlers);
  ~ControlSocket();
  // Wakes every thread and cancels every Reply without waiting (so that the
  // caller can then answer what the handlers wait for, e.g. Fetcher::shutdown).
  void request_stop();
  // request_stop(), then joins the threads and removes the socket file.
  void stop();
  const std::string& path() const { return opt_.path; }
  ControlSocket(const ControlSocket&) = delete;
  ControlSocket& operator=(const ControlSocket&) = delete;

 private:
  struct Conn {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  ControlSocket(Options o, std::map<std::string, Handler> h)
      : opt_(std::move(o)), handlers_(std::move(h)) {}
  void accept_loop();
  void serve(UniqueFd fd, Conn* self);
  // One request line: the final reply line (handlers may stream before it).
  nlohmann::json dispatch(const std::string& line, Reply& out);

  Options opt_;
  const std::map<std::string, Handler> handlers_;
  UniqueFd listen_fd_;
  UniqueFd wake_fd_;  // eventfd: readable once stopping
  std::atomic<bool> stopping_{false};
  bool joined_ = false;  // stop() ran (owner's thread only)
  std::thread acceptor_;
  std::mutex mu_;  // guards conns_ (leaf lock)
  std::list<std::unique_ptr<Conn>> conns_;
};

}  // namespace netbootfs::fs
