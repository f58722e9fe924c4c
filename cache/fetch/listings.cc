#include <map>

#include "cache/derived_keys.h"
#include "cache/fetch/fetcher_impl.h"
#include "cache/http/url.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return cache_log(); }

}  // namespace

void Fetcher::Impl::with_listing(const std::string& dir, std::function<void()> then) {
  PathLock lk(mu_);
  if (stopping_) {
    lk.unlock();
    then();  // the continuation sees stopping_ and fails
    return;
  }
  PathState& ps = state(lk, dir);
  const int64_t now = now_ms();
  if (ps.listing && now - ps.listing->fetched_ms < opt.listing_ttl.count()) {
    lk.unlock();
    then();
    return;
  }
  ps.listing_waiters.push_back(std::move(then));
  if (!ps.listing_in_flight) {
    fetch_listing(lk, dir);
  } else {
    stats.coalesced++;
  }
}

void Fetcher::Impl::fetch_listing(const PathLock& lk, const std::string& dir) {
  PathState& ps = state(lk, dir);
  ps.listing_in_flight = true;
  send_listing(lk, dir, 0, now_ms());
}

void Fetcher::Impl::send_listing(const PathLock&, const std::string& dir, int attempt,
                                 int64_t first_ms) {
  auto done = [this, dir, attempt, first_ms](http::Outcome o, const http::Head& h, std::string body,
                                             std::string detail) {
    if (o != http::Outcome::kOk || h.status != 200) {
      if (auto d = retry_delay(attempt, first_ms, o, h.status, h.retry_after)) {
        log()->debug("listing of '{}': {} {} {}, retry in {} ms", dir, http::to_string(o), h.status,
                     detail, *d);
        stats.retries++;
        schedule(now_ms() + *d, [this, dir, attempt, first_ms] {
          PathLock held(mu_);
          if (!stopping_) send_listing(held, dir, attempt + 1, first_ms);
        });
        return;
      }
    }
    auto listing = std::make_shared<Listing>();
    listing->fetched_ms = now_ms();
    if (o == http::Outcome::kOk && h.status == 200) {
      auto parsed = parse_listing(body, h.content_type);
      if (parsed) {
        listing->available = true;
        listing->entries = std::move(parsed).value();
        std::sort(listing->entries.begin(), listing->entries.end(),
                  [](const ListingEntry& a, const ListingEntry& b) { return a.name < b.name; });
      } else {
        log()->debug("listing of '{}' not understood: {}", dir, parsed.error().message);
      }
    } else {
      log()->debug("no listing for '{}': {} {} {}", dir, http::to_string(o), h.status, detail);
      listing->error = errno_for(o, h.status);
    }
    std::vector<std::function<void()>> waiters;
    {
      PathLock held(mu_);
      PathState& ps2 = state(held, dir);
      ps2.listing = std::move(listing);
      ps2.listing_in_flight = false;
      waiters.swap(ps2.listing_waiters);
    }
    for (auto& w : waiters) w();
  };
  if (down()) {  // no request: answered from a worker, never under mu_
    post([done] { done(http::Outcome::kConnectFailed, http::Head{}, "", "upstream is down"); });
    return;
  }
  stats.listings++;
  http::Request req;
  auto [origin, url] = pick_url(dir, true);
  req.url = std::move(url);
  req.body_in_memory = true;
  start_request(std::move(req), std::make_shared<MemorySink>(std::move(done)), origin);
}

void Fetcher::Impl::list_dir(const std::string& path, Fetcher::ListCallback cb) {
  with_listing(path, [this, path, cb = std::move(cb)] {
    std::shared_ptr<const Listing> listing;
    {
      PathLock lk(mu_);
      listing = state(lk, path).listing;
    }
    std::map<std::string, bool> names;  // name -> is_dir
    if (listing && listing->available) {
      for (const auto& e : listing->entries) names.emplace(e.name, e.is_dir);
    }
    // What the cache holds below this directory (all of it when upstream
    // gives no listing; entries the listing lacks are shown too).
    const std::string prefix = path.empty() ? std::string() : path + "/";
    for (const auto& [p, entry] : index.list_paths(path)) {
      if (p.size() <= prefix.size() || p.compare(0, prefix.size(), prefix) != 0) continue;
      if (is_internal_key(p)) continue;  // internal entries (filter outputs)
      std::string_view rest(p);
      rest.remove_prefix(prefix.size());
      const auto slash = rest.find('/');
      if (slash == std::string_view::npos) {
        names.emplace(std::string(rest), false);
      } else {
        names.emplace(std::string(rest.substr(0, slash)), true);
      }
    }
    if (!path.empty() && names.empty() && !(listing && listing->available)) {
      // "Unreachable" must not read as "absent".
      const int err = listing && listing->error == EIO ? EIO : ENOENT;
      if (err == EIO) stats.error_count(FetcherStats::ErrorSite::kListing)++;
      cb(Error{err, "no listing and nothing cached"});
      return;
    }
    std::vector<DirEntry> out;
    out.reserve(names.size());
    for (auto& [n, d] : names) out.push_back(DirEntry{n, d});
    cb(std::move(out));
  });
}

void Fetcher::Impl::marked_up() {
  PathLock lk(mu_);
  // Listings that failed while down (or on the way down) say nothing about
  // upstream's tree: fetch them again at the next lookup.
  for (auto& [path, ps] : states_) {
    if (ps->listing && !ps->listing->available && ps->listing->error == EIO &&
        !ps->listing_in_flight) {
      ps->listing.reset();
    }
  }
}

void Fetcher::Impl::schedule_probe() {
  schedule(now_ms() + std::max<int64_t>(50, opt.probe_interval.count()), [this] {
    PathLock lk(mu_);
    if (stopping_ || !down()) return;
    stats.upstream_probes++;
    http::Request req;
    req.method = http::Request::Method::kHead;
    const size_t origin = health.next_probe_origin();
    req.url = health.base(origin);
    // Any HTTP answer marks upstream up (note_outcome, before this runs).
    start_request(std::move(req),
                  std::make_shared<MemorySink>(
                      [this](http::Outcome, const http::Head&, std::string, std::string) {
                        if (down()) schedule_probe();
                      }),
                  origin);
  });
}

}  // namespace netbootfs::cache
