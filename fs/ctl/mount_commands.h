// mount_commands: netbootfsctl's commands (and parts of commands) that go
// through a running mount's control socket: invalidate, gc and prefetch of
// a mounted cache, and the live status and pins that status and ls show.
//
// Contract
// - `socket` is the control socket's path (--socket, default
//   CACHE_DIR/control.sock). Where no mount listens there (ENOENT,
//   ECONNREFUSED), the *_through_mount() functions return nullopt without
//   printing anything, so that the caller works on the cache directory
//   instead; any other outcome is printed and its exit code returned.
// - Exit codes: 0 done, 1 some files failed (prefetch), 2 usage, an I/O
//   error, or the mount refused (its "error" is printed).
// - Output: what the mount replies, minus "ok", with --json; a line of
//   fs/ctl/format.h otherwise.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "fs/control_protocol.h"
#include "fs/ctl/format.h"

namespace netbootfs::fs::ctl {

// The mount's status reply (without "ok") when one answers within 5 s; else
// null, with `error` saying why unless nothing listens.
struct LiveStatus {
  nlohmann::json reply;
  std::string error;
};
LiveStatus mount_status(const std::string& socket);

// The running mount's pins; none when no mount answers.
std::vector<std::string> mount_pins(const std::string& socket);

// Makes the mount ask upstream again for `paths` (at or below them), or for
// everything. Not mounted is an error here (exit 2).
int cmd_invalidate(const std::string& socket, const std::vector<std::string>& paths, bool all,
                   bool json);

// The mount enforces its own limit and pins now. `limits_given`: the
// command line named a limit or pins, which a mount refuses (exit 2).
std::optional<int> gc_through_mount(const std::string& socket, bool limits_given, bool json);

// The mount prefetches `req`; progress on `bar`. `unmounted_only` names the
// flags given that apply to an unmounted cache only ("--url is"; empty:
// none), which makes a mounted cache an error (exit 2).
std::optional<int> prefetch_through_mount(const std::string& socket,
                                          const control::PrefetchRequest& req,
                                          const std::string& unmounted_only, const ProgressBar& bar,
                                          bool json);

}  // namespace netbootfs::fs::ctl
