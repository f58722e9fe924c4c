#!/usr/bin/env bash
# While a file is unchanged, reopening costs 304s; replaced upstream, the mount serves
# the new bytes after the revalidate window.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=1 make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt" "revalidate=0.5"
f=pxelinux.cfg/default
cmp "$T/up/$f" "$T/mnt/$f" || fail "first read differs"
for i in 1 2 3; do
  sleep 0.6
  cmp "$T/up/$f" "$T/mnt/$f" || fail "reread $i differs"
done
[ "$(nginx_count GET "/$f" 200)" -eq 1 ] || fail "unchanged file downloaded again"
n304=$(nginx_count GET "/$f" 304)
[ "$n304" -ge 3 ] || fail "expected 3 conditional GETs answered 304, saw $n304"
# Within the window: no request at all.
before=$(nginx_count GET "/$f")
for i in $(seq 20); do cat "$T/mnt/$f" >/dev/null; done
after=$(nginx_count GET "/$f")
[ $((after - before)) -le 1 ] || fail "$((after - before)) requests within one revalidate window"
# Replace it (other size, other mtime: nginx's ETag changes).
printf 'DEFAULT rescue\nLABEL rescue\n' >"$T/up/$f.new"
mv "$T/up/$f.new" "$T/up/$f"
sleep 0.6
cmp "$T/up/$f" "$T/mnt/$f" || fail "the new version is not served"
[ "$(stat -c %s "$T/mnt/$f")" = "$(stat -c %s "$T/up/$f")" ] || fail "stat shows the old size"
check_daemon_log
pass "$n304 revalidations answered 304; the replaced file is served"
