#include "cache/blob_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>

#include "cache/util/crash_point.h"

namespace netbootfs::cache {
namespace {

// Captures errno at once: building the message may call into the allocator,
// which is allowed to clobber it.
Error sys_error(const std::string& what) {
  const int e = errno;
  return Error{e, what + ": " + std::strerror(e)};
}

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};
using UniqueDir = std::unique_ptr<DIR, DirCloser>;

Result<void> fsync_dir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return sys_error("open " + dir);
  if (::fsync(fd.get()) != 0) return sys_error("fsync " + dir);
  return {};
}

// Returns true when the directory was created by this call, so the caller
// knows its parent's entry still has to be made durable.
Result<bool> ensure_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) == 0) return true;
  if (errno != EEXIST) return sys_error("mkdir " + dir);
  return false;
}

bool is_hex_lower(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// Recomputes a TempBlob's running hash from its file: used after a failed
// publish, whose hex_digest() already finalised the hash, so that the blob
// can be appended to or published again.
void rehash(int fd, uint64_t size, Sha256& hash) {
  hash.reset();
  char buf[1 << 16];
  uint64_t off = 0;
  while (off < size) {
    const ssize_t n =
        ::pread(fd, buf, static_cast<size_t>(std::min<uint64_t>(sizeof buf, size - off)),
                static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the next publish will fail its own checks
    hash.update(buf, static_cast<size_t>(n));
    off += static_cast<uint64_t>(n);
  }
}

}  // namespace

// --- Sha256 -----------------------------------------------------------------

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) { reset(); }
Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }
Sha256::Sha256(Sha256&& o) noexcept : ctx_(std::exchange(o.ctx_, nullptr)) {}
Sha256& Sha256::operator=(Sha256&& o) noexcept {
  if (this != &o) {
    EVP_MD_CTX_free(ctx_);
    ctx_ = std::exchange(o.ctx_, nullptr);
  }
  return *this;
}

// A moved-from hasher has no context; reset() gives it a fresh one so that a
// reused moved-from object (e.g. a TempBlob assigned anew) hashes correctly.
void Sha256::reset() {
  if (!ctx_) ctx_ = EVP_MD_CTX_new();
  if (ctx_) EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);
}

void Sha256::update(const void* data, size_t len) {
  if (!ctx_) reset();
  if (ctx_) EVP_DigestUpdate(ctx_, data, len);
}

std::string Sha256::hex_digest() {
  if (!ctx_) reset();
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!ctx_ || EVP_DigestFinal_ex(ctx_, md, &len) != 1) return {};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 0xf];
  }
  return out;
}

std::string Sha256::of(std::string_view data) {
  Sha256 h;
  h.update(data.data(), data.size());
  return h.hex_digest();
}

// Lowercase only: the name is used as a file name, and "AB.." and "ab.." must
// not be two addresses of the same content. 64 hex characters cannot contain
// '/' or "..", which is what keeps a crafted name inside blobs/.
bool is_sha256_hex(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!is_hex_lower(c)) return false;
  }
  return true;
}

// --- TempBlob ---------------------------------------------------------------

TempBlob::TempBlob(TempBlob&& o) noexcept
    : fd_(std::move(o.fd_)),
      path_(std::exchange(o.path_, {})),
      size_(std::exchange(o.size_, 0)),
      hash_(std::move(o.hash_)),
      published_(std::exchange(o.published_, false)) {}

TempBlob& TempBlob::operator=(TempBlob&& o) noexcept {
  if (this != &o) {
    if (fd_.valid() && !published_ && !path_.empty()) ::unlink(path_.c_str());
    fd_ = std::move(o.fd_);
    path_ = std::exchange(o.path_, {});
    size_ = std::exchange(o.size_, 0);
    hash_ = std::move(o.hash_);
    published_ = std::exchange(o.published_, false);
  }
  return *this;
}

TempBlob::~TempBlob() {
  if (fd_.valid() && !published_ && !path_.empty()) ::unlink(path_.c_str());
}

Result<void> TempBlob::append(const char* data, size_t len) {
  if (!fd_.valid() || published_) return Error{EBADF, "append to a closed or published blob"};
  size_t done = 0;
  while (done < len) {
    const ssize_t w =
        ::pwrite(fd_.get(), data + done, len - done, static_cast<off_t>(size_ + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      // pwrite() returning 0 for a non-empty buffer cannot make progress;
      // report it as the disk being full rather than spinning.
      Error err = w < 0 ? sys_error("write " + path_) : Error{ENOSPC, "write " + path_ + ": 0"};
      // Cut the bytes this call wrote, so the file stays exactly size_ long
      // and matches the hash should the caller retry or publish anyway.
      // Readers only read below size_, so they never see the cut.
      if (done > 0) (void)::ftruncate(fd_.get(), static_cast<off_t>(size_));
      return err;
    }
    done += static_cast<size_t>(w);
  }
  hash_.update(data, len);
  size_ += len;
  return {};
}

Result<void> TempBlob::reset() {
  if (!fd_.valid() || published_) return Error{EBADF, "reset of a closed or published blob"};
  if (::ftruncate(fd_.get(), 0) != 0) return sys_error("truncate " + path_);
  size_ = 0;
  hash_.reset();
  return {};
}

// --- BlobStore --------------------------------------------------------------

Result<std::unique_ptr<BlobStore>> BlobStore::open(const std::string& cache_dir) {
  crash_point_warn_if_armed();  // the daemon opens its store once, at start-up
  for (const auto& d : {cache_dir, cache_dir + "/blobs", cache_dir + "/tmp"}) {
    if (auto r = ensure_dir(d); !r) return r.error();
  }
  // Fail at start-up, not on the first download, when the cache is not ours.
  if (::access((cache_dir + "/tmp").c_str(), W_OK) != 0) return sys_error(cache_dir + "/tmp");
  return std::unique_ptr<BlobStore>(new BlobStore(cache_dir));
}

// Does not validate: callers that take names from outside go through
// open_blob/blob_size/remove, which do.
std::string BlobStore::blob_path(std::string_view sha256) const {
  std::string p = dir_ + "/blobs/";
  p += sha256.substr(0, 2);
  p += '/';
  p += sha256;
  return p;
}

Result<TempBlob> BlobStore::create_temp() {
  std::string tmpl = dir_ + "/tmp/dl-XXXXXX";
  UniqueFd fd(::mkostemp(tmpl.data(), O_CLOEXEC));
  if (!fd.valid()) return sys_error("create a temp file in " + dir_ + "/tmp");
  // mkostemp makes 0600; blobs are read by tftpd through the mount and by
  // netbootfsctl export, which may run as another user.
  if (::fchmod(fd.get(), 0644) != 0) {
    Error err = sys_error("chmod " + tmpl);
    ::unlink(tmpl.c_str());
    return err;
  }
  TempBlob t;
  t.fd_ = std::move(fd);
  t.path_ = std::move(tmpl);
  return t;
}

Result<std::string> BlobStore::publish(TempBlob& tmp) {
  if (!tmp.valid() || tmp.published_) return Error{EINVAL, "nothing to publish"};
  // Data before name: the rename must never make visible bytes that a power
  // loss could still take back. fdatasync also writes the file size.
  if (::fdatasync(tmp.fd()) != 0) return sys_error("fdatasync " + tmp.path_);
  crash_point(CrashPoint::kTempSynced);
  const std::string sha = tmp.hash_.hex_digest();
  auto fail = [&](Error err) -> Result<std::string> {
    rehash(tmp.fd(), tmp.size_, tmp.hash_);
    return err;
  };
  const std::string blobs_dir = dir_ + "/blobs";
  const std::string fan = blobs_dir + "/" + sha.substr(0, 2);
  auto created = ensure_dir(fan);
  if (!created) return fail(created.error());
  if (created.value()) {
    // A new fan-out directory must itself survive a crash, or the blob in
    // it would vanish with it.
    if (auto r = fsync_dir(blobs_dir); !r) return fail(r.error());
  }
  const std::string target = fan + "/" + sha;
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) == tmp.size()) {
    // The same content is already stored: keep that file, whose pages the
    // kernel may have cached and whose fds other readers hold. A leftover
    // temp file would be removed by clear_tmp() anyway, so a failed unlink
    // is harmless.
    ::unlink(tmp.path_.c_str());
  } else {
    // Also replaces a blob of the wrong size (a torn file from an older
    // crash): its name promises these bytes.
    if (::rename(tmp.path_.c_str(), target.c_str()) != 0) {
      return fail(sys_error("rename " + tmp.path_ + " to " + target));
    }
    if (auto r = fsync_dir(fan); !r) {
      // The name may not be durable, but the file is complete and correct:
      // recovery drops an index entry whose blob is missing after a crash.
      // Mark it published so the destructor does not unlink the live blob.
      tmp.published_ = true;
      tmp.path_ = target;
      return r.error();
    }
  }
  tmp.published_ = true;
  tmp.path_ = target;
  // The blob is durable at its address (renamed here, or stored before);
  // no index entry refers to it yet.
  crash_point(CrashPoint::kBlobRenamed);
  return sha;
}

Result<UniqueFd> BlobStore::open_blob(std::string_view sha256) const {
  if (!is_sha256_hex(sha256)) return Error{EINVAL, "not a sha256: " + std::string(sha256)};
  UniqueFd fd(::open(blob_path(sha256).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return sys_error("open blob " + std::string(sha256));
  return fd;
}

std::optional<uint64_t> BlobStore::blob_size(std::string_view sha256) const {
  if (!is_sha256_hex(sha256)) return std::nullopt;
  struct stat st {};
  if (::stat(blob_path(sha256).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return static_cast<uint64_t>(st.st_size);
}

Result<void> BlobStore::remove(std::string_view sha256) {
  if (!is_sha256_hex(sha256)) return Error{EINVAL, "not a sha256: " + std::string(sha256)};
  if (::unlink(blob_path(sha256).c_str()) != 0 && errno != ENOENT) {
    return sys_error("unlink blob " + std::string(sha256));
  }
  return {};
}

std::vector<std::string> BlobStore::list() const {
  std::vector<std::string> out;
  const std::string root = dir_ + "/blobs";
  UniqueDir top(::opendir(root.c_str()));
  if (!top) return out;
  while (dirent* d = ::readdir(top.get())) {
    if (std::strlen(d->d_name) != 2 || !is_hex_lower(d->d_name[0]) || !is_hex_lower(d->d_name[1])) {
      continue;
    }
    UniqueDir inner(::opendir((root + "/" + d->d_name).c_str()));
    if (!inner) continue;
    while (dirent* f = ::readdir(inner.get())) {
      // A file in the wrong fan-out directory is not at its address.
      if (is_sha256_hex(f->d_name) && std::strncmp(f->d_name, d->d_name, 2) == 0) {
        out.emplace_back(f->d_name);
      }
    }
  }
  return out;
}

size_t BlobStore::clear_tmp() {
  size_t n = 0;
  const std::string tmp = dir_ + "/tmp";
  UniqueDir d(::opendir(tmp.c_str()));
  if (!d) return 0;
  while (dirent* e = ::readdir(d.get())) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    if (::unlink((tmp + "/" + e->d_name).c_str()) == 0) ++n;
  }
  return n;
}

}  // namespace netbootfs::cache
