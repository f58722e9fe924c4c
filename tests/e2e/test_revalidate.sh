#!/usr/bin/env bash
# While a file is unchanged upstream, reopening it after the revalidate window
# costs a conditional GET (If-None-Match) answered 304, never a 200 download;
# within the window, nothing. Replaced upstream (other size; or same size and
# another mtime, which changes nginx's ETag), the mount serves the new bytes
# after the window.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=1 make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt" "revalidate=0.5"
f=pxelinux.cfg/default
k=images/linux
for p in $f $k; do cmp "$T/up/$p" "$T/mnt/$p" || fail "first read of $p differs"; done
for i in 1 2 3; do
  sleep 0.6
  for p in $f $k; do cmp "$T/up/$p" "$T/mnt/$p" || fail "reread $i of $p differs"; done
done
for p in $f $k; do
  n200=$(nginx_count GET "/$p" 200)
  [ "$n200" -eq 1 ] || fail "unchanged $p was downloaded $n200 times:
$(grep " /$p " "$NGINX_LOG")"
  # A 304 line: no body, and the request carried the validator.
  n304=$(grep -cE "^GET /$p 304 0 \"[^\"]+\" " "$NGINX_LOG" || true)
  [ "$n304" -ge 3 ] || fail "expected >= 3 GETs of $p with If-None-Match answered 304, saw $n304:
$(grep " /$p " "$NGINX_LOG")"
  note "$p: 1 download, $n304 revalidations answered 304"
done
# Within the window: at most the one revalidation that may fall due meanwhile.
before=$(nginx_count GET "/$f")
start=$(now_ms)
for i in $(seq 20); do cat "$T/mnt/$f" >/dev/null; done
took=$(($(now_ms) - start))
after=$(nginx_count GET "/$f")
[ "$took" -lt 500 ] && [ $((after - before)) -gt 1 ] \
  && fail "$((after - before)) upstream requests for 20 opens within one revalidate window"

# Replace the menu with other content of another size.
printf 'DEFAULT rescue\nLABEL rescue\n' >"$T/up/$f.new"
mv "$T/up/$f.new" "$T/up/$f"
# Replace the kernel with other bytes of the same size, 10 s newer.
head -c $((1 * 1048576)) /dev/urandom >"$T/up/$k.new"
touch -d "@$(($(stat -c %Y "$T/up/$k") + 10))" "$T/up/$k.new"
mv "$T/up/$k.new" "$T/up/$k"
sleep 0.6
for p in $f $k; do
  cmp "$T/up/$p" "$T/mnt/$p" || fail "the new version of $p is not served"
  [ "$(stat -c %s "$T/mnt/$p")" = "$(stat -c %s "$T/up/$p")" ] || fail "stat of $p shows the old size"
done
[ "$(nginx_count GET "/$f" 200)" -eq 2 ] || fail "the replaced $f was not downloaded exactly once more"
check_daemon_log
pass "unchanged files revalidated with 304s; replaced files (size, mtime) served new after the window"
