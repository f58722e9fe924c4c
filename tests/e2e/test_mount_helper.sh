#!/usr/bin/env bash
# mount(8) works through mount.fuse3 (and so fstab and mount units), and a
# refused configuration reaches mount(8)'s caller with netbootfs's one line.
# mount(8) gives its helpers a fixed PATH, so `-t fuse.netbootfs` needs
# netbootfs installed; the test names the built binary with mount.fuse3's
# `-t fuse PROGRAM#SOURCE` form, which runs the same helper code path.
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

# A refusal reaches the admin through mount(8) too: a non-empty mountpoint
# (the old pushed tree) fails the mount with netbootfs's own line.
# tests/e2e/test_bad_config.sh covers every refusal of the binary itself.
mkdir -p "$T/old"
cp "$T/up/pxelinux.0" "$T/old/"
rc=0
out=$(timeout 20 mount "${how[@]}" "$T/old" -o "allow_other,cache_dir=$T/cache2" 2>&1) || rc=$?
[ $rc -ne 0 ] || fail "mount over a non-empty directory succeeded"
grep -qF "netbootfs: mountpoint $T/old is not empty (it holds 'pxelinux.0')" <<<"$out" \
  || fail "mount(8) did not pass on the reason: $out"
any_mount "$T/old" && fail "something was mounted on $T/old"
[ ! -e "$T/cache2" ] || fail "the refused mount created its cache directory"
pass "mount ${how[0]} ${how[1]} works; a refusal reaches mount(8) with netbootfs's line"
