#include "fs/control_protocol.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace netbootfs::fs::control {
namespace {

using nlohmann::json;

std::set<std::string> keys(const json& j) {
  std::set<std::string> out;
  for (const auto& [k, v] : j.items()) out.insert(k);
  return out;
}

// The bytes the client sends: what older mounts and the e2e tests expect.
TEST(ControlProtocol, RequestsOnTheWire) {
  struct Case {
    json request;
    const char* wire;
  } cases[] = {
      {status_request(), R"({"cmd":"status"})"},
      {gc_request(), R"({"cmd":"gc"})"},
      {make_request(InvalidateRequest{false, {"boot/a", "b"}}),
       R"({"all":false,"cmd":"invalidate","paths":["boot/a","b"]})"},
      {make_request(InvalidateRequest{true, {}}), R"({"all":true,"cmd":"invalidate","paths":[]})"},
      {make_request(PrefetchRequest{{""}, false, 4, 0}),
       R"({"cmd":"prefetch","jobs":4,"max_rate":0,"paths":[""],"recursive":false})"},
      {make_request(PrefetchRequest{{"boot", "grub"}, true, 16, 1048576}),
       R"({"cmd":"prefetch","jobs":16,"max_rate":1048576,"paths":["boot","grub"],"recursive":true})"},
  };
  for (const auto& c : cases) EXPECT_EQ(c.request.dump(), c.wire);
}

TEST(ControlProtocol, InvalidateRequests) {
  struct Case {
    const char* request;
    bool ok;
    bool all;
    std::vector<std::string> paths;  // or the error's message when !ok
  } cases[] = {
      {R"({"cmd":"invalidate","paths":["/boot//initrd/","./grub"]})",
       true,
       false,
       {"boot/initrd", "grub"}},
      {R"({"cmd":"invalidate","all":true})", true, true, {}},
      {R"({"cmd":"invalidate","all":true,"paths":["a"]})", true, true, {"a"}},
      {R"({"cmd":"invalidate"})", false, false, {"no paths given"}},
      {R"({"cmd":"invalidate","paths":[]})", false, false, {"no paths given"}},
      {R"({"cmd":"invalidate","paths":"boot"})",
       false,
       false,
       {"\"paths\" must be an array of strings"}},
      {R"({"cmd":"invalidate","paths":[1]})",
       false,
       false,
       {"\"paths\" must be an array of strings"}},
      {R"({"cmd":"invalidate","paths":["../etc"]})",
       false,
       false,
       {"'../etc': '..' would leave the tree"}},
  };
  for (const auto& c : cases) {
    auto r = parse_invalidate_request(json::parse(c.request));
    ASSERT_EQ(r.ok(), c.ok) << c.request;
    if (!c.ok) {
      EXPECT_EQ(r.error().code, EINVAL) << c.request;
      EXPECT_EQ(r.error().message, c.paths[0]) << c.request;
      continue;
    }
    EXPECT_EQ(r->all, c.all) << c.request;
    EXPECT_EQ(r->paths, c.paths) << c.request;
  }
}

TEST(ControlProtocol, PrefetchRequests) {
  struct Case {
    const char* request;
    const char* error;  // nullptr: accepted
    PrefetchRequest want;
  } cases[] = {
      {R"({"cmd":"prefetch"})", nullptr, {{""}, false, 4, 0}},
      {R"({"cmd":"prefetch","paths":["/"]})", nullptr, {{""}, false, 4, 0}},
      {R"({"cmd":"prefetch","paths":["a/b"],"recursive":true,"jobs":64,"max_rate":5})",
       nullptr,
       {{"a/b"}, true, 64, 5}},
      {R"({"cmd":"prefetch","jobs":0})", "jobs must be 1..64", {}},
      {R"({"cmd":"prefetch","jobs":65})", "jobs must be 1..64", {}},
      {R"({"cmd":"prefetch","paths":["a/../.."]})", "'a/../..': '..' would leave the tree", {}},
  };
  for (const auto& c : cases) {
    auto r = parse_prefetch_request(json::parse(c.request));
    if (c.error) {
      ASSERT_FALSE(r) << c.request;
      EXPECT_EQ(r.error().message, c.error) << c.request;
      continue;
    }
    ASSERT_TRUE(r) << c.request << ": " << r.error().message;
    EXPECT_EQ(r->paths, c.want.paths) << c.request;
    EXPECT_EQ(r->recursive, c.want.recursive) << c.request;
    EXPECT_EQ(r->jobs, c.want.jobs) << c.request;
    EXPECT_EQ(r->max_rate, c.want.max_rate) << c.request;
  }
}

// ControlSocket turns these into "bad request: ..." replies.
TEST(ControlProtocol, AFieldOfTheWrongTypeThrows) {
  EXPECT_THROW(parse_prefetch_request(json::parse(R"({"jobs":"four"})")), json::type_error);
  EXPECT_THROW(parse_invalidate_request(json::parse(R"({"all":"yes"})")), json::type_error);
}

TEST(ControlProtocol, RequestsRoundTrip) {
  const InvalidateRequest inv{false, {"boot/initrd", "pxelinux.cfg/default"}};
  auto i = parse_invalidate_request(make_request(inv));
  ASSERT_TRUE(i);
  EXPECT_EQ(i->paths, inv.paths);
  const PrefetchRequest pf{{"images", "boot"}, true, 8, 20 << 20};
  auto p = parse_prefetch_request(make_request(pf));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->paths, pf.paths);
  EXPECT_EQ(p->recursive, pf.recursive);
  EXPECT_EQ(p->jobs, pf.jobs);
  EXPECT_EQ(p->max_rate, pf.max_rate);
}

TEST(ControlProtocol, StatusReply) {
  StatusReply s;
  s.mountpoint = "/srv/tftpboot";
  s.hits = 3;
  s.misses = 1;
  s.pins = {"boot/*"};
  const json j = status_reply(s);
  EXPECT_EQ(keys(j),
            (std::set<std::string>{"mountpoint", "url", "cache_dir", "pid", "uptime_seconds",
                                   "upstream_up", "hits", "misses", "hit_ratio", "downloads",
                                   "download_bytes", "stale_served", "served_bytes", "cache_limit",
                                   "pins", "evictions", "version"}));
  EXPECT_DOUBLE_EQ(j["hit_ratio"].get<double>(), 0.75);
  EXPECT_EQ(status_pins(j), std::vector<std::string>{"boot/*"});
  EXPECT_DOUBLE_EQ(status_reply(StatusReply{})["hit_ratio"].get<double>(), 0.0);
  EXPECT_EQ(status_pins(json::object()), std::nullopt);
}

TEST(ControlProtocol, RepliesOnTheWire) {
  cache::EvictReport ev;
  ev.blobs = 2;
  ev.bytes = 300;
  ev.entries = 3;
  ev.cache_bytes = 700;
  ev.cache_objects = 5;
  cache::PrefetchProgress pp;
  pp.files = 1;
  pp.failures = 2;
  pp.bytes = 3;
  pp.queued = 4;
  pp.path = "boot/x";
  cache::PrefetchSummary sum;
  sum.files = 5;
  sum.bytes = 10;
  sum.failures = 1;
  sum.seconds = 1.5;
  sum.failed = {{"boot/y", "404"}};
  struct Case {
    json reply;
    const char* wire;
  } cases[] = {
      {gc_reply(1000, ev),
       R"({"bytes":700,"evicted_blobs":2,"evicted_bytes":300,"limit":1000,"objects":5,)"
       R"("removed_entries":3})"},
      {invalidate_reply({1, 2, 3, 4}),
       R"({"files":1,"kernel_notifications":4,"listings":3,"negatives":2})"},
      {prefetch_progress_event(pp),
       R"({"bytes":3,"event":"progress","failures":2,"files":1,"path":"boot/x","queued":4})"},
      {prefetch_reply(sum),
       R"({"bytes":10,"cancelled":false,"failed":[{"error":"404","path":"boot/y"}],)"
       R"("failures":1,"files":5,"seconds":1.5})"},
      {prefetch_reply(cache::PrefetchSummary{}),
       R"({"bytes":0,"cancelled":false,"failed":[],"failures":0,"files":0,"seconds":0.0})"},
  };
  for (const auto& c : cases) EXPECT_EQ(c.reply.dump(), c.wire);
}

TEST(ControlProtocol, DefaultSocket) {
  EXPECT_EQ(default_control_socket("/var/cache/netbootfs"), "/var/cache/netbootfs/control.sock");
}

TEST(ControlProtocol, CountsOfAnOlderMountReadAsZero) {
  const auto c = prefetch_counts(json::parse(R"({"event":"progress","files":7,"bytes":9})"));
  EXPECT_EQ(c.files, 7u);
  EXPECT_EQ(c.failures, 0u);
  EXPECT_EQ(c.bytes, 9u);
  EXPECT_EQ(c.queued, 0u);
  EXPECT_EQ(count(json::object(), kEvictions), 0u);
  EXPECT_EQ(count(json{{kEvictions, 12}}, kEvictions), 12u);
}

}  // namespace
}  // namespace netbootfs::fs::control
