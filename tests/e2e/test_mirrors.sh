#!/usr/bin/env bash
# Upstream mirrors. nginx is the main URL, the fault server a mirror with the
# same tree (mirror=). With nginx stopped, files not yet cached (and a
# directory never listed) come byte-identical from the mirror, and upstream
# stays "up". With nginx back, once its back-off (mirror_backoff=2) has
# expired, new files come from nginx again and the mirror is not asked.
source "$(dirname "$0")/lib.sh"
mkdir -p "$T/up/images" "$T/up/later"
for f in a b c d e; do head -c $((100000 + RANDOM * 10)) /dev/urandom >"$T/up/images/$f"; done
printf 'in a directory never listed\n' >"$T/up/later/readme"
chmod -R a+rX "$T/up"
start_nginx "$T/up"
start_fault_server "$T/up"
start_mount "$NGINX_URL" "$T/mnt" \
  "mirror=$FAULT_URL,mirror_backoff=2,connect_timeout=2,request_timeout=3,revalidate=0,retry_timeout=5"
health() { with_timeout 5 getfattr --only-values -n user.netbootfs.upstream "$T/mnt" 2>/dev/null; }
mirror_gets() {  # mirror_gets PATH: 200 GETs of PATH the mirror logged
  fault_log | python3 -c '
import json, sys
print(sum(1 for e in json.load(sys.stdin)
          if e["method"] == "GET" and e["path"] == sys.argv[1] and e["status"] == 200))' "$1"
}

# 1. Both up: the main URL serves, the mirror is not asked.
with_timeout 20 cmp "$T/up/images/a" "$T/mnt/images/a" || fail "first read"
[ "$(nginx_count GET /images/a 200)" -eq 1 ] || fail "images/a not fetched from nginx: $(cat "$NGINX_LOG")"
[ "$(fault_log)" = "[]" ] || fail "the mirror was asked while the main URL works: $(fault_log)"

# 2. nginx stopped: misses, and a listing, come from the mirror.
stop_nginx
for f in b c; do
  with_timeout 30 cmp "$T/up/images/$f" "$T/mnt/images/$f" || fail "images/$f through the mirror"
  [ "$(mirror_gets /images/$f)" -eq 1 ] || fail "images/$f not from the mirror: $(fault_log)"
  [ "$(health)" = up ] || fail "upstream is '$(health)' while the mirror works"
done
with_timeout 30 cmp "$T/up/later/readme" "$T/mnt/later/readme" || fail "later/readme through the mirror"
fault_log | grep -q '"path": "/later/"' || fault_log | grep -q '"path":"/later/"' \
  || fail "the listing of later/ did not come from the mirror: $(fault_log)"
with_timeout 20 cmp "$T/up/images/a" "$T/mnt/images/a" || fail "cached images/a while nginx is down"
[ "$(health)" = up ] || fail "upstream is '$(health)' while the mirror works"
grep -q "origin $NGINX_URL: .*using the next origin" "$T/daemon.log" || fail "no back-off logged"

# 3. nginx back: after the back-off, new files come from nginx again.
: >"$NGINX_LOG"
restart_nginx
sleep 3  # > mirror_backoff: the main URL's back-off has expired
with_timeout 30 cmp "$T/up/images/d" "$T/mnt/images/d" || fail "images/d after nginx came back"
[ "$(nginx_count GET /images/d 200)" -eq 1 ] || fail "images/d not from nginx: $(cat "$NGINX_LOG")"
[ "$(mirror_gets /images/d)" -eq 0 ] || fail "images/d came from the mirror: $(fault_log)"
with_timeout 30 cmp "$T/up/images/e" "$T/mnt/images/e" || fail "images/e"
[ "$(nginx_count GET /images/e 200)" -eq 1 ] || fail "images/e not from nginx: $(cat "$NGINX_LOG")"
[ "$(mirror_gets /images/e)" -eq 0 ] || fail "images/e came from the mirror"
[ "$(health)" = up ] || fail "upstream is '$(health)' at the end"
grep -q "origin $NGINX_URL answers again" "$T/daemon.log" || fail "the return to nginx is not logged"

stop_mount "$T/mnt"

# 4. The mirror list of the config file (config=, key mirrors) works the same.
printf 'mirrors = ["%s"]\n' "$FAULT_URL" >"$T/netbootfs.toml"
printf 'from the config file mirror\n' >"$T/up/images/f"
chmod a+r "$T/up/images/f"
stop_nginx
CACHE_DIR=$T/cache2 start_mount "$NGINX_URL" "$T/mnt2" \
  "config=$T/netbootfs.toml,connect_timeout=2,request_timeout=3,retry_timeout=5"
with_timeout 30 cmp "$T/up/images/f" "$T/mnt2/images/f" || fail "images/f through the config file's mirror"
[ "$(mirror_gets /images/f)" -eq 1 ] || fail "images/f not from the config file's mirror: $(fault_log)"
stop_mount "$T/mnt2"
printf 'mirrors = ["ftp://nope/"]\n' >"$T/bad.toml"
mkdir -p "$T/mnt3"
"$NBFS" "$NGINX_URL" "$T/mnt3" -f -o "config=$T/bad.toml,cache_dir=$T/cache3" >"$T/bad.out" 2>&1 \
  && fail "a config file with an ftp mirror was accepted"
grep -q "bad.toml: mirrors\[0\]: bad URL 'ftp://nope/'" "$T/bad.out" || fail "bad mirror in config: $(cat "$T/bad.out")"

check_daemon_log
pass "nginx down: 2 files and a listing byte-identical from the mirror, upstream up; nginx back: new files from nginx; the config file's mirror list works"
