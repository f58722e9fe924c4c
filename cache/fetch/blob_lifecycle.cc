#include "cache/fetch/blob_lifecycle.h"

#include "cache/maintenance.h"
#include "cache/util/log.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return cache_log(); }

}  // namespace

void BlobLifecycle::acquire(const std::string& sha256) {
  std::lock_guard lk(use_mu_);
  users_[sha256]++;
}

void BlobLifecycle::release(const std::string& sha256) {
  bool last = false;
  {
    std::lock_guard lk(use_mu_);
    auto it = users_.find(sha256);
    if (it != users_.end() && --it->second <= 0) {
      users_.erase(it);
      last = true;
    }
  }
  if (last) queue_eviction();
}

void BlobLifecycle::add_handles_in_use(std::unordered_set<std::string>& used) {
  std::lock_guard lk(use_mu_);
  for (const auto& [sha, n] : users_) used.insert(sha);
}

Result<EvictReport> BlobLifecycle::run_eviction() {
  Evictor* ev = evictor_.load();
  if (!ev) return Error{EINVAL, "no cache limit"};
  std::unique_lock gc(gc_mu_);  // enforce() calls the in_use and on_evicted hooks
  auto r = ev->enforce(0);
  if (!r) log()->warn("eviction: {}", r.error().message);
  return r;
}

void BlobLifecycle::queue_eviction() {
  // Every last close of a cached file comes here: below the watermark a
  // pass would find nothing, so no worker is woken for it.
  Evictor* ev = evictor_.load();
  if (!ev || !ev->over_high_watermark() || eviction_queued_.exchange(true)) return;
  executor_.post([this] {
    eviction_queued_ = false;
    (void)run_eviction();
  });
}

void BlobLifecycle::collect(const std::string& sha256) {
  std::unique_lock gc(gc_mu_);
  Removed unused;
  collect_blob(index_, blobs_, sha256, unused);
}

void BlobLifecycle::remove_path(const std::string& path) {
  std::unique_lock gc(gc_mu_);
  auto r = remove_paths(index_, blobs_, {path});
  if (!r) log()->warn("{}: removing the index entry failed: {}", path, r.error().message);
}

void BlobLifecycle::drop_outputs_of(const std::string& source_sha256) {
  // The outputs derived from a blob no path uses any more are garbage too,
  // whichever filter fingerprint made them.
  std::unique_lock gc(gc_mu_);
  Removed unused;
  cache::drop_outputs_of(index_, blobs_, source_sha256, unused);
}

}  // namespace netbootfs::cache
