#!/usr/bin/env bash
# A cache carried to a site without a link to the server: export from one
# cache, import into an empty one, mount it with the upstream down, and every
# exported file reads byte-identical (through the mount and through in.tftpd).
# An incremental export carries only what changed; a bundle with one
# corrupted byte is rejected whole and imports nothing.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=2 INITRD_MB=4 make_tree "$T/up"
start_nginx "$T/up"

# Fill the source cache through a mount, as a connected proxy would.
CACHE_DIR=$T/src start_mount "$NGINX_URL" "$T/mnt" "revalidate=600"
files=(pxelinux.0 ldlinux.c32 pxelinux.cfg/default images/linux images/initrd "names with spaces/boot menu #1.cfg")
for f in "${files[@]}"; do
  with_timeout 30 cat "$T/mnt/$f" >/dev/null || fail "reading $f through the source mount failed"
done
# A running mount owns its cache: import must refuse to change it.
"$NBCTL" --cache-dir "$T/src" import "$T/nothing.tar" >"$T/busy.out" 2>&1 && fail "import into a mounted cache succeeded"
grep -q "in use by a running netbootfs (pid $DAEMON_PID)" "$T/busy.out" \
  || fail "import into a mounted cache: unexpected message: $(cat "$T/busy.out")"
stop_mount "$T/mnt"

"$NBCTL" --cache-dir "$T/src" export --all "$T/site.tar" --json >"$T/export.json" \
  || fail "export failed: $(cat "$T/export.json")"
exported=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["entries"])' "$T/export.json")
[ "$exported" = "${#files[@]}" ] || fail "exported $exported entries, expected ${#files[@]}"
[ ! -e "$T/site.tar.tmp" ] || fail "the export left its temp file"
tar -tf "$T/site.tar" >"$T/members" || fail "the bundle is not a tar file"
[ "$(head -1 "$T/members")" = manifest.json ] || fail "the bundle does not start with its manifest: $(head -3 "$T/members")"

# A corrupted byte anywhere in a blob rejects the whole bundle.
cp "$T/site.tar" "$T/bad.tar"
python3 - "$T/bad.tar" <<'EOF'
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    m = max((m for m in t.getmembers() if m.name.startswith("blobs/")), key=lambda m: m.size)
with open(sys.argv[1], "r+b") as f:  # flip one bit in the middle of the largest blob
    f.seek(m.offset_data + m.size // 2)
    b = f.read(1)[0]
    f.seek(-1, 1)
    f.write(bytes([b ^ 0x01]))
EOF
cmp -s "$T/site.tar" "$T/bad.tar" && fail "the corruption did not change the bundle"
"$NBCTL" --cache-dir "$T/dst" import "$T/bad.tar" >"$T/bad.out" 2>&1 && fail "a corrupted bundle was imported"
grep -q "nothing imported" "$T/bad.out" || fail "corrupted bundle: unexpected message: $(cat "$T/bad.out")"
[ "$("$NBCTL" --cache-dir "$T/dst" --json ls | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 0 ] \
  || fail "a rejected bundle left entries in the index"
[ -z "$(find "$T/dst/blobs" -type f 2>/dev/null)" ] || fail "a rejected bundle left blobs behind"

"$NBCTL" --cache-dir "$T/dst" import "$T/site.tar" >"$T/import.out" 2>&1 || fail "import failed: $(cat "$T/import.out")"
grep -q "imported ${#files[@]} entries" "$T/import.out" || fail "import said: $(cat "$T/import.out")"
"$NBCTL" --cache-dir "$T/dst" verify >/dev/null || fail "verify after import: $("$NBCTL" --cache-dir "$T/dst" verify)"

# The disconnected site: no upstream at all.
stop_nginx
CACHE_DIR=$T/dst start_mount "$NGINX_URL" "$T/mnt2" "connect_timeout=1,revalidate=0"
for f in "${files[@]}"; do
  with_timeout 30 cmp "$T/up/$f" "$T/mnt2/$f" || fail "imported $f differs (or failed) with the upstream down"
done
start_tftpd "$T/mnt2"
atftp_get images/linux "$T/linux.tftp" || fail "TFTP of an imported file failed: $(tail -3 "$T/atftp.out")"
cmp "$T/up/images/linux" "$T/linux.tftp" || fail "TFTP of an imported file differs"
kill "$TFTPD_PID"
wait_until 10 dead "$TFTPD_PID" || fail "in.tftpd did not stop"
stop_mount "$T/mnt2"

# Incremental: after a new file is fetched, --since carries only it.
restart_nginx
printf 'new menu\n' >"$T/up/pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"
chmod a+r "$T/up/pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"
# Times are whole seconds: TIME must come after the second the first fetches
# were validated in, and the new fetch after TIME.
sleep 1.1
since=$(date +%s)
sleep 1.1
CACHE_DIR=$T/src start_mount "$NGINX_URL" "$T/mnt" "revalidate=600"
with_timeout 30 cat "$T/mnt/pxelinux.cfg/01-aa-bb-cc-dd-ee-ff" >/dev/null || fail "reading the new file failed"
stop_mount "$T/mnt"
"$NBCTL" --cache-dir "$T/src" export --since "$since" "$T/incr.tar" >"$T/incr.out" || fail "incremental export failed"
grep -q "exported 1 entries" "$T/incr.out" || fail "incremental export: $(cat "$T/incr.out")"
"$NBCTL" --cache-dir "$T/dst" import "$T/incr.tar" >/dev/null || fail "incremental import failed"
[ "$("$NBCTL" --cache-dir "$T/dst" --json ls | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = $((${#files[@]} + 1)) ] \
  || fail "after the incremental import the cache does not hold every file"

check_daemon_log
pass "export/import: ${#files[@]} files byte-identical offline (mount and TFTP), a corrupted bundle imports nothing, incremental export carries 1 file"
