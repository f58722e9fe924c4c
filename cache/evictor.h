// Evictor: keeps the bytes the cache holds under a limit (max_cache_size),
// dropping the least recently used blobs first.
//
// Contract
// - What counts: every published blob the index knows (path blobs and the
//   rewritten outputs derived from them). A blob is "in use" while the caller
//   says so (an open file, a download): it is never evicted then, and its
//   bytes do not count against the limit. Pinned blobs (a path pointing at
//   them matches a pin glob, fnmatch) are never evicted; they count.
// - Selection (select_evictions, pure): nothing happens while the counted
//   bytes are at or below high_pct of the limit; past it, blobs that are
//   neither in use nor pinned go oldest last_access first (ties: larger
//   first, then sha256) until the counted bytes are at or below low_pct of
//   the limit. A blob larger than the whole limit goes first, as soon as it
//   is not in use (it can never stay).
// - Order includes accesses noted in memory and not yet flushed
//   (Index::pending_access), so a read a second ago is recent.
// - Reservations: a download that announced its size reserves it
//   (reserve()); every enforce() counts the sum of the reservations still
//   held, so several downloads announced at once make room for all of them,
//   not each for itself. A reservation is released when its holder drops it
//   (the download published, its bytes now in the index, or failed).
// - The common case costs no scan: when the index's running totals
//   (Index::stats(), O(1)) plus the reservations and `incoming` are at or
//   below the high watermark, enforce() returns at once.
// - enforce(): evicting a blob removes every index path that points at it,
//   the rewritten outputs derived from it (cache/derived_keys.h: their
//   entries and their blobs when nothing else refers to them), the blob
//   records and the blob files. The caller gets the paths removed
//   (on_evicted) so that it can forget what it kept in memory about them.
//   A rewritten output whose source no path points at any more (the source
//   was removed another way) is garbage: a pass that scans removes it with
//   its blob unless that is in use.
//   The caller must hold the CacheLock (the mount, or netbootfsctl gc): no
//   other process commits into the cache meanwhile.
// - Thread safety: enforce() may run concurrently with Index users (the
//   Index is thread safe); two enforce() calls on one cache are serialised
//   by the Evictor's own mutex. The in_use hook runs with that mutex held
//   (lock order: Evictor::mu_ before the caller's locks); on_evicted runs
//   without it. A caller that publishes blobs concurrently must exclude its
//   publishing from enforce() (the Fetcher holds its gc lock around both).
// - Counters (evictions, evicted bytes, the cache's bytes and objects after
//   the last pass) are atomics, readable from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cache/blob_store.h"
#include "cache/index.h"
#include "cache/util/result.h"

namespace netbootfs::cache {

// "20G", "512M", "4096", "1.5G": K, M, G, T are powers of 1024 (an optional
// trailing "B" or "iB" is accepted); plain digits are bytes. Anything else,
// zero included, is an error naming the text.
Result<uint64_t> parse_size(std::string_view text);

// The default limit: kDefaultFractionPct percent of what the cache could use
// (free space of its filesystem + what the cache holds already).
constexpr unsigned kDefaultFractionPct = 80;
uint64_t default_cache_limit(uint64_t fs_free_bytes, uint64_t cache_bytes);

// "4.0 MiB (4194304 bytes)": for messages.
std::string format_size(uint64_t bytes);

// The limit in force: `configured` when given, else the default. A
// configured limit that the cache's filesystem cannot hold (free space +
// what the cache holds < limit) is an error (one line naming both figures).
Result<uint64_t> resolve_cache_limit(std::optional<uint64_t> configured, uint64_t fs_free_bytes,
                                     uint64_t cache_bytes);

struct Watermarks {
  unsigned high_pct = 90;  // background eviction starts past this share of the limit
  unsigned low_pct = 80;   // and evicts down to this share
};

struct EvictCandidate {
  std::string sha256;
  uint64_t size = 0;
  int64_t last_access = 0;  // unix seconds
  bool in_use = false;
  bool pinned = false;
};

struct EvictSelection {
  std::vector<std::string> victims;  // in eviction order
  uint64_t counted_before = 0;       // bytes counted against the limit
  uint64_t counted_after = 0;
};

// Pure: see the contract.
EvictSelection select_evictions(std::vector<EvictCandidate> blobs, uint64_t limit,
                                Watermarks wm);

// Who refers to each blob, from the index's path entries.
struct BlobRefs {
  // sha256 -> the (non-internal) paths that point at it, in listing order.
  std::unordered_map<std::string, std::vector<std::string>> paths_of;
  // source sha256 -> its rewritten outputs: (derived key, output sha256).
  std::unordered_map<std::string, std::vector<std::pair<std::string, std::string>>> derived_of;
  // Blobs that a path matching a pin glob points at.
  std::unordered_set<std::string> pinned;
};

// Pure: sorts `paths` (Index::list_paths()) into BlobRefs. Internal keys
// that are not derived keys are skipped; derived keys are never pinned.
BlobRefs gather_refs(const std::vector<std::pair<std::string, PathEntry>>& paths,
                     const std::vector<std::string>& pins);

// Pure: the candidates select_evictions() weighs, one per blob record in
// `blobs` (Index::list_blobs()), in that order. last_access is the later of
// the record's and `pending_access` (Index::pending_access()); pinned and in_use
// from `refs` and `in_use`. A rewritten output that no path points at is
// folded into its source's candidate (its size added, its in_use passed on;
// it stays with size 0, pinned, never chosen on its own). `coming` > 0 adds
// a last candidate {"", coming, INT64_MAX, not in use, pinned}: those bytes
// count, nothing is chosen for them.
std::vector<EvictCandidate> build_candidates(
    const std::vector<std::pair<std::string, BlobEntry>>& blobs,
    const std::vector<std::pair<std::string, int64_t>>& pending_access, const BlobRefs& refs,
    const std::unordered_set<std::string>& in_use, uint64_t coming);

struct EvictorOptions {
  uint64_t limit = 0;  // bytes; 0: no limit (enforce does nothing)
  Watermarks watermarks;
  std::vector<std::string> pins;  // fnmatch globs on relative paths
};

struct EvictReport {
  uint64_t blobs = 0;    // blobs deleted
  uint64_t bytes = 0;    // their bytes
  uint64_t entries = 0;  // path entries removed
  uint64_t cache_bytes = 0;    // blob bytes the index holds afterwards
  uint64_t cache_objects = 0;  // blobs afterwards
};

// Whether `path` (relative to the mount) matches one of the pin globs
// (fnmatch without flags: `*` crosses `/`). What Evictor::pinned() and
// `netbootfsctl ls -l` answer.
bool matches_pin(const std::vector<std::string>& pins, std::string_view path);

class Evictor {
 public:
  // Bytes held back for a download until it publishes or fails. Move-only;
  // releasing (or destroying) it returns the bytes. Safe to outlive the
  // Evictor.
  class Reservation {
   public:
    Reservation() = default;
    Reservation(Reservation&& o) noexcept;
    Reservation& operator=(Reservation&& o) noexcept;
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;
    ~Reservation() { release(); }
    void release();
    uint64_t bytes() const { return bytes_; }

   private:
    friend class Evictor;
    Reservation(std::shared_ptr<std::atomic<uint64_t>> pool, uint64_t bytes)
        : pool_(std::move(pool)), bytes_(bytes) {}
    std::shared_ptr<std::atomic<uint64_t>> pool_;
    uint64_t bytes_ = 0;
  };

  Evictor(EvictorOptions options, Index& index, BlobStore& blobs);
  // The blobs in use now (open files, downloads), asked once per pass.
  // Default: none.
  void set_in_use(std::function<std::unordered_set<std::string>()> in_use);
  // Called (no Evictor lock held) with the paths removed by one enforce().
  void set_on_evicted(std::function<void(const std::vector<std::string>& paths)> cb);

  // Counts `bytes` in every enforce() until the reservation is released.
  Reservation reserve(uint64_t bytes);
  // The sum of the reservations held now.
  uint64_t reserved() const { return reserved_->load(); }

  // Evicts as the contract says. `incoming`: bytes about to be added that
  // hold no reservation, counted with the rest (and with the reservations):
  // room is made before they arrive.
  Result<EvictReport> enforce(uint64_t incoming = 0);
  // Whether enforce(0) would look for victims now (the common-case test of
  // the contract, O(1), no Evictor lock): a caller that would only queue a
  // pass can skip it, and the thread wakeup, when this is false.
  bool over_high_watermark() const;

  bool pinned(std::string_view path) const;
  const EvictorOptions& options() const { return options_; }

  std::atomic<uint64_t> evictions{0};     // blobs deleted, in total
  std::atomic<uint64_t> evicted_bytes{0};
  std::atomic<uint64_t> cache_bytes{0};   // after the last pass
  std::atomic<uint64_t> cache_objects{0};

 private:
  bool fits(const IndexStats& total, uint64_t coming) const;
  // The steps of enforce(), each with mu_ held.
  void drop_blobs(const std::vector<std::string>& shas, EvictReport& report);
  void drop_orphan_outputs(BlobRefs& refs, const std::unordered_set<std::string>& in_use,
                           EvictReport& report);
  std::vector<std::string> remove_victims(const std::vector<std::string>& victims,
                                          const BlobRefs& refs, EvictReport& report);
  void publish_totals(const IndexStats& st, EvictReport& report);
  EvictorOptions options_;
  Index& index_;
  BlobStore& blobs_;
  std::mutex mu_;  // serialises enforce(); taken before any Index/BlobStore call
  std::function<std::unordered_set<std::string>()> in_use_;
  std::function<void(const std::vector<std::string>&)> on_evicted_;
  // Shared with the Reservations, which may outlive the Evictor.
  std::shared_ptr<std::atomic<uint64_t>> reserved_ = std::make_shared<std::atomic<uint64_t>>(0);
};

}  // namespace netbootfs::cache
