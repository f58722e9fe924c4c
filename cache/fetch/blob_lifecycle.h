// BlobLifecycle: when a blob may be deleted. Publishing a blob and pointing
// the index at it excludes deleting blobs; open handles count as users;
// eviction passes keep the cache under its limit.
//
// Contract
// - publishing() (shared) is held from a blob's rename until the index entry
//   that points at it is written, and by an open from the moment it checks
//   its version is current until it counts itself a user (acquire()).
//   Deleting a blob (collect(), remove_path(), drop_outputs_of(), an eviction
//   pass) holds it exclusively, so a blob being deleted is never the target
//   of a concurrent publish, and an open either is seen by the pass or finds
//   its version evicted.
// - Eviction passes run on a completion worker (queue_eviction()) or on the
//   caller of run_eviction() (the control socket's gc): never on the HTTP
//   worker thread, which must never wait on the disk or on a lock held
//   across an fsync.
// - The pass asks the fetcher which blobs are in use (the evictor's in_use
//   hook) and tells it which paths it evicted (on_evicted), both called with
//   gc_mu_ held exclusively.
// - Locks, in this order: gc_mu_, then the Evictor's mutex, then the
//   fetcher's path table, then a Download's mutex, then use_mu_ (a leaf).
#pragma once

#include <atomic>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "cache/blob_store.h"
#include "cache/evictor.h"
#include "cache/fetch/executor.h"
#include "cache/index.h"
#include "cache/util/result.h"

namespace netbootfs::cache {

class BlobLifecycle {
 public:
  BlobLifecycle(Index& index, BlobStore& blobs, Executor& executor)
      : index_(index), blobs_(blobs), executor_(executor) {}

  void set_evictor(Evictor* evictor) { evictor_ = evictor; }
  Evictor* evictor() const { return evictor_.load(); }

  std::shared_lock<std::shared_mutex> publishing() { return std::shared_lock(gc_mu_); }

  // An open handle reads blob `sha256` through its fd (publishing() held).
  void acquire(const std::string& sha256);
  // The handle closed: the last one queues an eviction pass.
  void release(const std::string& sha256);
  // The blobs open handles read (the in_use hook adds what the fetcher holds).
  void add_handles_in_use(std::unordered_set<std::string>& used);

  // One pass now. EINVAL without an evictor.
  Result<EvictReport> run_eviction();
  // A pass on a completion worker, coalesced; only when over the high
  // watermark (reserved bytes included): below it a pass finds nothing.
  void queue_eviction();

  // Deleting (each takes gc_mu_ exclusively; see cache/maintenance.h).
  void collect(const std::string& sha256);
  void remove_path(const std::string& path);
  void drop_outputs_of(const std::string& source_sha256);

 private:
  Index& index_;
  BlobStore& blobs_;
  Executor& executor_;
  std::shared_mutex gc_mu_;
  std::atomic<Evictor*> evictor_{nullptr};
  std::atomic<bool> eviction_queued_{false};
  std::mutex use_mu_;
  std::unordered_map<std::string, int> users_;  // sha256 -> open handles reading its fd
};

}  // namespace netbootfs::cache
