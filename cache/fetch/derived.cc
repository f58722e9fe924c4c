#include <unistd.h>

#include "cache/derived_keys.h"
#include "cache/fetch/fetcher_impl.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return cache_log(); }

}  // namespace

Result<Fetcher::Impl::Derived> Fetcher::Impl::derive(const ContentFilter& filter,
                                                     const std::string& path,
                                                     const PathEntry& source) {
  const std::string fp = filter.fingerprint();
  const std::string key = derived_key(fp, source.sha256);
  if (auto d = index.get_path(key); d && blobs.blob_size(d->sha256) == d->size) {
    return Derived{d->sha256, d->size, d->etag};
  }
  ContentFilter::Output out;
  if (source.size > filter.max_input()) {
    out.note = "not rewritten: larger than " + std::to_string(filter.max_input()) + " bytes";
    out.warn = true;
  } else {
    auto fd = blobs.open_blob(source.sha256);
    if (!fd) return fd.error();
    std::string bytes(source.size, '\0');
    if (::pread(fd->get(), bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
      return Error{EIO, "reading " + path + " for the filter failed"};
    }
    out = filter.apply(path, bytes);
  }
  if (out.warn) log()->warn("{}: {}", path, out.note);
  if (!out.changed) return Derived{source.sha256, source.size, out.note};
  auto tmp = blobs.create_temp();
  if (!tmp) return tmp.error();
  if (auto r = tmp->append(out.bytes.data(), out.bytes.size()); !r) return r.error();
  auto gc = lifecycle.publishing();
  auto sha = blobs.publish(tmp.value());
  if (!sha) return sha.error();
  // The derived entry holds the output blob (a reference like a path's) and
  // keeps the filter's note where a path keeps its ETag.
  PathEntry d;
  d.sha256 = sha.value();
  d.size = out.bytes.size();
  d.etag = out.note;
  d.validated_at = now_ms() / 1000;
  if (auto r = index.put_path(key, d); !r) return r.error();
  log()->info("{}: {}", path, out.note);
  return Derived{d.sha256, d.size, out.note};
}

void Fetcher::Impl::start_derive(const PathLock& lk, const std::string& path, PathState& ps) {
  ps.deriving = true;
  const PathEntry source = *ps.underived;
  auto filter = filter_for(lk, path);
  post([this, path, source, filter] {
    Result<Derived> derived = Derived{source.sha256, source.size, ""};
    if (filter) derived = derive(*filter, path, source);
    install_version(path, source, filter, derived, nullptr);
  });
}

void Fetcher::Impl::install_version(const std::string& path, const PathEntry& source,
                                    const std::shared_ptr<const ContentFilter>& filter,
                                    const Result<Derived>& derived,
                                    const std::shared_ptr<Download>& dl) {
  Result<std::shared_ptr<FileVersion>> result = Error{EIO, "filter failed"};
  std::vector<VersionCallback> waiters;
  {
    PathLock lk(mu_);
    PathState& ps = state(lk, path);
    if (dl && ps.pending == dl) ps.pending.reset();
    ps.deriving = false;
    ps.underived.reset();
    if (derived) {
      const std::string fp = filter ? filter->fingerprint() : std::string();
      const std::string src = filter ? source.sha256 : std::string();
      auto& cur = ps.current;
      if (cur && cur->bound(lk).sha256 == derived->sha256 && cur->bound(lk).source_sha256 == src &&
          cur->bound(lk).filter_fp == fp && cur->size() == derived->size) {
        result = cur;  // the same bytes served the same way: the same version
      } else if (cur && !filter && cur->bound(lk).sha256.empty() && !cur->bound(lk).download &&
                 cur->size() == derived->size &&
                 (cur->etag().empty() || cur->etag() == source.etag)) {
        cur->bound(lk).sha256 = derived->sha256;  // the version a listing announced, now with bytes
        result = cur;
      } else {
        auto v = make_version(lk, path, derived->size, source.last_modified, source.etag);
        v->bound(lk).sha256 = derived->sha256;
        v->bound(lk).source_sha256 = src;
        v->bound(lk).filter_fp = fp;
        v->filter_note_ = derived->note;
        if (dl && dl->conditional()) stats.revalidations_changed++;
        result = v;
      }
      auto& v = result.value();
      v->bound(lk).validator_etag = source.etag;
      v->bound(lk).validator_last_modified = source.last_modified;
      ps.current = v;
      ps.validated_ms = source.validated_at ? source.validated_at * 1000 : now_ms();
      if (dl) ps.validated_ms = now_ms();
      ps.clear_negative();
    } else {
      log()->error("{}: {}", path, derived.error().message);
      // Our failure, whatever errno it came with: upstream serves the file.
      result = stats.count(FetcherStats::ErrorSite::kRewrite,
                           Error{EIO, "rewriting failed: " + derived.error().message});
    }
    waiters.swap(ps.version_waiters);
  }
  for (auto& w : waiters) w(result);
}

void Fetcher::Impl::set_filter(std::shared_ptr<const ContentFilter> filter) {
  PathLock lk(mu_);
  filter_ = std::move(filter);
  // Versions served through another filter (or none) are replaced at their
  // next lookup; an open handle keeps its version.
  for (auto& [path, ps] : states_) {
    if (ps->pending || ps->deriving) continue;
    const bool was_filtered = ps->current && !ps->current->bound(lk).filter_fp.empty();
    const bool is_filtered = filter_for(lk, path) != nullptr;
    if (was_filtered || is_filtered || ps->underived) {
      ps->current.reset();
      ps->underived.reset();
      ps->loaded = false;
    }
  }
}
}  // namespace netbootfs::cache
