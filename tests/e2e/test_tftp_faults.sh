#!/usr/bin/env bash
# What a TFTP client gets when upstream breaks mid-file: in.tftpd sends a short
# read as the end of a complete file, so the only acceptable outcomes are
# atftp exiting 0 with bytes identical to upstream, or atftp exiting non-zero.
# Faults for ever (short body, reset mid-body, stall after 1 MiB) must end in
# an error; the same faults once must end in identical bytes (resumed with
# Range + If-Range). Nothing partial lands in the cache.
# The page cache returns the bytes before a failing page as a short read(2),
# which in.tftpd sends as the end of the file: so the mount fails a read only
# after read_stall_timeout without progress, which must outlast the client
# (README). Here it outlasts atftp's ~30 s, as the default 150 s outlasts PXE
# firmware (pxelinux ~131 s): the client gives up first and reports failure.
source "$(dirname "$0")/lib.sh"
RST=${RST:-35}  # read_stall_timeout: longer than atftp's own give-up (~30 s)
mkdir -p "$T/up/t" "$T/out"
names="shortx cutx stallx short1 cut1 stall1"
for n in $names; do head -c $((1500000 + RANDOM)) /dev/urandom >"$T/up/t/$n"; done
chmod -R a+rX "$T/up"
start_fault_server "$T/up"
start_mount "$FAULT_URL" "$T/mnt" \
  "read_stall_timeout=$RST,low_speed_time=2,connect_timeout=2,request_timeout=3"
start_tftpd "$T/mnt"
ls "$T/mnt/t" >/dev/null

# get NAME: atftp (blksize 1468, tsize) into $T/out/NAME; writes
# "RC SECONDS" to $T/rc.NAME and its trace to $T/atftp.NAME.
get() {
  local start rc=0
  start=$(now_ms)
  rm -f "$T/out/$1"
  with_timeout 60 atftp --option "blksize 1468" --option "tsize 0" --verbose \
    -g -r "t/$1" -l "$T/out/$1" 127.0.0.1 "$TFTP_PORT" >"$T/atftp.$1" 2>&1 || rc=$?
  echo "$rc $(( ($(now_ms) - start) / 1000 ))" >"$T/rc.$1"
}
# judge NAME once|ever: atftp never exits 0 with other bytes; a fault once
# must end in identical bytes, a fault for ever in an error.
judge() {
  local rc s
  read -r rc s <"$T/rc.$1"
  note "$1 ($2): atftp exit $rc after ${s}s, $(stat -c %s "$T/out/$1" 2>/dev/null || echo 0) of $(stat -c %s "$T/up/t/$1") bytes"
  if [ "$rc" -eq 0 ]; then
    if ! cmp -s "$T/up/t/$1" "$T/out/$1"; then
      # The failure the project exists to prevent: a client that believes
      # it holds the whole file.
      soft_fail "$1: atftp exited 0 holding $(stat -c %s "$T/out/$1" 2>/dev/null || echo no) bytes that are not upstream's (a truncated file)"
    elif [ "$2" = ever ]; then
      soft_fail "$1: a fault for ever ended in a complete file"
    fi
  else
    [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || soft_fail "$1: atftp hung (killed after 60 s)"
    [ "$2" = ever ] || soft_fail "$1: a transient fault failed the transfer: $(tail -n 3 "$T/atftp.$1")"
    grep -qiE 'error|timeout|abort' "$T/atftp.$1" || note "$1: atftp said: $(tail -n 2 "$T/atftp.$1")"
  fi
}
# entry NAME: "SHA256 SIZE" of t/NAME in the cache index, or "absent".
entry() { cache_entry "t/$1"; }
# ulog NAME: upstream's "METHOD STATUS RANGE IF_RANGE FAULT" lines for /t/NAME.
ulog() {
  fault_log | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e["path"] == sys.argv[1]:
        print(e["method"], e["status"], e["range"] or "-", e["if_range"] or "-", e["fault"] or "-")' \
    "/t/$1"
}

# For ever: the last byte never comes; a RST after 1 MB then at the first byte
# of every resume; 1 MiB then silence on every request.
fault '{"path":"/t/shortx","mode":"short","missing":1}'
fault '{"path":"/t/cutx","mode":"cut","after":1000000,"reset":true,"times":1,"then":{"mode":"cut","after":0,"reset":true}}'
fault '{"path":"/t/stallx","mode":"stall","after":1048576,"times":1,"then":{"mode":"stall","after":0}}'
# Once: the same faults, then upstream behaves.
fault '{"path":"/t/short1","mode":"short","missing":5000,"times":1}'
fault '{"path":"/t/cut1","mode":"cut","after":700000,"reset":true,"times":1}'
fault '{"path":"/t/stall1","mode":"stall","after":1048576,"times":1}'
bg=()
for n in $names; do
  get "$n" &
  bg+=($!)
done
wait "${bg[@]}"
for n in shortx cutx stallx; do judge $n ever; done
for n in short1 cut1 stall1; do judge $n once; done

# The most resumes read_stall_timeout leaves room for, each at its shortest
# back-off (plan_resume in cache/fetch/policy.h: 18 for 35 s; with the mean
# waits, about 13). What must not happen is a busy loop of resumes.
max_resumes=$("$NETBOOTFS_BUILD_DIR/tests/netbootfs_policy_tool" max-resumes $((RST * 1000))) \
  || fail "netbootfs_policy_tool failed"
for n in shortx cutx stallx; do
  e=$(entry $n)
  [ "$e" = absent ] || soft_fail "$n: a failed download is in the cache ($e)"
  ulog $n | sed -n 1p | grep -q '^GET 200 - - ' \
    || soft_fail "$n: the first request was not a plain GET: $(ulog $n)"
  k=$(ulog $n | grep -c '^GET 206 bytes=[0-9]*- "' || true)
  [ "$k" -ge 1 ] && [ "$k" -le "$max_resumes" ] \
    || soft_fail "$n: $k Range + If-Range resumes, expected a bounded few: $(ulog $n)"
done
for n in short1 cut1 stall1; do
  e=$(entry $n)
  [ "${e%% *}" = "$(sha256sum "$T/up/t/$n" | cut -d' ' -f1)" ] \
    || soft_fail "$n: cached as '$e', not upstream's sha256"
  ulog $n >"$T/l"
  [ "$(grep -c '^GET ' "$T/l")" -eq 2 ] && grep -qE '^GET 206 bytes=[1-9][0-9]*- "[^"]+" -$' "$T/l" \
    || soft_fail "$n: expected the faulted GET and one Range + If-Range resume: $(cat "$T/l")"
done
# Cleared, the failed files transfer whole.
curl -sf -X DELETE "http://127.0.0.1:$FAULT_PORT/__fault" >/dev/null
for n in shortx cutx stallx; do get "$n"; judge $n once; done
"$NBCTL" --cache-dir "$T/cache" verify >"$T/verify" 2>&1 || soft_fail "verify failed: $(cat "$T/verify")"
pass "through in.tftpd: faults for ever end in an atftp error, once in identical bytes; cache clean"
