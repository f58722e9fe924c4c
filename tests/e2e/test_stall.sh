#!/usr/bin/env bash
# After a size was reported, a stalled download never surfaces as a short read:
# the reader waits read_stall_timeout without progress, then gets EIO. A
# download started by an open goes on after that handle is closed (UEFI opens
# the boot file once for its size, closes it, and opens it again).
source "$(dirname "$0")/lib.sh"
mkdir -p "$T/up/images"
head -c 2000000 /dev/urandom >"$T/up/images/stalls"
head -c 3000000 /dev/urandom >"$T/up/images/probed"
start_fault_server "$T/up"
start_mount "$FAULT_URL" "$T/mnt" "read_stall_timeout=3,low_speed_time=1"
ls "$T/mnt/images" >/dev/null
# 500000 bytes, then nothing on every resume (a stall that gives 500000 more
# bytes per resume would complete the file, correctly).
fault '{"path":"/images/stalls","mode":"stall","after":500000,"times":1,"then":{"mode":"stall","after":0}}'
python3 - "$T/mnt/images/stalls" >"$T/reader.out" <<'PY' || fail "reader: $(cat "$T/reader.out")"
import errno, sys, time
t0 = time.monotonic()
got = 0
with open(sys.argv[1], "rb", buffering=0) as f:
    try:
        while True:
            b = f.read(65536)
            if not b:
                print(f"short read: EOF after {got} bytes")
                sys.exit(1)
            got += len(b)
    except OSError as e:
        took = time.monotonic() - t0
        print(f"{errno.errorcode.get(e.errno)} after {got} bytes and {took:.1f} s")
        sys.exit(0 if e.errno == errno.EIO and 2.5 <= took <= 20 and got <= 500000 else 1)
PY
note "$(cat "$T/reader.out")"
grep -q "read(s) failed after" "$T/daemon.log" || fail "the stall failure was not logged"
"$NBCTL" --cache-dir "$T/cache" ls | grep -q images/stalls && fail "a partial file was published"

# Open and close without reading: the download completes anyway.
python3 -c 'import sys; open(sys.argv[1], "rb").close()' "$T/mnt/images/probed"
wait_until 15 bash -c "'$NBCTL' --cache-dir '$T/cache' ls | grep -q images/probed" \
  || fail "the download stopped when its only handle was closed"
cmp "$T/up/images/probed" "$T/mnt/images/probed" || fail "the probed file differs"
check_daemon_log 'read\(s\) failed after|download failed'
pass "stalled read failed with EIO after the stall timeout, never short; download outlived its handle"
