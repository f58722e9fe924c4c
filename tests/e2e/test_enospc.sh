#!/usr/bin/env bash
# A full disk under the cache: cache_dir is a 6 MiB tmpfs the test mounts, and
# upstream has a file larger than all of it. Reading that file fails with EIO
# (never a successful read, never other bytes), a TFTP client of it (with
# read_stall_timeout above the client's timeout, as README asks) reports
# failure, the temp file is released (tmp/ empty, df back down), and
# the cache goes on working: files cached before read byte-identical, a new
# small file downloads, verify is clean, the log names the write failure.
source "$(dirname "$0")/lib.sh"

mkdir -p "$T/up/small"
for i in 1 2 3 4; do head -c $((20000 + i * 3001)) /dev/urandom >"$T/up/small/f$i"; done
head -c $((10 * 1048576)) /dev/urandom >"$T/up/big.img"
chmod -R a+rX "$T/up"
start_nginx "$T/up"
C=$T/cache
M=$T/mnt

# The tmpfs must go after the daemon (which holds files on it) and before
# lib.sh's cleanup removes $T (which it refuses to do across a mount).
_enospc_cleanup() {
  local rc=$?
  set +e
  if any_mount "$M"; then timeout 10 fusermount3 -u "$M" 2>/dev/null || timeout 10 fusermount3 -uz "$M"; fi
  if [ -n "${DAEMON_PID:-}" ] && ours "$DAEMON_PID"; then
    kill "$DAEMON_PID" 2>/dev/null
    wait_until 10 dead "$DAEMON_PID" || kill -9 "$DAEMON_PID" 2>/dev/null
  fi
  if any_mount "$C"; then umount "$C" 2>/dev/null || umount -l "$C" || echo "cleanup: could not unmount $C" >&2; fi
  (exit $rc)
  _cleanup
}
trap _enospc_cleanup EXIT
mkdir -p "$C"
mount -t tmpfs -o size=6m,mode=0755 tmpfs "$C" || fail "cannot mount a tmpfs on $C"
used() { df --output=used -B1 "$C" | tail -1 | tr -d ' '; }

CACHE_DIR=$C start_mount "$NGINX_URL" "$M" read_stall_timeout=3
for i in 1 2; do cmp "$T/up/small/f$i" "$M/small/f$i" || fail "small/f$i differs before the disk fills"; done
wait_until 10 bash -c "[ -z \"\$(ls '$C/tmp')\" ]" || fail "temp files left after the small downloads"
base=$(used)
note "cache tmpfs: $base bytes used with 2 small files cached"

# read_errno FILE OUT [SIZE]: reads FILE to OUT in SIZE-byte reads (64 KiB),
# as in.tftpd does (blksize); prints "ok" or the errno, then " short" when a
# read returned fewer bytes than asked before the end (which in.tftpd takes
# for the end of the file).
read_errno() {
  with_timeout 60 python3 - "$1" "$2" "${3:-65536}" <<'PY'
import sys
n = int(sys.argv[3])
short = False
try:
    with open(sys.argv[1], "rb", buffering=0) as f, open(sys.argv[2], "wb") as out:
        while True:
            b = f.read(n)
            if not b:
                break
            if len(b) < n:
                short = True
            out.write(b)
    res = "ok"
except OSError as e:
    res = str(e.errno)
print(res + (" short" if short and res != "ok" else ""))
PY
}
t0=$(now_ms)
res=$(read_errno "$M/big.img" "$T/big.out") || true
got=$(stat -c %s "$T/big.out")
note "reading big.img (10 MiB into 6 MiB): '$res' after $got bytes, $(($(now_ms) - t0)) ms"
[ "$res" != ok ] || fail "reading a file larger than the cache disk succeeded ($got bytes)"
[ "${res% short}" = 5 ] || soft_fail "the failed read ended with errno '$res', expected EIO (5)"
cmp -s -n "$got" "$T/up/big.img" "$T/big.out" || soft_fail "the bytes read before the failure are not upstream's"
wait_until 5 grep -qE "writing the cache failed: .*No space left on device" "$T/daemon.log" \
  || soft_fail "the daemon log does not name the write failure (ENOSPC)"

# The space comes back once the failed download is dropped.
wait_until 20 bash -c "[ -z \"\$(ls '$C/tmp')\" ]" || soft_fail "tmp/ still holds $(ls "$C/tmp") after the failure"
released() { [ "$(used)" -le $((base + 1048576)) ]; }
wait_until 20 released || soft_fail "space not released: $(used) bytes used, $base before"
note "after the failure: tmp/ holds $(ls "$C/tmp" | wc -l) files, $(used) bytes used"

# in.tftpd reads blksize bytes at a time: a read that ends short (the page
# cache returns the bytes it has before the failed page) is a short final
# block, which TFTP clients take for the end of the file.
res=$(read_errno "$M/big.img" "$T/big.out" 1468) || true
got=$(stat -c %s "$T/big.out")
note "reading big.img in 1468-byte reads: '$res' after $got bytes"
[ "${res% short}" = 5 ] || soft_fail "the failed 1468-byte read ended with '$res', expected EIO (5)"
# With a read_stall_timeout shorter than the clients' (README: a
# misconfiguration) the page cache hands back the bytes before the failed
# page first: a short read, which a TFTP server sends as the last block.
[[ $res != *short* ]] || note "a 1468-byte read returned short before the EIO (read_stall_timeout=3)"
wait_until 20 bash -c "[ -z \"\$(ls '$C/tmp')\" ]" || soft_fail "tmp/ still holds $(ls "$C/tmp") after the second failure"

# Through TFTP: the client must report failure, not success with other
# bytes. As configured for TFTP (read_stall_timeout above the clients'
# ~25-30 s), the client gives up before any read fails; 35 s keeps it short.
stop_mount "$M"
CACHE_DIR=$C start_mount "$NGINX_URL" "$M" read_stall_timeout=35
start_tftpd "$M"
rc=0
t0=$(now_ms)
TFTP_TIMEOUT=90 atftp_get big.img "$T/tftp-big" || rc=$?
note "atftp gave up after $(($(now_ms) - t0)) ms"
note "atftp of big.img: exit $rc, $(stat -c %s "$T/tftp-big" 2>/dev/null || echo 0) bytes"
if [ $rc -eq 0 ]; then
  cmp -s "$T/up/big.img" "$T/tftp-big" && fail "TFTP delivered big.img whole through a 6 MiB cache?"
  soft_fail "atftp reported success for big.img with other bytes ($(stat -c %s "$T/tftp-big") bytes)"
fi
wait_until 20 bash -c "[ -z \"\$(ls '$C/tmp')\" ]" || soft_fail "tmp/ still holds $(ls "$C/tmp") after the TFTP failure"
wait_until 20 released || soft_fail "space not released after TFTP: $(used) bytes used, $base before"

# in.tftpd's child for the transfer ends once its read fails (stall timeout).
wait_until 40 bash -c "! pgrep -P $TFTPD_PID >/dev/null" || soft_fail "in.tftpd's transfer child did not end"
kill "$TFTPD_PID"  # chrooted into the mount: it would keep it busy
wait_until 10 dead "$TFTPD_PID" || kill -9 "$TFTPD_PID"

# The cache still works.
for i in 1 2; do cmp "$T/up/small/f$i" "$M/small/f$i" || soft_fail "cached small/f$i differs after the full disk"; done
for i in 3 4; do cmp "$T/up/small/f$i" "$M/small/f$i" || soft_fail "new small/f$i does not read after the full disk"; done
wait_until 10 bash -c "[ -z \"\$(ls '$C/tmp')\" ]" || soft_fail "temp files left after the small downloads"
"$NBCTL" --cache-dir "$C" --json ls >"$T/ls.json"
python3 - "$T/ls.json" <<'PY' || soft_fail "index: $(cat "$T/ls.json")"
import json, sys
paths = sorted(e["path"] for e in json.load(open(sys.argv[1])))
sys.exit(0 if paths == ["small/f1", "small/f2", "small/f3", "small/f4"] else 1)
PY
"$NBCTL" --cache-dir "$C" verify >"$T/verify.out" 2>&1 || soft_fail "verify: $(cat "$T/verify.out")"
stop_mount "$M"
"$NBCTL" --cache-dir "$C" verify >"$T/verify.out" 2>&1 || soft_fail "verify after unmount: $(cat "$T/verify.out")"
check_daemon_log 'big\.img: (writing the cache failed|download failed|[0-9]+ read\(s\) failed after)|No space left on device'
pass "a file larger than the cache disk fails with EIO, the space comes back, the cache keeps working"
