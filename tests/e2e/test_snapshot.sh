#!/usr/bin/env bash
# A slow reader keeps the bytes of the version it opened while upstream replaces
# the file; a new reader gets the new version. Both match their version's md5.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=${SNAPSHOT_MB:-100} make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt" "revalidate=0.5"
old=$(md5 "$T/up/images/initrd")
cat "$T/mnt/images/initrd" >/dev/null  # cached
python3 - "$T/mnt/images/initrd" "$T/slow.md5" "$T/slow.started" <<'PY' &
import hashlib, sys, time
h = hashlib.md5()
with open(sys.argv[1], "rb", buffering=0) as f:
    open(sys.argv[3], "w").close()
    while True:
        b = f.read(4 << 20)
        if not b:
            break
        h.update(b)
        time.sleep(0.1)
open(sys.argv[2], "w").write(h.hexdigest())
PY
slow=$!
wait_until 10 test -e "$T/slow.started" || fail "the slow reader did not start"
head -c $((37 * 1048576)) /dev/urandom >"$T/up/images/initrd.new"
mv "$T/up/images/initrd.new" "$T/up/images/initrd"
new=$(md5 "$T/up/images/initrd")
sleep 0.6
got_new=$(md5 "$T/mnt/images/initrd")
[ "$got_new" = "$new" ] || fail "a new reader did not get the new version"
wait "$slow" || fail "the slow reader failed"
[ "$(cat "$T/slow.md5")" = "$old" ] || fail "the slow reader got mixed or new bytes"
check_daemon_log
pass "old reader kept version 1, new reader got version 2"
