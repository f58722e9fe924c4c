#include "fs/metrics.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "cache/util/log.h"
#include "cache/util/unique_fd.h"

namespace netbootfs::fs {
namespace {

std::shared_ptr<spdlog::logger> log() {
  static auto l = logger("metrics");
  return l;
}

// Label values escape backslash, double quote and newline; HELP text escapes
// backslash and newline (the exposition format's rules).
std::string escape(const std::string& s, bool quote) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.17g", v);
  }
  return buf;
}

std::string label_set(const MetricsRegistry::Labels& labels,
                      const std::pair<std::string, std::string>* extra = nullptr) {
  if (labels.empty() && !extra) return "";
  std::string out = "{";
  bool first = true;
  auto add = [&](const std::pair<std::string, std::string>& l) {
    if (!first) out += ',';
    first = false;
    out += l.first + "=\"" + escape(l.second, true) + '"';
  };
  for (const auto& l : labels) add(l);
  if (extra) add(*extra);
  return out + "}";
}

const char* type_name(MetricsRegistry::Type t) {
  switch (t) {
    case MetricsRegistry::Type::kCounter: return "counter";
    case MetricsRegistry::Type::kGauge: return "gauge";
    case MetricsRegistry::Type::kHistogram: return "histogram";
  }
  return "untyped";
}

}  // namespace

// --- MetricsRegistry --------------------------------------------------------

MetricsRegistry::Family& MetricsRegistry::family(const std::string& name, const std::string& help,
                                                 Type type) {
  for (auto& f : families_) {
    if (f.name == name) return f;
  }
  families_.push_back(Family{name, help, type, {}});
  return families_.back();
}

void MetricsRegistry::counter(const std::string& name, const std::string& help, Labels labels,
                              std::function<double()> read) {
  family(name, help, Type::kCounter).series.push_back(Series{std::move(labels), std::move(read)});
}

void MetricsRegistry::gauge(const std::string& name, const std::string& help, Labels labels,
                            std::function<double()> read) {
  family(name, help, Type::kGauge).series.push_back(Series{std::move(labels), std::move(read)});
}

void MetricsRegistry::histogram(const std::string& name, const std::string& help, Labels labels,
                                const Histogram* h) {
  family(name, help, Type::kHistogram).series.push_back(Series{std::move(labels), nullptr, h});
}

std::string MetricsRegistry::render() const {
  std::string out;
  out.reserve(8192);
  for (const auto& f : families_) {
    out += "# HELP " + f.name + ' ' + escape(f.help, false) + '\n';
    out += "# TYPE " + f.name + ' ' + type_name(f.type) + '\n';
    for (const auto& s : f.series) {
      if (f.type != Type::kHistogram) {
        out += f.name + label_set(s.labels) + ' ' + format_value(s.read()) + '\n';
        continue;
      }
      const auto snap = s.histogram->snapshot();
      for (size_t i = 0; i <= snap.bounds.size(); ++i) {
        const std::pair<std::string, std::string> le{
            "le", i < snap.bounds.size() ? format_value(snap.bounds[i]) : "+Inf"};
        out += f.name + "_bucket" + label_set(s.labels, &le) + ' ' +
               format_value(static_cast<double>(snap.cumulative[i])) + '\n';
      }
      out += f.name + "_sum" + label_set(s.labels) + ' ' + format_value(snap.sum) + '\n';
      out += f.name + "_count" + label_set(s.labels) + ' ' +
             format_value(static_cast<double>(snap.count)) + '\n';
    }
  }
  return out;
}

// --- listen address ---------------------------------------------------------

Result<ListenAddress> parse_listen(const std::string& spec) {
  std::string host = "127.0.0.1";
  std::string port = spec;
  if (!spec.empty() && spec[0] == '[') {
    const auto close = spec.find(']');
    if (close == std::string::npos || close + 1 >= spec.size() || spec[close + 1] != ':') {
      return Error{EINVAL, "metrics address '" + spec + "': expected [IPV6]:PORT"};
    }
    host = spec.substr(1, close - 1);
    port = spec.substr(close + 2);
  } else if (const auto colon = spec.rfind(':'); colon != std::string::npos) {
    host = spec.substr(0, colon);
    port = spec.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      return Error{EINVAL, "metrics address '" + spec + "': write IPv6 as [ADDR]:PORT"};
    }
  }
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535) {
    return Error{EINVAL, "metrics address '" + spec + "': bad port"};
  }
  const auto p = static_cast<uint16_t>(std::stoul(port));
  ListenAddress a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.addr);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(p);
    a.len = sizeof(sockaddr_in);
    a.text = host + ":" + port;
  } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(p);
    a.len = sizeof(sockaddr_in6);
    a.text = "[" + host + "]:" + port;
  } else {
    return Error{EINVAL, "metrics address '" + spec + "': the host must be a numeric address"};
  }
  return a;
}

// --- MetricsServer ----------------------------------------------------------

struct MetricsServerAccess {
  static MHD_Result handle(void* cls, MHD_Connection* conn, const char* url, const char* method,
                           const char* /*version*/, const char* /*upload*/, size_t* upload_size,
                           void** /*con_cls*/) {
    const auto* self = static_cast<const MetricsServer*>(cls);
    unsigned status = MHD_HTTP_OK;
    std::string body;
    const bool get = std::strcmp(method, "GET") == 0;
    const bool head = std::strcmp(method, "HEAD") == 0;
    if (!get && !head) {
      status = MHD_HTTP_METHOD_NOT_ALLOWED;
      body = "only GET and HEAD\n";
    } else if (*upload_size != 0) {
      status = MHD_HTTP_BAD_REQUEST;
      body = "no request body expected\n";
      *upload_size = 0;
    } else if (std::strcmp(url, "/metrics") != 0) {
      status = MHD_HTTP_NOT_FOUND;
      body = "metrics are at /metrics\n";
    } else {
      body = self->registry_.render();
    }
    MHD_Response* resp =
        MHD_create_response_from_buffer(body.size(), body.data(), MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type",
                            status == MHD_HTTP_OK ? "text/plain; version=0.0.4; charset=utf-8"
                                                  : "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(resp, "Allow", "GET, HEAD");
    const MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
  }

  static void log_error(void* /*cls*/, const char* fmt, va_list ap) {
    char buf[512];
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    std::string s(buf);
    while (!s.empty() && s.back() == '\n') s.pop_back();
    log()->warn("metrics listener: {}", s);
  }
};

Result<UniqueFd> MetricsServer::listen_socket(const std::string& listen) {
  auto addr = parse_listen(listen);
  if (!addr) return addr.error();
  UniqueFd fd(::socket(addr->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Error{errno, std::string("metrics socket: ") + std::strerror(errno)};
  const int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (addr->addr.ss_family == AF_INET6) {
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr->addr), addr->len) != 0 ||
      ::listen(fd.get(), 16) != 0) {
    return Error{errno, "cannot listen for metrics on " + addr->text + ": " + std::strerror(errno)};
  }
  return fd;
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(UniqueFd socket,
                                                            const MetricsRegistry& registry) {
  std::unique_ptr<MetricsServer> s(new MetricsServer(registry));
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(socket.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return Error{errno, std::string("metrics socket: ") + std::strerror(errno)};
  }
  char host[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
    s->port_ = ntohs(v6->sin6_port);
    s->address_ = std::string("[") + host + "]:" + std::to_string(s->port_);
  } else {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
    s->port_ = ntohs(v4->sin_port);
    s->address_ = std::string(host) + ":" + std::to_string(s->port_);
  }
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
  if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
  s->daemon_ = MHD_start_daemon(
      flags, 0, nullptr, nullptr, &MetricsServerAccess::handle, s.get(),
      MHD_OPTION_LISTEN_SOCKET, socket.get(),
      MHD_OPTION_CONNECTION_LIMIT, static_cast<unsigned>(16),
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, static_cast<unsigned>(8),
      MHD_OPTION_CONNECTION_TIMEOUT, static_cast<unsigned>(10),
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, static_cast<size_t>(16 * 1024),
      MHD_OPTION_EXTERNAL_LOGGER, &MetricsServerAccess::log_error, nullptr, MHD_OPTION_END);
  if (!s->daemon_) return Error{EIO, "cannot serve metrics on " + s->address_};
  s->socket_ = std::move(socket);
  return s;
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& listen,
                                                            const MetricsRegistry& registry) {
  auto fd = listen_socket(listen);
  if (!fd) return fd.error();
  return start(std::move(fd).value(), registry);
}

MetricsServer::~MetricsServer() {
  if (daemon_) MHD_stop_daemon(daemon_);
}

// --- MetricsFileWriter ------------------------------------------------------

MetricsFileWriter::MetricsFileWriter(std::string path, std::chrono::milliseconds interval,
                                     const MetricsRegistry& registry)
    : path_(std::move(path)), interval_(interval), registry_(registry) {
  thread_ = std::thread([this] {
    std::unique_lock lk(mu_);
    while (!stop_) {
      lk.unlock();
      if (auto r = write_now(); !r) log()->warn("{}", r.error().message);
      lk.lock();
      cv_.wait_for(lk, interval_, [this] { return stop_; });
    }
  });
}

MetricsFileWriter::~MetricsFileWriter() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (auto r = write_now(); !r) log()->warn("{}", r.error().message);
}

Result<void> MetricsFileWriter::write_now() {
  std::lock_guard lk(write_mu_);
  const std::string text = registry_.render();
  const std::string tmp = path_ + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) {
    return Error{errno, "metrics_file " + tmp + ": " + std::strerror(errno)};
  }
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd.get(), text.data() + off, text.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::unlink(tmp.c_str());
      return Error{err, "metrics_file " + tmp + ": " + std::strerror(err)};
    }
    off += static_cast<size_t>(n);
  }
  fd.reset();
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Error{err, "metrics_file " + path_ + ": " + std::strerror(err)};
  }
  return {};
}

}  // namespace netbootfs::fs
