// ControlClient: netbootfsctl's end of the mount's control socket
// (fs/control_socket.h; the messages are fs/control_protocol.h).
//
// Contract
// - connect() fails with ENOENT or ECONNREFUSED when no mount listens on the
//   path (not mounted, or the leftover of a crashed mount): not_listening()
//   tells those apart from real errors.
// - call() sends one request and reads lines until the final one (holding
//   "ok"), which it returns whether ok is true or false; each line before it
//   (an event) goes to on_event. Errors: ETIMEDOUT when no line arrives for
//   timeout_ms, EPIPE when the mount closes the connection, EPROTO for a line
//   that is not a JSON object. One call at a time per client.
// - Move-only; owns its socket.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "cache/util/result.h"
#include "cache/util/unique_fd.h"

namespace netbootfs::fs::ctl {

class ControlClient {
 public:
  using EventFn = std::function<void(const nlohmann::json& event)>;

  static Result<ControlClient> connect(const std::string& path);
  Result<nlohmann::json> call(const nlohmann::json& request, const EventFn& on_event,
                              int timeout_ms = 30000);

 private:
  explicit ControlClient(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
  std::string buf_;  // received, not yet a whole line
};

bool not_listening(const Error& e);

}  // namespace netbootfs::fs::ctl
