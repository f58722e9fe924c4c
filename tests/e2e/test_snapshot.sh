#!/usr/bin/env bash
# A slow reader of the 100 MB file keeps getting the bytes of the version it
# opened while upstream replaces the file (atomic rename, another size); a new
# reader after the revalidate window gets the new version. Both match their
# version's md5, and the two readers provably overlap.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=${SNAPSHOT_MB:-100} make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt" "revalidate=0.5"
f=images/initrd
old=$(md5 "$T/up/$f")
cmp "$T/up/$f" "$T/mnt/$f" || fail "the first read differs"  # now cached
# Drop the page cache so the slow reader's reads reach the daemon after the
# new version has arrived.
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || note "cannot drop the page cache"
# The slow reader: 1 MiB per 50 ms (at least 5 s for 100 MiB); it writes how
# far it got to a progress file, and its md5 at the end.
python3 - "$T/mnt/$f" "$T/slow.md5" "$T/slow.progress" <<'PY' &
import hashlib, os, sys, time
h = hashlib.md5()
n = 0
with open(sys.argv[1], "rb", buffering=0) as f:
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        h.update(b)
        n += len(b)
        with open(sys.argv[3] + ".tmp", "w") as p:
            p.write(str(n))
        os.replace(sys.argv[3] + ".tmp", sys.argv[3])
        time.sleep(0.05)
open(sys.argv[2], "w").write(h.hexdigest())
PY
slow=$!
progress() { cat "$T/slow.progress" 2>/dev/null || echo 0; }
wait_until 10 bash -c "[ \$(cat '$T/slow.progress' 2>/dev/null || echo 0) -ge $((4 * 1048576)) ]" \
  || fail "the slow reader did not get going"
# Upstream replaces the file: another size, atomic rename.
head -c $((37 * 1048576 + 12345)) /dev/urandom >"$T/up/$f.new"
chmod a+r "$T/up/$f.new"
mv "$T/up/$f.new" "$T/up/$f"
new=$(md5 "$T/up/$f")
replaced_at=$(progress)
sleep 0.6
got_new=$(with_timeout 60 md5sum "$T/mnt/$f" | cut -d' ' -f1)
[ "$got_new" = "$new" ] || fail "a new reader after the revalidate window got md5 $got_new, not the new version's $new"
[ "$(stat -c %s "$T/mnt/$f")" = "$(stat -c %s "$T/up/$f")" ] || fail "stat does not show the new size"
alive "$slow" || fail "the slow reader finished before the new reader did: the test proves nothing"
new_done_at=$(progress)
wait_until 60 dead "$slow" || fail "the slow reader did not finish within 60 s"
wait "$slow" || fail "the slow reader failed (an I/O error mid-read?)"
size=$(progress)
[ "$size" = $((${SNAPSHOT_MB:-100} * 1048576)) ] || fail "the slow reader read $size bytes, not the old version's size"
[ "$(cat "$T/slow.md5")" = "$old" ] || fail "the slow reader got md5 $(cat "$T/slow.md5"), not the old version's $old: mixed or new bytes"
note "replaced upstream when the slow reader was at $((replaced_at / 1048576)) MiB; the new reader finished when it was at $((new_done_at / 1048576)) MiB"
check_daemon_log
pass "the slow reader kept version 1 ($old), the new reader got version 2 ($new)"
