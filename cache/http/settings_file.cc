#include "cache/http/settings_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace netbootfs::http {
namespace {

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

double to_seconds(std::chrono::milliseconds ms) { return static_cast<double>(ms.count()) / 1000; }

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

Error sys_error(const std::string& what) { return Error{errno, what + ": " + std::strerror(errno)}; }

}  // namespace

std::string strip_userinfo(const std::string& url) {
  const size_t scheme = url.find("://");
  const size_t start = scheme == std::string::npos ? 0 : scheme + 3;
  const size_t end = url.find_first_of("/?#", start);
  const size_t at = url.rfind('@', end == std::string::npos ? std::string::npos : end - 1);
  if (at == std::string::npos || at < start) return url;
  return url.substr(0, start) + url.substr(at + 1);
}

std::string format_settings(const Options& o) {
  std::string out =
      "# The HTTP settings of the last mount of this cache, for netbootfsctl prefetch\n"
      "# (written at mount; paths only, no secrets).\n";
  auto line = [&out](const char* key, const std::string& v) {
    out += key;
    out += '=';
    out += v;
    out += '\n';
  };
  if (!o.proxy.empty()) line("proxy", strip_userinfo(o.proxy));
  if (!o.ca_file.empty()) line("ca_file", o.ca_file);
  if (!o.client_cert.empty()) line("client_cert", o.client_cert);
  if (!o.client_key.empty()) line("client_key", o.client_key);
  line("insecure", o.insecure ? "1" : "0");
  line("connect_timeout", seconds(to_seconds(o.connect_timeout)));
  line("request_timeout", seconds(to_seconds(o.request_timeout)));
  line("low_speed_time", std::to_string(o.low_speed_time.count()));
  return out;
}

Result<void> parse_settings(const std::string& text, const std::string& name, Options& o) {
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty() || line[0] == '#') continue;
    const size_t eq = line.find('=');
    if (eq == std::string::npos) {
      return Error{EINVAL, name + ": line " + std::to_string(n) + ": expected key=value"};
    }
    const std::string key = line.substr(0, eq);
    const std::string value = line.substr(eq + 1);
    auto bad = [&] {
      return Error{EINVAL, name + ": line " + std::to_string(n) + ": bad " + key + " '" + value +
                               "'"};
    };
    auto number = [&](double& out) {
      char* end = nullptr;
      errno = 0;
      out = std::strtod(value.c_str(), &end);
      return !value.empty() && errno == 0 && *end == '\0' && std::isfinite(out) && out >= 0;
    };
    double v = 0;
    if (key == "proxy") {
      o.proxy = value;
    } else if (key == "ca_file") {
      o.ca_file = value;
    } else if (key == "client_cert") {
      o.client_cert = value;
    } else if (key == "client_key") {
      o.client_key = value;
    } else if (key == "insecure") {
      if (value != "0" && value != "1") return bad();
      o.insecure = value == "1";
    } else if (key == "connect_timeout" || key == "request_timeout") {
      if (!number(v)) return bad();
      const auto ms = std::chrono::milliseconds(static_cast<int64_t>(std::llround(v * 1000)));
      (key == "connect_timeout" ? o.connect_timeout : o.request_timeout) = ms;
    } else if (key == "low_speed_time") {
      if (!number(v) || v < 1) return bad();
      o.low_speed_time = std::chrono::seconds(static_cast<int64_t>(v));
    }
  }
  return {};
}

Result<void> write_settings_file(const std::string& path, const Options& o) {
  for (const std::string* v : {&o.proxy, &o.ca_file, &o.client_cert, &o.client_key}) {
    if (v->find_first_of("\r\n") != std::string::npos) {
      return Error{EINVAL, "a setting with a line break cannot be recorded in " + path};
    }
  }
  // Key and certificate paths tell where the credentials are: not for everyone.
  return replace_file(path, format_settings(o),
                      o.client_cert.empty() && o.client_key.empty() ? 0644 : 0600);
}

Result<void> replace_file(const std::string& path, const std::string& text, unsigned mode) {
  const std::string tmp = path + ".tmp";
  {
    Fd f;
    f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (f.fd < 0) return sys_error("cannot write " + tmp);
    // A temp file left by an earlier mount keeps its old mode through O_CREAT.
    if (::fchmod(f.fd, mode) != 0) return sys_error("cannot chmod " + tmp);
    size_t done = 0;
    while (done < text.size()) {
      const ssize_t w = ::write(f.fd, text.data() + done, text.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        Error e = sys_error("cannot write " + tmp);
        ::unlink(tmp.c_str());
        return e;
      }
      done += static_cast<size_t>(w);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    Error e = sys_error("cannot rename " + tmp);
    ::unlink(tmp.c_str());
    return e;
  }
  return {};
}

Result<ReadSettings> read_settings_file(const std::string& path, const Options& base) {
  ReadSettings out{base, false};
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return out;
    return sys_error("cannot read " + path);
  }
  std::stringstream text;
  text << in.rdbuf();
  if (auto r = parse_settings(text.str(), path, out.options); !r) return r.error();
  out.found = true;
  return out;
}

}  // namespace netbootfs::http
