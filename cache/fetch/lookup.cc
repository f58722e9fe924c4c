#include "cache/fetch/fetcher_impl.h"
#include "cache/http/url.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return cache_log(); }

}  // namespace

namespace {

// Unlocks the path table, then answers: callbacks never run under it.
void answer(PathLock& lk, Fetcher::AttrCallback& cb, Result<Attr> r) {
  lk.unlock();
  cb(std::move(r));
}

Error would_block() { return Error{EWOULDBLOCK, "not known without asking upstream"}; }

}  // namespace

void Fetcher::Impl::wait_for_version(const PathLock&, PathState& ps, Fetcher::AttrCallback cb) {
  ps.version_waiters.push_back([this, done = std::move(cb)](auto r) mutable {
    if (!r) {
      done(r.error());
    } else if (!r.value()) {
      done(Attr{true, 0, 0, nullptr});
    } else {
      done(attr_of(r.value()));
    }
  });
}

void Fetcher::Impl::lookup(const std::string& path, Fetcher::AttrCallback cb, LookupMode mode) {
  const bool peek = mode == LookupMode::kPeek;
  if (path.empty()) {
    cb(Attr{true, 0, 0, nullptr});
    return;
  }
  const std::string parent(http::parent_path(path));
  PathLock lk(mu_);
  if (stopping_) {
    return answer(lk, cb,
                  stats.count(FetcherStats::ErrorSite::kShutdown, Error{EIO, "shutting down"}));
  }
  PathState& ps = state(lk, path);
  ensure_loaded(lk, path, ps);
  const int64_t now = now_ms();
  const bool filtered = filter_for(lk, path) != nullptr;
  // The served size of a filtered file is known only from its content.
  if (filtered && !ps.current && (ps.underived || ps.deriving || ps.pending)) {
    if (peek) return answer(lk, cb, would_block());
    wait_for_version(lk, ps, std::move(cb));
    if (ps.underived && !ps.deriving) {
      start_derive(lk, path, ps);  // cached bytes, not yet through this filter
    } else {
      stats.coalesced++;
    }
    return;
  }
  if (ps.is_dir) return answer(lk, cb, Attr{true, 0, 0, nullptr});
  if (ps.current &&
      (ps.current->bound(lk).download || now - ps.validated_ms < opt.revalidate.count())) {
    return answer(lk, cb, attr_of(ps.current));
  }
  if (ps.negative(now)) return answer(lk, cb, Error{ps.negative_errno, "cached negative entry"});
  PathState& pps = state(lk, parent);
  const bool listing_fresh =
      pps.listing && (mode == LookupMode::kListingFetched ||
                      now - pps.listing->fetched_ms < opt.listing_ttl.count());
  if (listing_fresh) return lookup_in_listing(path, ps, *pps.listing, filtered, lk, cb, mode);
  if (ps.current) {
    // Answer from the cache at once; open revalidates anyway. Refresh the
    // listing in the background so that later lookups see upstream's view.
    if (!pps.listing_in_flight && !peek) fetch_listing(lk, parent);
    return answer(lk, cb, attr_of(ps.current));
  }
  lk.unlock();
  if (peek) {
    cb(would_block());
    return;
  }
  with_listing(parent, [this, path, cb = std::move(cb)]() mutable {
    lookup(path, cb, LookupMode::kListingFetched);
  });
}

void Fetcher::Impl::lookup_in_listing(const std::string& path, PathState& ps,
                                      const Listing& listing, bool filtered, PathLock& lk,
                                      Fetcher::AttrCallback& cb, LookupMode mode) {
  const int64_t now = now_ms();
  if (listing.available) {
    const ListingEntry* e = listing.find(http::base_name(path));
    if (!e && within_missing_grace(lk, path, ps, now)) {
      stats.missing_served++;
      return answer(lk, cb, attr_of(ps.current));
    }
    // Only a listing fetched after the missing answer says it is back.
    if (e && listing.fetched_ms >= ps.missing_since_ms) ps.missing_since_ms = 0;
    if (!e) {
      const bool was_cached = ps.current && !ps.current->bound(lk).sha256.empty();
      if (was_cached) post([this, path] { lifecycle.remove_path(path); });
      ps.set_negative(ENOENT, std::min(now + opt.negative_ttl.count(),
                                       listing.fetched_ms + opt.listing_ttl.count()));
      ps.current.reset();  // gone upstream
      return answer(lk, cb, Error{ENOENT, "not in the directory listing"});
    }
    if (e->is_dir) {
      ps.is_dir = true;
      return answer(lk, cb, Attr{true, 0, e->mtime.value_or(0), nullptr});
    }
    if (e->size && !filtered) {
      if (!ps.current || ps.current->size() != *e->size) {
        ps.current = make_version(lk, path, *e->size, e->mtime.value_or(0), "");
        ps.validated_ms = 0;
      }
      return answer(lk, cb, attr_of(ps.current));
    }
  }
  if (ps.current) return answer(lk, cb, attr_of(ps.current));
  const bool listing_down = !listing.available && (listing.error == EIO || down());
  lookup_by_name(path, ps, filtered, listing_down, lk, cb, mode);
}

void Fetcher::Impl::lookup_by_name(const std::string& path, PathState& ps, bool filtered,
                                   bool listing_down, PathLock& lk, Fetcher::AttrCallback& cb,
                                   LookupMode mode) {
  if (listing_down && !index.list_paths(path + "/", 1).empty()) {
    // Upstream cannot be asked, but the cache holds files below this name:
    // a directory (an offline or imported cache serves its whole tree).
    return answer(lk, cb, Attr{true, 0, 0, nullptr});
  }
  // No listing with an exact size: one HEAD per path, shared; a filtered
  // file is fetched whole instead (a boot menu is small).
  if (mode == LookupMode::kPeek) return answer(lk, cb, would_block());
  wait_for_version(lk, ps, std::move(cb));
  if (ps.head_in_flight || ps.pending) {
    stats.coalesced++;
  } else if (filtered) {
    start_download(lk, path, ps, false);
  } else {
    start_head(lk, path, ps);
  }
}

void Fetcher::Impl::start_head(const PathLock& lk, const std::string& path, PathState& ps) {
  ps.head_in_flight = true;
  send_head(lk, path, 0, now_ms());
}

void Fetcher::Impl::send_head(const PathLock&, const std::string& path, int attempt,
                              int64_t first_ms) {
  auto [origin, url] = pick_url(path);
  auto done = [this, path, url = url, attempt, first_ms](http::Outcome o, const http::Head& h,
                                                         std::string, std::string detail) {
    on_head_answer(path, url, attempt, first_ms, o, h, detail);
  };
  if (down()) {
    stats.down_fast_failures++;
    post([done] { done(http::Outcome::kConnectFailed, http::Head{}, "", "upstream is down"); });
    return;
  }
  stats.heads++;
  http::Request req;
  req.method = http::Request::Method::kHead;
  req.url = url;
  start_request(std::move(req), std::make_shared<MemorySink>(std::move(done)), origin);
}

void Fetcher::Impl::on_head_answer(const std::string& path, const std::string& url, int attempt,
                                   int64_t first_ms, http::Outcome o, const http::Head& h,
                                   const std::string& detail) {
  PathLock lk(mu_);
  PathState& ps2 = state(lk, path);
  if (o != http::Outcome::kOk || h.status != 200) {
    if (auto d = retry_delay(attempt, first_ms, o, h.status, h.retry_after)) {
      log()->info("HEAD {}: {} {} {}, retry in {} ms", path, http::to_string(o), h.status, detail,
                  *d);
      stats.retries++;
      schedule(now_ms() + *d, [this, path, attempt, first_ms] {
        PathLock held(mu_);
        if (!stopping_) send_head(held, path, attempt + 1, first_ms);
      });
      return;  // head_in_flight stays: its waiters wait for the retry
    }
  }
  ps2.head_in_flight = false;
  const NameVerdict verdict = judge_name(o, h.status, url, h.effective_url);
  if (verdict == NameVerdict::kDirectory) {
    // Listed or not (a server without listings answers the directory URL
    // 403 or 404): its children are looked up by name.
    ps2.missing_since_ms = 0;
    ps2.is_dir = true;
    auto waiters = std::move(ps2.version_waiters);
    ps2.version_waiters.clear();
    lk.unlock();
    for (auto& w : waiters) w(std::shared_ptr<FileVersion>());
    return;
  }
  if (verdict == NameVerdict::kFile) {
    ps2.missing_since_ms = 0;
    if (h.content_length) {
      if (!ps2.current || ps2.current->size() != *h.content_length ||
          (!h.etag.empty() && !ps2.current->etag().empty() && ps2.current->etag() != h.etag)) {
        ps2.current =
            make_version(lk, path, *h.content_length, h.last_modified.value_or(0), h.etag);
        ps2.validated_ms = 0;
      }
      auto v = ps2.current;
      lk.unlock();
      resolve(path, v);
      return;
    }
    // No size from HEAD: the only way to an exact size is the whole body.
    if (!ps2.pending) start_download(lk, path, ps2, false);
    return;
  }
  const int err = errno_for(o, h.status);
  if (err == ENOENT || err == EACCES) {
    ps2.set_negative(err, now_ms() + opt.negative_ttl.count());
  } else {
    log()->warn("HEAD {}: {} {} {}", path, http::to_string(o), h.status, detail);
    if (!down()) stats.error_count(FetcherStats::ErrorSite::kUpstream)++;
  }
  lk.unlock();
  resolve(path, Error{err, "upstream HEAD failed"});
}

void Fetcher::Impl::resolve(const std::string& path, Result<std::shared_ptr<FileVersion>> r) {
  std::vector<VersionCallback> waiters;
  {
    PathLock lk(mu_);
    PathState& ps = state(lk, path);
    if (ps.head_in_flight || ps.pending) {
      // Another request is still establishing the version; those that wait
      // for it will be answered by it. Only answer the HEAD's own waiters
      // when nothing else is pending.
      if (ps.pending) return;
    }
    waiters.swap(ps.version_waiters);
  }
  for (auto& w : waiters) w(r);
}

}  // namespace netbootfs::cache
