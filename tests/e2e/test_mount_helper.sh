#!/usr/bin/env bash
# mount(8) works through mount.fuse3 (and so fstab and mount units), and bad
# configurations fail before mounting with one clear line. mount(8) gives its
# helpers a fixed PATH, so `-t fuse.netbootfs` needs netbootfs installed; the
# test names the built binary with mount.fuse3's `-t fuse PROGRAM#SOURCE` form,
# which runs the same helper code path.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=1 make_tree "$T/up"
start_nginx "$T/up"
mkdir -p "$T/mnt"
_mounts+=("$T/mnt")
if command -v netbootfs >/dev/null && [ "$(command -v netbootfs)" -ef "$NBFS" ]; then
  how=(-t fuse.netbootfs "$NGINX_URL")
else
  how=(-t fuse "$NBFS#$NGINX_URL")
fi
timeout 20 mount "${how[@]}" "$T/mnt" -o "allow_other,cache_dir=$T/cache,_netdev,nofail" \
  || fail "mount ${how[*]} failed"
wait_until 10 mounted "$T/mnt" || fail "no fuse.netbootfs mount in /proc/mounts"
cmp "$T/up/pxelinux.cfg/default" "$T/mnt/pxelinux.cfg/default" || fail "read through the helper mount differs"
grep " $T/mnt " /proc/mounts | grep -q "^${NGINX_URL} " || fail "/proc/mounts does not name the upstream"
grep " $T/mnt " /proc/mounts | grep -qw ro || fail "the mount is not read-only"
pid=$(pgrep -f "netbootfs $NGINX_URL $T/mnt" | head -1)
[ -n "$pid" ] && track_pid "$pid"
umount "$T/mnt" || fail "umount failed"
wait_until 10 bash -c "! grep -qs ' $T/mnt ' /proc/mounts" || fail "still mounted after umount"

# Bad configurations: one line naming the problem, non-zero exit, nothing mounted.
mkdir -p "$T/m2" "$T/ro"
touch "$T/afile"
check_refused() {  # check_refused EXPECTED_TEXT ARGS...
  local want=$1; shift
  local out rc=0
  out=$(timeout 20 "$NBFS" "$@" 2>&1) || rc=$?
  [ $rc -ne 0 ] || fail "accepted: $*"
  grep -q -- "$want" <<<"$out" || fail "for '$*' expected '$want', got: $out"
  mounted "$T/m2" && fail "something was mounted for: $*"
  return 0
}
check_refused "unknown option" "$NGINX_URL" "$T/m2" -o "cache_dir=$T/c2,bogus_option=1"
check_refused "bad upstream URL" "ftp://example.org/tftp" "$T/m2" -o "cache_dir=$T/c2"
check_refused "mountpoint" "$NGINX_URL" "$T/does-not-exist" -o "cache_dir=$T/c2"
check_refused "not a directory" "$NGINX_URL" "$T/afile" -o "cache_dir=$T/c2"
check_refused "cache_dir" "$NGINX_URL" "$T/m2" -o "cache_dir=$T/afile/sub"
check_refused "missing argument" "$NGINX_URL"
pass "mount ${how[0]} ${how[1]} works; bad configurations are refused with one line"
