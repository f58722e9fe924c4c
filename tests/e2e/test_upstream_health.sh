#!/usr/bin/env bash
# Upstream health. Requests that time out (the fault server reads them and
# never answers) mark upstream down after down_after of them: cached files are
# then served without asking upstream (no request reaches it but the probes),
# misses fail at once with EIO, and the root's user.netbootfs.upstream says
# "down". When upstream answers again a probe flips it "up" and new files are
# fetched without a remount. Then the server is killed and restarted on the
# same port: the same, with connections refused.
# (test_upstream_down.sh covers stale-if-error and fast failures in general.)
source "$(dirname "$0")/lib.sh"
mkdir -p "$T/up/images"
head -c 1000000 /dev/urandom >"$T/up/images/linux"
head -c 50000 /dev/urandom >"$T/up/images/later"
head -c 60000 /dev/urandom >"$T/up/images/after"
start_fault_server "$T/up"
start_mount "$FAULT_URL" "$T/mnt" \
  "revalidate=0,connect_timeout=2,request_timeout=2,low_speed_time=2,down_after=3,probe_interval=1"
health() { with_timeout 5 getfattr --only-values -n user.netbootfs.upstream "$T/mnt" 2>/dev/null; }
is_up() { [ "$(health)" = up ]; }
with_timeout 20 cmp "$T/up/images/linux" "$T/mnt/images/linux" || fail "first read"
stat "$T/mnt/images/later" >/dev/null || fail "stat of a listed file"
[ "$(health)" = up ] || fail "user.netbootfs.upstream is '$(health)' at start, want up"
with_timeout 5 getfattr -d -m - "$T/mnt" 2>/dev/null | grep -q 'user.netbootfs.upstream=' \
  || fail "listxattr of the root does not name user.netbootfs.upstream"

requests() {  # requests() [EXCEPT_METHOD_PATH]: how many requests the fault server logged
  fault_log | python3 -c '
import json, sys
print(sum(1 for e in json.load(sys.stdin) if e["method"] + " " + e["path"] != sys.argv[1]))' "${1:-}"
}

# 1. Every request hangs: revalidations time out and serve the cache.
fault '{"path":"*","mode":"stall_headers"}'
wait_until 30 bash -c "cmp '$T/up/images/linux' '$T/mnt/images/linux' && [ \"\$(getfattr --only-values -n user.netbootfs.upstream '$T/mnt' 2>/dev/null)\" = down ]" \
  || fail "upstream not marked down after timeouts (health: $(health))"
grep -q 'is down after 3 connection failures' "$T/daemon.log" || fail "no 'down' warning logged"
curl -sf --max-time 5 -X DELETE "http://127.0.0.1:$FAULT_PORT/__log" >/dev/null || fail "log reset"
read -r err ms < <(timed_read "$T/mnt/images/linux")
[ "$err" = OK ] && [ "$ms" -lt 1500 ] || fail "cached read while down: $err in ${ms} ms (a request would hang 2 s)"
read -r err2 ms2 < <(timed_read "$T/mnt/images/later")
[ "$err2" = EIO ] && [ "$ms2" -lt 1500 ] || fail "uncached read while down: $err2 in ${ms2} ms, want EIO at once"
for _ in 1 2 3; do cmp "$T/up/images/linux" "$T/mnt/images/linux" || fail "cached read while down"; done
others=$(requests "HEAD /")
[ "$others" -eq 0 ] || fail "$others requests other than probes reached upstream while down: $(fault_log)"
probes=$(fault_log | python3 -c 'import json,sys; print(sum(1 for e in json.load(sys.stdin) if e["method"] == "HEAD" and e["path"] == "/"))')
note "down: cached read ${ms} ms, miss $err2 in ${ms2} ms, no request but $probes probe(s)"

# 2. Upstream answers again: a probe flips it up, the miss is fetched.
curl -sf --max-time 5 -X DELETE "http://127.0.0.1:$FAULT_PORT/__fault" >/dev/null || fail "clear faults"
wait_until 15 is_up || fail "still down 15 s after upstream came back"
grep -q 'is up again' "$T/daemon.log" || fail "no 'up again' logged"
with_timeout 20 cmp "$T/up/images/later" "$T/mnt/images/later" || fail "a new file is not fetched after recovery"

# 3. Killed and restarted on the same port: refused connections, then back.
port=$FAULT_PORT
ours "$FAULT_PID" && kill "$FAULT_PID"
wait_until 10 dead "$FAULT_PID" || fail "the fault server did not exit"
wait_until 20 bash -c "cmp '$T/up/images/linux' '$T/mnt/images/linux' && [ \"\$(getfattr --only-values -n user.netbootfs.upstream '$T/mnt' 2>/dev/null)\" = down ]" \
  || fail "upstream not marked down with connections refused (health: $(health))"
read -r err3 ms3 < <(timed_read "$T/mnt/images/after")
[ "$err3" = EIO ] && [ "$ms3" -lt 1500 ] || fail "uncached read with upstream dead: $err3 in ${ms3} ms"
python3 "$FAULT_SERVER" --root "$T/up" --bind 127.0.0.1 --port "$port" >"$T/fault2.log" 2>&1 &
FAULT_PID=$!
track_pid "$FAULT_PID"
start=$(now_ms)
wait_until 15 is_up || fail "still down 15 s after the restart: $(tail -3 "$T/fault2.log")"
back_ms=$(($(now_ms) - start))
with_timeout 20 cmp "$T/up/images/after" "$T/mnt/images/after" || fail "no fetch after the restart without a remount"

check_daemon_log 'download failed|upstream GET failed|images/(later|after)'
pass "down after timeouts; cached ${ms} ms, miss EIO ${ms2} ms, $probes probe(s) only; up again after restart in ${back_ms} ms"
