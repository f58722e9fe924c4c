#include "cache/fetch/fetcher_impl.h"
#include "cache/util/delay_point.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return cache_log(); }

}  // namespace

void Fetcher::Impl::publish(const std::shared_ptr<Download>& dl) {
  std::string sha;
  PathEntry entry;
  std::optional<PathEntry> before;
  std::vector<ReadWaiter> ready;
  int fd = -1;
  {
    // Held across the rename and the index update: a blob that a concurrent
    // lifecycle.collect() finds unreferenced must not be the one we point at.
    auto gc = lifecycle.publishing();
    delay_point(DelayPoint::kPublishLocked);
    auto r = blobs.publish(dl->temp());
    if (!r) {
      fail_download(dl, "publishing failed: " + r.error().message, true);
      return;
    }
    sha = r.value();
    entry = dl->entry(sha, now_ms() / 1000);
    before = index.get_path(dl->path());
    if (auto w = index.put_path(dl->path(), entry); !w) {
      fail_download(dl, "index update failed: " + w.error().message, true);
      return;
    }
    // Its readers read it from the download: count that as its last use,
    // or eviction would take a file just fetched for "never read".
    index.note_access(sha, entry.validated_at);
    // Its bytes are in the index's totals now; still under gc_mu_, so a
    // pass counts them either as reserved or as held, never as neither.
    dl->release_reservation();
    stats.download_seconds.observe(static_cast<double>(now_ms() - dl->started_ms()) / 1000.0);
    // Still under gc_mu_: once the eviction can look, the download is bound
    // to its blob (and so counts as using it).
    PathLock lk(mu_);
    Download::Completed done = dl->complete_as(sha);
    ready.swap(done.readers);
    fd = done.fd;
    if (auto v = done.version) {
      v->bound(lk).sha256 = sha;
      // From now on the blob serves new opens; handles that hold the
      // download keep reading through its fd.
      if (v->bound(lk).download == dl) v->bound(lk).download.reset();
      PathState& ps = state(lk, dl->path());
      if (ps.current == v) ps.validated_ms = now_ms();
    }
  }
  log()->info("{}: downloaded {} bytes, sha256 {}", dl->path(), entry.size, sha.substr(0, 12));
  if (before && before->sha256 != sha) lifecycle.drop_outputs_of(before->sha256);
  if (dl->whole()) {
    std::shared_ptr<const ContentFilter> filter;
    {
      PathLock lk(mu_);
      filter = filter_for(lk, dl->path());
    }
    Result<Derived> derived = Derived{entry.sha256, entry.size, ""};
    if (filter) derived = derive(*filter, dl->path(), entry);
    install_version(dl->path(), entry, filter, derived, dl);
  }
  const uint64_t size = entry.size;
  for (auto& w : ready) {
    const uint64_t end = read_end(w.offset, w.len, size);
    w.cb(Slice{fd, w.offset, static_cast<size_t>(end - w.offset)});
  }
  if (before && before->sha256 != sha) lifecycle.collect(before->sha256);
  lifecycle.queue_eviction();
}

std::unordered_set<std::string> Fetcher::Impl::blobs_in_use() {  // gc_mu_ held
  std::unordered_set<std::string> used;
  {
    PathLock lk(mu_);
    for (const auto& w : active_) {
      auto d = w.lock();
      if (!d) continue;
      if (auto sha = d->blob_in_use(); !sha.empty()) used.insert(std::move(sha));  // their fd
    }
    for (const auto& [path, ps] : states_) {
      // A revalidation may answer 304 (the blob stays current); a rewrite
      // reads its source.
      if (ps->pending && ps->current && !ps->current->bound(lk).sha256.empty()) {
        used.insert(ps->current->bound(lk).sha256);
        if (!ps->current->bound(lk).source_sha256.empty())
          used.insert(ps->current->bound(lk).source_sha256);
      }
      if (ps->deriving && ps->underived) used.insert(ps->underived->sha256);
    }
  }
  lifecycle.add_handles_in_use(used);
  return used;
}

void Fetcher::Impl::forget_evicted(const std::vector<std::string>& paths) {  // gc_mu_ held
  PathLock lk(mu_);
  for (const auto& p : paths) {
    auto it = states_.find(p);
    if (it == states_.end()) continue;
    PathState& ps = *it->second;
    if (ps.pending) continue;  // its blob was in use: not evicted (shared bytes)
    // Not cached any more: the next lookup asks upstream, the next open of
    // the old version answers ESTALE.
    ps.current.reset();
    ps.loaded = false;
    ps.validated_ms = 0;
    ps.missing_since_ms = 0;
    ps.underived.reset();
  }
}

}  // namespace netbootfs::cache
