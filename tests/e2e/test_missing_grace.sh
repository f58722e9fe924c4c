#!/usr/bin/env bash
# A `cobbler sync` deletes and recreates the tree: for a few seconds upstream
# answers 404 for everything. Cached files keep reading byte-identical through
# the window (directly and through in.tftpd + atftp), as long as missing_grace
# has not run out; with a short missing_grace a file still missing afterwards
# is gone from the mount and the cache.
source "$(dirname "$0")/lib.sh"
mkdir -p "$T/up/images" "$T/up/pxelinux.cfg"
head -c 26000 /dev/urandom >"$T/up/pxelinux.0"
head -c 2000000 /dev/urandom >"$T/up/images/initrd"
printf 'DEFAULT linux\n' >"$T/up/pxelinux.cfg/default"
chmod -R a+rX "$T/up"
start_fault_server "$T/up"
files="pxelinux.0 images/initrd pxelinux.cfg/default"

# 1. The window (6 s) is shorter than missing_grace (30 s).
start_mount "$FAULT_URL" "$T/mnt" "revalidate=0,listing_ttl=1,missing_grace=30"
for f in $files; do with_timeout 20 cmp "$T/up/$f" "$T/mnt/$f" || fail "first read of $f"; done
start_tftpd "$T/mnt"
curl -sf --max-time 5 -X DELETE "http://127.0.0.1:$FAULT_PORT/__log" >/dev/null || fail "log reset"
fault '{"path":"*","mode":"notfound_for","seconds":6}'
end=$((SECONDS + 8)); rounds=0
while [ $SECONDS -lt $end ]; do
  for f in $files; do
    with_timeout 10 cmp "$T/up/$f" "$T/mnt/$f" || fail "$f unreadable or different during the 404 window (round $rounds)"
  done
  atftp_get images/initrd "$T/tftp.out" || fail "atftp during the 404 window: $(tail -3 "$T/atftp.out")"
  cmp "$T/up/images/initrd" "$T/tftp.out" || fail "atftp got different bytes during the 404 window"
  rounds=$((rounds + 1))
  sleep 0.3
done
n404=$(fault_log | python3 -c 'import json,sys; print(sum(1 for e in json.load(sys.stdin) if e["status"] == 404))')
[ "$n404" -ge 3 ] || fail "only $n404 requests were answered 404: the window was not exercised"
grep -q 'missing upstream; serving the cached copy' "$T/daemon.log" || fail "no missing_grace warning logged"
for f in $files; do with_timeout 10 cmp "$T/up/$f" "$T/mnt/$f" || fail "$f after the window"; done
note "$rounds rounds through the 404 window ($n404 answers 404), all byte-identical"
ours "$TFTPD_PID" && kill "$TFTPD_PID"  # it holds the mount (chrooted into it)
wait_until 10 dead "$TFTPD_PID" || fail "in.tftpd did not exit"
stop_mount "$T/mnt"

# 2. missing_grace=2 and the file stays missing: gone afterwards.
CACHE_DIR=$T/cache2 start_mount "$FAULT_URL" "$T/mnt2" "revalidate=0,listing_ttl=0.5,negative_ttl=1,missing_grace=2"
with_timeout 20 cmp "$T/up/pxelinux.0" "$T/mnt2/pxelinux.0" || fail "first read (second mount)"
cp "$T/up/pxelinux.0" "$T/orig.0"
rm "$T/up/pxelinux.0"  # gone upstream for good: 404, and absent from the listing
with_timeout 10 cmp "$T/orig.0" "$T/mnt2/pxelinux.0" || fail "not served within missing_grace"
sleep 2.5
gone=no
for _ in $(seq 1 20); do
  if ! with_timeout 10 cat "$T/mnt2/pxelinux.0" >/dev/null 2>"$T/cat.err"; then
    grep -q 'No such file' "$T/cat.err" && { gone=yes; break; }
  fi
  sleep 0.3
done
[ $gone = yes ] || fail "pxelinux.0 still readable after missing_grace: $(cat "$T/cat.err")"
# (the kernel may keep the name for entry_timeout)
wait_until 10 test ! -e "$T/mnt2/pxelinux.0" || fail "pxelinux.0 still exists after missing_grace"
"$NBCTL" --cache-dir "$T/cache2" --json ls >"$T/ls.json" || fail "netbootfsctl ls failed"
python3 -c 'import json,sys; sys.exit(any(e["path"].endswith("pxelinux.0") for e in json.load(open(sys.argv[1]))))' "$T/ls.json" \
  || fail "pxelinux.0 is still in the cache: $(cat "$T/ls.json")"
check_daemon_log
pass "$rounds rounds byte-identical through a 6 s 404 window; with missing_grace=2 the file went away"
