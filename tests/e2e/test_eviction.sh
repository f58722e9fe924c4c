#!/usr/bin/env bash
# A bounded cache (max_cache_size=4M, eviction from 90% down to 80%) against
# nginx: reading well past the limit keeps the cache's blobs under it; the
# least recently read file goes first (one re-read before the fill survives
# the first eviction, one left unread does not); a file held open stays
# readable byte-identical and is not evicted while open; a pinned file
# survives; an evicted file reads again byte-identical (a second GET); a file
# larger than the whole limit is served and dropped once closed; gc on a
# mounted cache runs the mount's own limit (and refuses another one), on an
# unmounted one it enforces the limit it is given.
source "$(dirname "$0")/lib.sh"
K=1024
M=$((1024 * K))
LIMIT=$((4 * M))
mkdir -p "$T/up/img" "$T/up/boot"
head -c $((512 * K)) /dev/urandom >"$T/up/boot/pxelinux.0"
for f in old recent held; do head -c $M /dev/urandom >"$T/up/img/$f"; done
for i in $(seq 0 11); do head -c $((512 * K)) /dev/urandom >"$T/up/img/fill$i"; done
head -c $((6 * M)) /dev/urandom >"$T/up/img/big"
chmod -R a+rX "$T/up"
start_nginx "$T/up"
port=$(free_port)
start_mount "$NGINX_URL" "$T/mnt" "revalidate=600,max_cache_size=4M,pin=boot/*,metrics=127.0.0.1:$port"
metric() {  # metric NAME: its value in a scrape
  curl -sf --max-time 5 "http://127.0.0.1:$port/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}
grep -q "cache limit 4.0 MiB (4194304 bytes), holding 0 bytes; eviction from 90% down to 80%, 1 pins" \
  "$T/daemon.log" || fail "the limit is not logged as configured"

read_ok() { with_timeout 30 cmp "$T/up/$1" "$T/mnt/$1" || fail "reading $1 gave other bytes"; }
cached() { [ "$(cache_entry "$1")" != absent ]; }
cache_bytes() {
  "$NBCTL" --cache-dir "$T/cache" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])'
}
# pread_cmp FD FILE: the whole of FILE read through the open descriptor FD.
pread_cmp() {
  python3 - "$1" "$T/up/$2" <<'PY' || fail "fd $1 does not read $2 byte-identical"
import os, sys
fd, want = int(sys.argv[1]), open(sys.argv[2], "rb").read()
got = b""
while len(got) < len(want) + 1:
    b = os.pread(fd, 1 << 20, len(got))
    if not b:
        break
    got += b
sys.exit(0 if got == want else 1)
PY
}

read_ok boot/pxelinux.0
read_ok img/old
read_ok img/recent
exec 3<"$T/mnt/img/held"
pread_cmp 3 img/held
sleep 1.1  # access times are kept in seconds
read_ok img/recent  # read again: more recent than old
sleep 1.1
# Counted: pxelinux.0 0.5M + old 1M + recent 1M (held is open: not counted).
# fill0..2 take it past 90% (3.6M): old, the least recently read, goes first.
for i in 0 1 2; do read_ok "img/fill$i"; done
cached img/old && fail "the least recently read file was not evicted first"
cached img/recent || fail "the file read again before the fill was evicted before an older one"
for i in $(seq 3 11); do
  read_ok "img/fill$i"
  b=$(cache_bytes)
  # Everything but the open file is within the limit.
  [ "$b" -le $((LIMIT + M)) ] || fail "the cache holds $b bytes after fill$i (limit $LIMIT + 1M open)"
done
note "cache after reading $((3 + 6 + 12 / 2))M through a 4M limit: $(cache_bytes) bytes"
cached boot/pxelinux.0 || fail "the pinned file was evicted"
cached img/held || fail "the open file was evicted"
[ "$(metric netbootfs_cache_limit_bytes)" = "$LIMIT" ] || fail "cache limit metric: $(metric netbootfs_cache_limit_bytes)"
ev=$(metric netbootfs_evictions_total)
evb=$(metric netbootfs_evicted_bytes_total)
[ "${ev:-0}" -ge 5 ] || fail "netbootfs_evictions_total is '$ev' after evicting at least 5 files"
[ "${evb:-0}" -ge $((5 * 512 * K)) ] || fail "netbootfs_evicted_bytes_total is '$evb'"
cb=$(metric netbootfs_cache_bytes)
[ "${cb:-0}" -gt 0 ] && [ "$cb" -le $((LIMIT + M)) ] || fail "netbootfs_cache_bytes is '$cb'"
note "evictions: $ev blobs, $evb bytes"
pread_cmp 3 img/held

# An evicted file is downloaded again, byte-identical.
[ "$(nginx_count GET /img/old 200)" -eq 1 ] || fail "old was fetched $(nginx_count GET /img/old 200) times before"
read_ok img/old
[ "$(nginx_count GET /img/old 200)" -eq 2 ] || fail "the evicted file was not downloaded again"

# Larger than the whole limit: served while open, dropped after the close.
exec 4<"$T/mnt/img/big"
pread_cmp 4 img/big
wait_until 10 cached img/big || fail "the big file was not published"
pread_cmp 4 img/big
exec 4<&-
wait_until 10 eval '! cached img/big' || fail "the file larger than the limit stayed after its close"
exec 3<&-
wait_until 10 eval '[ "$(cache_bytes)" -le $LIMIT ]' || fail "the cache holds $(cache_bytes) bytes after the closes"

# status: the live mount's limit, pins and evictions.
"$NBCTL" --cache-dir "$T/cache" status >"$T/status.txt" || fail "status failed"
grep -qE '^limit: +4\.0 MiB \(4194304 bytes\) \([1-9][0-9]* evictions\)$' "$T/status.txt" || fail "status: $(cat "$T/status.txt")"
"$NBCTL" --cache-dir "$T/cache" --json status | python3 -c '
import json, sys
m = json.load(sys.stdin)["mount"]
assert m["cache_limit"] == 4194304 and m["pins"] == ["boot/*"] and m["evictions"] > 0, m' \
  || fail "status --json: $("$NBCTL" --cache-dir "$T/cache" --json status)"
# ls: the PINNED column follows the running mount's pins, or --pin.
"$NBCTL" --cache-dir "$T/cache" --json ls >"$T/ls.json" || fail "ls --json failed"
python3 - "$T/ls.json" <<'PY' || fail "ls --json pinned: $(cat "$T/ls.json")"
import json, sys
e = {x["path"]: x["pinned"] for x in json.load(open(sys.argv[1]))}
assert e["boot/pxelinux.0"] is True, e
assert any(p.startswith("img/") for p in e) and not any(v for p, v in e.items() if p.startswith("img/")), e
PY
"$NBCTL" --cache-dir "$T/cache" ls -l --pin 'img/*' >"$T/ls.txt" || fail "ls -l --pin failed"
grep -qE '^boot/pxelinux\.0 .* no$' "$T/ls.txt" || fail "ls -l --pin img/*: boot/pxelinux.0 shown pinned: $(cat "$T/ls.txt")"
grep -qE '^img/.* yes$' "$T/ls.txt" || fail "ls -l --pin img/*: no img/ file pinned: $(cat "$T/ls.txt")"
# gc while mounted: through the control socket, with the mount's limit only.
"$NBCTL" --cache-dir "$T/cache" gc --max-cache-size 1M >"$T/gc.out" 2>&1 && fail "gc with another limit on a mounted cache succeeded"
grep -q "enforces its own max_cache_size" "$T/gc.out" || fail "gc --max-cache-size while mounted said: $(cat "$T/gc.out")"
"$NBCTL" --cache-dir "$T/cache" --json gc >"$T/gc.json" 2>&1 || fail "gc through the mount failed: $(cat "$T/gc.json")"
python3 - "$T/gc.json" "$LIMIT" <<'PY' || fail "gc through the mount: $(cat "$T/gc.json")"
import json, sys
r = json.load(open(sys.argv[1]))
limit = int(sys.argv[2])
assert r["limit"] == limit, r
# Down to the low watermark (80%) of the mount's limit, whatever it held.
assert r["bytes"] <= limit * 80 // 100, r
PY
wait_until 5 grep -q "gc: evicted" "$T/daemon.log" || fail "the mount did not log the gc"
cached boot/pxelinux.0 || fail "gc through the mount evicted the pinned file"
check_daemon_log
stop_mount "$T/mnt"
"$NBCTL" --cache-dir "$T/cache" gc --max-cache-size 1M --pin 'boot/*' --json >"$T/gc.json" ||
  fail "gc failed: $(cat "$T/gc.json")"
python3 - "$T/gc.json" <<'PY' || fail "gc: $(cat "$T/gc.json")"
import json, sys
g = json.load(open(sys.argv[1]))
assert g["limit"] == 1 << 20, g
assert g["evicted_blobs"] > 0 and g["evicted_bytes"] > 0, g
assert g["bytes"] <= (1 << 20) * 8 // 10 or g["bytes"] == 512 * 1024, g  # what stays: the pin
PY
cached boot/pxelinux.0 || fail "gc evicted the pinned file"
"$NBCTL" --cache-dir "$T/cache" verify >/dev/null || fail "verify after gc: $("$NBCTL" --cache-dir "$T/cache" verify 2>&1)"
"$NBCTL" --cache-dir "$T/cache" gc --max-cache-size 10Q >"$T/gc.out" 2>&1 && fail "gc took a bad size"
grep -q "bad size '10Q'" "$T/gc.out" || fail "gc with a bad size said: $(cat "$T/gc.out")"
pass "4M limit held while reading 15M; LRU order, pin, open file, oversize file, re-download, gc"
