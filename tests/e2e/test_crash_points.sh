#!/usr/bin/env bash
# Named crash points (NETBOOTFS_CRASH_AT=<point>:<n>): the daemon kills itself
# with SIGKILL at an exact step of publishing a download, while readers work
# concurrently. After each, a remount without the variable (the new daemon
# detaches the dead mount itself) serves every file byte-identical, start-up
# recovery leaves tmp/ empty and no orphan blob, and netbootfsctl verify is
# clean. The counts make earlier downloads complete first, so the crash also
# proves that what was cached before it survives. Index points count every
# write transaction, start-up's included (a fresh cache: 1, the recovery's;
# after a clean stop: 1, the one that takes the clean-stop mark).
source "$(dirname "$0")/lib.sh"

mkdir -p "$T/up/d"
files=()
for i in 1 2 3 4 5 6; do
  head -c $((1000 + i * 7919)) /dev/urandom >"$T/up/d/f$i"
  files+=("d/f$i")
done
head -c $((2 * 1048576 + 123)) /dev/urandom >"$T/up/big.bin"
files+=(big.bin)
chmod -R a+rX "$T/up"
start_nginx "$T/up"
M=$T/mnt

# index_shas: the sha256 of every index entry, one per line.
index_shas() {
  "$NBCTL" --cache-dir "$C" --json ls | python3 -c '
import json, sys
for e in json.load(sys.stdin): print(e["sha256"])'
}
blobs_on_disk() { find "$C/blobs" -type f -printf '%f\n' 2>/dev/null | sort; }
# orphans: blobs on disk that no index entry refers to.
orphans() { comm -23 <(blobs_on_disk) <(index_shas | sort -u); }
# check_entries WHAT: every index entry is upstream's file (size and sha256).
check_entries() {
  local path size sha
  while read -r path size sha; do
    [ -f "$T/up/$path" ] || soft_fail "$1: the index has $path, which upstream does not"
    [ "$sha" = "$(sha256sum "$T/up/$path" | cut -d' ' -f1)" ] \
      || soft_fail "$1: $path indexed with another sha256"
    [ "$size" = "$(stat -c %s "$T/up/$path")" ] || soft_fail "$1: $path indexed with size $size"
  done < <("$NBCTL" --cache-dir "$C" --json ls | python3 -c '
import json, sys
for e in json.load(sys.stdin): print(e["path"], e["size"], e["sha256"])')
}

detached_before=0
detach_logged() { [ "$(grep -c "detached a dead netbootfs mount" "$T/daemon.log")" -ge "$1" ]; }
for spec in temp_synced:3 blob_renamed:2 index_before_commit:3 index_after_commit:4; do
  point=${spec%%:*}
  C=$T/cache-$point
  export CACHE_DIR=$C
  NETBOOTFS_CRASH_AT=$spec start_mount "$NGINX_URL" "$M" read_stall_timeout=5
  wait_until 5 grep -q "NETBOOTFS_CRASH_AT: .* crash point $point" "$T/daemon.log" \
    || fail "$spec: no start-up warning about the armed crash point"
  pids=()
  for f in "${files[@]}"; do
    (timeout 30 cat "$M/$f" >/dev/null 2>&1 || true) &
    pids+=($!)
  done
  wait_until 30 dead "$DAEMON_PID" || fail "$spec: the daemon did not die at its crash point"
  rc=0
  wait "$DAEMON_PID" 2>/dev/null || rc=$?
  [ $rc -eq 137 ] || fail "$spec: the daemon exited with status $rc, not by SIGKILL (137)"
  grep -q "crash point $point reached" "$T/daemon.log" || fail "$spec: the daemon died elsewhere"
  for p in "${pids[@]}"; do
    wait_until 20 dead "$p" || fail "$spec: a reader of the dead mount did not end"
    wait "$p" 2>/dev/null || true
  done
  err=$(stat "$M" 2>&1 || true)
  [[ $err == *"not connected"* ]] || fail "$spec: expected the dead mount to answer ENOTCONN: $err"

  # What the crash left, before any recovery.
  ntmp=$(find "$C/tmp" -type f | wc -l)
  norph=$(orphans | wc -l)
  nent=$(index_shas | wc -l)
  note "$spec: after the crash: $nent entries, $ntmp temp files, $norph unindexed blobs"
  case $point in
    temp_synced) [ "$ntmp" -ge 1 ] || fail "$spec: no temp file left by a crash before the rename" ;;
    blob_renamed | index_before_commit)
      [ "$norph" -ge 1 ] || fail "$spec: no unindexed blob left by a crash after the rename" ;;
    index_after_commit) [ "$nent" -ge 1 ] || fail "$spec: no entry after a crash after the commit" ;;
  esac
  check_entries "$spec, after the crash"
  entries_before=$(index_shas | sort)

  dead_there=0
  mounted "$M" && dead_there=1
  start_mount "$NGINX_URL" "$M" read_stall_timeout=5
  # The daemon's log reaches the file a moment after the mount answers.
  if [ $dead_there = 1 ]; then
    wait_until 5 detach_logged $((detached_before + 1)) \
      || soft_fail "$spec: the new daemon did not detach the dead mount"
  else
    note "$spec: the dead mount was gone before the remount"
  fi
  detached_before=$(grep -c "detached a dead netbootfs mount" "$T/daemon.log" || true)
  # Recovery ran before the mount answered: no temp file, no orphan, and
  # every committed entry kept (all of them point at complete blobs).
  [ -z "$(find "$C/tmp" -type f)" ] || soft_fail "$spec: temp files after recovery: $(ls "$C/tmp")"
  [ -z "$(orphans)" ] || soft_fail "$spec: orphan blobs after recovery: $(orphans | tr '\n' ' ')"
  [ "$(index_shas | sort)" = "$entries_before" ] || soft_fail "$spec: recovery changed the index"

  for f in "${files[@]}"; do
    cmp "$T/up/$f" "$M/$f" || soft_fail "$spec: $f differs after the remount"
  done
  wait_until 10 bash -c "[ -z \"\$(find '$C/tmp' -type f)\" ]" \
    || soft_fail "$spec: temp files left after every download: $(ls "$C/tmp")"
  [ "$(index_shas | wc -l)" -eq ${#files[@]} ] || soft_fail "$spec: not every file is indexed"
  [ -z "$(orphans)" ] || soft_fail "$spec: orphan blobs after the reads: $(orphans | tr '\n' ' ')"
  check_entries "$spec, after the remount"
  "$NBCTL" --cache-dir "$C" verify >"$T/verify.out" 2>&1 \
    || soft_fail "$spec: verify: $(cat "$T/verify.out")"
  "$NBCTL" --cache-dir "$C" --json verify >"$T/verify.json" 2>&1 || true
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["consistent"] and not d["problems"] else 1)' \
    "$T/verify.json" || soft_fail "$spec: verify --json: $(cat "$T/verify.json")"
  stop_mount "$M"
  note "$spec: remount consistent, ${#files[@]} files byte-identical"
done

# A crash during start-up itself, with a leftover temp file and an orphan
# blob to clean: the daemon dies before mounting, and the next start finishes
# the job. First after a clean stop, where the first write transaction takes
# the clean-stop mark (the crash leaves the mark, and the next start is a
# clean one); then after a kill -9, where it is the full recovery's.
C=$T/cache-index_after_commit
export CACHE_DIR=$C
head -c 7000 /dev/urandom >"$T/orphan"
osha=$(sha256sum "$T/orphan" | cut -d' ' -f1)
mkdir -p "$C/blobs/${osha:0:2}"
# start_up_crash WHAT HITS START: plants both, starts the daemon armed to die
# at its first index commit (the HITS-th crash point of the log), then starts
# it again; that start must be START and leave neither behind.
start_up_crash() {
  local what=$1 hits=$2 start=$3 rc=0 f
  head -c 5000 /dev/urandom >"$C/tmp/dl-leftover"
  cp "$T/orphan" "$C/blobs/${osha:0:2}/$osha"
  echo "=== $what" >>"$T/daemon.log"
  NETBOOTFS_CRASH_AT=index_before_commit:1 with_timeout 30 "$NBFS" "$NGINX_URL" "$M" -f \
    -o "allow_other,cache_dir=$C,log_level=debug" >>"$T/daemon.log" 2>&1 || rc=$?
  [ $rc -eq 137 ] || fail "$what: the daemon exited with status $rc, not by SIGKILL (137)"
  [ "$(grep -c "crash point index_before_commit reached" "$T/daemon.log")" -eq "$hits" ] \
    || fail "$what: the daemon died elsewhere"
  ! live_mount "$M" || fail "$what: the daemon mounted before its start-up ended"
  [ -f "$C/blobs/${osha:0:2}/$osha" ] || fail "$what: the orphan went before the crash point"
  start_mount "$NGINX_URL" "$M" read_stall_timeout=5
  started_with "$start" "$what"
  [ -z "$(find "$C/tmp" -type f)" ] || soft_fail "$what: temp files left: $(ls "$C/tmp")"
  [ ! -e "$C/blobs/${osha:0:2}/$osha" ] || soft_fail "$what: the orphan blob is still there"
  [ -z "$(orphans)" ] || soft_fail "$what: orphan blobs: $(orphans | tr '\n' ' ')"
  for f in "${files[@]}"; do
    cmp "$T/up/$f" "$M/$f" || soft_fail "$what: $f differs"
  done
  "$NBCTL" --cache-dir "$C" verify >"$T/verify.out" 2>&1 || soft_fail "$what: verify: $(cat "$T/verify.out")"
  stop_mount "$M"
}
start_up_crash "crash taking the clean-stop mark" 2 "after a clean stop"
note "a crash taking the clean-stop mark: the next start cleans up, verify clean"
start_mount "$NGINX_URL" "$M" read_stall_timeout=5
kill -9 "$DAEMON_PID"
wait_until 10 dead "$DAEMON_PID" || fail "the daemon survived kill -9"
start_up_crash "crash inside the full recovery" 3 "full recovery"
note "a crash inside the full recovery after a kill -9: the next start cleans up, verify clean"

check_daemon_log
pass "4 crash points and two crashes inside start-up: no temp file, no orphan blob, every file byte-identical"
