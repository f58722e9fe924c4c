// The rewrite engine as the cache's ContentFilter, and the rule set a mount
// uses: the config file's rules first, then the default rule (upstream host
// and IP -> this proxy's name), so an explicit rule wins where both match.
#pragma once

#include <memory>
#include <string>

#include "cache/fetcher.h"
#include "cache/util/result.h"
#include "fs/options.h"
#include "rewrite/rewrite.h"

namespace netbootfs::fs {

class RewriteFilter : public cache::ContentFilter {
 public:
  explicit RewriteFilter(rewrite::RuleSet rules)
      : rules_(std::move(rules)), fingerprint_(rules_.fingerprint()) {}
  bool matches(std::string_view path) const override { return rules_.matches(path); }
  std::string fingerprint() const override { return fingerprint_; }
  Output apply(std::string_view path, std::string_view input) const override;
  size_t max_input() const override { return rules_.max_size(); }
  const rewrite::RuleSet& rules() const { return rules_; }

 private:
  rewrite::RuleSet rules_;
  std::string fingerprint_;
};

// This machine's fully qualified name (the default proxy_host).
std::string local_fqdn();

// Reads the config file (if any) and builds the filter; nullptr when there
// is no rule at all (upstream and proxy names are the same).
Result<std::shared_ptr<const RewriteFilter>> load_rewrite_filter(const MountOptions& opts);

}  // namespace netbootfs::fs
