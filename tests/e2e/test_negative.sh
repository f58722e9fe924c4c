#!/usr/bin/env bash
# The pxelinux probe ladder: 20 distinct missing names, each looked up 10 times
# within negative_ttl, cost at most 20 upstream requests in a directory nginx
# does not list, and none where a fresh listing says they are absent. Once
# negative_ttl has passed, a name that appeared upstream is found.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=1 make_tree "$T/up"
mkdir -p "$T/up/nolist"
echo x >"$T/up/nolist/present"
chmod -R a+rX "$T/up"
start_nginx "$T/up" 'location /nolist/ { autoindex off; }'
start_mount "$NGINX_URL" "$T/mnt" "negative_ttl=4"
# probe DIR: 10 rounds of lookups of 20 missing names, in one bounded process.
probe() {
  with_timeout 30 python3 - "$T/mnt/$1" <<'PY'
import os, sys, time
d = sys.argv[1]
t0 = time.monotonic()
for _ in range(10):
    for i in range(1, 21):
        p = os.path.join(d, "0A00%04X" % i)
        if os.path.exists(p):
            sys.exit(print(f"{p} exists"))
print(f"200 lookups in {int((time.monotonic() - t0) * 1000)} ms")
PY
}
out=$(probe pxelinux.cfg) || fail "lookups in a listed directory: $out"
note "pxelinux.cfg: $out"
out=$(probe nolist) || fail "lookups in an unlisted directory: $out"
note "nolist: $out"
ms=$(grep -oE '[0-9]+ ms' <<<"$out" | cut -d' ' -f1)
[ "$ms" -lt 4000 ] || fail "the lookups took longer than negative_ttl: the test proves nothing"
listed=$(grep -cE "^[A-Z]+ /pxelinux.cfg/0A00" "$NGINX_LOG" || true)
[ "$listed" -eq 0 ] || fail "$listed upstream requests for names absent from a fresh listing:
$(grep -E ' /pxelinux.cfg/0A00' "$NGINX_LOG" | head)"
unlisted=$(grep -cE "^[A-Z]+ /nolist/0A00" "$NGINX_LOG" || true)
[ "$unlisted" -le 20 ] || fail "$unlisted upstream requests for 20 missing names (200 lookups) without a listing:
$(grep -E ' /nolist/0A00' "$NGINX_LOG" | sort | uniq -c | sort -rn | head)"
[ "$unlisted" -ge 1 ] || fail "no upstream request at all for names in an unlisted directory"
[ -e "$T/mnt/nolist/present" ] || fail "a file in a directory without a listing is missing"
# The negative entry expires: a name that appears upstream is found after negative_ttl.
name=$(printf '0A00%04X' 7)
echo late >"$T/up/nolist/$name"
chmod a+r "$T/up/nolist/$name"
wait_until 15 test -e "$T/mnt/nolist/$name" || fail "nolist/$name still missing well after negative_ttl"
[ "$(cat "$T/mnt/nolist/$name")" = late ] || fail "the late file has other content"
check_daemon_log
pass "with a listing: 0 requests; without: $unlisted requests for 200 lookups; expiry works"
