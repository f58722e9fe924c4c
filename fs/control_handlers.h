// control_handlers: what the running mount answers on its control socket
// (status, gc, invalidate, prefetch; the messages are fs/control_protocol.h).
//
// Contract
// - control_handlers() returns one handler per command for
//   ControlSocket::start(). The handlers keep references to everything in
//   ControlContext: each of those must outlive the ControlSocket.
// - Handlers run on the socket's connection threads, never on a FUSE worker;
//   what they call (Fetcher, FuseFs::invalidate_kernel, Evictor's counters)
//   is safe from any thread. prefetch streams at most ten progress lines a
//   second and stops when its Reply is cancelled.
// - Each command that changes something (gc, invalidate, prefetch) logs one
//   info line on the "control" logger.
#pragma once

#include <chrono>
#include <map>
#include <string>

#include "cache/evictor.h"
#include "cache/fetcher.h"
#include "fs/control_socket.h"
#include "fs/fuse_fs.h"
#include "fs/options.h"

namespace netbootfs::fs {

struct ControlContext {
  const MountOptions& opts;
  cache::Fetcher& fetcher;
  FuseFs& fsimpl;
  const cache::Evictor& evictor;
  std::chrono::steady_clock::time_point started;  // for status's uptime
  std::string version;                            // status's "version"
};

std::map<std::string, ControlSocket::Handler> control_handlers(const ControlContext& ctx);

}  // namespace netbootfs::fs
