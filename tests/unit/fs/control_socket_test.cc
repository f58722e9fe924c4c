#include "fs/control_socket.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace netbootfs::fs {
namespace {

using namespace std::chrono_literals;

TEST(NormalizeRequestPath, Table) {
  struct Case {
    std::string in;
    const char* out;  // nullptr: rejected
  } cases[] = {
      {"", ""},
      {"/", ""},
      {".", ""},
      {"boot/initrd", "boot/initrd"},
      {"/boot/initrd", "boot/initrd"},
      {"//boot//./initrd/", "boot/initrd"},
      {"./pxelinux.cfg", "pxelinux.cfg"},
      {"..", nullptr},
      {"../etc/passwd", nullptr},
      {"/../etc", nullptr},
      {"boot/../../etc", nullptr},
      {"boot/..", nullptr},
      {"a/..b", "a/..b"},
      {"...", "..."},
      {std::string("a\0b", 3), nullptr},
  };
  for (const auto& c : cases) {
    auto r = normalize_request_path(c.in);
    if (c.out) {
      ASSERT_TRUE(r) << c.in << ": " << r.error().message;
      EXPECT_EQ(r.value(), c.out) << c.in;
    } else {
      ASSERT_FALSE(r) << c.in << " accepted as " << r.value();
      EXPECT_EQ(r.error().code, EINVAL);
    }
  }
}

TEST(PeerAllowed, RootAndSelfOnly) {
  EXPECT_TRUE(peer_allowed(0, 1000));
  EXPECT_TRUE(peer_allowed(1000, 1000));
  EXPECT_FALSE(peer_allowed(65534, 1000));
  EXPECT_FALSE(peer_allowed(65534, 0));
  EXPECT_FALSE(peer_allowed(0, 1000, false));
}

class ControlSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/netbootfs-control-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override {
    cs_.reset();
    std::filesystem::remove_all(dir_);
  }
  void start(ControlSocket::Options o = {}) {
    o.path = dir_ + "/control.sock";
    std::map<std::string, ControlSocket::Handler> h;
    h["echo"] = [](const nlohmann::json& req, ControlSocket::Reply& out) -> Result<nlohmann::json> {
      for (int i = 0; i < req.value("events", 0); ++i) out.send({{"event", "tick"}, {"i", i}});
      return nlohmann::json{{"echo", req.value("text", "")}};
    };
    h["fail"] = [](const nlohmann::json&, ControlSocket::Reply&) -> Result<nlohmann::json> {
      return Error{EINVAL, "no good"};
    };
    auto r = ControlSocket::start(o, std::move(h));
    ASSERT_TRUE(r) << r.error().message;
    cs_ = std::move(r).value();
  }
  int connect_fd() {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, cs_->path().c_str());
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
  }
  // Reads lines until one holds "ok" (or EOF/timeout).
  std::vector<nlohmann::json> read_reply(int fd) {
    std::vector<nlohmann::json> lines;
    std::string buf;
    char c;
    while (::recv(fd, &c, 1, 0) == 1) {
      if (c != '\n') {
        buf += c;
        continue;
      }
      lines.push_back(nlohmann::json::parse(buf));
      buf.clear();
      if (lines.back().contains("ok")) break;
    }
    return lines;
  }
  static void send_str(int fd, const std::string& s) {
    ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size()));
  }
  std::string dir_;
  std::unique_ptr<ControlSocket> cs_;
};

TEST_F(ControlSocketTest, SocketIsMode0600AndRemovedAtStop) {
  ::umask(0);  // the socket's mode must not depend on the caller's umask
  start();
  struct stat st{};
  ASSERT_EQ(::stat(cs_->path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string p = cs_->path();
  cs_.reset();
  EXPECT_FALSE(std::filesystem::exists(p));
  ::umask(022);
}

TEST_F(ControlSocketTest, AStaleSocketFileIsReplaced) {
  start();
  const std::string p = cs_->path();
  // Simulate a crash: leave a socket file behind.
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  cs_.reset();
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strcpy(a.sun_path, p.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ::close(fd);
  ASSERT_TRUE(std::filesystem::exists(p));
  start();
  int c = connect_fd();
  send_str(c, R"({"cmd":"echo","text":"hi"})" "\n");
  auto r = read_reply(c);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["echo"], "hi");
  ::close(c);
}

TEST_F(ControlSocketTest, RequestsEventsErrorsAndUnknownCommands) {
  start();
  int c = connect_fd();
  send_str(c, R"({"cmd":"echo","text":"a","events":3})" "\n");
  auto r = read_reply(c);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[2]["i"], 2);
  EXPECT_EQ(r[3]["ok"], true);
  send_str(c, R"({"cmd":"fail"})" "\n");
  r = read_reply(c);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["ok"], false);
  EXPECT_EQ(r[0]["error"], "no good");
  send_str(c, R"({"cmd":"nope"})" "\nnot json\n");
  r = read_reply(c);
  EXPECT_EQ(r.at(0)["ok"], false);
  r = read_reply(c);
  EXPECT_EQ(r.at(0)["ok"], false);
  ::close(c);
}

TEST_F(ControlSocketTest, AnOversizedRequestIsDroppedAndOthersStillServed) {
  ControlSocket::Options o;
  o.max_request = 1024;
  start(o);
  int big = connect_fd();
  std::string junk(4096, 'x');
  ::send(big, junk.data(), junk.size(), MSG_NOSIGNAL);
  auto r = read_reply(big);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["ok"], false);
  EXPECT_NE(r[0]["error"].get<std::string>().find("longer than 1024"), std::string::npos);
  char c;
  EXPECT_EQ(::recv(big, &c, 1, 0), 0) << "closed after the error";
  ::close(big);
  int ok = connect_fd();
  send_str(ok, R"({"cmd":"echo","text":"still"})" "\n");
  r = read_reply(ok);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["echo"], "still");
  ::close(ok);
}

TEST_F(ControlSocketTest, AStalledClientIsDropped) {
  ControlSocket::Options o;
  o.idle_timeout = 300ms;
  start(o);
  int c = connect_fd();
  send_str(c, R"({"cmd":"echo")");  // never finished
  const auto t0 = std::chrono::steady_clock::now();
  auto r = read_reply(c);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["ok"], false);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  ::close(c);
}

TEST_F(ControlSocketTest, APeerOtherThanSelfIsRefused) {
  ControlSocket::Options o;
  o.override_uid = true;
  o.self_uid = ::geteuid() + 4242;  // we are not the daemon's user
  o.allow_root = false;             // nor does root count here
  start(o);
  int c = connect_fd();
  auto r = read_reply(c);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0]["ok"], false);
  EXPECT_NE(r[0]["error"].get<std::string>().find("permission denied"), std::string::npos);
  ::close(c);
}

TEST_F(ControlSocketTest, ConnectionsBeyondTheLimitAreTurnedAway) {
  ControlSocket::Options o;
  o.max_connections = 1;
  start(o);
  int a = connect_fd();
  send_str(a, R"({"cmd":"echo"})" "\n");
  ASSERT_EQ(read_reply(a).size(), 1u);  // a's thread is running now
  int b = connect_fd();
  auto r = read_reply(b);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_NE(r[0]["error"].get<std::string>().find("busy"), std::string::npos);
  ::close(b);
  ::close(a);
}

}  // namespace
}  // namespace netbootfs::fs
