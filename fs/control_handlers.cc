#include "fs/control_handlers.h"

#include <unistd.h>

#include "cache/prefetch.h"
#include "cache/util/log.h"
#include "fs/control_protocol.h"

namespace netbootfs::fs {
namespace {

using Reply = ControlSocket::Reply;

Result<nlohmann::json> status(const ControlContext& c) {
  const auto& st = c.fetcher.stats();
  control::StatusReply s;
  s.mountpoint = c.opts.mountpoint;
  s.url = c.opts.url;
  s.cache_dir = c.opts.cache_dir;
  s.pid = static_cast<int64_t>(::getpid());
  s.uptime_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - c.started).count();
  s.upstream_up = c.fetcher.upstream_up();
  s.hits = st.hits.load();
  s.misses = st.misses.load();
  s.downloads = st.downloads.load();
  s.download_bytes = st.download_bytes.load();
  s.stale_served = st.stale_served.load();
  s.served_bytes = c.fsimpl.served_bytes();
  s.cache_limit = c.evictor.options().limit;
  s.pins = c.evictor.options().pins;
  s.evictions = c.evictor.evictions.load();
  s.version = c.version;
  return control::status_reply(s);
}

// The mount's own limit and pins, enforced now (netbootfsctl gc).
Result<nlohmann::json> gc(const ControlContext& c) {
  auto r = c.fetcher.enforce_limit();
  if (!r) return r.error();
  logger("control")->info("gc: evicted {} blobs ({} bytes); the cache holds {} bytes in {} blobs",
                          r->blobs, r->bytes, r->cache_bytes, r->cache_objects);
  return control::gc_reply(c.evictor.options().limit, r.value());
}

Result<nlohmann::json> invalidate(const ControlContext& c, const nlohmann::json& req) {
  auto parsed = control::parse_invalidate_request(req);
  if (!parsed) return parsed.error();
  const bool all = parsed->all;
  const std::vector<std::string> prefixes = all ? std::vector<std::string>{""} : parsed->paths;
  control::InvalidateReply out;
  for (const auto& prefix : prefixes) {
    auto r = c.fetcher.invalidate(prefix);
    out.files += r.files;
    out.negatives += r.negatives;
    out.listings += r.listings;
    std::vector<std::string> extra = std::move(r.negative_paths);
    extra.insert(extra.end(), r.listing_paths.begin(), r.listing_paths.end());
    out.kernel_notifications += c.fsimpl.invalidate_kernel(prefix, extra);
  }
  logger("control")->info(
      "invalidated {}: {} files, {} negative entries, {} listings, {} kernel notifications",
      all ? std::string("everything") : nlohmann::json(prefixes).dump(), out.files, out.negatives,
      out.listings, out.kernel_notifications);
  return control::invalidate_reply(out);
}

Result<nlohmann::json> prefetch(const ControlContext& c, const nlohmann::json& req, Reply& out) {
  auto parsed = control::parse_prefetch_request(req);
  if (!parsed) return parsed.error();
  cache::PrefetchOptions po;
  po.recursive = parsed->recursive;
  po.jobs = parsed->jobs;
  po.max_rate = parsed->max_rate;
  auto log = logger("control");
  log->info("prefetch of {} path(s) (recursive: {}, jobs {}, max_rate {})", parsed->paths.size(),
            po.recursive, po.jobs, po.max_rate);
  auto last = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  auto sum = cache::prefetch(
      c.fetcher, parsed->paths, po,
      [&out, &last](const cache::PrefetchProgress& p) {
        // At most ten lines a second (called serialised by prefetch()).
        const auto now = std::chrono::steady_clock::now();
        if (now - last < std::chrono::milliseconds(100)) return;
        last = now;
        out.send(control::prefetch_progress_event(p));
      },
      [&out] { return out.cancelled(); });
  log->info("prefetch: {} files, {} bytes, {} failures in {:.1f} s{}", sum.files, sum.bytes,
            sum.failures, sum.seconds, sum.cancelled ? " (cancelled)" : "");
  return control::prefetch_reply(sum);
}

}  // namespace

std::map<std::string, ControlSocket::Handler> control_handlers(const ControlContext& ctx) {
  std::map<std::string, ControlSocket::Handler> h;
  h[control::kStatus] = [ctx](const nlohmann::json&, Reply&) { return status(ctx); };
  h[control::kGc] = [ctx](const nlohmann::json&, Reply&) { return gc(ctx); };
  h[control::kInvalidate] = [ctx](const nlohmann::json& req, Reply&) {
    return invalidate(ctx, req);
  };
  h[control::kPrefetch] = [ctx](const nlohmann::json& req, Reply& out) {
    return prefetch(ctx, req, out);
  };
  return h;
}

}  // namespace netbootfs::fs
