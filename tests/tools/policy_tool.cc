// Prints what the fetch path's pure decisions allow, for the end-to-end
// tests to bound what they count by the code itself rather than a copy of
// its numbers:
//   netbootfs_policy_tool max-resumes STALL_MS
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cache/fetch/policy.h"

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "max-resumes") == 0) {
    char* end = nullptr;
    const long long stall = std::strtoll(argv[2], &end, 10);
    if (end != argv[2] && *end == '\0' && stall >= 0) {
      std::printf("%d\n", netbootfs::cache::max_resumes(stall));
      return 0;
    }
  }
  std::fprintf(stderr, "usage: %s max-resumes STALL_MS\n", argv[0]);
  return 2;
}
