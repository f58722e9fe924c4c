#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: unit tests, end-to-end
# tests (real mounts, nginx, in.tftpd), then the unit tests again under
# ASan+UBSan and TSan. This is what CI runs (.ci/run).
#
#   contrib/check.sh [--quick] [--no-sanitizers] [--no-e2e] [--no-fuzz]
#     --quick          unit tests only
#     --no-sanitizers  skip the ASan+UBSan and TSan passes
#     --no-e2e         skip the end-to-end tests
#     --no-fuzz        skip the bounded libFuzzer run of the rewrite engine
#     --no-package     skip building, linting and trying the Debian package and the RPM
#   FUZZ_SECONDS (default 30) bounds the fuzzer run.
#   BUILD_DIR (default build) chooses the build directory; ASAN_BUILD_DIR
#   (build-asan) and TSAN_BUILD_DIR (build-tsan) those of the sanitizer passes.
# The last line is "N passed, N failed"; the exit status is non-zero on any
# failure (a failed build included).
set -euo pipefail
NETBOOTFS_ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$NETBOOTFS_ROOT"
source contrib/lib/deps.sh
# ccache keyed on paths relative to the tree: a fresh clone elsewhere (CI)
# still hits what earlier runs compiled.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$NETBOOTFS_ROOT} CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}

quick=0 sanitizers=1 e2e=1 fuzz=1 package=1
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    --no-sanitizers) sanitizers=0 ;;
    --no-e2e) e2e=0 ;;
    --no-fuzz) fuzz=0 ;;
    --no-package) package=0 ;;
    *) echo "usage: $0 [--quick] [--no-sanitizers] [--no-e2e] [--no-fuzz] [--no-package]" >&2
       exit 2 ;;
  esac
done
[ $quick = 1 ] && { sanitizers=0; e2e=0; fuzz=0; package=0; }

extra=()
[ $fuzz = 1 ] && extra+=(clang libclang-rt-14-dev)
[ $package = 1 ] && extra+=(debhelper lintian fakeroot dpkg-dev rpm rpmlint)
install_deps "${extra[@]}"
build=${BUILD_DIR:-build}

passed=0 failed=0 skipped=0 failures=()
# build_tier NAME BUILD_DIR CMAKE_ARGS...: a failed build counts as a failure
# (and its tests are not run) instead of ending the script before the summary.
build_tier() {
  local name=$1 dir=$2; shift 2
  echo "== building $name ($dir)"
  mkdir -p "$dir"
  if configure_and_build "$dir" "$@" >"$dir/check-build.log" 2>&1; then
    return 0
  fi
  tail -n 60 "$dir/check-build.log"
  failed=$((failed + 1))
  failures+=("build $name")
  return 1
}

run_tier() {  # run_tier NAME BUILD_DIR CTEST_ARGS...
  local name=$1 dir=$2; shift 2
  local log rc=0
  log=$(mktemp)
  echo "== $name"
  (cd "$dir" && ctest --output-on-failure --timeout 600 "$@") >"$log" 2>&1 || rc=$?
  if [ $rc -eq 0 ]; then
    grep -E 'tests passed|Total Test time|\*\*\*Skipped' "$log" || true
  else
    cat "$log"
  fi
  # Per-test result lines: "  3/16 Test  #7: e2e.herd ....   Passed   18.33 sec"
  local total p s f
  total=$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -1 | sed -E 's/.* out of ([0-9]+).*/\1/')
  p=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* +Passed +' "$log" || true)
  s=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*\*\*\*Skipped' "$log" || true)
  if [ -z "$total" ] || [ "$total" -eq 0 ]; then
    f=1  # ctest itself failed, or found no tests
  else
    f=$((total - p - s))
  fi
  [ $rc -eq 0 ] || [ "$f" -gt 0 ] || f=1
  passed=$((passed + p))
  skipped=$((skipped + s))
  failed=$((failed + f))
  [ "$f" -eq 0 ] || failures+=("$name")
  rm -f "$log"
}

if build_tier "default" "$build"; then
  run_tier "unit tests" "$build" -L unit -j "$(nproc)"
  if [ $e2e = 1 ]; then
    run_tier "end-to-end tests" "$build" -L e2e
  fi
fi
if [ $sanitizers = 1 ]; then
  if build_tier "ASan+UBSan" "${ASAN_BUILD_DIR:-build-asan}" -DCMAKE_BUILD_TYPE=Debug -DNETBOOTFS_SANITIZE=address,undefined; then
    ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="print_stacktrace=1" \
      run_tier "unit tests under ASan+UBSan" "${ASAN_BUILD_DIR:-build-asan}" -L unit -j "$(nproc)"
  fi
  if build_tier "TSan" "${TSAN_BUILD_DIR:-build-tsan}" -DCMAKE_BUILD_TYPE=Debug -DNETBOOTFS_SANITIZE=thread; then
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
      run_tier "unit tests under TSan" "${TSAN_BUILD_DIR:-build-tsan}" -L unit -j "$(nproc)"
  fi
fi

if [ $fuzz = 1 ]; then
  # libFuzzer on the rewrite engine and its TOML parser, bounded in time: no
  # crash, and a body without a match comes out byte-identical (asserted in
  # the target). Found inputs land in build-fuzz/crash-*.
  echo "== fuzzing the rewrite engine for ${FUZZ_SECONDS:-30} s"
  cmake -S "$NETBOOTFS_ROOT" -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
  cmake --build build-fuzz --target rewrite_fuzz >/dev/null
  corpus=$(mktemp -d)
  cp tests/fuzz/corpus/rewrite/* "$corpus/"
  if (cd build-fuzz && ./tests/fuzz/rewrite_fuzz -max_total_time="${FUZZ_SECONDS:-30}" \
        -dict="$NETBOOTFS_ROOT/tests/fuzz/rewrite.dict" "$corpus") >build-fuzz/fuzz.log 2>&1; then
    grep -E '^Done|stat::number_of_executed_units' build-fuzz/fuzz.log | tail -1 || true
    passed=$((passed + 1))
  else
    tail -n 40 build-fuzz/fuzz.log
    failed=$((failed + 1))
    failures+=("fuzzing")
  fi
  rm -rf "$corpus"
fi

if [ $package = 1 ]; then
  # The .deb from a copy of the tree (tests already ran: nocheck), lintian
  # without errors, then the packaged binary mounted through
  # `mount -t fuse.netbootfs` (mount(8) finds it in /usr/bin only) and
  # refusing bad configurations. The RPM spec: rpmlint clean, parsed, and
  # built (SRPM and binary RPM, tests off) from the same copy as Source0 with
  # Fedora's cmake and systemd macros stood in for (packaging/rpm/debian-build.macros).
  echo "== Debian package and RPM"
  work=$(mktemp -d)
  mkdir "$work/netbootfs"
  tar --exclude='./build*' --exclude=./.git --exclude=./obj-* -cf - . | tar -x -C "$work/netbootfs"
  ok=1 rpm_ok=1
  spec=packaging/rpm/netbootfs.spec
  rpmver=$(rpmspec -q --srpm --qf '%{version}\n' "$spec" 2>"$work/rpm.log") || rpm_ok=0
  mkdir -p "$work/rpm/SOURCES"
  tar -C "$work" --transform "s,^netbootfs,netbootfs-$rpmver," \
    -czf "$work/rpm/SOURCES/netbootfs-$rpmver.tar.gz" netbootfs 2>>"$work/rpm.log" || rpm_ok=0
  cp -r packaging/debian "$work/netbootfs/debian"
  # Both package builds compile in a fresh temp dir: key ccache relative to it.
  export CCACHE_BASEDIR=$work
  if ! (cd "$work/netbootfs" && DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -us -uc -b) \
       >"$work/build.log" 2>&1; then
    tail -n 30 "$work/build.log"; ok=0
  fi
  deb=$(ls "$work"/netbootfs_*.deb 2>/dev/null | head -1 || true)
  if [ $ok = 1 ] && ! lintian --fail-on error "$deb"; then ok=0; fi
  if [ $ok = 1 ]; then
    dpkg -i "$deb" >/dev/null
    NETBOOTFS_BIN_DIR=/usr/bin bash tests/e2e/test_mount_helper.sh || ok=0
    NETBOOTFS_BIN_DIR=/usr/bin bash tests/e2e/test_bad_config.sh || ok=0
    dpkg -r netbootfs >/dev/null
  fi
  # The RPM, whatever became of the .deb.
  if [ $rpm_ok = 1 ] && ! { rpmlint -r packaging/rpm/netbootfs.rpmlintrc "$spec" &&
       rpmspec -P "$spec" >/dev/null; } >"$work/rpmlint.log" 2>&1; then
    cat "$work/rpm.log" "$work/rpmlint.log"; rpm_ok=0
  fi
  if [ $rpm_ok = 1 ] && ! grep -q ' 0 errors, 0 warnings' "$work/rpmlint.log"; then
    cat "$work/rpmlint.log"; rpm_ok=0
  fi
  if [ $rpm_ok = 1 ] && ! { rpmbuild -bs --define "_topdir $work/rpm" "$spec" &&
       rpmbuild -bb --nodeps --without check --define "_topdir $work/rpm" \
         --load packaging/rpm/debian-build.macros "$spec"; } >>"$work/rpm.log" 2>&1; then
    tail -n 30 "$work/rpm.log"; rpm_ok=0
  fi
  rpm_bin=$(ls "$work"/rpm/RPMS/*/netbootfs-"$rpmver"-*.rpm 2>/dev/null | head -1 || true)
  if [ $rpm_ok = 1 ]; then
    # The binary RPM as Debian's rpm makes it, less what this environment
    # causes (packaging/rpm/debian-build.rpmlintrc says why), and its files.
    rpmlint -r packaging/rpm/debian-build.rpmlintrc "$rpm_bin" >"$work/rpmlint-bin.log" 2>&1 \
      && grep -q ' 0 errors, 0 warnings' "$work/rpmlint-bin.log" \
      || { cat "$work/rpmlint-bin.log"; rpm_ok=0; }
    rpmfiles=$(rpm -qlp "$rpm_bin" 2>/dev/null | grep -cE '^/usr/(bin/netbootfs|bin/netbootfsctl|share/man/man8/netbootfs(ctl)?\.8.*|lib/systemd/system/netbootfs\.service|share/doc/netbootfs[^/]*/examples/(dnsmasq|tftpd-hpa)\.service\.d/netbootfs\.conf)$' || true)
    [ "$rpmfiles" -eq 7 ] || { echo "the RPM lacks files:"; rpm -qlp "$rpm_bin"; rpm_ok=0; }
  fi
  [ $rpm_ok = 1 ] || { echo "RPM: failed (see above)"; ok=0; }
  if [ $ok = 1 ]; then passed=$((passed + 1)); echo "package: built, lintian clean, mounted, bad configurations refused; RPM: spec lint clean, SRPM and RPM built"
  else failed=$((failed + 1)); failures+=("package"); fi
  rm -rf "$work"
fi

echo
[ ${#failures[@]} -eq 0 ] || echo "failed tiers: ${failures[*]}"
[ "$skipped" -eq 0 ] || echo "$skipped skipped (no /dev/fuse?)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
