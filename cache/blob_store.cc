#include "cache/blob_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace netbootfs::cache {
namespace {

Error sys_error(const std::string& what) {
  const int e = errno;
  return Error{e, what + ": " + std::strerror(e)};
}

Result<void> fsync_dir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return sys_error("open " + dir);
  if (::fsync(fd.get()) != 0) return sys_error("fsync " + dir);
  return {};
}

Result<void> ensure_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return sys_error("mkdir " + dir);
  return {};
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

void Sha256::reset() { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }

void Sha256::update(const void* data, size_t len) { EVP_DigestUpdate(ctx_, data, len); }

std::string Sha256::hex_digest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_, md, &len);
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

bool is_sha256_hex(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// --- TempBlob ---------------------------------------------------------------

TempBlob::TempBlob(TempBlob&& o) noexcept
    : fd_(std::move(o.fd_)),
      path_(std::move(o.path_)),
      size_(std::exchange(o.size_, 0)),
      hash_(std::move(o.hash_)),
      published_(std::exchange(o.published_, false)) {
  o.path_.clear();
}

TempBlob& TempBlob::operator=(TempBlob&& o) noexcept {
  if (this != &o) {
    if (fd_.valid() && !published_ && !path_.empty()) ::unlink(path_.c_str());
    fd_ = std::move(o.fd_);
    path_ = std::move(o.path_);
    o.path_.clear();
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
  size_t done = 0;
  while (done < len) {
    const ssize_t w = ::pwrite(fd_.get(), data + done, len - done, static_cast<off_t>(size_ + done));
    if (w < 0) {
      if (errno == EINTR) continue;
      return sys_error("write " + path_);
    }
    done += static_cast<size_t>(w);
  }
  hash_.update(data, len);
  size_ += len;
  return {};
}

Result<void> TempBlob::reset() {
  if (::ftruncate(fd_.get(), 0) != 0) return sys_error("truncate " + path_);
  size_ = 0;
  hash_.reset();
  return {};
}

// --- BlobStore --------------------------------------------------------------

Result<std::unique_ptr<BlobStore>> BlobStore::open(const std::string& cache_dir) {
  for (const auto& d : {cache_dir, cache_dir + "/blobs", cache_dir + "/tmp"}) {
    if (auto r = ensure_dir(d); !r) return r.error();
  }
  if (::access((cache_dir + "/tmp").c_str(), W_OK) != 0) return sys_error(cache_dir + "/tmp");
  return std::unique_ptr<BlobStore>(new BlobStore(cache_dir));
}

std::string BlobStore::blob_path(std::string_view sha256) const {
  std::string p = dir_ + "/blobs/";
  p += sha256.substr(0, 2);
  p += '/';
  p += sha256;
  return p;
}

Result<TempBlob> BlobStore::create_temp() {
  std::string tmpl = dir_ + "/tmp/dl-XXXXXX";
  const int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
  if (fd < 0) return sys_error("create a temp file in " + dir_ + "/tmp");
  ::fchmod(fd, 0644);
  TempBlob t;
  t.fd_.reset(fd);
  t.path_ = std::move(tmpl);
  return t;
}

Result<std::string> BlobStore::publish(TempBlob& tmp) {
  if (!tmp.valid() || tmp.published_) return Error{EINVAL, "nothing to publish"};
  if (::fsync(tmp.fd()) != 0) return sys_error("fsync " + tmp.path_);
  const std::string sha = tmp.hash_.hex_digest();
  const std::string fan = dir_ + "/blobs/" + sha.substr(0, 2);
  if (auto r = ensure_dir(fan); !r) return r.error();
  const std::string target = fan + "/" + sha;
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) == tmp.size()) {
    // Same content is already stored: keep it (its pages may be cached).
    ::unlink(tmp.path_.c_str());
  } else {
    if (::rename(tmp.path_.c_str(), target.c_str()) != 0) return sys_error("rename to " + target);
    if (auto r = fsync_dir(fan); !r) return r.error();
  }
  tmp.published_ = true;
  tmp.path_ = target;
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
  if (::stat(blob_path(sha256).c_str(), &st) != 0) return std::nullopt;
  return static_cast<uint64_t>(st.st_size);
}

Result<void> BlobStore::remove(std::string_view sha256) {
  if (!is_sha256_hex(sha256)) return Error{EINVAL, "not a sha256"};
  if (::unlink(blob_path(sha256).c_str()) != 0 && errno != ENOENT) {
    return sys_error("unlink blob " + std::string(sha256));
  }
  return {};
}

std::vector<std::string> BlobStore::list() const {
  std::vector<std::string> out;
  const std::string root = dir_ + "/blobs";
  DIR* top = ::opendir(root.c_str());
  if (!top) return out;
  while (dirent* d = ::readdir(top)) {
    if (std::strlen(d->d_name) != 2) continue;
    const std::string sub = root + "/" + d->d_name;
    DIR* inner = ::opendir(sub.c_str());
    if (!inner) continue;
    while (dirent* f = ::readdir(inner)) {
      if (is_sha256_hex(f->d_name) && std::strncmp(f->d_name, d->d_name, 2) == 0) {
        out.emplace_back(f->d_name);
      }
    }
    ::closedir(inner);
  }
  ::closedir(top);
  return out;
}

size_t BlobStore::clear_tmp() {
  size_t n = 0;
  const std::string tmp = dir_ + "/tmp";
  DIR* d = ::opendir(tmp.c_str());
  if (!d) return 0;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    if (::unlink((tmp + "/" + e->d_name).c_str()) == 0) ++n;
  }
  ::closedir(d);
  return n;
}

}  // namespace netbootfs::cache
