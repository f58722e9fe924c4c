#include "fs/ctl/mount_commands.h"

#include <cerrno>
#include <cstdio>

#include "fs/ctl/args.h"
#include "fs/ctl/control_client.h"

namespace netbootfs::fs::ctl {
namespace {

// The final line of a request that must succeed, "ok" removed; an error
// when the call failed or the mount refused.
Result<nlohmann::json> ask(ControlClient& c, const nlohmann::json& req,
                           const ControlClient::EventFn& on_event = nullptr,
                           int timeout_ms = 30000) {
  auto r = c.call(req, on_event, timeout_ms);
  if (!r) return r.error();
  if (!r->value(control::kOk, false)) {
    return Error{EPROTO, "the mount refused: " + r->value(control::kError, "?")};
  }
  r->erase(control::kOk);
  return r;
}

}  // namespace

LiveStatus mount_status(const std::string& socket) {
  LiveStatus out;
  auto c = ControlClient::connect(socket);
  if (!c) {
    if (!not_listening(c.error())) out.error = c.error().message;
    return out;
  }
  auto r = c->call(control::status_request(), nullptr, 5000);
  if (r && r->value(control::kOk, false)) {
    out.reply = std::move(r).value();
    out.reply.erase(control::kOk);
  } else {
    out.error = r ? r->value(control::kError, "?") : r.error().message;
  }
  return out;
}

std::vector<std::string> mount_pins(const std::string& socket) {
  auto c = ControlClient::connect(socket);
  if (!c) return {};
  auto r = c->call(control::status_request(), nullptr);
  if (!r || !r->value(control::kOk, false)) return {};
  return control::status_pins(r.value()).value_or(std::vector<std::string>{});
}

int cmd_invalidate(const std::string& socket, const std::vector<std::string>& args, bool all,
                   bool json) {
  if (args.empty() && !all) return fail("invalidate: name PATHs or --all");
  auto paths = gather_paths(args, "");
  if (!paths) return fail(paths.error().message);
  auto c = ControlClient::connect(socket);
  if (!c) {
    if (not_listening(c.error())) {
      return fail("not mounted (no mount answers on " + socket +
                  "): nothing to invalidate, the next mount revalidates anyway");
    }
    return fail(c.error().message);
  }
  auto a = ask(*c, control::make_request(control::InvalidateRequest{all, paths.value()}));
  if (!a) return fail(a.error().message);
  if (json) {
    print_json(a.value());
  } else {
    std::printf("%s\n", invalidate_line(a.value()).c_str());
  }
  return 0;
}

std::optional<int> gc_through_mount(const std::string& socket, bool limits_given, bool json) {
  auto c = ControlClient::connect(socket);
  if (!c) {
    if (not_listening(c.error())) return std::nullopt;
    return fail(c.error().message);
  }
  if (limits_given) {
    return fail(
        "gc: the cache is mounted and enforces its own max_cache_size and pins; "
        "drop --max-cache-size/--pin (or unmount)");
  }
  auto a = ask(*c, control::gc_request());
  if (!a) return fail(a.error().message);
  print_gc(a.value(), json);
  return 0;
}

std::optional<int> prefetch_through_mount(const std::string& socket,
                                          const control::PrefetchRequest& req,
                                          const std::string& unmounted_only, const ProgressBar& bar,
                                          bool json) {
  auto c = ControlClient::connect(socket);
  if (!c) {
    if (not_listening(c.error())) return std::nullopt;
    return fail(c.error().message);
  }
  if (!unmounted_only.empty()) {
    // The mount fetches with its own settings: a flag here would be ignored.
    return fail(unmounted_only + " for an unmounted cache; this one is mounted (" + socket + ")");
  }
  auto on_event = [&bar](const nlohmann::json& ev) { bar.draw(control::prefetch_counts(ev)); };
  auto a = ask(*c, control::make_request(req), on_event, 24 * 3600 * 1000);
  if (!a) {
    bar.end();
    return fail(a.error().message);
  }
  // The mount sends at most ten progress lines a second, so the last file's
  // may have been skipped: the bar ends on the totals.
  bar.draw(control::prefetch_counts(a.value()));
  bar.end();
  return report_prefetch(std::move(a).value(), "through the mount", json);
}

}  // namespace netbootfs::fs::ctl
