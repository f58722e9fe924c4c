#!/usr/bin/env bash
# Inspection through extended attributes: getfattr -d on a file only looked
# up (remote), one being downloaded (the fault server drips it), one cached
# and one served while upstream is gone (stale). Each value is checked
# against upstream (nginx's ETag, sha256sum of the file, the source URL);
# reading the attributes never sends a GET; setfattr is refused with EROFS.
source "$(dirname "$0")/lib.sh"
mkdir -p "$T/up/boot" "$T/slow"
head -c 200000 /dev/urandom >"$T/up/boot/vmlinuz"
head -c 50000 /dev/urandom >"$T/up/boot/initrd.img"
head -c 400000 /dev/urandom >"$T/slow/big"
chmod -R a+rX "$T/up" "$T/slow"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt" "revalidate=0,down_after=1,probe_interval=60,connect_timeout=2,request_timeout=2,retry_timeout=0"

xa() { with_timeout 5 getfattr --only-values -n "user.netbootfs.$2" "$1" 2>/dev/null; }
nginx_etag() {
  curl -sfI --max-time 5 "$NGINX_URL$1" | tr -d '\r' | sed -n 's/^[Ee][Tt][Aa][Gg]: //p'
}

# Remote: looked up (stat), never read.
stat "$T/mnt/boot/initrd.img" >/dev/null || fail "stat of a listed file"
: >"$NGINX_LOG"
dump=$(with_timeout 5 getfattr -d -m - "$T/mnt/boot/initrd.img") || fail "getfattr -d failed"
echo "$dump" | grep -qx 'user.netbootfs.state="remote"' || fail "remote state: $dump"
echo "$dump" | grep -q 'user.netbootfs.sha256=' && fail "a remote file lists a sha256: $dump"
echo "$dump" | grep -q 'user.netbootfs.validated=' && fail "a never-fetched file lists validated: $dump"
[ "$(xa "$T/mnt/boot/initrd.img" source)" = "${NGINX_URL}boot/initrd.img" ] \
  || fail "source of a remote file: $(xa "$T/mnt/boot/initrd.img" source)"
out=$(with_timeout 5 getfattr -n user.netbootfs.sha256 "$T/mnt/boot/initrd.img" 2>&1 || true); echo "$out" | grep -q "No such attribute" \
  || fail "an absent attribute is not ENODATA: $out"
sleep 0.3  # nginx logs a request when it ends
[ "$(nginx_count GET)" -eq 0 ] || fail "getfattr caused a GET: $(cat "$NGINX_LOG")"

# Cached: read once.
with_timeout 20 cmp "$T/up/boot/vmlinuz" "$T/mnt/boot/vmlinuz" || fail "first read"
[ "$(xa "$T/mnt/boot/vmlinuz" state)" = cached ] || fail "state after a read: $(xa "$T/mnt/boot/vmlinuz" state)"
want=$(sha256sum "$T/up/boot/vmlinuz" | cut -d' ' -f1)
[ "$(xa "$T/mnt/boot/vmlinuz" sha256)" = "$want" ] || fail "sha256 $(xa "$T/mnt/boot/vmlinuz" sha256), want $want"
etag=$(nginx_etag boot/vmlinuz)
[ -n "$etag" ] && [ "$(xa "$T/mnt/boot/vmlinuz" etag)" = "$etag" ] \
  || fail "etag $(xa "$T/mnt/boot/vmlinuz" etag), nginx says $etag"
[ "$(xa "$T/mnt/boot/vmlinuz" source)" = "${NGINX_URL}boot/vmlinuz" ] || fail "source of a cached file"
v=$(xa "$T/mnt/boot/vmlinuz" validated)
[[ "$v" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$ ]] || fail "validated '$v' is not ISO-8601 UTC"
age=$(( $(date -u +%s) - $(date -u -d "$v" +%s) ))
[ "$age" -ge -1 ] && [ "$age" -le 30 ] || fail "validated $v is $age s old"
names=$(with_timeout 5 getfattr -d -m - "$T/mnt/boot/vmlinuz" | grep -c '^user.netbootfs.')
[ "$names" -eq 6 ] || fail "a cached file lists $names attributes, want 6 (state etag sha256 validated source rewritten)"
: >"$NGINX_LOG"
for _ in 1 2 3; do with_timeout 5 getfattr -d -m - "$T/mnt/boot/vmlinuz" >/dev/null; done
sleep 0.3
[ "$(nginx_count GET)" -eq 0 ] || fail "getfattr of a cached file sent a GET: $(cat "$NGINX_LOG")"

# Names outside user.netbootfs.: other user names do not exist; the other
# namespaces (what `ls -l` asks of every file) are not supported, which ls
# remembers for the whole mount.
out=$(with_timeout 5 getfattr -n user.other "$T/mnt/boot/vmlinuz" 2>&1 || true)
echo "$out" | grep -q "No such attribute" || fail "getfattr -n user.other: $out (want ENODATA)"
for name in security.selinux system.posix_acl_access system.posix_acl_default trusted.x; do
  for f in "$T/mnt/boot/vmlinuz" "$T/mnt/boot"; do
    out=$(with_timeout 5 getfattr -n "$name" "$f" 2>&1 || true)
    echo "$out" | grep -q "Operation not supported" || fail "getfattr -n $name ${f#"$T/"}: $out (want EOPNOTSUPP)"
  done
done

# Read-only.
out=$(setfattr -n user.netbootfs.state -v x "$T/mnt/boot/vmlinuz" 2>&1) && fail "setfattr succeeded"
echo "$out" | grep -q 'Read-only file system' || fail "setfattr: $out (want EROFS)"
out=$(setfattr -x user.netbootfs.state "$T/mnt/boot/vmlinuz" 2>&1) && fail "setfattr -x succeeded"
echo "$out" | grep -q 'Read-only file system' || fail "setfattr -x: $out (want EROFS)"

# Stale: upstream gone, the cached file is served without its word.
stop_nginx
with_timeout 10 cmp "$T/up/boot/vmlinuz" "$T/mnt/boot/vmlinuz" || fail "stale read"
[ "$(xa "$T/mnt/boot/vmlinuz" state)" = stale ] || fail "state while upstream is down: $(xa "$T/mnt/boot/vmlinuz" state)"
[ "$(xa "$T/mnt/boot/vmlinuz" sha256)" = "$want" ] || fail "sha256 while stale"
stop_mount "$T/mnt"

# Downloading: the fault server drips the body.
start_fault_server "$T/slow"
CACHE_DIR=$T/cache2 start_mount "$FAULT_URL" "$T/mnt2" "low_speed_time=10"
fault '{"path":"/big","mode":"drip","after":65536,"rate":20000}'
with_timeout 60 cat "$T/mnt2/big" >"$T/big.out" &
CAT=$!
track_pid "$CAT"
wait_until 10 bash -c "[ \"\$(getfattr --only-values -n user.netbootfs.state '$T/mnt2/big' 2>/dev/null)\" = downloading ]" \
  || fail "state during the drip: $(xa "$T/mnt2/big" state)"
xa "$T/mnt2/big" sha256 && fail "a file being downloaded lists a sha256"
[ "$(xa "$T/mnt2/big" source)" = "${FAULT_URL}big" ] || fail "source during the download: $(xa "$T/mnt2/big" source)"
wait "$CAT" || fail "the dripped read failed"
cmp "$T/slow/big" "$T/big.out" || fail "dripped bytes differ"
[ "$(xa "$T/mnt2/big" state)" = cached ] || fail "state after the drip: $(xa "$T/mnt2/big" state)"
[ "$(xa "$T/mnt2/big" sha256)" = "$(sha256sum "$T/slow/big" | cut -d' ' -f1)" ] || fail "sha256 after the drip"
stop_mount "$T/mnt2"
check_daemon_log
pass "xattrs: remote, downloading, cached and stale files report their state, etag, sha256, validated and source; getfattr sends no GET; setfattr is EROFS"
