#!/usr/bin/env bash
# `netbootfsctl prefetch` on an unmounted cache reaches upstream the way the
# last mount did:
# - proxy=: the upstream's name resolves only inside a forward proxy on
#   127.0.0.1, so without the mount's proxy nothing is fetched; with the
#   recorded one the proxy's log shows the prefetch's requests; the proxy
#   URL's password is not recorded; --proxy wins over the recorded proxy;
# - ca_file=, client_cert=, client_key=: an https nginx with a private CA
#   that answers /images/ only to a client certificate; the recorded paths
#   (file mode 0600, as it names a key) let the unmounted prefetch through,
#   and --ca-file wins over the recorded one.
source "$(dirname "$0")/lib.sh"
# The environment's proxies would decide instead of the mount's.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
ctl() { with_timeout 60 "$NBCTL" --cache-dir "${CACHE_DIR:-$T/cache}" "$@"; }

# start_proxy NAME: tests/tools/forward_proxy.py mapping upstream.netbootfs.test
# to nginx; sets PROXY_PORT; its log is $T/NAME.log.
start_proxy() {
  python3 "$NETBOOTFS_SOURCE_DIR/tests/tools/forward_proxy.py" --port-file "$T/$1.port" \
    --log "$T/$1.log" --map "upstream.netbootfs.test=127.0.0.1:$NGINX_PORT" \
    >"$T/$1.out" 2>&1 &
  track_pid "$!"
  wait_until 10 test -s "$T/$1.port" || fail "proxy $1 did not start: $(cat "$T/$1.out")"
  PROXY_PORT=$(cat "$T/$1.port")
}

KERNEL_MB=1 INITRD_MB=1 make_tree "$T/up"
start_nginx "$T/up"
start_proxy p1
p1=$PROXY_PORT
start_proxy p2
p2=$PROXY_PORT
url=http://upstream.netbootfs.test:$NGINX_PORT/
curl -s --max-time 5 -o /dev/null "$url" && fail "$url answers without the proxy (test proves nothing)"
curl -sf --max-time 5 -x "http://127.0.0.1:$p1" -o /dev/null "$url" || fail "proxy p1 does not reach nginx"

# --- proxy= ----------------------------------------------------------------------
start_mount "$url" "$T/mnt" "proxy=http://nbfs:s3cret@127.0.0.1:$p1,connect_timeout=4"
cmp "$T/up/pxelinux.cfg/default" "$T/mnt/pxelinux.cfg/default" || fail "read through the proxy differs"
rc=0
out=$(ctl prefetch --proxy "http://127.0.0.1:$p2" grub 2>&1) || rc=$?
[ $rc -eq 2 ] && [[ $out == *"for an unmounted cache"* ]] || fail "--proxy on a mounted cache: rc $rc, $out"
stop_mount "$T/mnt"
rec=$T/cache/upstream.http
[ -f "$rec" ] || fail "no $rec after the mount"
grep -qx "proxy=http://127.0.0.1:$p1" "$rec" || fail "the proxy is not recorded: $(cat "$rec")"
grep -q s3cret "$rec" && fail "the proxy password was recorded: $(cat "$rec")"
grep -qx "connect_timeout=4" "$rec" || fail "connect_timeout not recorded: $(cat "$rec")"
[ "$(stat -c %a "$rec")" = 644 ] || fail "$rec is mode $(stat -c %a "$rec") without key paths, want 644"
note "recorded: $(grep -v '^#' "$rec" | tr '\n' ' ')"

: >"$T/p1.log"
out=$(ctl --json prefetch -r images) || fail "unmounted prefetch through the recorded proxy: $out"
python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["files"] == 2 and j["failures"] == 0, j; assert "via proxy" in j["via"], j' <<<"$out" \
  || fail "prefetch summary: $out"
for f in images/linux images/initrd; do
  grep -qE "^GET http://upstream\.netbootfs\.test:$NGINX_PORT/$f 200$" "$T/p1.log" \
    || fail "the proxy did not see GET $f: $(cat "$T/p1.log")"
  [ "$(cache_entry "$f" | cut -d' ' -f2)" = "$(stat -c %s "$T/up/$f")" ] || fail "$f not cached"
done
note "unmounted prefetch -r images: 2 files, both GETs in the proxy's log"

# Without the recorded settings the same prefetch cannot reach the upstream.
mv "$rec" "$rec.aside"
rc=0
out=$(ctl prefetch grub 2>&1) || rc=$?
[ $rc -ne 0 ] || fail "prefetch without the recorded proxy succeeded (test proves nothing): $out"
[ "$(cache_entry grub/grub.cfg)" = absent ] || fail "grub/grub.cfg cached without the proxy"
mv "$rec.aside" "$rec"
# An explicit --proxy wins over the recorded one.
: >"$T/p1.log"
out=$(ctl prefetch --proxy "http://127.0.0.1:$p2" grub) || fail "prefetch --proxy p2: $out"
[[ $out == *"via proxy http://127.0.0.1:$p2"* ]] || fail "prefetch --proxy said: $out"
grep -q "grub/grub.cfg 200" "$T/p2.log" || fail "--proxy p2 was not used: $(cat "$T/p2.log")"
grep -q "grub" "$T/p1.log" && fail "the recorded proxy was used despite --proxy: $(cat "$T/p1.log")"
note "without the record: exit $rc, nothing cached; --proxy p2 wins over the recorded p1"

# --- ca_file=, client_cert=, client_key= -------------------------------------------
stop_nginx
pki=$T/pki
make_test_pki "$pki"
start_tls_nginx "$T/up" "$pki"
export CACHE_DIR=$T/tls
start_mount "$NGINX_URL" "$T/mnt" \
  "ca_file=$pki/ca.pem,client_cert=$pki/client.pem,client_key=$pki/client.key"
cmp "$T/up/pxelinux.cfg/default" "$T/mnt/pxelinux.cfg/default" || fail "read over https differs"
stop_mount "$T/mnt"
rec=$CACHE_DIR/upstream.http
[ "$(stat -c %a "$rec")" = 600 ] || fail "$rec names a key but is mode $(stat -c %a "$rec")"
grep -qx "client_key=$pki/client.key" "$rec" || fail "client_key not recorded: $(cat "$rec")"
grep -q "PRIVATE KEY" "$rec" && fail "the key itself was recorded"
: >"$NGINX_LOG"
out=$(ctl --json prefetch images/linux) || fail "unmounted https prefetch with the recorded TLS files: $out"
[ "$(nginx_count GET /images/linux 200)" -eq 1 ] || fail "nginx did not serve images/linux to the client certificate"
[ "$(cache_entry images/linux | cut -d' ' -f2)" = "$(stat -c %s "$T/up/images/linux")" ] \
  || fail "images/linux not cached over https"
# An explicit --ca-file wins: the system store does not know the test CA.
rc=0
out=$(ctl prefetch --ca-file /etc/ssl/certs/ca-certificates.crt grub 2>&1) || rc=$?
[ $rc -ne 0 ] || fail "--ca-file with another CA was ignored: $out"
[ "$(cache_entry grub/grub.cfg)" = absent ] || fail "grub/grub.cfg cached despite the wrong CA"
note "https: key paths recorded (mode 0600), client certificate used unmounted; --ca-file wins (exit $rc)"
check_daemon_log
pass "unmounted prefetch with the mount's proxy, CA and client certificate; flags win"
