#!/usr/bin/env bash
# Bad configurations end before anything is mounted or touched: a non-zero
# exit, exactly one line on stderr (the one asserted), nothing on stdout, no
# mount left, no cache directory created when the mistake is elsewhere. And
# what is already on the mountpoint (an old pushed tree, a tmpfs, a running
# netbootfs) is left as it was; a bind mount of an empty directory (a
# container volume) is accepted.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=1 make_tree "$T/up"
start_nginx "$T/up"

# Mounts of other kinds this test makes under $T: unmounted (netbootfs on top
# of them first) before lib.sh's cleanup, which only knows FUSE.
_sys_mounts=()
_bad_config_cleanup() {
  local rc=$? m i
  set +e
  # shellcheck disable=SC2154  # lib.sh's list of FUSE mounts
  for m in "${_mounts[@]}"; do
    mounted "$m" && timeout 10 fusermount3 -u "$m"
  done
  for ((i = ${#_sys_mounts[@]} - 1; i >= 0; i--)); do
    m=${_sys_mounts[$i]}
    any_mount "$m" && { umount "$m" || umount -l "$m"; }
  done
  (exit $rc)
  _cleanup
}
trap _bad_config_cleanup EXIT
sys_mount() {  # sys_mount MOUNT_ARGS... TARGET
  mount "$@" || fail "mount $* failed"
  _sys_mounts+=("${!#}")
}

n=0
netbootfs_mounts() { findmnt -rn -t fuse.netbootfs -o TARGET | grep -c "^$T/" || true; }
# refused WANT ARGS...: netbootfs ARGS fails with WANT (a bash pattern; quote
# nothing, escape [ ] * ?) as its only line on stderr, nothing on stdout, and
# no new mount. CACHE is a fresh cache_dir for ARGS to use; unless
# CACHE_EXPECTED=1 it must not exist afterwards.
refused() {
  local want=$1; shift
  local rc=0 before err
  before=$(netbootfs_mounts)
  timeout 20 "$NBFS" "$@" >"$T/stdout" 2>"$T/stderr" || rc=$?
  err=$(cat "$T/stderr")
  if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
    soft_fail "exit status $rc for: $*"
  fi
  # shellcheck disable=SC2053
  [[ $err == $want ]] || soft_fail "for '$*' expected '$want', got: $err"
  [ "$(wc -l <"$T/stderr")" -eq 1 ] || soft_fail "$(wc -l <"$T/stderr") lines on stderr for '$*': $err"
  [ ! -s "$T/stdout" ] || soft_fail "output on stdout for '$*': $(cat "$T/stdout")"
  [ "$(netbootfs_mounts)" -eq "$before" ] || soft_fail "a mount was left behind by: $*"
  if [ "${CACHE_EXPECTED:-0}" != 1 ] && [ -e "$CACHE" ]; then
    soft_fail "the cache directory was created although '$*' was refused"
  fi
  n=$((n + 1))
  next_cache
}
next_cache() { CACHE=$T/cache.$n; }
next_cache
mkdir -p "$T/m"
touch "$T/afile"
url=$NGINX_URL

# Options and arguments.
refused "netbootfs: unknown option 'bogus_option=1' (netbootfs --help lists the options)" \
  "$url" "$T/m" -o "cache_dir=$CACHE,bogus_option=1"
refused "netbootfs: unknown option 'nonempty' (FUSE 3 has no nonempty: the mountpoint must be empty) (netbootfs --help lists the options)" \
  "$url" "$T/m" -o "cache_dir=$CACHE,nonempty"
refused "netbootfs: unknown options 'bogus', 'other=2' (netbootfs --help lists the options)" \
  "$url" "$T/m" -o "allow_other,bogus,cache_dir=$CACHE" -o other=2
refused "netbootfs: invalid options: invalid parameter in option 'uid=abc'" \
  "$url" "$T/m" -o "cache_dir=$CACHE,uid=abc"
refused "netbootfs: unknown log_level 'loud'" "$url" "$T/m" -o "cache_dir=$CACHE,log_level=loud"
refused "netbootfs: bad upstream URL 'ftp://example.org/tftp': *" \
  "ftp://example.org/tftp" "$T/m" -o "cache_dir=$CACHE"
refused "netbootfs: missing argument: expected URL MOUNTPOINT" "$url" -o "cache_dir=$CACHE"
refused "netbootfs: too many arguments (expected URL MOUNTPOINT)" "$url" "$T/m" "$T/m" -o "cache_dir=$CACHE"

# The mountpoint.
refused "netbootfs: mountpoint $T/does-not-exist: No such file or directory" \
  "$url" "$T/does-not-exist" -o "cache_dir=$CACHE"
refused "netbootfs: mountpoint $T/afile is not a directory" "$url" "$T/afile" -o "cache_dir=$CACHE"
mkdir -p "$T/old"
cp "$T/up/pxelinux.0" "$T/old/pxelinux.0"
refused "netbootfs: mountpoint $T/old is not empty (it holds 'pxelinux.0'): a mount would hide what is there; empty it or choose another directory" \
  "$url" "$T/old" -o "cache_dir=$CACHE"
cp "$T/up/ldlinux.c32" "$T/old/"
refused "netbootfs: mountpoint $T/old/ is not empty (it holds '*' and 1 more): a mount would hide what is there; empty it or choose another directory" \
  "$url" "$T/old/" -o "cache_dir=$CACHE"
cmp "$T/up/pxelinux.0" "$T/old/pxelinux.0" || fail "the old tree changed"

mkdir -p "$T/busy"
sys_mount -t tmpfs nbfs-busy "$T/busy"
refused "netbootfs: mountpoint $T/busy is already a mount point (tmpfs, source nbfs-busy): unmount it first or choose another directory" \
  "$url" "$T/busy" -o "cache_dir=$CACHE"
findmnt -n -t tmpfs --mountpoint "$T/busy" >/dev/null || fail "the tmpfs is gone"

start_mount "$url" "$T/mnt"
first=$DAEMON_PID
refused "netbootfs: mountpoint $T/mnt is already mounted by a running netbootfs (${url}): unmount it first (fusermount3 -u $T/mnt)" \
  "$url" "$T/mnt" -o "cache_dir=$CACHE"
alive "$first" || fail "the running netbootfs died"
cmp "$T/up/pxelinux.cfg/default" "$T/mnt/pxelinux.cfg/default" || fail "the running mount no longer serves"
[ "$(findmnt -rn --mountpoint "$T/mnt" | wc -l)" -eq 1 ] || fail "something was stacked on the running mount"

# A bind mount of an empty directory is a directory: accepted.
mkdir -p "$T/vol/src" "$T/vol/dst"
sys_mount --bind "$T/vol/src" "$T/vol/dst"
CACHE_DIR=$T/cache-vol start_mount "$url" "$T/vol/dst"
cmp "$T/up/pxelinux.0" "$T/vol/dst/pxelinux.0" || fail "the mount on a bind mount does not serve"
stop_mount "$T/vol/dst"
DAEMON_PID=$first

# The cache directory (the mountpoint is fine).
refused "netbootfs: cannot create cache_dir $T/afile/sub: Not a directory" \
  "$url" "$T/m" -o "cache_dir=$T/afile/sub"
mkdir -p "$T/ro/existing"
sys_mount --bind "$T/ro" "$T/ro"
mount -o remount,bind,ro "$T/ro" || fail "cannot make $T/ro read-only"
refused "netbootfs: cannot create cache_dir $T/ro/cache: Read-only file system" \
  "$url" "$T/m" -o "cache_dir=$T/ro/cache"
refused "netbootfs: cache_dir $T/ro/existing is not writable: Read-only file system" \
  "$url" "$T/m" -o "cache_dir=$T/ro/existing"

# The rewrite configuration.
refused "netbootfs: cannot read config $T/nope.toml: No such file or directory" \
  "$url" "$T/m" -o "cache_dir=$CACHE,config=$T/nope.toml"
printf '[[rewrite]]\nname = \n' >"$T/bad.toml"
refused "netbootfs: $T/bad.toml: line 2, column 8: *" "$url" "$T/m" -o "cache_dir=$CACHE,config=$T/bad.toml"
printf '[[rewrite]]\nnamex = "a"\n' >"$T/bad2.toml"
refused "netbootfs: $T/bad2.toml: line 2: rewrite\[0\].namex: unknown key*" \
  "$url" "$T/m" -o "cache_dir=$CACHE,config=$T/bad2.toml"

# The cache size.
refused "netbootfs: max_cache_size: bad size 'lots' (want bytes or a number with K, M, G or T, e.g. 20G)" \
  "$url" "$T/m" -o "cache_dir=$CACHE,max_cache_size=lots"
printf 'max_cache_size = "12X"\n' >"$T/size.toml"
refused "netbootfs: $T/size.toml: max_cache_size: bad size '12X'*" \
  "$url" "$T/m" -o "cache_dir=$CACHE,config=$T/size.toml"
printf 'pins = "grub/*"\n' >"$T/pins.toml"
refused "netbootfs: $T/pins.toml: pins: expected a list of globs" \
  "$url" "$T/m" -o "cache_dir=$CACHE,config=$T/pins.toml"
# A limit the cache's filesystem cannot hold, counting what the cache holds.
mkdir -p "$T/small"
sys_mount -t tmpfs -o size=2m nbfs-small "$T/small"
CACHE=$T/small/cache CACHE_EXPECTED=1 refused \
  "netbootfs: cache_dir $T/small/cache: max_cache_size 64.0 MiB (67108864 bytes) does not fit on the cache filesystem: * free + 0 bytes held by the cache" \
  "$url" "$T/m" -o "cache_dir=$T/small/cache,max_cache_size=64M"
# The command line wins over the config file: 1M fits.
printf 'max_cache_size = "64M"\n' >"$T/big.toml"
CACHE_DIR=$T/small/cache2 start_mount "$url" "$T/vol/dst" "config=$T/big.toml,max_cache_size=1M"
cmp "$T/up/pxelinux.0" "$T/vol/dst/pxelinux.0" || fail "the mount with max_cache_size=1M does not serve"
grep -q "cache limit 1.0 MiB (1048576 bytes)," "$T/daemon.log" || fail "the command line's max_cache_size did not win"
stop_mount "$T/vol/dst"
DAEMON_PID=$first

any_mount "$T/m" && fail "$T/m was mounted"
check_daemon_log
pass "$n bad configurations refused with one line each, nothing mounted; a bind-mounted volume accepted"
