#!/usr/bin/env bash
# A fleet behind an HTTP cache: a real squid on 127.0.0.1 between two mounts
# and nginx. Files read byte-identical through it, and with collapsed
# forwarding and a maximum_object_size that fits initrds, two mounts' herds of
# the same cold file cost nginx one GET.
source "$(dirname "$0")/lib.sh"
command -v squid >/dev/null || fail "squid is not installed"
KERNEL_MB=1 INITRD_MB=${SQUID_INITRD_MB:-40} make_tree "$T/up"
start_nginx "$T/up"
SQUID_PORT=$(free_port tcp)
mkdir -p "$T/squid"
chmod 777 "$T/squid"
cat >"$T/squid/squid.conf" <<EOF2
http_port 127.0.0.1:$SQUID_PORT
pid_filename $T/squid/squid.pid
access_log $T/squid/access.log
cache_log $T/squid/cache.log
cache_store_log none
coredump_dir $T/squid
# Memory only; squid's default maximum_object_size (4 MB) would never cache an initrd.
cache_mem 256 MB
maximum_object_size_in_memory 200 MB
maximum_object_size 200 MB
# One upstream fetch for many simultaneous misses of the same URL.
collapsed_forwarding on
# A minute of freshness: without it a just-written file is stale at once and
# squid revalidates its copy for every collapsed client. It also bounds how
# long a change upstream takes to reach the proxies behind squid.
refresh_pattern . 1 20% 1
acl localnet src 127.0.0.1/32
http_access allow localnet
http_access deny all
EOF2
squid -N -f "$T/squid/squid.conf" >"$T/squid/stdout.log" 2>&1 &
track_pid "$!"
wait_until 20 curl -sf -x "http://127.0.0.1:$SQUID_PORT" -o /dev/null "${NGINX_URL}pxelinux.0" \
  || fail "squid did not start: $(tail -5 "$T/squid/cache.log" 2>/dev/null)"
: >"$T/nginx/logs/access.log"
proxy="proxy=http://127.0.0.1:$SQUID_PORT"
CACHE_DIR=$T/c1 start_mount "$NGINX_URL" "$T/m1" "$proxy"
pid1=$DAEMON_PID
CACHE_DIR=$T/c2 start_mount "$NGINX_URL" "$T/m2" "$proxy"
cmp "$T/up/pxelinux.cfg/default" "$T/m1/pxelinux.cfg/default" || fail "read through squid differs"
want=$(md5 "$T/up/images/initrd")
pids=()
for m in m1 m2; do
  for i in $(seq 20); do
    (md5sum "$T/$m/images/initrd" | cut -d' ' -f1 >"$T/$m.r$i") &
    pids+=($!)
  done
done
for p in "${pids[@]}"; do wait "$p" || fail "a reader failed"; done
for m in m1 m2; do
  for i in $(seq 20); do [ "$(cat "$T/$m.r$i")" = "$want" ] || fail "$m reader $i got other bytes"; done
done
# One body transfer from nginx. Collapsed requests that reach squid while the
# object is still arriving may be revalidated (a 304 from nginx, no body).
bodies=$(nginx_count GET /images/initrd 200)
gets=$(nginx_count GET /images/initrd)
[ "$bodies" -eq 1 ] || fail "two mounts' herds through squid made nginx send the initrd $bodies times"
[ "$gets" -le 2 ] || fail "$gets requests for the initrd reached nginx"
grep -q "images/initrd" "$T/squid/access.log" || fail "the requests did not go through squid"
check_daemon_log
pass "byte-identical through squid; 2 mounts x 20 readers = $bodies body transfer at nginx ($gets requests)"
