#!/usr/bin/env bash
# 100 concurrent readers of a cold 100 MB file: one GET upstream, every reader byte-identical.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=${HERD_MB:-100} make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt"
want=$(md5 "$T/up/images/initrd")
pids=()
for i in $(seq 100); do
  (md5sum "$T/mnt/images/initrd" | cut -d' ' -f1 >"$T/r$i") &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a reader failed"; done
for i in $(seq 100); do [ "$(cat "$T/r$i")" = "$want" ] || fail "reader $i got other bytes"; done
gets=$(nginx_count GET /images/initrd)
[ "$gets" -eq 1 ] || fail "expected exactly 1 GET upstream, saw $gets"
check_daemon_log
pass "100 readers, 1 upstream GET"
