#include "fs/rewrite_filter.h"

#include <netdb.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cache/http/url.h"

namespace netbootfs::fs {

cache::ContentFilter::Output RewriteFilter::apply(std::string_view path,
                                                  std::string_view input) const {
  const rewrite::Outcome o = rules_.apply(path, input);
  Output out;
  switch (o.status) {
    case rewrite::Status::kRewritten: {
      out.changed = true;
      out.bytes = o.output;
      std::string rules;
      for (const auto& r : o.rules_applied) rules += (rules.empty() ? "" : ",") + r;
      out.note = "rewritten by " + rules + " (" + std::to_string(o.replacements) +
                 " replacement" + (o.replacements == 1 ? "" : "s") + ")";
      break;
    }
    case rewrite::Status::kUnchanged:
      out.note = "not rewritten: no match";
      break;
    case rewrite::Status::kNoRule:
      out.note = "not rewritten: no rule";
      break;
    case rewrite::Status::kTooLarge:
    case rewrite::Status::kNotText:
      out.note = "not rewritten: " + o.skipped_reason;
      out.warn = true;
      break;
  }
  return out;
}

std::string local_fqdn() {
  char host[HOST_NAME_MAX + 1] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return "localhost";
  addrinfo hints{};
  hints.ai_flags = AI_CANONNAME;
  addrinfo* res = nullptr;
  std::string name = host;
  if (::getaddrinfo(host, nullptr, &hints, &res) == 0 && res) {
    if (res->ai_canonname && std::strchr(res->ai_canonname, '.')) name = res->ai_canonname;
    ::freeaddrinfo(res);
  }
  return name;
}

Result<std::shared_ptr<const RewriteFilter>> load_rewrite_filter(const MountOptions& opts) {
  rewrite::RuleSet rules;
  if (!opts.config.empty()) {
    std::ifstream in(opts.config);
    if (!in) return Error{errno, "cannot read config " + opts.config + ": " + std::strerror(errno)};
    std::stringstream text;
    text << in.rdbuf();
    auto parsed = rewrite::RuleSet::parse_toml(text.str());
    if (!parsed) return Error{EINVAL, opts.config + ": " + parsed.error().message};
    rules = std::move(parsed).value();
  }
  if (opts.rewrite_default) {
    const std::string proxy = opts.proxy_host.empty() ? local_fqdn() : opts.proxy_host;
    auto defaults = rewrite::RuleSet::defaults(http::url_host(opts.url), opts.upstream_ip, proxy,
                                               opts.proxy_ip);
    for (const auto& r : defaults.rules()) {
      if (auto added = rules.add(r); !added) {
        return Error{EINVAL, "default rewrite rule: " + added.error().message};
      }
    }
  }
  if (rules.empty()) return std::shared_ptr<const RewriteFilter>();
  return std::shared_ptr<const RewriteFilter>(std::make_shared<RewriteFilter>(std::move(rules)));
}

}  // namespace netbootfs::fs
