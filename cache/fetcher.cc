// The Fetcher facade: wires the parts of cache/fetch/ (see
// cache/fetch/fetcher_impl.h for the layout and the lock order) and forwards
// the public API to them.
#include "cache/fetcher.h"

#include "cache/fetch/fetcher_impl.h"

namespace netbootfs::cache {

namespace {

std::vector<std::string> bases(const FetcherOptions& o) {
  std::vector<std::string> v{o.base_url};
  v.insert(v.end(), o.mirrors.begin(), o.mirrors.end());
  return v;
}

UpstreamHealth::Options health_options(const FetcherOptions& o) {
  UpstreamHealth::Options h;
  h.down_after = o.down_after;
  h.probe_interval_ms = o.probe_interval.count();
  h.origins = Origins::Options{o.mirror_backoff.count(), o.mirror_backoff_max.count()};
  return h;
}

}  // namespace

Fetcher::Impl::Impl(Fetcher* owner, http::Client& c, Index& i, BlobStore& b)
    : self(owner),
      opt(owner->options_),
      stats(owner->stats_),
      index(i),
      blobs(b),
      health(bases(owner->options_), health_options(owner->options_)),
      requests(c, health, owner->stats_,
               [this](const UpstreamHealth::Noted& n) {
                 if (n.connection_failure) stats.upstream_failures++;
                 if (n.change == UpstreamHealth::Change::kWentDown) {
                   stats.upstream_down_events++;
                   schedule_probe();
                 } else if (n.change == UpstreamHealth::Change::kWentUp) {
                   marked_up();
                 }
               }),
      lifecycle(i, b, executor) {}

size_t FetcherStats::status_slot(long status) {
  if (status <= 0) return kStatusCount - 1;  // "error"
  for (size_t i = 0; i + 2 < kStatusCount; ++i) {
    if (std::to_string(status) == kStatusLabels[i]) return i;
  }
  return kStatusCount - 2;  // "other"
}

const char* to_string(VersionInfo::State state) {
  switch (state) {
    case VersionInfo::State::kRemote:
      return "remote";
    case VersionInfo::State::kDownloading:
      return "downloading";
    case VersionInfo::State::kCached:
      return "cached";
    case VersionInfo::State::kStale:
      return "stale";
  }
  return "?";
}

bool path_at_or_under(std::string_view path, std::string_view prefix) {
  if (prefix.empty() || path == prefix) return true;
  return path.size() > prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
         path[prefix.size()] == '/';
}

// --- OpenFile ---------------------------------------------------------------

void OpenFile::read(uint64_t offset, size_t len, ReadCallback cb) {
  if (fd_.valid()) {
    const uint64_t size = version_->size();
    const uint64_t end = read_end(offset, len, size);
    cb(Slice{fd_.get(), offset, static_cast<size_t>(end - offset)});
    return;
  }
  download_->read(
      offset, len,
      [progress = progress_, cb = std::move(cb)](Result<Slice> r) {
        if (r) progress->store(now_ms());
        cb(std::move(r));
      },
      progress_);
}

OpenFile::~OpenFile() {
  if (!fetcher_) return;
  const bool held_download = download_ != nullptr;
  if (held_download) download_->drop_handle();  // before the pass below
  download_.reset();
  if (!used_blob_.empty()) {
    fetcher_->impl_->lifecycle.release(used_blob_);
  } else if (held_download) {
    fetcher_->impl_->lifecycle.queue_eviction();
  }
}

// --- Fetcher ----------------------------------------------------------------

Fetcher::Fetcher(FetcherOptions options, http::Client& client, Index& index, BlobStore& blobs)
    : options_(std::move(options)), impl_(std::make_unique<Impl>(this, client, index, blobs)) {
  Impl* impl = impl_.get();
  impl->executor.every(std::clamp<int64_t>(options_.read_stall_timeout.count() / 10, 20, 1000),
                       [impl] { impl->sweep(); });
  impl->executor.every(options_.access_flush_interval.count(), [impl] {
    if (auto r = impl->index.flush_access(); !r) {
      cache_log()->warn("access times: {}", r.error().message);
    }
  });
  impl->executor.start(options_.completion_threads);
}

Fetcher::~Fetcher() { shutdown(); }

void Fetcher::lookup(const std::string& path, AttrCallback cb) {
  impl_->lookup(path, std::move(cb));
}

Result<Attr> Fetcher::peek(const std::string& path) {
  std::optional<Result<Attr>> out;
  auto keep = [&out](Result<Attr> r) { out.emplace(std::move(r)); };
  impl_->lookup(path, keep, Impl::LookupMode::kPeek);
  // Every kPeek branch answers before lookup() returns.
  return std::move(out).value();
}

void Fetcher::list_dir(const std::string& path, ListCallback cb) {
  impl_->list_dir(path, std::move(cb));
}

void Fetcher::open(const std::shared_ptr<FileVersion>& version, OpenCallback cb) {
  impl_->open(version, std::move(cb));
}

void Fetcher::open(const std::shared_ptr<FileVersion>& version, uint64_t max_rate,
                   OpenCallback cb) {
  impl_->open(version, std::move(cb), max_rate);
}

InvalidateResult Fetcher::invalidate(const std::string& prefix) {
  return impl_->invalidate(prefix);
}

void Fetcher::set_filter(std::shared_ptr<const ContentFilter> filter) {
  impl_->set_filter(std::move(filter));
}

VersionInfo Fetcher::describe(const std::shared_ptr<FileVersion>& v) const {
  return impl_->describe(v);
}

void Fetcher::set_evictor(Evictor* evictor) {
  if (evictor) {
    // Both run inside an eviction pass, which holds the gc lock.
    evictor->set_in_use([impl = impl_.get()] { return impl->blobs_in_use(); });
    evictor->set_on_evicted(
        [impl = impl_.get()](const std::vector<std::string>& p) { impl->forget_evicted(p); });
  }
  impl_->lifecycle.set_evictor(evictor);
  if (evictor) impl_->lifecycle.queue_eviction();
}

Result<EvictReport> Fetcher::enforce_limit() { return impl_->lifecycle.run_eviction(); }

bool Fetcher::upstream_up() const { return !impl_->down(); }

void Fetcher::shutdown() {
  std::vector<VersionCallback> waiters;
  std::vector<std::function<void()>> listing_waiters;
  std::vector<std::shared_ptr<Download>> live;
  {
    PathLock lk(impl_->mu_);
    if (impl_->stopping_) return;
    impl_->stopping_ = true;
    for (auto& [path, ps] : impl_->states_) {
      for (auto& w : ps->version_waiters) waiters.push_back(std::move(w));
      ps->version_waiters.clear();
      for (auto& w : ps->listing_waiters) listing_waiters.push_back(std::move(w));
      ps->listing_waiters.clear();
    }
    for (auto& w : impl_->active_) {
      if (auto d = w.lock()) live.push_back(std::move(d));
    }
  }
  size_t answered = waiters.size() + listing_waiters.size();
  impl_->stats.error_count(FetcherStats::ErrorSite::kShutdown) += waiters.size();
  for (auto& w : waiters) w(Error{EIO, "shutting down"});
  for (auto& w : listing_waiters) w();  // each continuation sees stopping_ and fails
  for (auto& d : live) answered += d->fail_all(EIO);
  if (answered) cache_log()->info("shutdown: answered {} waiting requests", answered);
  // After this no sink callback runs, so the Client may outlive us or not.
  impl_->requests.cancel_all();
  for (auto& d : live) d->fail_all(EIO);  // readers parked by late callbacks
  impl_->executor.stop();
  if (auto r = impl_->index.flush_access(); !r) {
    cache_log()->warn("access times not saved: {}", r.error().message);
  }
}

}  // namespace netbootfs::cache
