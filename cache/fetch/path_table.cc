#include "cache/derived_keys.h"
#include "cache/fetch/fetcher_impl.h"
#include "cache/http/url.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return cache_log(); }

}  // namespace

Fetcher::PathState& Fetcher::Impl::state(const PathLock&, const std::string& path) {
  auto it = states_.find(path);
  if (it == states_.end()) it = states_.emplace(path, std::make_unique<PathState>()).first;
  return *it.value();
}

void Fetcher::Impl::apply_invalidations(const PathLock&, const std::string& path, PathState& ps) {
  for (const auto& [prefix, when] : invalidations_) {
    if (ps.validated_ms <= when && path_at_or_under(path, prefix)) {
      ps.validated_ms = 0;
      return;
    }
  }
}

void Fetcher::Impl::ensure_loaded(const PathLock& lk, const std::string& path, PathState& ps) {
  if (ps.loaded) return;
  ps.loaded = true;
  struct Apply {
    Fetcher::Impl* self;
    const PathLock& lk;
    const std::string& path;
    PathState& ps;
    ~Apply() { self->apply_invalidations(lk, path, ps); }
  } apply{this, lk, path, ps};
  auto e = index.get_path(path);
  if (!e) return;
  if (auto filter = filter_for(lk, path)) {
    // Served through the filter: the stored output of this (blob, filter),
    // if any; otherwise it is derived on demand (start_derive).
    const std::string fp = filter->fingerprint();
    auto d = index.get_path(derived_key(fp, e->sha256));
    if (!d || blobs.blob_size(d->sha256) != d->size) {
      ps.underived = e;
      return;
    }
    auto v = make_version(lk, path, d->size, e->last_modified, e->etag);
    v->bound(lk).sha256 = d->sha256;
    v->bound(lk).source_sha256 = e->sha256;
    v->bound(lk).filter_fp = fp;
    v->filter_note_ = d->etag;  // the derived entry keeps the filter's note there
    v->bound(lk).validator_etag = e->etag;
    v->bound(lk).validator_last_modified = e->last_modified;
    ps.current = std::move(v);
    ps.validated_ms = e->validated_at * 1000;
    return;
  }
  {
    auto v = make_version(lk, path, e->size, e->last_modified, e->etag);
    v->bound(lk).sha256 = e->sha256;
    v->bound(lk).validator_etag = e->etag;
    v->bound(lk).validator_last_modified = e->last_modified;
    ps.current = std::move(v);
    ps.validated_ms = e->validated_at * 1000;
  }
}

std::shared_ptr<FileVersion> Fetcher::Impl::make_version(const PathLock&, const std::string& path,
                                                         uint64_t size, int64_t mtime,
                                                         std::string etag) {
  return std::shared_ptr<FileVersion>(
      new FileVersion(next_version_id_++, path, size, mtime, std::move(etag)));
}

bool Fetcher::Impl::within_missing_grace(const PathLock& lk, const std::string& path, PathState& ps,
                                         int64_t now) {
  if (!ps.current || ps.current->bound(lk).sha256.empty() || opt.missing_grace.count() <= 0)
    return false;
  if (ps.missing_since_ms == 0 || ps.missing_since_ms > now) {
    ps.missing_since_ms = now;
    log()->warn("{}: missing upstream; serving the cached copy for up to {} ms", path,
                opt.missing_grace.count());
  }
  if (now - ps.missing_since_ms < opt.missing_grace.count()) return true;
  log()->info("{}: still missing upstream after {} ms: removed from the cache", path,
              opt.missing_grace.count());
  stats.missing_removed++;
  ps.missing_since_ms = 0;
  return false;
}

void Fetcher::Impl::sweep() {
  std::vector<std::shared_ptr<Download>> live;
  {
    PathLock lk(mu_);
    std::vector<std::weak_ptr<Download>> still;
    for (const auto& w : active_) {
      if (auto d = w.lock()) {
        live.push_back(std::move(d));
        still.push_back(w);
      }
    }
    active_.swap(still);
    // Forget paths that hold nothing but an expired negative entry.
    const int64_t now = now_ms();
    for (auto it = states_.begin(); it != states_.end();) {
      const PathState& ps = *it->second;
      if (!ps.current && !ps.pending && !ps.head_in_flight && ps.version_waiters.empty() &&
          !ps.listing && !ps.listing_in_flight && !ps.is_dir && ps.negative_until_ms < now) {
        it = states_.erase(it);
      } else {
        ++it;
      }
    }
  }
  const int64_t now = now_ms();
  for (auto& d : live) d->sweep(now, opt.read_stall_timeout.count());
}

VersionInfo Fetcher::Impl::describe(const std::shared_ptr<FileVersion>& v) {
  VersionInfo info;
  info.size = v->size();
  PathLock lk(mu_);
  // A version announced by a listing has no ETag of its own: the response
  // that delivered its bytes told the validator.
  info.etag = v->bound(lk).validator_etag.empty() ? v->etag() : v->bound(lk).validator_etag;
  info.sha256 = v->bound(lk).sha256;
  info.upstream_sha256 = v->bound(lk).source_sha256;
  info.rewritten =
      !v->bound(lk).source_sha256.empty() && v->bound(lk).source_sha256 != v->bound(lk).sha256;
  info.source_url = v->bound(lk).source_url.empty() ? http::join_url(opt.base_url, v->path())
                                                    : v->bound(lk).source_url;
  const PathState* ps = nullptr;
  if (auto it = states_.find(v->path()); it != states_.end()) {
    ps = it->second.get();
  }
  const bool current = ps && ps->current == v;
  if (current && ps->validated_ms > 0) info.validated_at = ps->validated_ms / 1000;
  if (!v->bound(lk).sha256.empty()) {
    const bool stale = !current || down() || ps->missing_since_ms != 0;
    info.state = stale ? VersionInfo::State::kStale : VersionInfo::State::kCached;
  } else if (v->bound(lk).download) {
    info.state = VersionInfo::State::kDownloading;
  }
  return info;
}

InvalidateResult Fetcher::Impl::invalidate(const std::string& prefix) {
  InvalidateResult r;
  PathLock lk(mu_);
  const int64_t now = now_ms();
  auto& inv = invalidations_;
  constexpr size_t kMaxInvalidations = 1024;
  if (prefix.empty() || inv.size() >= kMaxInvalidations) {
    inv.clear();
    inv.emplace_back("", now);  // everything: covers what was listed before
  } else {
    inv.emplace_back(prefix, now);
  }
  auto drop_listing = [&r](const std::string& path, PathState& ps) {
    if (!ps.listing || ps.listing_in_flight) return;
    ps.listing.reset();
    r.listings++;
    if (r.listing_paths.size() < InvalidateResult::kMaxReported) r.listing_paths.push_back(path);
  };
  // The parent's listing says whether prefix exists and what lies beside
  // it: kept, it would answer the lookups and readdirs the admin asked to
  // send upstream again, for as long as listing_ttl. The siblings' negative
  // entries go with it (a name absent from that listing is remembered as
  // missing), or `ls` would show a new file that a lookup still denies.
  const bool has_parent = !prefix.empty();
  const std::string parent(http::parent_path(prefix));
  for (auto& [path, ps] : states_) {
    const bool under = path_at_or_under(path, prefix);
    if (!under) {
      if (!has_parent) continue;
      if (path == parent) {
        drop_listing(path, *ps);
        continue;
      }
      if (path.empty() || http::parent_path(path) != parent) continue;
    }
    if (under && ps->current && ps->validated_ms != 0) {
      ps->validated_ms = 0;
      r.files++;
    }
    if (ps->negative(now)) {
      ps->clear_negative();
      r.negatives++;
      if (r.negative_paths.size() < InvalidateResult::kMaxReported)
        r.negative_paths.push_back(path);
    }
    if (under) drop_listing(path, *ps);
  }
  return r;
}
}  // namespace netbootfs::cache
