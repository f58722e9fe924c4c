#include "fs/mount_checks.h"

#include <dirent.h>
#include <fcntl.h>
#include <fuse_log.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include "cache/util/log.h"

extern char** environ;

namespace netbootfs::fs {
namespace {

namespace fsys = std::filesystem;

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
        s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The absolute path the kernel will mount on. realpath() fails on a dead
// FUSE mount (ENOTCONN) and on a missing path: then resolve the parent.
std::string canonical_path(const std::string& mountpoint) {
  std::string p = mountpoint;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  char resolved[PATH_MAX];
  if (::realpath(p.c_str(), resolved)) return resolved;
  fsys::path path(p);
  fsys::path parent = path.has_parent_path() ? path.parent_path() : fsys::path(".");
  if (::realpath(parent.c_str(), resolved))
    return (fsys::path(resolved) / path.filename()).string();
  return p;
}

std::optional<MountEntry> top_mount_at(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::stringstream text;
  text << in.rdbuf();
  std::optional<MountEntry> top;
  // Later lines are later mounts: the last one at a path is the one on top.
  for (auto& e : parse_mountinfo(text.str())) {
    if (e.mount_point == path) top = std::move(e);
  }
  return top;
}

bool answers_enotconn(const std::string& path) {
  // statfs always reaches the filesystem; stat may be answered from the
  // kernel's attribute cache of a connection that is already gone.
  struct statvfs sv {};
  return ::statvfs(path.c_str(), &sv) != 0 && errno == ENOTCONN;
}

bool is_fuse(const std::string& type) { return type == "fuse" || type.rfind("fuse.", 0) == 0; }

// fusermount3 -uz PATH, for when we may not umount2() ourselves (not root).
bool fusermount_detach(const std::string& path) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  std::string prog = "fusermount3", flag = "-uz", sep = "--", target = path;
  char* argv[] = {prog.data(), flag.data(), sep.data(), target.data(), nullptr};
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, "fusermount3", &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return false;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

Result<void> detach_dead_netbootfs(const std::string& shown, const std::string& path) {
  const int err = ::umount2(path.c_str(), MNT_DETACH) == 0 ? 0 : errno;
  if (err != 0 && !fusermount_detach(path)) {
    return Error{err, "mountpoint " + shown +
                          " is a dead netbootfs mount that cannot be detached (" +
                          std::strerror(err) + "): run fusermount3 -uz " + path};
  }
  logger("main")->warn("detached a dead netbootfs mount on {}", path);
  return {};
}

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

Result<void> check_empty(const std::string& shown, const std::string& path) {
  std::unique_ptr<DIR, DirCloser> dir(::opendir(path.c_str()));
  // Someone who may not list it (fusermount3 for a user): fusermount3 judges.
  if (!dir) {
    const int err = errno;
    if (err == EACCES) return {};
    return Error{err, "mountpoint " + shown + ": " + std::strerror(err)};
  }
  std::string first;
  size_t count = 0;
  while (const dirent* d = ::readdir(dir.get())) {
    if (std::strcmp(d->d_name, ".") == 0 || std::strcmp(d->d_name, "..") == 0) continue;
    if (count++ == 0) first = d->d_name;
  }
  if (count == 0) return {};
  return Error{ENOTEMPTY,
               "mountpoint " + shown + " is not empty (it holds '" + first + "'" +
                   (count > 1 ? " and " + std::to_string(count - 1) + " more" : "") +
                   "): a mount would hide what is there; empty it or choose another directory"};
}

std::string g_captured;

void capture(enum fuse_log_level /*level*/, const char* fmt, va_list ap) {
  va_list copy;
  va_copy(copy, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n <= 0) return;
  std::string s(static_cast<size_t>(n) + 1, '\0');
  std::vsnprintf(s.data(), s.size(), fmt, ap);
  s.resize(static_cast<size_t>(n));
  g_captured += s;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\n')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n')) s.remove_suffix(1);
  return std::string(s);
}

}  // namespace

std::vector<MountEntry> parse_mountinfo(std::string_view text) {
  // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER_OPTIONS
  std::vector<MountEntry> out;
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    std::vector<std::string_view> f;
    while (!line.empty()) {
      const size_t sp = line.find(' ');
      if (sp != 0) f.push_back(line.substr(0, sp));
      line.remove_prefix(sp == std::string_view::npos ? line.size() : sp + 1);
    }
    size_t dash = 6;
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (f.size() < 6 || dash + 2 >= f.size()) continue;
    out.push_back(
        MountEntry{unescape(f[3]), unescape(f[4]), unescape(f[dash + 1]), unescape(f[dash + 2])});
  }
  return out;
}

Result<void> prepare_mountpoint(const std::string& mountpoint) {
  const std::string path = canonical_path(mountpoint);
  // Bounded: each round detaches one dead mount of ours stacked there.
  for (int round = 0; round < 16; ++round) {
    const auto top = top_mount_at(path);
    if (!top) break;
    // systemd's automount: our mount is the one meant to go on top, and any
    // access to the autofs point would wait for that very mount.
    if (top->type == "autofs") return {};
    const bool dead = answers_enotconn(path);
    if (dead && top->type == "fuse.netbootfs") {
      if (auto r = detach_dead_netbootfs(mountpoint, path); !r) return r;
      continue;
    }
    if (dead) {
      return Error{ENOTCONN, "mountpoint " + mountpoint + " is a dead " + top->type + " mount (" +
                                 top->source + "): detach it first (" +
                                 (is_fuse(top->type) ? "fusermount3 -uz " : "umount -l ") + path +
                                 ")"};
    }
    if (top->type == "fuse.netbootfs") {
      return Error{EBUSY, "mountpoint " + mountpoint +
                              " is already mounted by a running netbootfs (" + top->source +
                              "): unmount it first (fusermount3 -u " + path + ")"};
    }
    // A bind mount of a subdirectory (a container's volume) is a directory
    // like any other; the root of a filesystem there is someone's mount.
    if (top->root == "/") {
      return Error{EBUSY, "mountpoint " + mountpoint + " is already a mount point (" + top->type +
                              ", source " + top->source +
                              "): unmount it first or choose another directory"};
    }
    break;
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return Error{err, "mountpoint " + mountpoint + ": " + std::strerror(err)};
  }
  if (!S_ISDIR(st.st_mode))
    return Error{ENOTDIR, "mountpoint " + mountpoint + " is not a directory"};
  return check_empty(mountpoint, path);
}

FuseLogCapture::FuseLogCapture() {
  g_captured.clear();
  fuse_set_log_func(capture);
}

FuseLogCapture::~FuseLogCapture() {
  if (active_) fuse_set_log_func(nullptr);
}

const std::string& FuseLogCapture::text() const { return g_captured; }

void FuseLogCapture::release() {
  if (!active_) return;
  active_ = false;
  fuse_set_log_func(nullptr);
  if (!g_captured.empty()) std::fputs(g_captured.c_str(), stderr);
  g_captured.clear();
}

std::string fuse_error_line(std::string_view captured, std::string_view fallback) {
  // libfuse 3.14: "fuse: unknown option(s): `-o a,b -x'" (one line, several calls).
  constexpr std::string_view kUnknown = "unknown option(s): `";
  if (const size_t at = captured.find(kUnknown); at != std::string_view::npos) {
    std::string_view rest = captured.substr(at + kUnknown.size());
    rest = rest.substr(0, rest.rfind('\''));
    std::vector<std::string> names;
    bool nonempty = false;
    std::istringstream words{std::string(rest)};
    for (std::string w; words >> w;) {
      if (w == "-o") continue;
      if (w.rfind("-o", 0) == 0) w.erase(0, 2);
      std::istringstream opts(w);
      for (std::string o; std::getline(opts, o, ',');) {
        if (o.empty()) continue;
        nonempty |= o == "nonempty";
        names.push_back("'" + o + "'");
      }
    }
    if (!names.empty()) {
      std::string line = names.size() == 1 ? "unknown option " : "unknown options ";
      for (size_t i = 0; i < names.size(); ++i) line += (i ? ", " : "") + names[i];
      if (nonempty) line += " (FUSE 3 has no nonempty: the mountpoint must be empty)";
      return line + " (netbootfs --help lists the options)";
    }
  }
  // Anything else libfuse said, on one line, without its "fuse: " prefixes.
  std::string line;
  std::istringstream lines{std::string(captured)};
  for (std::string l; std::getline(lines, l);) {
    std::string_view v = l;
    if (v.rfind("fuse: ", 0) == 0) v.remove_prefix(6);
    std::string t = trim(v);
    for (char& c : t) {
      if (c == '`') c = '\'';
    }
    if (!t.empty()) line += (line.empty() ? "" : "; ") + t;
  }
  return line.empty() ? std::string(fallback) : line;
}

}  // namespace netbootfs::fs
