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
wait_until 10 bash -c "[ \$(curl -s http://127.0.0.1:$FAULT_PORT/__log | grep -o '\"path\": \"/slow/f[0-9]*\", \"status\": 200' | wc -l) -ge 15 ]" \
  || fail "the stalled downloads did not all reach upstream: $(fault_log)"
sleep 1
# Without the page cache the read has to reach the daemon.
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || note "cannot drop the page cache: the read below may not reach the daemon"
start=$(now_ms)
timeout 2 stat "$T/mnt/cached" >/dev/null || fail "stat blocked behind parked requests"
timeout 2 cmp "$T/up/cached" "$T/mnt/cached" || fail "reading a cached file blocked behind parked requests"
timeout 2 ls -l "$T/mnt" >/dev/null || fail "ls -l of the root blocked behind parked requests"
ms=$(($(now_ms) - start))
[ "$ms" -lt 2000 ] || fail "stat + full read + ls took ${ms} ms with 30 requests parked"
n=0
for p in "${bg[@]}"; do alive "$p" && n=$((n + 1)); done
[ "$n" -eq 30 ] || fail "only $n of the 30 parked requests were still parked during the check"
note "stat + full read + ls took ${ms} ms with 30 requests parked"
# An interrupted open is answered at once (FUSE_INTERRUPT), not after the stall.
# (Page-cache reads wait killably in the kernel, so an open is what a signal
# can interrupt.)
python3 - "$T/mnt/stall/f1" <<'PY' &
import signal, sys
class Interrupted(Exception):
    pass
def on_signal(*_):
    raise Interrupted()
signal.signal(signal.SIGUSR1, on_signal)
try:
    open(sys.argv[1], "rb")
except Interrupted:
    sys.exit(0)
sys.exit(1)
PY
intr=$!
sleep 1
alive "$intr" || fail "the open to interrupt did not park"
kill -USR1 "$intr"
wait_until 3 dead $intr || fail "an interrupted parked open was not answered"
wait "$intr" || fail "the interrupted open did not end with the signal"
# Stopping the daemon answers every parked request and unmounts cleanly.
kill -TERM "$DAEMON_PID"
wait_until 10 dead $DAEMON_PID || fail "the daemon did not stop with requests parked"
for p in "${bg[@]}"; do
  wait_until 5 dead $p || fail "a parked request was left unanswered at shutdown"
done
mounted "$T/mnt" && fail "the mount is still there after SIGTERM"
grep -qE "answered [0-9]+ (waiting|pending) requests" "$T/daemon.log" || fail "shutdown did not answer the parked requests"
pass "cached file served in ${ms} ms beside 30 parked requests; interrupt and shutdown answer them"
