// Download: one upstream transfer of one path (GET, conditional GET, the
// resumes of a broken one), shared by every reader of the version it fills.
//
// Contract
// - It is the transfer's http::Sink: bytes go to a temp blob (TempBlob) as
//   they arrive; reads below the frontier are answered at once, reads past
//   it are parked (a deferred reply, not a parked thread) and answered as
//   bytes arrive, when the download is published, or by sweep() with EIO
//   once neither the download nor the reader's handle made progress for the
//   read stall timeout.
// - A read is answered with its whole range (clamped to the size) or an
//   error; the read that touches the last byte waits for publication.
// - What the transfer means for the path (a version, a failure, a retry, a
//   resume, publication) is decided by DownloadEvents (the fetcher's
//   transfers), which it calls from the HTTP worker thread without any lock.
// - Its state is private: the plan is fixed at construction, the rest is
//   behind mu_ and reached through the methods below (the transfers ask,
//   the download answers).
// - Locks: mu_, a leaf; lock order: the fetcher's path table before mu_.
//   Callbacks (events, reads) run without mu_.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cache/blob_store.h"
#include "cache/evictor.h"
#include "cache/fetch/executor.h"
#include "cache/file_version.h"
#include "cache/http/client.h"
#include "cache/index.h"

namespace netbootfs::cache {

struct FetcherStats;
class Download;

struct ReadWaiter {
  uint64_t offset;
  size_t len;
  ReadCallback cb;
  std::shared_ptr<std::atomic<int64_t>> handle_progress;
};

// What a download's transfer tells the fetcher (cache/fetch/transfers.cc).
class DownloadEvents {
 public:
  virtual ~DownloadEvents() = default;
  // 200 with a Content-Length: the size is known.
  virtual void on_download_head(const std::shared_ptr<Download>& dl) = 0;
  virtual void on_not_modified(const std::shared_ptr<Download>& dl) = 0;
  // Ended before any byte of a body (any status, or none).
  virtual void on_download_early_failure(const std::shared_ptr<Download>& dl, http::Outcome outcome,
                                         long status, std::optional<int64_t> retry_after,
                                         const std::string& detail) = 0;
  // A body transfer ended: complete, broken or refused.
  virtual void on_download_body_done(const std::shared_ptr<Download>& dl, http::Outcome outcome,
                                     const std::string& detail) = 0;
};

class Download : public http::Sink, public std::enable_shared_from_this<Download> {
 public:
  // How the transfer is asked for: decided when it starts (under the path
  // table's lock), read-only afterwards.
  struct Plan {
    bool conditional = false;  // a revalidation: If-None-Match / If-Modified-Since
    std::string cond_etag;
    int64_t cond_last_modified = 0;
    uint64_t max_rate = 0;  // bytes/s, 0: unlimited
    // Announced only once complete: a rewritten file (its served size
    // depends on its content). A response without Content-Length is too.
    bool whole = false;
  };

  Download(DownloadEvents& events, BlobStore& blobs, FetcherStats& stats, int64_t stall_ms,
           std::string path, Plan plan);

  const std::string& path() const { return path_; }
  const Plan& plan() const { return plan_; }
  bool conditional() const { return plan_.conditional; }
  int64_t started_ms() const { return started_ms_; }

  // http::Sink (the HTTP worker thread).
  bool on_head(const http::Head& head) override;
  bool on_data(const char* data, size_t len) override;
  void on_done(http::Outcome outcome, const http::Head& head, std::string body,
               std::string detail) override;

  // Reads (any thread): answered now, parked, or failed (see the contract).
  void read(uint64_t offset, size_t len, ReadCallback cb,
            std::shared_ptr<std::atomic<int64_t>> handle_progress);
  // Fails parked readers whose deadline passed; true while any remain.
  bool sweep(int64_t now, int64_t stall_ms);
  size_t fail_all(int err, const char* why = "shutting down");  // how many it answered

  // The next request: the whole file (with the plan's validators), or a
  // resume from the frontier with If-Range (false: not streaming any more).
  void prepare_request(http::Request& req, size_t origin);
  bool prepare_resume(http::Request& req, size_t origin);
  // Retries of a request that reported no size yet (HTTP thread and timer).
  int attempts() const { return attempts_; }
  int64_t first_try_ms() const { return first_try_ms_; }
  void count_attempt() { attempts_++; }

  // What the 200's headers announced (on_download_head).
  struct Announced {
    uint64_t size = 0;
    std::string etag;
    int64_t last_modified = 0;
    size_t origin = 0;
  };
  Announced announced() const;
  // The announced size stays reserved against the cache's limit until the
  // bytes are in the index (publish) or the download failed.
  void hold(Evictor::Reservation reservation);
  void release_reservation();
  // An eviction pass is making room for it (its waiters hear of it once
  // the pass ran): its publication waits for that pass, so the pass never
  // sees it in the index. defer_publish() is true when publication must
  // wait (and is then owed); room_made() says whether it is owed now.
  void await_room();
  bool defer_publish();
  bool room_made();
  // The version it fills (weak: the version owns its download, not the
  // other way round).
  void bind(const std::shared_ptr<FileVersion>& version);

  int write_errno() const;  // the cache write that failed, 0 if none
  bool whole() const;       // announced only once complete
  bool complete() const;
  bool failed() const;
  void mark_failed();

  // A body transfer ended: whether every byte is there (a body without a
  // Content-Length is complete at its end, and its size is known now).
  struct BodyEnd {
    bool complete = false;
    int write_errno = 0;
    bool refused = false;  // a resume was answered with other bytes
    uint64_t frontier = 0;
  };
  BodyEnd end_body(http::Outcome outcome);
  // The delay before the next resume (plan_resume), counted; nullopt: it
  // cannot resume (no strong ETag or size, or stalled) and is failed.
  std::optional<int64_t> next_resume(int64_t stall_ms, double jitter);

  // Publication (a completion worker; the HTTP thread is done with it).
  TempBlob& temp() { return tmp_; }
  // The index entry of its bytes, once published as `sha256`.
  PathEntry entry(const std::string& sha256, int64_t validated_at) const;
  struct Completed {
    std::vector<ReadWaiter> readers;  // parked reads, to answer from fd
    int fd = -1;
    std::shared_ptr<FileVersion> version;  // what it filled, if still alive
  };
  Completed complete_as(const std::string& sha256);
  // The blob it serves while OpenFiles read through it (empty otherwise):
  // in use, never evicted.
  std::string blob_in_use() const;

  // OpenFiles reading through it: a published download's blob is in use
  // while they are (the Download itself may outlive them a moment on the
  // worker that published it, which must not keep the blob from eviction).
  void add_handle() { handles_.fetch_add(1); }
  void drop_handle() { handles_.fetch_sub(1); }

 private:
  enum class State { kConnecting, kStreaming, kComplete, kFailed };

  DownloadEvents& events_;
  BlobStore& blobs_;
  FetcherStats& stats_;
  const int64_t stall_ms_;  // read_stall_timeout
  const std::string path_;
  const int64_t started_ms_;
  const Plan plan_;
  std::atomic<int> handles_{0};
  int attempts_ = 0;
  int64_t first_try_ms_;

  mutable std::mutex mu_;  // guards what follows
  State state_ = State::kConnecting;
  std::optional<uint64_t> expected_size_;
  std::string etag_;
  int64_t last_modified_ = 0;
  long status_ = 0;
  TempBlob tmp_;
  uint64_t frontier_ = 0;
  std::string sha256_;
  int64_t last_progress_ms_ = 0;
  int resumes_ = 0;
  bool resuming_ = false;        // the current request is a Range request
  bool resume_refused_ = false;  // upstream answered a resume with other bytes
  bool whole_ = false;           // plan_.whole, or no Content-Length
  bool room_pending_ = false;    // await_room() until room_made()
  bool publish_owed_ = false;    // complete while room_pending_
  int write_errno_ = 0;          // the cache write that failed, if any
  Evictor::Reservation reservation_;
  std::optional<int64_t> retry_after_;  // from the last refused resume
  size_t origin_ = 0;                   // of the last request sent for it
  std::vector<ReadWaiter> readers_;
  std::weak_ptr<FileVersion> version_;
};

}  // namespace netbootfs::cache
