#!/usr/bin/env bash
# Start-up after a clean stop skips the walk of every entry (the full
# recovery) and only removes temp files and blob files without a record;
# after a kill -9, or after an offline netbootfsctl command that wrote to
# the cache, the next start runs the full recovery. An unmounted prefetch
# stops cleanly too, so the mount after it starts without the walk.
source "$(dirname "$0")/lib.sh"
make_tree "$T/up"
start_nginx "$T/up"
M=$T/mnt C=$T/cache

read_all() {
  local f
  for f in ldlinux.c32 pxelinux.cfg/default images/linux; do
    cmp -s "$T/up/$f" "$M/$f" || fail "$1: $f differs from upstream"
  done
}

start_mount "$NGINX_URL" "$M"
started_with "full recovery"
read_all "first mount"
stop_mount "$M"

# A clean stop: no walk. What a clean run can leave is still removed.
head -c 3000 /dev/urandom >"$C/tmp/dl-leftover"
head -c 7000 /dev/urandom >"$T/orphan"
osha=$(sha256sum "$T/orphan" | cut -d' ' -f1)
mkdir -p "$C/blobs/${osha:0:2}"
cp "$T/orphan" "$C/blobs/${osha:0:2}/$osha"
start_mount "$NGINX_URL" "$M"
started_with "after a clean stop"
[ -z "$(find "$C/tmp" -type f)" ] || fail "temp files after a clean start: $(ls "$C/tmp")"
[ ! -e "$C/blobs/${osha:0:2}/$osha" ] || fail "the orphan blob survived a clean start"
read_all "after a clean stop"
note "clean stop: the next start skipped the walk, removed the temp file and the orphan blob"

# kill -9: the mark was taken at start-up, so the next start walks.
kill -9 "$DAEMON_PID"
wait_until 10 dead "$DAEMON_PID" || fail "the daemon survived kill -9"
with_timeout 10 fusermount3 -uz "$M" || fail "fusermount3 -uz of the dead mount failed"
start_mount "$NGINX_URL" "$M"
started_with "full recovery"
read_all "after kill -9"
stop_mount "$M"
"$NBCTL" --cache-dir "$C" verify >"$T/verify.out" 2>&1 || fail "verify: $(cat "$T/verify.out")"
note "kill -9: full recovery at the next start, verify clean"

# An offline write voids the mark.
"$NBCTL" --cache-dir "$C" evict images/linux >"$T/evict.out" 2>&1 || fail "evict: $(cat "$T/evict.out")"
start_mount "$NGINX_URL" "$M"
started_with "full recovery"
read_all "after an offline evict"
stop_mount "$M"
note "offline evict: full recovery at the next start"

# An unmounted prefetch stops cleanly and marks the cache for the mount.
"$NBCTL" --cache-dir "$C" prefetch -r >"$T/prefetch.out" 2>&1 || fail "prefetch: $(cat "$T/prefetch.out")"
start_mount "$NGINX_URL" "$M"
started_with "after a clean stop"
read_all "after an unmounted prefetch"
stop_mount "$M"
"$NBCTL" --cache-dir "$C" verify >"$T/verify.out" 2>&1 || fail "verify: $(cat "$T/verify.out")"
pass "clean stops skip the start-up walk; kill -9 and offline writes bring it back"
