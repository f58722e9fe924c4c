#!/usr/bin/env bash
# 100 concurrent readers of a cold 100 MB file: exactly one GET upstream, and
# every reader gets the upstream bytes.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=${HERD_MB:-100} make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt"
want=$(md5 "$T/up/images/initrd")
start=$(now_ms)
pids=()
for i in $(seq 100); do
  (with_timeout 180 md5sum "$T/mnt/images/initrd" | cut -d' ' -f1 >"$T/r$i") &
  pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
ms=$(($(now_ms) - start))
[ $failed -eq 0 ] || fail "$failed of 100 readers failed"
bad=0
for i in $(seq 100); do
  got=$(cat "$T/r$i")
  [ "$got" = "$want" ] || { bad=$((bad + 1)); note "reader $i: md5 $got, want $want"; }
done
[ $bad -eq 0 ] || fail "$bad of 100 readers got other bytes"
gets=$(nginx_count GET /images/initrd)
[ "$gets" -eq 1 ] || fail "expected exactly 1 GET of /images/initrd upstream, saw $gets:
$(grep ' /images/initrd ' "$NGINX_LOG")"
others=$(grep -c ' /images/initrd ' "$NGINX_LOG" || true)
[ "$others" -eq 1 ] || fail "besides the GET, $((others - 1)) other requests for /images/initrd"
check_daemon_log
pass "100 readers byte-identical in ${ms} ms, 1 upstream GET"
