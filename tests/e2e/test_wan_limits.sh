#!/usr/bin/env bash
# Mount-wide WAN limits against nginx: with max_downloads=1 a second cold
# file waits in the queue (netbootfs_upstream_queued_downloads shows it)
# while a directory listing and a HEAD-less lookup are answered meanwhile
# (they are never queued behind bodies); with max_rate the two downloads
# together take at least 0.8 x their bytes / rate (only the lower bound is
# asserted); both files read byte-identical. max_downloads comes from the
# config file, max_rate from the command line.
source "$(dirname "$0")/lib.sh"
K=1024
RATE=$((512 * K))
mkdir -p "$T/up/img" "$T/up/other"
for f in a b; do head -c $((1536 * K)) /dev/urandom >"$T/up/img/$f"; done
echo menu >"$T/up/other/default"
chmod -R a+rX "$T/up"
start_nginx "$T/up"
port=$(free_port tcp)
printf 'max_downloads = 1\nmax_rate = "64M"  # the command line wins\n' >"$T/netbootfs.toml"
start_mount "$NGINX_URL" "$T/mnt" "max_rate=512K,config=$T/netbootfs.toml,metrics=127.0.0.1:$port"
gauge() {
  curl -sf --max-time 5 "http://127.0.0.1:$port/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}
queued() { gauge netbootfs_upstream_queued_downloads; }
reserved() { gauge netbootfs_cache_reserved_bytes; }
[ "$(queued)" = 0 ] || fail "something is queued before any read: $(queued)"

t0=$(date +%s.%N)
(with_timeout 60 cmp "$T/up/img/a" "$T/mnt/img/a" && touch "$T/a.ok") &
ra=$!
(with_timeout 60 cmp "$T/up/img/b" "$T/mnt/img/b" && touch "$T/b.ok") &
rb=$!
wait_until 10 eval '[ "$(queued)" = 1 ]' || fail "max_downloads=1: the second download was not queued (queued=$(queued))"
# A listing (and the lookup under it) while a body transfers and one waits.
with_timeout 10 ls "$T/mnt/other" >"$T/ls.out" || fail "ls of another directory failed while the queue was full"
grep -qx default "$T/ls.out" || fail "ls of other/: $(cat "$T/ls.out")"
[ "$(queued)" = 1 ] || fail "the listing was answered only after the queue drained (queued=$(queued))"
# The transferring body announced its size; the queued one has not yet.
wait_until 5 eval '[ "$(reserved)" = $((1536 * K)) ]' || fail "reserved bytes with one body in flight: $(reserved)"
wait "$ra" || true
wait "$rb" || true
t1=$(date +%s.%N)
[ -e "$T/a.ok" ] || fail "img/a read other bytes"
[ -e "$T/b.ok" ] || fail "img/b read other bytes"
took_ms=$(echo "($t1 - $t0) * 1000 / 1" | bc)
floor_ms=$((8 * 2 * 1536 * K * 1000 / RATE / 10))  # 0.8 x 3 MiB at 512 KiB/s
note "two 1.5 MiB downloads at max_rate=512K took ${took_ms} ms (lower bound ${floor_ms} ms)"
[ "$took_ms" -ge "$floor_ms" ] || fail "max_rate=512K: 3 MiB came in ${took_ms} ms, under ${floor_ms} ms"
[ "$(queued)" = 0 ] || fail "the queue did not drain: $(queued)"
wait_until 5 eval '[ "$(reserved)" = 0 ]' || fail "reservations left after both downloads: $(reserved)"
[ "$(grep -cE '^GET /img/[ab] ' "$NGINX_LOG")" = 2 ] || fail "expected one GET per file: $(grep '^GET /img/' "$NGINX_LOG")"
check_daemon_log
stop_mount "$T/mnt"
pass "max_downloads=1 queued the second body and not the listing; max_rate held 3 MiB to ${took_ms} ms"
