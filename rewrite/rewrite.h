// Hostname substitution for boot menus and scripts served through the proxy.
//
// Contract
// - Pure: no I/O, no logging, no global state. A RuleSet is a plain value; a
//   const RuleSet may be used from any number of threads at once.
// - The cached blob stays byte-identical to upstream. The daemon calls apply()
//   once per (blob, fingerprint()) and stores the output; the fingerprint
//   changes whenever anything that can change an output changes (rules, their
//   order, names, max_size, and the engine's own matching semantics).
// - A path is mount-relative ("pxelinux.cfg/default"; a leading '/' is ignored).
// - apply() handles any input (only allocation failure throws) and never returns
//   partial output: either status is kRewritten and `output` holds the whole new
//   file, or `output` is empty and the daemon serves the blob unmodified.
//
// Which files: a rule lists glob patterns (fnmatch(3), case-sensitive). A
// pattern without '/' matches the base name in any directory ("*.ipxe"); a
// pattern with '/' matches the whole relative path and '*' does not cross '/'
// ("grub/*.cfg" matches grub/a.cfg, not grub/x/a.cfg nor boot/grub/a.cfg).
//
// What is replaced: each rule has an ordered list of `from -> to` replacements.
// The kind of match depends on the shape of `from` (see classify()):
// - a host name or IPv4 address (letters, digits, '-', '_' and inner dots) is
//   matched case-insensitively and only as a whole name: the byte before it must
//   not be a letter, digit, '-', '_' or '.' (a %XX escape such as "%2F" counts
//   as a delimiter), and the byte after it must not be a letter, digit, '-' or
//   '_', nor a '.' that continues the name. So "uyuni.example.com" matches in
//   "http://uyuni.example.com:8080/x", "(http,uyuni.example.com)", "MASTER=
//   uyuni.example.com" and before a sentence dot, but not inside
//   "myuyuni.example.com", "x.uyuni.example.com", "uyuni.example.com.au" or
//   "uyuni-example.com"; "10.0.0.5" does not match in "10.0.0.50" or
//   "110.0.0.5". A port stays as it is: only the host is replaced.
// - an IPv6 literal ("fd00::5", optionally in brackets) is matched
//   case-insensitively; ':' and hex digits are part of the address, so
//   "fd00::5" matches in "[fd00::5]:69" but not in "fd00::50" or "fd00::5:1".
//   Only the text as written is matched: "fd00:0::5" is another string.
// - anything else (a path, "host:port", a URL prefix) is matched literally and
//   case-sensitively, with no boundary rule: the admin wrote exactly the bytes
//   they want replaced.
// `to` is always inserted exactly as configured.
//
// One pass: the rules that match a path apply together, in rule order, in a
// single left-to-right scan of the input. At each position the first
// replacement (rules in order, replacements in order within a rule) that
// matches wins; the scan continues after the replaced text, so the output of a
// replacement is never rescanned and replacements never chain.
//
// Not text: an input larger than max_size() (default 4 MiB) or containing a
// NUL byte is not rewritten (kTooLarge / kNotText with a reason for the one
// warning the daemon logs).
//
// Config file (TOML, the same file as the rest of the daemon's configuration;
// top-level keys that do not start with "rewrite" belong to other modules and
// are ignored here):
//
//   rewrite_max_size = "4M"     # optional: bytes, or a number with K, M or G
//                               # (powers of 1024, "KiB"/"KB" also accepted)
//   [[rewrite]]
//   name = "pxelinux"           # optional, letters digits . _ -; default "rule-N"
//   files = ["pxelinux.cfg/*", "*.ipxe"]
//   replace = [ { from = "uyuni.example.com", to = "proxy.example.com" },
//               { from = "10.0.0.5", to = "10.1.0.1" } ]
//
// Errors name the line and key ("line 4: rewrite[0].files[1]: ..."); unknown
// keys inside a [[rewrite]] table are errors, so a typo cannot silently disable
// a rule. See contrib/netbootfs.toml.example.
//
// Composition: the daemon adds the configured rules first and the default rule
// (defaults()) last, so that an explicit rule wins where both match.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "cache/util/result.h"

namespace netbootfs::rewrite {

inline constexpr size_t kDefaultMaxSize = size_t{4} << 20;

// The files the default rule applies to: boot menus and scripts of the layouts
// Uyuni, Cobbler and hand-made PXE trees use. Kept narrow on purpose: listing
// a directory downloads the small files that match a rule (their size is only
// known after rewriting), so a broad pattern such as "*.conf" or "*.cfg" would
// fetch unrelated files on every `ls`. Anything else goes into the config file.
inline constexpr std::string_view kDefaultPatterns[] = {
    "pxelinux.cfg/*",      // pxelinux (BIOS) menus: default and per-MAC/IP files
    "*/pxelinux.cfg/*",    // the same one level down: bios/, efi64/, per-distro trees
    "grub.cfg*",           // grub.cfg anywhere (grub/, EFI/BOOT/, boot/grub/) and
                           // GRUB2's per-client netboot names grub.cfg-01-<mac>, -<hex ip>
    "grub/*.cfg",          // menu fragments grub.cfg sources (Cobbler's *_menu_items.cfg)
    "grub2/*.cfg",         // the same under the grub2 name (RHEL-style trees)
    "boot/grub/*.cfg",     // the same in a boot/grub layout
    "boot/grub2/*.cfg",    //
    "grub/system/*",       // Cobbler's per-system GRUB configs (named by MAC, no suffix)
    "grub/system_link/*",  // Cobbler's per-system links to the above, by system name
    "boot/*.cfg",          // menu files kept next to kernels in boot/ layouts
    "*.ipxe",              // iPXE scripts: boot.ipxe, Cobbler's ipxe/*.ipxe menus
};

struct Replacement {
  std::string from;  // non-empty, no NUL
  std::string to;    // no NUL; may be empty
};

struct Rule {
  std::string name;                  // reported in Outcome::rules_applied
  std::vector<std::string> files;    // glob patterns, at least one
  std::vector<Replacement> replace;  // at least one, in priority order
};

enum class FromKind { kHostName, kIpv6, kLiteral };

// How `from` is matched (see the contract above).
FromKind classify(std::string_view from);

// Does `pattern` select the mount-relative `path` (see the contract above)?
bool glob_matches(std::string_view pattern, std::string_view path);

enum class Status {
  kRewritten,  // at least one replacement: `output` is the file to serve
  kUnchanged,  // a rule matched the path but nothing in the file: serve the blob
  kNoRule,     // no rule selects this path: serve the blob
  kTooLarge,   // larger than max_size(): serve the blob, warn with skipped_reason
  kNotText,    // contains a NUL byte: serve the blob, warn with skipped_reason
};

struct Outcome {
  Status status = Status::kNoRule;
  std::string output;                      // empty unless kRewritten
  std::vector<std::string> rules_applied;  // names of rules that replaced something, in order
  size_t replacements = 0;                 // total over all rules
  std::string skipped_reason;              // set for kTooLarge and kNotText

  bool rewritten() const { return status == Status::kRewritten; }
};

// Refuses, with EINVAL and "line N: ...", the malformed TOML on which the
// packaged toml++ (3.3.0) reaches undefined behaviour, before toml++ sees it:
// every parse of a netbootfs config file goes through it first.
Result<void> screen_toml(std::string_view text);

class RuleSet {
 public:
  RuleSet() = default;

  // The rule that needs no configuration, named "default": upstream_host (the
  // host of the upstream URL, without port; brackets around an IPv6 literal are
  // dropped) -> proxy_host, and upstream_ip -> proxy_ip, or -> proxy_host when
  // proxy_ip is empty (kernel arguments such as nfsroot= need an address, so
  // give proxy_ip when clients may meet one), on kDefaultPatterns. Empty
  // upstream strings and replacements whose from equals to are left out; with
  // nothing left the set is empty.
  static RuleSet defaults(std::string_view upstream_host, std::string_view upstream_ip,
                          std::string_view proxy_host, std::string_view proxy_ip = {});

  // Parses the config file's rewrite keys (format above). EINVAL with a message
  // naming the line and key on any error. Screens the text first (screen_toml).
  static Result<RuleSet> parse_toml(std::string_view text);

  // Appends a rule after the existing ones. EINVAL, leaving the set unchanged,
  // if it has no pattern or no replacement, an empty pattern or `from`, a NUL in
  // a pattern, `from` or `to`, an invalid name, or a name already used. An
  // empty name becomes "rule-N" (N counts from 1 in the set).
  Result<void> add(Rule rule);

  void set_max_size(size_t bytes) { max_size_ = bytes; }
  size_t max_size() const { return max_size_; }

  // Does any rule select `path`? (The daemon uses this to know that a file's
  // size depends on its content.)
  bool matches(std::string_view path) const;

  Outcome apply(std::string_view path, std::string_view input) const;

  // 16 lowercase hex digits (FNV-1a 64 over a length-prefixed serialisation).
  std::string fingerprint() const;

  const std::vector<Rule>& rules() const { return rules_; }
  bool empty() const { return rules_.empty(); }

 private:
  std::vector<Rule> rules_;
  size_t max_size_ = kDefaultMaxSize;
};

}  // namespace netbootfs::rewrite
