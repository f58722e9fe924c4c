#!/usr/bin/env bash
# Prometheus metrics from a real mount: scraped over HTTP on loopback and
# written to a textfile; the counters a scenario must move have moved, by
# the amounts nginx's access log and the files themselves say.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=3 make_tree "$T/up"
start_nginx "$T/up"
port=$(free_port tcp)
start_mount "$NGINX_URL" "$T/mnt" "metrics=127.0.0.1:$port,metrics_file=$T/netbootfs.prom,metrics_interval=0.2,revalidate=0"

scrape() { curl -sf --max-time 5 "http://127.0.0.1:$port/metrics"; }
# metric NAME [LABELS]: the value of one series in the last scrape ($T/m).
metric() {
  local sel=$1
  awk -v s="$sel" '$1 == s { print $2; found = 1 } END { if (!found) print "missing" }' "$T/m"
}

scrape >"$T/m" || fail "no metrics on 127.0.0.1:$port"
[ "$(metric netbootfs_upstream_up)" = 1 ] || fail "upstream_up is $(metric netbootfs_upstream_up)"
grep -q '^# TYPE netbootfs_download_seconds histogram$' "$T/m" || fail "no download histogram"

files=(pxelinux.0 ldlinux.c32 images/linux images/initrd)
bytes=0
for f in "${files[@]}"; do
  with_timeout 30 cmp "$T/up/$f" "$T/mnt/$f" || fail "$f differs"
  bytes=$((bytes + $(stat -c %s "$T/up/$f")))
done
# Warm and revalidate=0: every open asks upstream once more (a 304).
for f in "${files[@]}"; do with_timeout 30 cat "$T/mnt/$f" >/dev/null; done
scrape >"$T/m"

gets=$(nginx_count GET '/(pxelinux\.0|ldlinux\.c32|images/linux|images/initrd)' 200)
[ "$gets" = 4 ] || fail "nginx sent $gets bodies, expected 4"
[ "$(metric 'netbootfs_opens_total{outcome="miss"}')" = 4 ] || fail "opens miss = $(metric 'netbootfs_opens_total{outcome="miss"}')"
not_modified=$(nginx_count GET '/(pxelinux\.0|ldlinux\.c32|images/linux|images/initrd)' 304)
[ "$(metric 'netbootfs_revalidations_total{outcome="not_modified"}')" = "$not_modified" ] \
  || fail "revalidations not_modified = $(metric 'netbootfs_revalidations_total{outcome="not_modified"}'), nginx answered $not_modified 304s"
[ "$not_modified" -ge 4 ] || fail "only $not_modified revalidations reached nginx"
[ "$(metric 'netbootfs_upstream_requests_total{kind="get"}')" = $((gets + not_modified)) ] \
  || fail "upstream GETs = $(metric 'netbootfs_upstream_requests_total{kind="get"}'), nginx saw $((gets + not_modified))"
[ "$(metric netbootfs_upstream_bytes_total)" = "$bytes" ] || fail "upstream bytes = $(metric netbootfs_upstream_bytes_total), files are $bytes"
served=$(metric netbootfs_served_bytes_total)
[ "$served" -ge "$bytes" ] || fail "served bytes $served < $bytes read"
[ "$(metric 'netbootfs_fuse_requests_total{op="open"}')" -ge 8 ] || fail "FUSE opens = $(metric 'netbootfs_fuse_requests_total{op="open"}')"
[ "$(metric netbootfs_download_seconds_count)" = 4 ] || fail "download histogram count = $(metric netbootfs_download_seconds_count)"
# Cache totals are computed at most every 100 ms (shared with the textfile
# writer): allow one refresh.
totals_ok() {
  scrape >"$T/m2" || return 1
  grep -qx "netbootfs_cache_bytes $bytes" "$T/m2" && grep -qx "netbootfs_cache_objects 4" "$T/m2"
}
wait_until 5 totals_ok || fail "cache totals: $(grep netbootfs_cache "$T/m2"), expected $bytes bytes in 4 blobs"

# The textfile for node_exporter: rewritten atomically, same families.
wait_until 5 grep -q 'netbootfs_cache_objects 4' "$T/netbootfs.prom" || fail "metrics_file not updated: $(head -5 "$T/netbootfs.prom" 2>&1)"
[ "$(grep -c '^# TYPE' "$T/netbootfs.prom")" = "$(grep -c '^# TYPE' "$T/m")" ] || fail "metrics_file has other families"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/other")
[ "$code" = 404 ] || fail "GET /other answered $code"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST "http://127.0.0.1:$port/metrics")
[ "$code" = 405 ] || fail "POST /metrics answered $code"
ss -Hltn "sport = :$port" | grep -q "127.0.0.1:$port" || fail "the listener is not on loopback: $(ss -Hltn "sport = :$port")"
stop_mount "$T/mnt"
check_daemon_log
pass "metrics over HTTP and textfile: opens, revalidations, upstream requests and bytes, served bytes, downloads and cache totals match what happened"
