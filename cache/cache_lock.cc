#include "cache/cache_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace netbootfs::cache {

Result<CacheLock> CacheLock::acquire(const std::string& cache_dir) {
  const std::string path = cache_dir + "/lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd.valid()) return Error{errno, "cannot open " + path + ": " + std::strerror(errno)};
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err != EWOULDBLOCK) return Error{err, "cannot lock " + path + ": " + std::strerror(err)};
    char buf[32] = {};
    const ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
    std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("?");
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    return Error{EBUSY, "the cache " + cache_dir + " is in use by a running netbootfs (pid " +
                            pid + ")"};
  }
  CacheLock lock;
  lock.fd_ = std::move(fd);
  lock.note_holder();
  return lock;
}

void CacheLock::note_holder() {
  // The holder's PID, for the message above; informative only.
  const std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_.get(), 0) == 0) (void)!::pwrite(fd_.get(), me.data(), me.size(), 0);
}

}  // namespace netbootfs::cache
