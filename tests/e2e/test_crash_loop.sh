#!/usr/bin/env bash
# Seeded random kill -9 rounds during concurrent downloads. Each round: readers
# of random files (small ones, and slow ones the fault server drips so that
# downloads are in flight), a random 0-400 ms, kill -9 of the daemon, the
# readers reaped (bounded), a remount (the new daemon detaches the dead mount
# and recovers the cache), then: a read that succeeded before the kill
# returned upstream's bytes, recovery left tmp/ empty, every index entry
# carries upstream's sha256 for its path, verify is clean, and random files
# read back byte-identical. SEED (default $RANDOM) is printed; ROUNDS (30).
source "$(dirname "$0")/lib.sh"
SEED=${SEED:-$RANDOM}
ROUNDS=${ROUNDS:-30}
echo "crash_loop: SEED=$SEED ROUNDS=$ROUNDS (rerun with SEED=$SEED)"
RANDOM=$SEED

mkdir -p "$T/up/s" "$T/up/slow"
small=() slow=()
for i in $(seq 1 40); do
  head -c $((500 + (RANDOM % 40) * 1000)) /dev/urandom >"$T/up/s/f$i"
  small+=("s/f$i")
done
for i in 1 2 3 4; do
  head -c $((300000 + i * 50000)) /dev/urandom >"$T/up/slow/b$i"
  slow+=("slow/b$i")
done
chmod -R a+rX "$T/up"
(cd "$T/up" && find . -type f -printf '%P\n' | sort | while read -r f; do
   echo "$f $(sha256sum "$f" | cut -d' ' -f1)"; done) >"$T/up.sha"
start_fault_server "$T/up"
for f in "${slow[@]}"; do
  fault "{\"path\": \"/$f\", \"mode\": \"drip\", \"after\": 16384, \"rate\": 262144}"
done
C=$T/cache
M=$T/mnt
OPTS=read_stall_timeout=5

# check_index WHAT: every entry's sha256 is upstream's for its path; verify clean.
check_index() {
  "$NBCTL" --cache-dir "$C" --json ls >"$T/ls.json" || { soft_fail "$1: netbootfsctl ls failed"; return; }
  python3 - "$T/ls.json" "$T/up.sha" <<'PY' >"$T/ls.check" || soft_fail "$1: $(cat "$T/ls.check")"
import json, sys
up = dict(line.split() for line in open(sys.argv[2]))
bad = [f'{e["path"]} -> {e["sha256"][:12]}' for e in json.load(open(sys.argv[1]))
       if up.get(e["path"]) != e["sha256"]]
print("index entries with another sha256 than upstream's:", *bad)
sys.exit(1 if bad else 0)
PY
  "$NBCTL" --cache-dir "$C" --json verify >"$T/verify.json" 2>&1 \
    || soft_fail "$1: verify: $(cat "$T/verify.json")"
}

start_mount "$FAULT_URL" "$M" "$OPTS"
kills=0 in_flight=0 good_reads=0
start=$SECONDS
for round in $(seq 1 "$ROUNDS"); do
  rm -rf "$T/out"
  mkdir -p "$T/out"
  pids=() picked=()
  for k in $(seq 0 $((4 + RANDOM % 4))); do
    if [ $((RANDOM % 4)) -eq 0 ]; then f=${slow[RANDOM % ${#slow[@]}]}; else f=${small[RANDOM % ${#small[@]}]}; fi
    picked+=("$f")
    (timeout 20 cat "$M/$f" >"$T/out/$k" 2>/dev/null; echo $? >"$T/out/$k.rc") &
    pids+=($!)
  done
  sleep "$(printf '0.%03d' $((RANDOM % 400)))"
  [ -n "$(ls "$C/tmp" 2>/dev/null)" ] && in_flight=$((in_flight + 1))
  kill -9 "$DAEMON_PID"
  wait "$DAEMON_PID" 2>/dev/null || true
  kills=$((kills + 1))
  for p in "${pids[@]}"; do
    wait_until 25 dead "$p" || fail "round $round: a reader of the dead mount did not end"
    wait "$p" 2>/dev/null || true
  done
  for k in "${!picked[@]}"; do
    [ "$(cat "$T/out/$k.rc" 2>/dev/null)" = 0 ] || continue
    good_reads=$((good_reads + 1))
    cmp -s "$T/up/${picked[$k]}" "$T/out/$k" \
      || soft_fail "round $round: a read of ${picked[$k]} succeeded with other bytes"
  done
  # What the killed daemon left in tmp/ must be gone once the new one serves:
  # the same file (name and inode), not a download the new daemon started.
  # Bounded wait: under heavy load a leftover was seen for a moment after
  # the remount answered (not understood yet); one that stays is a failure.
  left=$(cd "$C/tmp" && stat -c '%n %i' -- * 2>/dev/null || true)
  same() { [ "$(stat -c %i -- "$C/tmp/$f" 2>/dev/null)" = "$ino" ]; }  # $f still inode $ino
  start_mount "$FAULT_URL" "$M" "$OPTS"
  while read -r f ino; do
    [ -n "$f" ] || continue
    if same; then
      note "round $round: $f still there just after the remount"
      wait_until 5 eval '! same' || soft_fail "round $round: temp file $f (inode $ino) survived recovery"
    fi
  done <<<"$left"
  check_index "round $round"
  for _ in 1 2 3; do
    f=${small[RANDOM % ${#small[@]}]}
    cmp "$T/up/$f" "$M/$f" || soft_fail "round $round: $f differs after the remount"
  done
  [ ${#_soft[@]} -eq 0 ] || fail "round $round (SEED=$SEED): $(printf '%s; ' "${_soft[@]}")"
done
note "$kills kills in $((SECONDS - start)) s, $in_flight with a download in flight, $good_reads reads completed before a kill"
[ "$in_flight" -gt 0 ] || fail "no kill hit a download in flight"
grep -c "detached a dead netbootfs mount" "$T/daemon.log" | {
  read -r n; [ "$n" -ge "$ROUNDS" ] || fail "only $n of $ROUNDS dead mounts were detached by the new daemon"; }
# At the end, everything reads back whole, the slow files included.
for f in "${small[@]}" "${slow[@]}"; do
  cmp "$T/up/$f" "$M/$f" || soft_fail "final: $f differs"
done
check_index "final"
stop_mount "$M"
check_index "after the unmount"
[ "$("$NBCTL" --cache-dir "$C" --json ls | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" \
  -eq $((${#small[@]} + ${#slow[@]})) ] || soft_fail "not every file is indexed at the end"
check_daemon_log
pass "SEED=$SEED: $kills kill -9 rounds, cache consistent after each"
