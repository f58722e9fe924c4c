#include "fs/inode_table.h"

#include "cache/http/url.h"

namespace netbootfs::fs {

InodeTable::InodeTable() {
  auto root = std::make_unique<Node>();
  root->info.ino = FUSE_ROOT_ID;
  root->info.is_dir = true;
  root->nlookup = 1;
  dirs_.emplace("", FUSE_ROOT_ID);
  nodes_.emplace(FUSE_ROOT_ID, std::move(root));
}

fuse_ino_t InodeTable::ref(const std::string& path, const cache::Attr& attr) {
  std::lock_guard lk(mu_);
  fuse_ino_t ino = 0;
  if (attr.is_dir) {
    auto it = dirs_.find(path);
    if (it != dirs_.end()) ino = it->second;
  } else {
    auto it = versions_.find(attr.version->id());
    if (it != versions_.end()) ino = it->second;
  }
  if (ino) {
    Node& n = *nodes_.at(ino);
    n.nlookup++;
    if (attr.is_dir && attr.mtime) n.info.mtime = attr.mtime;
    return ino;
  }
  ino = next_ino_++;
  auto node = std::make_unique<Node>();
  node->info = NodeInfo{ino, path, attr.is_dir, attr.size, attr.mtime, attr.version};
  node->nlookup = 1;
  if (attr.is_dir) {
    dirs_[path] = ino;
  } else {
    versions_[attr.version->id()] = ino;
  }
  nodes_.emplace(ino, std::move(node));
  return ino;
}

std::optional<NodeInfo> InodeTable::get(fuse_ino_t ino) const {
  std::lock_guard lk(mu_);
  auto it = nodes_.find(ino);
  if (it == nodes_.end()) return std::nullopt;
  return it->second->info;
}

void InodeTable::forget(fuse_ino_t ino, uint64_t n) {
  if (ino == FUSE_ROOT_ID) return;
  std::shared_ptr<cache::FileVersion> drop;  // released after the lock
  std::lock_guard lk(mu_);
  auto it = nodes_.find(ino);
  if (it == nodes_.end()) return;
  Node& node = *it.value();
  node.nlookup = n >= node.nlookup ? 0 : node.nlookup - n;
  if (node.nlookup > 0) return;
  if (node.info.is_dir) {
    auto d = dirs_.find(node.info.path);
    if (d != dirs_.end() && d->second == ino) dirs_.erase(d);
  } else {
    versions_.erase(node.info.version->id());
    drop = std::move(node.info.version);
  }
  nodes_.erase(it);
}

size_t InodeTable::size() const {
  std::lock_guard lk(mu_);
  return nodes_.size();
}

std::vector<InodeTable::Entry> InodeTable::entries_under(const std::string& prefix) const {
  std::vector<Entry> out;
  std::lock_guard lk(mu_);
  for (const auto& [ino, node] : nodes_) {
    const std::string& p = node->info.path;
    if (ino == FUSE_ROOT_ID || !cache::path_at_or_under(p, prefix)) continue;
    auto d = dirs_.find(std::string(http::parent_path(p)));
    if (d == dirs_.end()) continue;
    out.push_back({d->second, std::string(http::base_name(p))});
  }
  return out;
}

std::vector<fuse_ino_t> InodeTable::dirs_under(const std::string& prefix) const {
  std::vector<fuse_ino_t> out;
  std::lock_guard lk(mu_);
  for (const auto& [path, ino] : dirs_) {
    if (cache::path_at_or_under(path, prefix)) out.push_back(ino);
  }
  return out;
}

fuse_ino_t InodeTable::dir_ino(const std::string& path) const {
  std::lock_guard lk(mu_);
  auto it = dirs_.find(path);
  return it == dirs_.end() ? 0 : it->second;
}

}  // namespace netbootfs::fs
