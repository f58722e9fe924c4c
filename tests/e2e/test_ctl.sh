#!/usr/bin/env bash
# netbootfsctl stat and evict on a real cache: stat reports what upstream
# sent; evict refuses a mounted cache, drops exactly the named entries (a blob
# another path shares stays), frees their blobs, keeps verify clean, and an
# evicted file is fetched again by the next mount.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=2 make_tree "$T/up"
cp "$T/up/images/linux" "$T/up/images/linux-copy"   # same bytes: one blob, two paths
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt" "revalidate=600"
for f in pxelinux.0 images/linux images/linux-copy images/initrd grub/grub.cfg; do
  with_timeout 30 cat "$T/mnt/$f" >/dev/null || fail "reading $f failed"
done

"$NBCTL" --cache-dir "$T/cache" stat images/initrd --json >"$T/stat.json" || fail "stat failed"
want=$(sha256sum "$T/up/images/initrd" | cut -d' ' -f1)
python3 - "$T/stat.json" "$want" "$(stat -c %s "$T/up/images/initrd")" <<'EOF' || fail "stat: $(cat "$T/stat.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["path"] == "images/initrd", s
assert s["sha256"] == sys.argv[2], s
assert s["size"] == int(sys.argv[3]), s
assert s["etag"].startswith('"'), s   # nginx's validator, quotes kept
assert s["validated_at"] > 0, s
EOF
"$NBCTL" --cache-dir "$T/cache" stat images/linux --json | grep -q '"blob_refs": 2' || fail "stat does not show the shared blob"
"$NBCTL" --cache-dir "$T/cache" stat no/such/file >/dev/null 2>&1 && fail "stat of an uncached path succeeded"

"$NBCTL" --cache-dir "$T/cache" evict images/initrd >"$T/busy.out" 2>&1 && fail "evict on a mounted cache succeeded"
grep -q "in use by a running netbootfs" "$T/busy.out" || fail "evict while mounted said: $(cat "$T/busy.out")"
stop_mount "$T/mnt"

blobs_before=$(find "$T/cache/blobs" -type f | wc -l)
"$NBCTL" --cache-dir "$T/cache" evict images/initrd images/linux --json >"$T/evict.json" || fail "evict failed: $(cat "$T/evict.json")"
python3 - "$T/evict.json" "$(stat -c %s "$T/up/images/initrd")" <<'EOF' || fail "evict: $(cat "$T/evict.json")"
import json, sys
e = json.load(open(sys.argv[1]))
assert e["entries"] == 2, e
assert e["blobs"] == 1, e              # the kernel's blob is still used by linux-copy
assert e["bytes"] == int(sys.argv[2]), e
EOF
[ "$(find "$T/cache/blobs" -type f | wc -l)" = $((blobs_before - 1)) ] || fail "evict did not remove exactly one blob file"
"$NBCTL" --cache-dir "$T/cache" stat images/initrd >/dev/null 2>&1 && fail "the evicted entry is still cached"
"$NBCTL" --cache-dir "$T/cache" stat images/linux-copy >/dev/null || fail "the entry sharing a blob was evicted"
"$NBCTL" --cache-dir "$T/cache" verify >/dev/null || fail "verify after evict: $("$NBCTL" --cache-dir "$T/cache" verify)"

# Nothing was read for a day: --older-than 1d keeps everything; 0s drops all.
"$NBCTL" --cache-dir "$T/cache" evict --older-than 1d | grep -q "evicted 0 entries" || fail "--older-than 1d evicted something"
gets_before=$(nginx_count GET /images/initrd 200)
start_mount "$NGINX_URL" "$T/mnt" "revalidate=600"
with_timeout 30 cmp "$T/up/images/initrd" "$T/mnt/images/initrd" || fail "the evicted file does not read back"
[ "$(nginx_count GET /images/initrd 200)" = $((gets_before + 1)) ] || fail "the evicted file was not fetched again"
stop_mount "$T/mnt"
"$NBCTL" --cache-dir "$T/cache" evict --all | grep -qE "evicted [1-9][0-9]* entries" || fail "evict --all"
[ -z "$(find "$T/cache/blobs" -type f)" ] || fail "blobs left after evict --all"
[ "$("$NBCTL" --cache-dir "$T/cache" --json ls | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 0 ] || fail "entries left after evict --all"
"$NBCTL" --cache-dir "$T/cache" verify >/dev/null || fail "verify after evict --all"
check_daemon_log
pass "stat matches upstream; evict refuses a mounted cache, frees only unshared blobs, and evicted files are fetched again"
