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
// - Locks: mu_ guards the state below it; lock order: the fetcher's path
//   table before mu_, nothing after it. Callbacks run without mu_.
// - Fields: set before the first request and read-only after, or under mu_,
//   as marked; only cache/fetch/ touches them.
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
  enum class State { kConnecting, kStreaming, kComplete, kFailed };

  Download(DownloadEvents& events, BlobStore& blobs, FetcherStats& stats, int64_t stall_ms,
           std::string path)
      : events_(events),
        blobs_(blobs),
        stats_(stats),
        stall_ms_(stall_ms),
        path_(std::move(path)),
        started_ms_(now_ms()) {}

  bool on_head(const http::Head& head) override;
  bool on_data(const char* data, size_t len) override;
  void on_done(http::Outcome outcome, const http::Head& head, std::string body,
               std::string detail) override;

  void read(uint64_t offset, size_t len, ReadCallback cb,
            std::shared_ptr<std::atomic<int64_t>> handle_progress);
  // Fails parked readers whose deadline passed; true while any remain.
  bool sweep(int64_t now, int64_t stall_ms);
  size_t fail_all(int err, const char* why = "shutting down");  // how many it answered

  DownloadEvents& events_;
  BlobStore& blobs_;
  FetcherStats& stats_;
  const int64_t stall_ms_;  // read_stall_timeout
  const std::string path_;
  const int64_t started_ms_;
  // Set before start, read-only afterwards.
  bool conditional_ = false;
  uint64_t max_rate_ = 0;  // bytes/s, 0: unlimited
  // OpenFiles reading through it: a published download's blob is in use
  // while they are (the Download itself may outlive them a moment on the
  // worker that published it, which must not keep the blob from eviction).
  std::atomic<int> handles_{0};
  std::string cond_etag_;
  int64_t cond_last_modified_ = 0;

  std::mutex mu_;  // lock order: the path table before this; a leaf otherwise
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
  // Announced only once complete: a filtered file (its served size depends
  // on its content) or a response without Content-Length.
  bool whole_ = false;
  int write_errno_ = 0;  // the cache write that failed, if any
  // The announced size, counted by every eviction pass until the bytes are
  // in the index (publish) or the download failed (see cache/evictor.h).
  Evictor::Reservation reservation_;
  // Failed for a reason waiting cannot cure (the cache's disk): reads of
  // missing bytes fail at once.
  // Retries before any size was reported (HTTP thread and timer only).
  int attempts_ = 0;
  int64_t first_try_ms_ = 0;
  std::optional<int64_t> retry_after_;  // from the last refused resume
  size_t origin_ = 0;                   // of the last request sent for it
  std::vector<ReadWaiter> readers_;
  // Weak: the version owns its download while it is in flight, not the
  // other way round.
  std::weak_ptr<FileVersion> version_;
};

}  // namespace netbootfs::cache
