#!/usr/bin/env bash
# With upstream gone, cached files still read correctly (revalidation fails
# and the cached copy is served), uncached ones fail fast with an error, and
# nothing hangs: not the listing, not a lookup of an unknown name.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=2 INITRD_MB=1 make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt" "revalidate=0,connect_timeout=2,request_timeout=5"
cmp "$T/up/images/linux" "$T/mnt/images/linux" || fail "first read differs"
stat "$T/mnt/ldlinux.c32" >/dev/null  # known from the listing, never downloaded
stop_nginx
curl -s --max-time 2 -o /dev/null "$NGINX_URL" && fail "nginx still answers"

start=$(now_ms)
with_timeout 20 cmp "$T/up/images/linux" "$T/mnt/images/linux" || fail "cached file not served with upstream down"
note "cached file served in $(($(now_ms) - start)) ms with upstream down"

read -r err ms < <(timed_read "$T/mnt/ldlinux.c32")
[ "$err" != OK ] || fail "an uncached file was read with upstream down"
[ "$ms" -lt 5000 ] || fail "the uncached read took ${ms} ms to fail ($err)"
note "uncached read failed with $err in ${ms} ms"
read -r err2 ms2 < <(timed_read "$T/mnt/images/not-there")
[ "$err2" != OK ] || fail "an unknown name was read with upstream down"
[ "$ms2" -lt 5000 ] || fail "a lookup of an unknown name took ${ms2} ms ($err2)"
note "unknown name failed with $err2 in ${ms2} ms"
# A directory never listed: stat knows it from its parent's listing; opening it
# needs upstream, and "unreachable" must not read as "absent".
python3 - "$T/mnt/grub" >"$T/opendir.out" <<'PY' || soft_fail "opendir of an unlisted directory with upstream down: $(cat "$T/opendir.out")"
import errno, os, sys
try:
    os.listdir(sys.argv[1])
    print("listed")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno), "(want EIO: the directory exists, upstream is unreachable)")
    sys.exit(0 if e.errno == errno.EIO else 1)
PY
start=$(now_ms)
with_timeout 10 ls -lR "$T/mnt" >/dev/null 2>&1 || [ $? -lt 124 ] || fail "ls -lR hung with upstream down"
ls_ms=$(($(now_ms) - start))
[ "$ls_ms" -lt 5000 ] || fail "ls -lR took ${ls_ms} ms with upstream down"
# Again: a second attempt must not be slower (no piling up).
read -r err3 ms3 < <(timed_read "$T/mnt/ldlinux.c32")
[ "$err3" != OK ] && [ "$ms3" -lt 5000 ] || fail "second uncached read: $err3 in ${ms3} ms"
with_timeout 10 cmp "$T/up/images/linux" "$T/mnt/images/linux" || fail "cached file not served the second time"
grep -q 'serving the cached copy' "$T/daemon.log" || fail "no stale-if-error warning logged"
# Upstream comes back: the failures were not cached as absences for long.
restart_nginx
wait_until 15 cmp "$T/up/ldlinux.c32" "$T/mnt/ldlinux.c32" || fail "ldlinux.c32 still unreadable 15 s after upstream came back"
wait_until 15 cmp "$T/up/grub/grub.cfg" "$T/mnt/grub/grub.cfg" || fail "grub/grub.cfg still unreadable 15 s after upstream came back"

check_daemon_log
pass "cached file served; recovered; uncached read failed ($err) in ${ms} ms; unknown name $err2 in ${ms2} ms; ls -lR ${ls_ms} ms"
