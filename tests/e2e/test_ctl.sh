#!/usr/bin/env bash
# netbootfsctl stat and evict on a real cache: stat reports what upstream
# sent; evict refuses a mounted cache, drops exactly the named entries (a blob
# another path shares stays), frees their blobs, keeps verify clean, and an
# evicted file is fetched again by the next mount.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=2 make_tree "$T/up"
cp "$T/up/images/linux" "$T/up/images/linux-copy"   # same bytes: one blob, two paths
start_nginx "$T/up"
# A menu that names the upstream: served rewritten, its output a blob of its own.
printf 'DEFAULT linux\nLABEL linux\n  KERNEL http://127.0.0.1:%s/images/linux\n' "$NGINX_PORT" \
  >"$T/up/pxelinux.cfg/default"
start_mount "$NGINX_URL" "$T/mnt" "revalidate=600,proxy_host=proxy.example.net"
grep -q proxy.example.net "$T/mnt/pxelinux.cfg/default" || fail "the menu was not rewritten"
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
# Evicting a rewritten menu drops its output too: the upstream blob and the
# rewritten one (the output's entry follows its source).
blobs_before=$(find "$T/cache/blobs" -type f | wc -l)
"$NBCTL" --cache-dir "$T/cache" evict pxelinux.cfg/default --json >"$T/evict.json" || fail "evict of the menu failed"
grep -q '"blobs": 2' "$T/evict.json" || fail "evicting the menu left its rewritten output: $(cat "$T/evict.json")"
[ "$(find "$T/cache/blobs" -type f | wc -l)" = $((blobs_before - 2)) ] || fail "evict did not remove the menu's two blob files"
"$NBCTL" --cache-dir "$T/cache" verify >/dev/null || fail "verify after evicting the menu: $("$NBCTL" --cache-dir "$T/cache" verify)"

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

# ls, ls -l, --json ls; verify --repair after a blob is corrupted and another deleted.
export CACHE_DIR=$T/cache3
start_mount "$NGINX_URL" "$T/mnt" "revalidate=600"
for f in pxelinux.0 images/linux images/initrd grub/grub.cfg; do
  with_timeout 30 cat "$T/mnt/$f" >/dev/null || fail "reading $f failed"
done
stop_mount "$T/mnt"
C=(--cache-dir "$CACHE_DIR")
[ "$("$NBCTL" "${C[@]}" ls images)" = "$(printf 'images/initrd\nimages/linux')" ] || fail "ls images: $("$NBCTL" "${C[@]}" ls images)"
"$NBCTL" "${C[@]}" ls -l >"$T/ls-l.txt" || fail "ls -l failed"
head -1 "$T/ls-l.txt" | grep -qE '^PATH +SIZE +SHA256 +ETAG +VALIDATED +ACCESSED +REWRITTEN +PINNED$' || fail "ls -l header: $(head -1 "$T/ls-l.txt")"
lsum=$(sha256sum "$T/up/images/linux" | cut -d' ' -f1)
grep -qE "^images/linux +$(stat -c %s "$T/up/images/linux") ${lsum:0:12} \"[^ ]+\" +[0-9T:-]+Z +[0-9T:-]+Z +no +no$" "$T/ls-l.txt" \
  || fail "ls -l row of images/linux: $(cat "$T/ls-l.txt")"
"$NBCTL" "${C[@]}" ls --json >"$T/ls.json" || fail "ls --json failed"
python3 - "$T/ls.json" "$lsum" <<'EOF2' || fail "ls --json: $(cat "$T/ls.json")"
import json, sys
e = {x["path"]: x for x in json.load(open(sys.argv[1]))}
assert sorted(e) == ["grub/grub.cfg", "images/initrd", "images/linux", "pxelinux.0"], sorted(e)
l = e["images/linux"]
assert l["sha256"] == sys.argv[2], l
for k in ("size", "etag", "last_modified", "validated_at", "last_access", "shared_by", "rewritten"):
    assert k in l, (k, l)
assert l["rewritten"] is False and l["shared_by"] == 1 and l["validated_at"] > 0, l
EOF2
"$NBCTL" "${C[@]}" ls --help | grep -q -- "--long" || fail "ls --help"
"$NBCTL" "${C[@]}" verify --help | grep -q -- "--repair" || fail "verify --help"

start_mount "$NGINX_URL" "$T/mnt" "revalidate=600"
rc=0; "$NBCTL" "${C[@]}" verify --repair >"$T/busy.out" 2>&1 || rc=$?
[ $rc -eq 2 ] && grep -q "in use by a running netbootfs" "$T/busy.out" || fail "verify --repair on a mounted cache: rc $rc, $(cat "$T/busy.out")"
stop_mount "$T/mnt"
kblob=$(find "$CACHE_DIR/blobs" -type f -name "$lsum*")
iblob=$(find "$CACHE_DIR/blobs" -type f -name "$(sha256sum "$T/up/images/initrd" | cut -d' ' -f1)*")
[ -n "$kblob" ] && [ -n "$iblob" ] || fail "blob files not found under $CACHE_DIR/blobs"
# Same size, other bytes: byte 1000 inverted (a fixed byte would be the
# random kernel's own one time in 256).
b=$(od -An -tu1 -j1000 -N1 "$kblob" | tr -d ' ')
printf "\\$(printf '%03o' $((b ^ 255)))" | dd of="$kblob" bs=1 seek=1000 conv=notrunc status=none
[ "$(od -An -tu1 -j1000 -N1 "$kblob" | tr -d ' ')" = $((b ^ 255)) ] || fail "the kernel blob was not changed"
rm -f "$iblob"
mkdir -p "$CACHE_DIR/blobs/00"
echo junk >"$CACHE_DIR/blobs/00/$(printf '%064d' 0)"                 # an orphan, corrupt too
rc=0; "$NBCTL" "${C[@]}" verify >"$T/verify.txt" || rc=$?
[ $rc -eq 1 ] || fail "verify of a damaged cache exited $rc, want 1: $(cat "$T/verify.txt")"
"$NBCTL" "${C[@]}" --json verify --repair >"$T/repair.json" || fail "verify --repair: $(cat "$T/repair.json")"
python3 - "$T/repair.json" <<'EOF2' || fail "verify --repair: $(cat "$T/repair.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["consistent"] is True and r["problems"] == [], r
assert r["corrupt_blobs_removed"] == 2, r   # the damaged kernel and the junk file
assert r["entries_dropped"] == 2, r         # images/linux and images/initrd
assert any("dropped entry images/linux " in a for a in r["actions"]), r
assert any("dropped entry images/initrd " in a for a in r["actions"]), r
EOF2
"$NBCTL" "${C[@]}" verify | grep -qx consistent || fail "verify after repair: $("$NBCTL" "${C[@]}" verify)"
"$NBCTL" "${C[@]}" stat pxelinux.0 >/dev/null || fail "repair dropped an intact entry"
"$NBCTL" "${C[@]}" verify --repair | grep -qx "consistent, nothing to repair" || fail "a second repair found work"
start_mount "$NGINX_URL" "$T/mnt" "revalidate=600"
for f in images/linux images/initrd pxelinux.0; do
  with_timeout 30 cmp "$T/up/$f" "$T/mnt/$f" || fail "$f differs after the repair"
done
stop_mount "$T/mnt"
"$NBCTL" "${C[@]}" verify >/dev/null || fail "verify after the re-download"
unset CACHE_DIR
check_daemon_log
pass "stat matches upstream; ls/ls -l/--json; verify --repair; evict refuses a mounted cache, frees only unshared blobs, and evicted files are fetched again"
