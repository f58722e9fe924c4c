// CacheLock: one writer per cache directory at a time.
//
// Contract: the mount holds the lock on <cache_dir>/lock (flock, exclusive)
// for as long as it runs; netbootfsctl commands that change the cache take it
// without waiting and refuse with a clear message (naming the holder's PID)
// while a mount has it. The kernel drops an flock when its holder dies, so a
// crashed mount never leaves the cache locked. Read-only commands need no lock.
#pragma once

#include <string>

#include "cache/util/result.h"
#include "cache/util/unique_fd.h"

namespace netbootfs::cache {

class CacheLock {
 public:
  // EBUSY (with the holder's PID in the message) when another process holds it.
  static Result<CacheLock> acquire(const std::string& cache_dir);
  // Records this process as the holder (after a daemonizing fork).
  void note_holder();
  CacheLock(CacheLock&&) = default;
  CacheLock& operator=(CacheLock&&) = default;

 private:
  CacheLock() = default;
  UniqueFd fd_;
};

}  // namespace netbootfs::cache
