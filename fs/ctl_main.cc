// netbootfsctl: inspects a netbootfs cache directory, mounted or not.
//
// The index is opened read-only: LMDB lets the mount and this tool use the
// same environment at the same time, so nothing here disturbs a live mount.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <string>

#include "cache/blob_store.h"
#include "cache/http/url.h"
#include "cache/index.h"
#include "cache/recovery.h"

namespace {

using namespace netbootfs;

std::string iso_time(int64_t t) {
  if (t <= 0) return "-";
  std::time_t tt = t;
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "netbootfsctl: %s\n", msg.c_str());
  return 2;
}

Result<std::unique_ptr<cache::Index>> open_index(const std::string& dir) {
  if (!std::filesystem::exists(dir + "/index")) {
    return Error{ENOENT, "no cache at " + dir + " (no index/ directory)"};
  }
  cache::Index::Options o;
  o.read_only = true;
  return cache::Index::open(dir + "/index", o);
}

int cmd_ls(const std::string& dir, const std::string& path, bool json) {
  auto index = open_index(dir);
  if (!index) return fail(index.error().message);
  std::string prefix;
  if (!path.empty()) {
    auto p = http::normalize_rel_path(path);
    if (!p) return fail("bad path '" + path + "': " + p.error().message);
    prefix = p.value();
  }
  auto entries = (*index)->list_paths(prefix);
  // Internal entries (rewritten outputs, keyed "\x01...") are not paths of the tree.
  entries.erase(std::remove_if(entries.begin(), entries.end(),
                               [](const auto& e) { return !e.first.empty() && e.first[0] == '\x01'; }),
                entries.end());
  if (json) {
    auto out = nlohmann::json::array();
    for (const auto& [p, e] : entries) {
      auto blob = (*index)->get_blob(e.sha256);
      out.push_back({{"path", p},
                     {"size", e.size},
                     {"sha256", e.sha256},
                     {"etag", e.etag},
                     {"last_modified", e.last_modified},
                     {"validated_at", e.validated_at},
                     {"last_access", blob ? blob->last_access : 0}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  for (const auto& [p, e] : entries) {
    auto blob = (*index)->get_blob(e.sha256);
    std::printf("%-40s %12llu %.12s %-24s validated %s accessed %s\n", p.c_str(),
                static_cast<unsigned long long>(e.size), e.sha256.c_str(),
                e.etag.empty() ? "-" : e.etag.c_str(), iso_time(e.validated_at).c_str(),
                iso_time(blob ? blob->last_access : 0).c_str());
  }
  return 0;
}

int cmd_status(const std::string& dir, bool json) {
  auto index = open_index(dir);
  if (!index) return fail(index.error().message);
  auto st = (*index)->stats();
  for (const auto& [p, e] : (*index)->list_paths()) {
    if (!p.empty() && p[0] == '\x01') st.paths--;  // rewritten outputs: internal
  }
  size_t tmp_files = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir + "/tmp", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++tmp_files;
  }
  if (json) {
    nlohmann::json out = {{"cache_dir", dir},
                          {"paths", st.paths},
                          {"blobs", st.blobs},
                          {"bytes", st.blob_bytes},
                          {"temp_files", tmp_files},
                          {"schema_version", cache::Index::kSchemaVersion}};
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf("cache_dir:  %s\npaths:      %llu\nblobs:      %llu\nbytes:      %llu\n"
              "temp files: %zu\n",
              dir.c_str(), static_cast<unsigned long long>(st.paths),
              static_cast<unsigned long long>(st.blobs),
              static_cast<unsigned long long>(st.blob_bytes), tmp_files);
  return 0;
}

int cmd_verify(const std::string& dir, bool json) {
  auto index = open_index(dir);
  if (!index) return fail(index.error().message);
  auto blobs = cache::BlobStore::open(dir);
  if (!blobs) return fail(blobs.error().message);
  auto problems = cache::verify(**index, **blobs);
  if (json) {
    std::cout << nlohmann::json{{"consistent", problems.empty()}, {"problems", problems}}.dump(2)
              << "\n";
  } else {
    for (const auto& p : problems) std::printf("%s\n", p.c_str());
    std::printf("%s\n", problems.empty() ? "consistent" : "INCONSISTENT");
  }
  return problems.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Inspect a netbootfs cache directory, mounted or not.\n"
               "Exit codes: 0 success, 1 an inconsistency was found, 2 usage or I/O error."};
  std::string dir = "/var/cache/netbootfs";
  bool json = false;
  app.add_option("--cache-dir", dir, "cache directory")->capture_default_str();
  app.add_flag("--json", json, "machine-readable output");
  app.require_subcommand(1);

  std::string ls_path;
  auto* ls = app.add_subcommand("ls", "list cached entries (path, size, sha256, etag, times)");
  ls->add_option("PATH", ls_path, "only entries at or below PATH");
  auto* status = app.add_subcommand("status", "print cache totals");
  auto* verify = app.add_subcommand("verify", "re-hash every blob and check index <-> blobs");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (*ls) return cmd_ls(dir, ls_path, json);
  if (*status) return cmd_status(dir, json);
  if (*verify) return cmd_verify(dir, json);
  return 2;
}
