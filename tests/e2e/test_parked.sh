#!/usr/bin/env bash
# 15 opens and 15 reads parked on a stalled upstream do not hold up a stat and a
# full read of a cached file.
source "$(dirname "$0")/lib.sh"
mkdir -p "$T/up/stall" "$T/up/slow"
for i in $(seq 15); do
  printf 'x%.0s' $(seq 100) >"$T/up/stall/f$i"
  head -c 2000000 /dev/urandom >"$T/up/slow/f$i"
done
head -c 3000000 /dev/urandom >"$T/up/cached"
start_fault_server "$T/up"
start_mount "$FAULT_URL" "$T/mnt" "read_stall_timeout=60,low_speed_time=60"
cmp "$T/up/cached" "$T/mnt/cached" || fail "warm-up read differs"
ls "$T/mnt/stall" "$T/mnt/slow" >/dev/null
for i in $(seq 15); do
  fault "{\"path\":\"/stall/f$i\",\"mode\":\"stall_headers\"}"
  fault "{\"path\":\"/slow/f$i\",\"mode\":\"stall\",\"after\":65536}"
done
bg=()
for i in $(seq 15); do
  (cat "$T/mnt/stall/f$i" >/dev/null 2>&1 || true) &
  bg+=($!)
  (cat "$T/mnt/slow/f$i" >/dev/null 2>&1 || true) &
  bg+=($!)
done
wait_until 10 bash -c "[ \$(curl -s http://127.0.0.1:$FAULT_PORT/__log | grep -o '\"status\": 0' | wc -l) -ge 15 ]" \
  || fail "the stalled opens did not reach upstream"
sleep 1
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
start=$(date +%s%N)
timeout 2 stat "$T/mnt/cached" >/dev/null || fail "stat blocked behind parked requests"
timeout 2 cmp "$T/up/cached" "$T/mnt/cached" || fail "reading a cached file blocked behind parked requests"
ms=$((($(date +%s%N) - start) / 1000000))
for p in "${bg[@]}"; do alive "$p" || fail "a parked request finished early"; done
note "stat + full read took ${ms} ms with 30 requests parked"
kill "${bg[@]}" 2>/dev/null || true
pass "cached file served in ${ms} ms beside 30 parked requests"
