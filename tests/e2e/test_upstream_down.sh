#!/usr/bin/env bash
# With upstream gone, cached files still read correctly and uncached ones fail fast.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=2 INITRD_MB=1 make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt" "revalidate=0,connect_timeout=2"
cmp "$T/up/images/linux" "$T/mnt/images/linux" || fail "first read differs"
stat "$T/mnt/ldlinux.c32" >/dev/null  # known from the listing, never downloaded
stop_nginx
cmp "$T/up/images/linux" "$T/mnt/images/linux" || fail "cached file not served with upstream down"
start=$(date +%s.%N)
if timeout 20 cat "$T/mnt/ldlinux.c32" >/dev/null 2>&1; then fail "an uncached file read with upstream down"; fi
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
[ "$(echo "$elapsed < 5" | bc)" = 1 ] || fail "the miss took ${elapsed}s to fail"
grep -q 'serving the cached copy' "$T/daemon.log" || fail "no stale-if-error warning logged"
check_daemon_log
pass "cached file served, miss failed in ${elapsed}s"
