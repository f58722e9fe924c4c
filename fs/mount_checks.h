// Checks of the mountpoint and of libfuse's complaints, made before anything
// is mounted so that a bad configuration ends in one clear line and a
// non-zero exit instead of a mount that hides something or a log to decode.
//
// Contract:
// - prepare_mountpoint() accepts an existing, empty directory that is not the
//   root of a mounted filesystem. It refuses (one-line Error, nothing changed)
//   a missing path, a non-directory, a directory with entries (FUSE 3 has no
//   `nonempty`: a mount would silently hide an old pushed tree), and a path
//   where a filesystem is mounted, alive or dead, by anyone, netbootfs
//   included. Two exceptions: a dead netbootfs mount (ENOTCONN, left by a
//   crash or kill -9) is detached and the directory under it checked in turn;
//   an autofs mount point (x-systemd.automount) is accepted untouched, since
//   the real mount is meant to stack on it and touching it would wait for us.
//   A bind mount of a subdirectory (a container volume) is a plain directory.
// - FuseLogCapture collects what libfuse logs while it lives (option parsing,
//   fuse_session_new) so that the caller prints one line of its own;
//   fuse_error_line() turns the capture into that line. Not thread-safe:
//   libfuse's log hook is process-wide; use it before any thread starts.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "cache/util/result.h"

namespace netbootfs::fs {

// One line of /proc/self/mountinfo, octal escapes decoded.
struct MountEntry {
  std::string root;         // the path inside its filesystem that is mounted ("/" for a whole fs)
  std::string mount_point;  // where it is mounted
  std::string type;         // e.g. "tmpfs", "fuse.netbootfs"
  std::string source;       // e.g. "/dev/vda", the upstream URL
};

// Parses mountinfo text; malformed lines are skipped.
std::vector<MountEntry> parse_mountinfo(std::string_view text);

// Checks `mountpoint` as described above; may detach a dead netbootfs mount.
Result<void> prepare_mountpoint(const std::string& mountpoint);

class FuseLogCapture {
 public:
  FuseLogCapture();   // installs the capturing log hook
  ~FuseLogCapture();  // restores libfuse's default (stderr); drops nothing it was not told to
  FuseLogCapture(const FuseLogCapture&) = delete;
  FuseLogCapture& operator=(const FuseLogCapture&) = delete;

  // What libfuse logged so far.
  const std::string& text() const;
  // Restores the default hook and writes what was captured to stderr: for
  // the paths that go on, where libfuse's warnings still belong to the admin.
  void release();

 private:
  bool active_ = true;
};

// One line from what libfuse logged when it refused the options, e.g.
// "unknown option 'bogus=1'", or `fallback` when it logged nothing.
std::string fuse_error_line(std::string_view captured, std::string_view fallback);

}  // namespace netbootfs::fs
