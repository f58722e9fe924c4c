#!/usr/bin/env bash
# kill -9 the daemon in the middle of a large download, remount on the same cache:
# the file reads correctly and the cache is consistent.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=40 make_tree "$T/up"
start_nginx "$T/up" 'location /images/ { limit_rate 8m; }'
start_mount "$NGINX_URL" "$T/mnt"
cmp "$T/up/pxelinux.0" "$T/mnt/pxelinux.0" || fail "small file differs"
(cat "$T/mnt/images/initrd" >/dev/null 2>&1 || true) &
reader=$!
wait_until 20 bash -c "ls $T/cache/tmp | grep -q ." || fail "the download did not start"
sleep 1
kill -9 "$DAEMON_PID"
wait "$reader" 2>/dev/null || true
[ -n "$(ls "$T/cache/tmp")" ] || fail "expected a partial temp file after the crash"
err=$(stat "$T/mnt" 2>&1 || true)
[[ $err == *"not connected"* ]] || fail "expected the dead mount to answer ENOTCONN: $err"
"$NBCTL" --cache-dir "$T/cache" ls | grep -q images/initrd && fail "a partial file is in the index"
start_mount "$NGINX_URL" "$T/mnt"
wait_until 10 grep -q "detached a dead netbootfs mount" "$T/daemon.log" || fail "the dead mount was not detached"
wait_until 10 stat "$T/mnt/pxelinux.0" || fail "the new mount does not answer"
cmp "$T/up/images/initrd" "$T/mnt/images/initrd" || fail "the file differs after the remount"
cmp "$T/up/pxelinux.0" "$T/mnt/pxelinux.0" || fail "the cached file differs after the remount"
stop_mount "$T/mnt"
"$NBCTL" --cache-dir "$T/cache" ls >"$T/ls.out"
grep -q images/initrd "$T/ls.out" || fail "netbootfsctl ls does not show the file"
"$NBCTL" --cache-dir "$T/cache" verify >"$T/verify.out" || fail "verify: $(cat "$T/verify.out")"
[ -z "$(ls "$T/cache/tmp")" ] || fail "temp files left after a clean unmount"
check_daemon_log
pass "consistent after kill -9 mid-download"
