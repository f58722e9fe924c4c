#include "cache/maintenance.h"

#include "cache/derived_keys.h"
#include "cache/util/log.h"

namespace netbootfs::cache {
namespace {

std::shared_ptr<spdlog::logger> log() { return cache_log(); }

}  // namespace

Removed& Removed::operator+=(const Removed& o) {
  entries += o.entries;
  outputs += o.outputs;
  blobs += o.blobs;
  bytes += o.bytes;
  return *this;
}

void collect_blob(Index& index, BlobStore& blobs, const std::string& sha256, Removed& out) {
  auto b = index.get_blob(sha256);
  if (b && b->refs > 0) return;
  if (b) {
    if (auto r = index.remove_blob(sha256); !r) return;
  }
  const auto size = blobs.blob_size(sha256);
  if (!size) return;  // already gone
  // Open handles keep reading an unlinked blob through their fds.
  if (auto r = blobs.remove(sha256); !r) {
    log()->warn("removing blob {}: {}", sha256, r.error().message);
    return;
  }
  out.blobs++;
  out.bytes += *size;
}

void drop_outputs_of(Index& index, BlobStore& blobs, const std::string& source_sha256,
                     Removed& out) {
  auto b = index.get_blob(source_sha256);
  if (b && b->refs > 0) return;
  // Keys are fingerprint first, so this walks the internal entries (one per
  // rewritten file and rule set, few), not the whole index.
  for (const auto& [key, d] : index.list_paths(kDerivedPrefix)) {
    if (derived_source(key) != source_sha256) continue;
    if (!index.remove_path(key)) continue;
    out.outputs++;
    collect_blob(index, blobs, d.sha256, out);
  }
}

Result<Removed> remove_paths(Index& index, BlobStore& blobs,
                             const std::vector<std::string>& paths) {
  Removed out;
  std::vector<std::string> sources;
  for (const auto& p : paths) {
    auto e = index.get_path(p);
    if (!e) continue;
    if (auto r = index.remove_path(p); !r) return r.error();
    out.entries++;
    sources.push_back(e->sha256);
  }
  for (const auto& sha : sources) {
    drop_outputs_of(index, blobs, sha, out);
    collect_blob(index, blobs, sha, out);
  }
  return out;
}

}  // namespace netbootfs::cache
