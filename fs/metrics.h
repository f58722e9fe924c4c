// Metrics: the daemon's counters and gauges in the Prometheus text exposition
// format (0.0.4), served over HTTP on a loopback listener (`metrics=`) and/or
// written to a file for node_exporter's textfile collector (`metrics_file=`).
//
// Contract
// - Series are registered before the exporters start; registration is not
//   thread-safe, render() is (each series reads its value through a callback
//   that must be safe from any thread: the lower layers keep atomics).
// - Every metric name starts with `netbootfs_`. Series of one name form one
//   family (one HELP and TYPE line), in registration order.
// - MetricsServer binds only the address it is given; parse_listen() turns a
//   bare port into 127.0.0.1:PORT, so the default is loopback. It answers GET
//   and HEAD of /metrics, 404 for other paths, 405 for other methods, and
//   bounds connections and their duration. It never blocks the caller: it runs
//   on libmicrohttpd's own thread.
// - MetricsFileWriter rewrites its file atomically (temp file + rename) every
//   interval and once more when it stops, so a collector never reads half a
//   file.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cache/util/histogram.h"
#include "cache/util/result.h"
#include "cache/util/unique_fd.h"

struct MHD_Daemon;

namespace netbootfs::fs {

class MetricsRegistry {
 public:
  enum class Type { kCounter, kGauge, kHistogram };
  using Labels = std::vector<std::pair<std::string, std::string>>;

  void counter(const std::string& name, const std::string& help, Labels labels,
               std::function<double()> read);
  void gauge(const std::string& name, const std::string& help, Labels labels,
             std::function<double()> read);
  void histogram(const std::string& name, const std::string& help, Labels labels,
                 const Histogram* h);
  std::string render() const;

 private:
  struct Series {
    Labels labels;
    std::function<double()> read;
    const Histogram* histogram = nullptr;
  };
  struct Family {
    std::string name;
    std::string help;
    Type type;
    std::vector<Series> series;
  };
  Family& family(const std::string& name, const std::string& help, Type type);
  std::vector<Family> families_;
};

// "9555" -> 127.0.0.1:9555; "HOST:PORT" and "[V6]:PORT" with a numeric host.
struct ListenAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string text;  // as it will be logged: "127.0.0.1:9555", "[::1]:9555"
};
Result<ListenAddress> parse_listen(const std::string& spec);

class MetricsServer {
 public:
  // The socket alone, bound and listening: the daemon binds before it
  // mounts (an address in use is a start-up error) and serves after it
  // daemonized (a fork keeps no threads).
  static Result<UniqueFd> listen_socket(const std::string& listen);
  static Result<std::unique_ptr<MetricsServer>> start(UniqueFd socket,
                                                      const MetricsRegistry& registry);
  static Result<std::unique_ptr<MetricsServer>> start(const std::string& listen,
                                                      const MetricsRegistry& registry);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  uint16_t port() const { return port_; }  // the bound port (useful with port 0)
  const std::string& address() const { return address_; }

 private:
  explicit MetricsServer(const MetricsRegistry& r) : registry_(r) {}
  const MetricsRegistry& registry_;
  MHD_Daemon* daemon_ = nullptr;
  UniqueFd socket_;  // MHD does not close a socket it was given
  uint16_t port_ = 0;
  std::string address_;
  friend struct MetricsServerAccess;
};

class MetricsFileWriter {
 public:
  MetricsFileWriter(std::string path, std::chrono::milliseconds interval,
                    const MetricsRegistry& registry);
  ~MetricsFileWriter();  // writes once more, then stops
  MetricsFileWriter(const MetricsFileWriter&) = delete;
  MetricsFileWriter& operator=(const MetricsFileWriter&) = delete;
  Result<void> write_now();

 private:
  const std::string path_;
  const std::chrono::milliseconds interval_;
  const MetricsRegistry& registry_;
  std::mutex write_mu_;  // one write_now() at a time: they share the temp file
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace netbootfs::fs
