#!/usr/bin/env bash
# revalidate=0, listing_ttl=0 and negative_ttl=0 mean "ask upstream every
# time", never "never answer": lookups, listings, reads and misses complete
# promptly and correctly, and each asks upstream.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=1 make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt" "revalidate=0,listing_ttl=0,negative_ttl=0"
IO_TIMEOUT=10
stat "$T/mnt/pxelinux.0" >/dev/null || fail "stat of an existing file did not complete"
ls "$T/mnt/pxelinux.cfg" >"$T/ls.out" || fail "ls of a directory did not complete"
grep -qx default "$T/ls.out" || fail "the listing lacks 'default': $(cat "$T/ls.out")"
for i in 1 2 3; do
  cmp "$T/up/pxelinux.cfg/default" "$T/mnt/pxelinux.cfg/default" || fail "read $i differs or did not complete"
done
with_timeout 10 python3 -c 'import os, sys; sys.exit(os.path.exists(sys.argv[1]))' "$T/mnt/pxelinux.cfg/0A000001" \
  || fail "a missing name was not answered absent"
# Every open revalidated (a conditional GET answered 304), nothing downloaded twice.
[ "$(nginx_count GET /pxelinux.cfg/default 200)" -eq 1 ] || fail "the unchanged file was downloaded again"
[ "$(nginx_count GET /pxelinux.cfg/default 304)" -ge 2 ] || fail "opens with revalidate=0 were not revalidated"
# A change upstream is seen at once.
printf 'DEFAULT other\n' >"$T/up/pxelinux.cfg/default.new"
chmod a+r "$T/up/pxelinux.cfg/default.new"
mv "$T/up/pxelinux.cfg/default.new" "$T/up/pxelinux.cfg/default"
cmp "$T/up/pxelinux.cfg/default" "$T/mnt/pxelinux.cfg/default" || fail "the changed file is not served at once"
listings=$(nginx_count GET '/(pxelinux.cfg/)?')
note "$listings listing requests"
check_daemon_log
pass "all three TTLs at 0: every operation completes and asks upstream"
