#include <cstring>
#include <random>

#include "cache/fetch/fetcher_impl.h"
#include "cache/http/url.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return cache_log(); }

}  // namespace

void Fetcher::Impl::open(const std::shared_ptr<FileVersion>& v, Fetcher::OpenCallback cb,
                         uint64_t max_rate) {
  const std::string& path = v->path();
  PathLock lk(mu_);
  if (stopping_) {
    lk.unlock();
    cb(stats.count(FetcherStats::ErrorSite::kShutdown, Error{EIO, "shutting down"}));
    return;
  }
  PathState& ps = state(lk, path);
  ensure_loaded(lk, path, ps);
  if (ps.current != v) {
    lk.unlock();
    cb(Error{ESTALE, "a newer version exists"});
    return;
  }
  if (ps.pending) {  // a GET or revalidation is under way: wait for its verdict
    stats.coalesced++;
    ps.version_waiters.push_back([this, v, cb = std::move(cb)](auto r) mutable {
      open_resolved(v, std::move(r), std::move(cb));
    });
    return;
  }
  const int64_t now = now_ms();
  if (!v->bound(lk).sha256.empty()) {
    if (plan_open(true, ps.validated_ms, now, opt.revalidate) == OpenPlan::kServeCached) {
      stats.hits++;
      lk.unlock();
      open_resolved(v, v, std::move(cb));
      return;
    }
    ps.version_waiters.push_back([this, v, cb = std::move(cb)](auto r) mutable {
      open_resolved(v, std::move(r), std::move(cb));
    });
    start_download(lk, path, ps, true, max_rate);
    return;
  }
  if (v->bound(lk).download) {
    if (!v->bound(lk).download->failed()) {
      stats.hits++;
      lk.unlock();
      open_resolved(v, v, std::move(cb));
      return;
    }
    v->bound(lk).download.reset();  // a failed transfer: the next open starts anew
  }
  stats.misses++;
  ps.version_waiters.push_back([this, v, cb = std::move(cb)](auto r) mutable {
    open_resolved(v, std::move(r), std::move(cb));
  });
  // A HEAD in flight for this path answers nobody once the GET is pending:
  // the GET's response establishes the version for every waiter.
  start_download(lk, path, ps, false, max_rate);
}

void Fetcher::Impl::open_resolved(const std::shared_ptr<FileVersion>& want,
                                  Result<std::shared_ptr<FileVersion>> got,
                                  Fetcher::OpenCallback cb) {
  if (!got) {
    cb(got.error());
    return;
  }
  if (got.value() != want) {
    cb(Error{ESTALE, "the file changed upstream"});
    return;
  }
  std::unique_ptr<OpenFile> of(new OpenFile());
  of->fetcher_ = self;
  of->version_ = want;
  of->progress_ = std::make_shared<std::atomic<int64_t>>(now_ms());
  std::string sha;
  std::shared_ptr<Download> dl;
  {
    // One snapshot: publish() completes the download and binds the blob in
    // one critical section of the path table. Asked after it, a download
    // that completed meanwhile would leave neither (EIO, "no content").
    PathLock lk(mu_);
    sha = want->bound(lk).sha256;
    dl = want->bound(lk).download;
    if (dl && dl->complete()) dl.reset();  // serve the blob instead
  }
  if (dl) {
    dl->add_handle();
    of->download_ = std::move(dl);
  } else if (sha.empty()) {
    cb(stats.count(FetcherStats::ErrorSite::kNoContent, Error{EIO, "no content for this version"}));
    return;
  } else {
    // Under gc_mu_: either the eviction sees this handle, or it has already
    // evicted the blob and made the version stale.
    auto gc = lifecycle.publishing();
    {
      PathLock lk(mu_);
      if (lifecycle.evictor() && state(lk, want->path()).current != want) {
        gc.unlock();
        cb(Error{ESTALE, "evicted from the cache"});
        return;
      }
    }
    lifecycle.acquire(sha);
    of->used_blob_ = sha;  // released by ~OpenFile
    auto fd = blobs.open_blob(sha);
    gc.unlock();
    if (!fd) {
      log()->error("{}: cached blob {} unreadable: {}", want->path(), sha, fd.error().message);
      lifecycle.remove_path(want->path());
      cb(stats.count(FetcherStats::ErrorSite::kBlobUnreadable,
                     Error{EIO, "cached blob unreadable"}));
      return;
    }
    of->fd_ = std::move(fd).value();
    index.note_access(sha, now_ms() / 1000);
  }
  cb(std::move(of));
}

void Fetcher::Impl::start_download(const PathLock& lk, const std::string& path, PathState& ps,
                                   bool conditional, uint64_t max_rate) {
  Download::Plan plan;
  plan.max_rate = max_rate;
  plan.whole = filter_for(lk, path) != nullptr;
  if (conditional && ps.current) {
    plan.conditional = true;
    plan.cond_etag = ps.current->bound(lk).validator_etag;
    plan.cond_last_modified = ps.current->bound(lk).validator_last_modified;
  }
  auto dl = std::make_shared<Download>(*this, blobs, stats, opt.read_stall_timeout.count(), path,
                                       std::move(plan));
  ps.pending = dl;
  active_.push_back(dl);
  stats.downloads++;
  send_download(lk, dl);
}

void Fetcher::Impl::send_download(const PathLock&, const std::shared_ptr<Download>& dl) {
  if (down()) {
    if (!dl->conditional()) stats.down_fast_failures++;
    post([this, dl] {
      on_download_early_failure(dl, http::Outcome::kConnectFailed, 0, std::nullopt,
                                "upstream is down");
    });
    return;
  }
  http::Request req;
  auto [origin, url] = pick_url(dl->path());
  req.url = std::move(url);
  dl->prepare_request(req, origin);
  start_request(std::move(req), dl, origin);
}

std::optional<int64_t> Fetcher::Impl::retry_delay(int attempt, int64_t first_ms, http::Outcome o,
                                                  long status, std::optional<int64_t> retry_after) {
  if (!is_retryable(o, status) || down()) return std::nullopt;
  static thread_local std::mt19937 rng{std::random_device{}()};
  const double jitter = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  return plan_retry(attempt, now_ms() - first_ms, opt.retry_timeout.count(), retry_after, jitter);
}

void Fetcher::Impl::on_download_head(const std::shared_ptr<Download>& dl) {
  const Download::Announced a = dl->announced();
  const uint64_t size = a.size;
  const std::string& etag = a.etag;
  const int64_t lm = a.last_modified;
  const size_t origin = a.origin;
  std::string source = http::join_url(health.base(origin), dl->path());
  // Room for it before its size is announced (see cache/evictor.h):
  // reserved first, so a pass made for another download counts these bytes
  // too. The pass runs on a worker, never here on the HTTP thread: it waits
  // for the gc lock, which a publish holds across its fsync.
  bool make_room = false;
  if (Evictor* ev = lifecycle.evictor()) {
    dl->hold(ev->reserve(size));
    make_room = ev->over_high_watermark();
  }
  std::shared_ptr<FileVersion> v;
  std::vector<VersionCallback> waiters;
  {
    PathLock lk(mu_);
    PathState& ps = state(lk, dl->path());
    if (ps.pending != dl) return;  // superseded (cannot happen today; be safe)
    auto& cur = ps.current;
    if (cur && cur->bound(lk).sha256.empty() && !cur->bound(lk).download && cur->size() == size &&
        (cur->etag().empty() || etag.empty() || cur->etag() == etag)) {
      v = cur;  // the version lookup announced: same size and validator
    } else {
      v = make_version(lk, dl->path(), size, lm ? lm : (cur ? cur->mtime() : 0), etag);
      if (dl->conditional()) stats.revalidations_changed++;
    }
    v->bound(lk).download = dl;
    v->bound(lk).validator_etag = etag;
    v->bound(lk).validator_last_modified = lm;
    v->bound(lk).source_url = std::move(source);
    ps.current = v;
    ps.validated_ms = now_ms();
    ps.pending.reset();
    ps.clear_negative();
    ps.missing_since_ms = 0;
    waiters.swap(ps.version_waiters);
  }
  dl->bind(v);
  if (make_room) {
    // The bytes keep arriving meanwhile; the waiters hear of the version
    // once the pass made room for it, and a download that completes before
    // that publishes after it (so the pass never counts it as cached).
    dl->await_room();
    post([this, dl, v, waiters = std::move(waiters)] {
      (void)lifecycle.run_eviction();
      for (auto& w : waiters) w(v);
      if (dl->room_made()) publish(dl);
    });
    return;
  }
  for (auto& w : waiters) w(v);
}

void Fetcher::Impl::on_not_modified(const std::shared_ptr<Download>& dl) {
  stats.revalidations_not_modified++;
  std::shared_ptr<FileVersion> v;
  std::vector<VersionCallback> waiters;
  const int64_t now = now_ms();
  {
    PathLock lk(mu_);
    PathState& ps = state(lk, dl->path());
    ps.pending.reset();
    ps.validated_ms = now;
    if (ps.missing_since_ms) log()->info("{}: back upstream", dl->path());
    ps.missing_since_ms = 0;
    v = ps.current;
    waiters.swap(ps.version_waiters);
  }
  post([this, path = dl->path(), now] {
    if (auto r = index.set_validated(path, now / 1000); !r) {
      log()->warn("{}: recording validation failed: {}", path, r.error().message);
    }
  });
  for (auto& w : waiters) w(v);
}

void Fetcher::Impl::on_download_early_failure(const std::shared_ptr<Download>& dl,
                                              http::Outcome outcome, long status,
                                              std::optional<int64_t> retry_after,
                                              const std::string& detail) {
  Result<std::shared_ptr<FileVersion>> result = Error{EIO, "upstream failed"};
  std::vector<VersionCallback> waiters;
  bool forget_cached = false;
  {
    PathLock lk(mu_);
    PathState& ps = state(lk, dl->path());
    const int write_errno = dl->write_errno();
    // A miss (no size reported to anyone yet): send it again while that may
    // help. Revalidations serve the cached copy at once instead.
    if (!dl->conditional() && write_errno == 0 && ps.pending == dl && !stopping_) {
      if (auto d = retry_delay(dl->attempts(), dl->first_try_ms(), outcome, status, retry_after)) {
        dl->count_attempt();
        stats.retries++;
        log()->info("GET {}: {} {} {}, retry {} in {} ms", dl->path(), http::to_string(outcome),
                    status, detail, dl->attempts(), *d);
        schedule(now_ms() + *d, [this, dl] {
          PathLock held(mu_);
          if (stopping_ || state(held, dl->path()).pending != dl) return;
          send_download(held, dl);
        });
        return;  // pending stays: opens keep coalescing on this download
      }
    }
    if (ps.pending == dl) ps.pending.reset();
    dl->mark_failed();
    if (dl->conditional() && write_errno == 0) {
      result = revalidation_failed(lk, dl, ps, outcome, status, detail, forget_cached);
    } else {
      const int err = write_errno ? EIO : errno_for(outcome, status);
      if (err == ENOENT || err == EACCES) {
        ps.set_negative(err, now_ms() + opt.negative_ttl.count());
        ps.current.reset();
      } else {
        log()->warn("GET {}: {} {} {}", dl->path(), http::to_string(outcome), status, detail);
        if (!write_errno && !down()) stats.error_count(FetcherStats::ErrorSite::kUpstream)++;
      }
      result = Error{err, "upstream GET failed"};
    }
    waiters.swap(ps.version_waiters);
  }
  if (forget_cached) post([this, path = dl->path()] { lifecycle.remove_path(path); });
  for (auto& w : waiters) w(result);
}

Result<std::shared_ptr<FileVersion>> Fetcher::Impl::revalidation_failed(
    const PathLock& lk, const std::shared_ptr<Download>& dl, PathState& ps, http::Outcome outcome,
    long status, const std::string& detail, bool& forget_cached) {
  const auto verdict = judge_revalidation(outcome, status);
  if (verdict == RevalidationVerdict::kDeleted &&
      within_missing_grace(lk, dl->path(), ps, now_ms())) {
    stats.missing_served++;
    return ps.current;
  }
  switch (verdict) {
    case RevalidationVerdict::kServeStale:
      stats.stale_served++;
      if (down()) {
        log()->debug("{}: upstream down, serving the cached copy", dl->path());
      } else {
        log()->warn("{}: revalidation failed ({} {} {}), serving the cached copy", dl->path(),
                    http::to_string(outcome), status, detail);
      }
      return ps.current;
    case RevalidationVerdict::kDeleted:
      log()->info("{}: deleted upstream", dl->path());
      ps.current.reset();
      ps.set_negative(ENOENT, now_ms() + opt.negative_ttl.count());
      forget_cached = true;
      return Error{ENOENT, "deleted upstream"};
    case RevalidationVerdict::kDenied:
      return Error{EACCES, "upstream denies access"};
    default:
      return stats.count(FetcherStats::ErrorSite::kRevalidation,
                         Error{EIO, "unexpected revalidation answer"});
  }
}

void Fetcher::Impl::on_download_body_done(const std::shared_ptr<Download>& dl,
                                          http::Outcome outcome, const std::string& detail) {
  const Download::BodyEnd end = dl->end_body(outcome);
  if (end.write_errno) {
    fail_download(
        dl, std::string("the cache could not be written: ") + std::strerror(end.write_errno), true);
    return;
  }
  if (end.refused) {
    fail_download(dl, "changed upstream during the transfer");
    return;
  }
  if (end.complete) {
    if (!dl->defer_publish()) post([this, dl] { publish(dl); });
    return;
  }
  log()->warn("{}: transfer broken at {} bytes ({}: {})", dl->path(), end.frontier,
              http::to_string(outcome), detail);
  try_resume(dl);
}

void Fetcher::Impl::try_resume(const std::shared_ptr<Download>& dl) {
  static thread_local std::mt19937 rng{std::random_device{}()};
  const double jitter = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  const auto delay = dl->next_resume(opt.read_stall_timeout.count(), jitter);
  if (!delay) {
    fail_download(dl, "cannot resume");
    return;
  }
  schedule(now_ms() + *delay, [this, dl] {
    http::Request req;
    // Any origin: If-Range makes one with other bytes answer 200.
    auto [origin, url] = pick_url(dl->path());
    req.url = std::move(url);
    if (!dl->prepare_resume(req, origin)) return;
    stats.resumes++;
    log()->info("{}: resuming at byte {} from {}", dl->path(), *req.range_from,
                health.base(origin));
    start_request(std::move(req), dl, origin);
  });
}

void Fetcher::Impl::fail_download(const std::shared_ptr<Download>& dl, const std::string& why,
                                  bool fatal) {
  log()->error("{}: download failed: {}", dl->path(), why);
  // The temp file stays until the Download is gone (the last handle that
  // holds it closes): readers still pread the bytes below the frontier
  // through its fd. The bytes will not be published.
  dl->mark_failed();
  dl->release_reservation();
  if (fatal) stats.write_failures++;
  // Parked readers are not failed here, not even for a full disk: they wait
  // for read_stall_timeout (sweep fails them), so that a TFTP client sees a
  // timeout, never a short file. Through the page cache, an error for one
  // page after bytes of the pages before it reach read(2) as a short read,
  // which in.tftpd and atftpd send as the end of a complete file. New opens
  // start a new download.
  std::vector<VersionCallback> waiters;
  {
    PathLock lk(mu_);
    PathState& ps = state(lk, dl->path());
    if (ps.current && ps.current->bound(lk).download == dl) ps.current->bound(lk).download.reset();
    if (dl->whole() && ps.pending == dl) {
      // Nobody was given a size yet: fail fast, like an error before the headers.
      ps.pending.reset();
      waiters.swap(ps.version_waiters);
    }
  }
  if (!waiters.empty()) stats.error_count(FetcherStats::ErrorSite::kDownload)++;
  for (auto& w : waiters) w(Error{EIO, "download failed: " + why});
}

}  // namespace netbootfs::cache
