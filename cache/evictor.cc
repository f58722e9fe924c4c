#include "cache/evictor.h"

#include "cache/derived_keys.h"
#include "cache/maintenance.h"

#include <fnmatch.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace netbootfs::cache {

Result<uint64_t> parse_size(std::string_view text) {
  const std::string s(text);
  auto bad = [&] {
    return Error{EINVAL, "bad size '" + s + "' (want bytes or a number with K, M, G or T, e.g. 20G)"};
  };
  if (s.empty() || !(std::isdigit(static_cast<unsigned char>(s[0])))) return bad();
  char* end = nullptr;
  errno = 0;
  const double n = std::strtod(s.c_str(), &end);
  if (errno != 0 || end == s.c_str() || !std::isfinite(n) || n <= 0) return bad();
  std::string unit(end);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && (unit.substr(1) == "B" || unit.substr(1) == "IB")) unit.resize(1);
  double mult = 1;
  if (unit.empty() || unit == "B") {
    mult = 1;
  } else if (unit == "K") {
    mult = 1024.0;
  } else if (unit == "M") {
    mult = 1024.0 * 1024;
  } else if (unit == "G") {
    mult = 1024.0 * 1024 * 1024;
  } else if (unit == "T") {
    mult = 1024.0 * 1024 * 1024 * 1024;
  } else {
    return bad();
  }
  const double bytes = n * mult;
  if (bytes < 1 || bytes > 9.0e18) return bad();
  if (mult == 1 && std::floor(n) != n) return bad();  // "1.5" bytes
  return static_cast<uint64_t>(bytes);
}

namespace {
// pct percent of n, without overflow (pct <= 100).
uint64_t percent_of(uint64_t n, unsigned pct) { return n / 100 * pct + n % 100 * pct / 100; }
}  // namespace

uint64_t default_cache_limit(uint64_t fs_free_bytes, uint64_t cache_bytes) {
  const uint64_t room = fs_free_bytes > UINT64_MAX - cache_bytes ? UINT64_MAX
                                                                  : fs_free_bytes + cache_bytes;
  return percent_of(room, kDefaultFractionPct);
}

std::string format_size(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) {
    v /= 1024;
    ++u;
  }
  char buf[64];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s (%llu bytes)", v, kUnits[u],
                  static_cast<unsigned long long>(bytes));
  }
  return buf;
}

Result<uint64_t> resolve_cache_limit(std::optional<uint64_t> configured, uint64_t fs_free_bytes,
                                     uint64_t cache_bytes) {
  if (!configured) return default_cache_limit(fs_free_bytes, cache_bytes);
  const uint64_t room = fs_free_bytes > UINT64_MAX - cache_bytes ? UINT64_MAX
                                                                  : fs_free_bytes + cache_bytes;
  if (room < *configured) {
    return Error{ENOSPC, "max_cache_size " + format_size(*configured) +
                             " does not fit on the cache filesystem: " + format_size(fs_free_bytes) +
                             " free + " + format_size(cache_bytes) + " held by the cache"};
  }
  return *configured;
}

EvictSelection select_evictions(std::vector<EvictCandidate> blobs, uint64_t limit,
                                Watermarks wm) {
  EvictSelection sel;
  for (const auto& b : blobs) {
    if (!b.in_use) sel.counted_before += b.size;
  }
  sel.counted_after = sel.counted_before;
  if (limit == 0) return sel;
  const auto share = [limit](unsigned pct) { return percent_of(limit, pct); };
  const uint64_t high = share(std::min(wm.high_pct, 100u));
  const uint64_t low = share(std::min(wm.low_pct, std::min(wm.high_pct, 100u)));
  std::sort(blobs.begin(), blobs.end(), [](const EvictCandidate& a, const EvictCandidate& b) {
    if (a.last_access != b.last_access) return a.last_access < b.last_access;
    if (a.size != b.size) return a.size > b.size;
    return a.sha256 < b.sha256;
  });
  const bool start = sel.counted_before > high;
  if (!start) return sel;
  // A blob larger than the whole limit can never stay: it goes first.
  for (const auto& b : blobs) {
    if (b.in_use || b.pinned || b.size <= limit) continue;
    sel.victims.push_back(b.sha256);
    sel.counted_after -= b.size;
  }
  for (const auto& b : blobs) {
    if (sel.counted_after <= low) break;
    if (b.in_use || b.pinned || b.size > limit) continue;
    sel.victims.push_back(b.sha256);
    sel.counted_after -= b.size;
  }
  return sel;
}

Evictor::Evictor(EvictorOptions options, Index& index, BlobStore& blobs)
    : options_(std::move(options)), index_(index), blobs_(blobs) {}

void Evictor::set_in_use(std::function<std::unordered_set<std::string>()> in_use) {
  std::lock_guard lk(mu_);
  in_use_ = std::move(in_use);
}

void Evictor::set_on_evicted(std::function<void(const std::vector<std::string>&)> cb) {
  std::lock_guard lk(mu_);
  on_evicted_ = std::move(cb);
}

bool matches_pin(const std::vector<std::string>& pins, std::string_view path) {
  const std::string p(path);
  for (const auto& g : pins) {
    if (::fnmatch(g.c_str(), p.c_str(), 0) == 0) return true;
  }
  return false;
}

bool Evictor::pinned(std::string_view path) const { return matches_pin(options_.pins, path); }

Evictor::Reservation::Reservation(Reservation&& o) noexcept
    : pool_(std::move(o.pool_)), bytes_(std::exchange(o.bytes_, 0)) {}

Evictor::Reservation& Evictor::Reservation::operator=(Reservation&& o) noexcept {
  if (this != &o) {
    release();
    pool_ = std::move(o.pool_);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void Evictor::Reservation::release() {
  if (pool_) pool_->fetch_sub(bytes_);
  pool_.reset();
  bytes_ = 0;
}

Evictor::Reservation Evictor::reserve(uint64_t bytes) {
  reserved_->fetch_add(bytes);
  return Reservation(reserved_, bytes);
}

bool Evictor::fits(const IndexStats& total, uint64_t coming) const {
  return options_.limit == 0 ||
         (total.blob_bytes <= UINT64_MAX - coming &&
          total.blob_bytes + coming <=
              percent_of(options_.limit, std::min(options_.watermarks.high_pct, 100u)));
}

bool Evictor::over_high_watermark() const { return !fits(index_.stats(), reserved_->load()); }

BlobRefs gather_refs(const std::vector<std::pair<std::string, PathEntry>>& paths,
                     const std::vector<std::string>& pins) {
  BlobRefs refs;
  for (auto& [p, e] : paths) {
    if (is_internal_key(p)) {
      if (auto source = derived_source(p)) refs.derived_of[*source].emplace_back(p, e.sha256);
      continue;
    }
    if (matches_pin(pins, p)) refs.pinned.insert(e.sha256);
    refs.paths_of[e.sha256].push_back(p);
  }
  return refs;
}

namespace {
// A derived output goes with its source: fold its bytes into the source's
// candidate (it is as recent as its source; its own record is not a
// candidate unless a path points at it directly).
void fold_derived(std::vector<EvictCandidate>& cands, const BlobRefs& refs) {
  std::unordered_map<std::string, size_t> pos;
  for (size_t i = 0; i < cands.size(); ++i) pos[cands[i].sha256] = i;
  for (auto& [source, outs] : refs.derived_of) {
    auto it = pos.find(source);
    if (it == pos.end()) continue;
    for (auto& [key, out] : outs) {
      auto o = pos.find(out);
      if (o == pos.end() || refs.paths_of.count(out)) continue;
      cands[it->second].size += cands[o->second].size;
      if (cands[o->second].in_use) cands[it->second].in_use = true;
      cands[o->second].size = 0;
      cands[o->second].pinned = true;  // never chosen on its own
    }
  }
}
}  // namespace

std::vector<EvictCandidate> build_candidates(
    const std::vector<std::pair<std::string, BlobEntry>>& blobs,
    const std::vector<std::pair<std::string, int64_t>>& pending_access, const BlobRefs& refs,
    const std::unordered_set<std::string>& in_use, uint64_t coming) {
  std::unordered_map<std::string, int64_t> pending;
  for (auto& [sha, at] : pending_access) pending[sha] = at;
  std::vector<EvictCandidate> cands;
  for (auto& [sha, b] : blobs) {
    EvictCandidate c;
    c.sha256 = sha;
    c.size = b.size;
    c.last_access = b.last_access;
    if (auto it = pending.find(sha); it != pending.end()) {
      c.last_access = std::max(c.last_access, it->second);
    }
    c.pinned = refs.pinned.count(sha) > 0;
    c.in_use = in_use.count(sha) > 0;
    cands.push_back(std::move(c));
  }
  fold_derived(cands, refs);
  if (coming > 0) {
    // Downloads are about to add these bytes: they count now (a candidate
    // that is never chosen itself).
    cands.push_back(EvictCandidate{"", coming, INT64_MAX, false, true});
  }
  return cands;
}

void Evictor::drop_blobs(const std::vector<std::string>& shas, EvictReport& report) {
  Removed removed;
  for (const auto& d : shas) collect_blob(index_, blobs_, d, removed);  // unless still referred to
  report.blobs += removed.blobs;
  report.bytes += removed.bytes;
}

// Rewritten outputs of a source no path points at any more (removed
// another way than by eviction) would never go with their source: they
// go now, before the candidates are counted.
void Evictor::drop_orphan_outputs(BlobRefs& refs, const std::unordered_set<std::string>& in_use,
                                  EvictReport& report) {
  for (auto it = refs.derived_of.begin(); it != refs.derived_of.end();) {
    if (refs.paths_of.count(it->first)) {
      ++it;
      continue;
    }
    std::vector<std::string> outs;
    for (auto& [key, out] : it->second) {
      if (in_use.count(out)) continue;  // a handle reads it: a later pass
      if (index_.remove_path(key)) outs.push_back(out);
    }
    drop_blobs(outs, report);
    it = refs.derived_of.erase(it);
  }
}

// The paths removed, for on_evicted.
std::vector<std::string> Evictor::remove_victims(const std::vector<std::string>& victims,
                                                 const BlobRefs& refs, EvictReport& report) {
  static const std::vector<std::string> kNoPaths;
  static const std::vector<std::pair<std::string, std::string>> kNoOutputs;
  std::vector<std::string> removed_paths;
  for (const auto& sha : victims) {
    const auto p_it = refs.paths_of.find(sha);
    const auto d_it = refs.derived_of.find(sha);
    const auto& paths = p_it == refs.paths_of.end() ? kNoPaths : p_it->second;
    const auto& outputs = d_it == refs.derived_of.end() ? kNoOutputs : d_it->second;
    // Paths first (they release the blob's refs), then derived entries.
    bool ok = true;
    for (const auto& p : paths) {
      if (auto r = index_.remove_path(p); !r) {
        spdlog::warn("eviction: removing {}: {}", p, r.error().message);
        ok = false;
        continue;
      }
      removed_paths.push_back(p);
      report.entries++;
    }
    if (!ok) continue;
    std::vector<std::string> drop{sha};
    for (auto& [key, out] : outputs) {
      if (index_.remove_path(key)) drop.push_back(out);
    }
    drop_blobs(drop, report);
  }
  return removed_paths;
}

void Evictor::publish_totals(const IndexStats& st, EvictReport& report) {
  report.cache_bytes = st.blob_bytes;
  report.cache_objects = st.blobs;
  cache_bytes = report.cache_bytes;
  cache_objects = report.cache_objects;
}

Result<EvictReport> Evictor::enforce(uint64_t incoming) {
  std::unique_lock lk(mu_);
  EvictReport report;
  // Bytes on their way: every announced download's, not only the caller's.
  // Read once, so the check below and the selection agree.
  const uint64_t reserved = reserved_->load();
  const uint64_t coming = reserved > UINT64_MAX - incoming ? UINT64_MAX : reserved + incoming;
  // The common case, for free: everything the cache holds (in use or not)
  // plus what is coming fits under the high watermark, so nothing would be
  // selected. The index keeps its totals as it writes (Index::stats() is
  // one read): this runs for every download that announces its size, on
  // the HTTP worker thread.
  const IndexStats total = index_.stats();
  if (fits(total, coming)) {
    publish_totals(total, report);
    return report;
  }
  const std::unordered_set<std::string> in_use =
      in_use_ ? in_use_() : std::unordered_set<std::string>{};
  BlobRefs refs = gather_refs(index_.list_paths(), options_.pins);
  drop_orphan_outputs(refs, in_use, report);
  // Accesses not yet flushed are read first, as they always were.
  const auto pending = index_.pending_access();
  const std::vector<EvictCandidate> cands =
      build_candidates(index_.list_blobs(), pending, refs, in_use, coming);
  const EvictSelection sel = select_evictions(cands, options_.limit, options_.watermarks);
  const std::vector<std::string> removed_paths = remove_victims(sel.victims, refs, report);
  const IndexStats st = index_.stats();
  evictions += report.blobs;
  evicted_bytes += report.bytes;
  publish_totals(st, report);
  auto cb = on_evicted_;
  lk.unlock();
  if (report.blobs > 0 || !removed_paths.empty()) {
    spdlog::info("evicted {} blobs ({} bytes, {} paths); cache holds {} bytes of {}", report.blobs,
                 report.bytes, report.entries, report.cache_bytes, options_.limit);
    if (cb) cb(removed_paths);
  }
  return report;
}

}  // namespace netbootfs::cache
