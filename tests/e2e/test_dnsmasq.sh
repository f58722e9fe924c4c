#!/usr/bin/env bash
# dnsmasq's TFTP server (port 69, fixed) serves the mount from a network
# namespace of its own, as packaged setups run it: -k (it drops to its user;
# -d would keep root), --tftp-secure, and netbootfs mounted with uid=/gid= of
# dnsmasq's user. A kernel-sized file and files in subdirectories arrive
# byte-identical with the exact tsize; a mount owned by another uid is refused
# (tftp-secure at work); a missing name is an error.
source "$(dirname "$0")/lib.sh"
command -v dnsmasq >/dev/null || fail "dnsmasq is not installed (contrib/lib/deps.sh)"
DNSMASQ_USER=$(id -u dnsmasq >/dev/null 2>&1 && echo dnsmasq || echo nobody)
DUID=$(id -u "$DNSMASQ_USER")
DGID=$(id -g "$DNSMASQ_USER")

NS=nbfs-$$-$RANDOM
DNSMASQ_PID=
ip netns add "$NS" || fail "cannot create network namespace $NS"
# Our cleanup first (dnsmasq out of the mount, then the namespace), then lib.sh's.
_dnsmasq_cleanup() {
  local rc=$?
  set +e
  stop_dnsmasq
  ip netns del "$NS" 2>/dev/null
  (exit $rc)
  _cleanup
}
trap _dnsmasq_cleanup EXIT
ip netns exec "$NS" ip link set lo up || fail "cannot bring up lo in $NS"
in_ns() { ip netns exec "$NS" "$@"; }

# start_dnsmasq TFTP_ROOT: dnsmasq with TFTP only (--port=0: no DNS; no DHCP
# range: no DHCP) on the namespace's 127.0.0.1:69; sets DNSMASQ_PID.
start_dnsmasq() {
  : >"$T/dnsmasq.log"
  chown "$DNSMASQ_USER" "$T/dnsmasq.log"
  ip netns exec "$NS" dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --port=0 \
    --enable-tftp --tftp-root="$1" --tftp-secure --user="$DNSMASQ_USER" \
    --listen-address=127.0.0.1 --bind-interfaces --pid-file="$T/dnsmasq.pid" \
    --log-facility="$T/dnsmasq.log" >>"$T/dnsmasq.out" 2>&1 &
  DNSMASQ_PID=$!  # ip netns exec execs dnsmasq: the same PID
  track_pid "$DNSMASQ_PID"
  wait_until 10 dnsmasq_listens || fail "dnsmasq did not listen on 69/udp in $NS: $(cat "$T/dnsmasq.out" "$T/dnsmasq.log")"
  alive "$DNSMASQ_PID" || fail "dnsmasq exited: $(cat "$T/dnsmasq.out" "$T/dnsmasq.log")"
  # -k keeps it in the foreground; it still drops root (once its sockets are bound).
  wait_until 10 dnsmasq_dropped_root \
    || fail "dnsmasq runs as uid $(ps -o uid= -p "$DNSMASQ_PID"), not $DUID"
}
dnsmasq_dropped_root() { [ "$(ps -o uid= -p "$DNSMASQ_PID" | tr -d ' ')" = "$DUID" ]; }
dnsmasq_listens() { [ -n "$(in_ns ss -Hlun 'src 127.0.0.1:69')" ]; }
stop_dnsmasq() {
  [ -n "$DNSMASQ_PID" ] || return 0
  ours "$DNSMASQ_PID" && kill "$DNSMASQ_PID" 2>/dev/null
  wait_until 10 dead "$DNSMASQ_PID" || { ours "$DNSMASQ_PID" && kill -9 "$DNSMASQ_PID" 2>/dev/null; }
  wait "$DNSMASQ_PID" 2>/dev/null
  DNSMASQ_PID=
  return 0
}

# ns_atftp_get REMOTE LOCAL: atftp inside the namespace (blksize 1468, tsize);
# its trace goes to $T/atftp.out; non-zero on a TFTP error.
ns_atftp_get() {
  rm -f "$2"
  with_timeout "${TFTP_TIMEOUT:-60}" ip netns exec "$NS" atftp --option "blksize 1468" \
    --option "tsize 0" --trace --verbose -g -r "$1" -l "$2" 127.0.0.1 69 >"$T/atftp.out" 2>&1
}

KERNEL_MB=4 INITRD_MB=1 make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt" "uid=$DUID,gid=$DGID"

# ip netns exec gives the command a mount namespace of its own (to remount
# /sys), copied from ours: the FUSE mount must be there, and readable.
in_ns findmnt -n -t fuse.netbootfs --mountpoint "$T/mnt" >/dev/null \
  || fail "the mount is not visible inside $NS"
in_ns timeout 20 cmp "$T/up/pxelinux.cfg/default" "$T/mnt/pxelinux.cfg/default" \
  || fail "the mount does not read right inside $NS"
[ "$(stat -c %u:%g "$T/mnt/images/linux")" = "$DUID:$DGID" ] \
  || fail "files are owned by $(stat -c %u:%g "$T/mnt/images/linux"), not $DUID:$DGID"

start_dnsmasq "$T/mnt"
for f in images/linux pxelinux.cfg/default pxelinux.0 "names with spaces/boot menu #1.cfg"; do
  ns_atftp_get "$f" "$T/out" || fail "dnsmasq: fetching $f failed: $(cat "$T/atftp.out") $(tail -n 5 "$T/dnsmasq.log")"
  cmp "$T/up/$f" "$T/out" || fail "dnsmasq: $f differs ($(stat -c %s "$T/out") of $(stat -c %s "$T/up/$f") bytes)"
  tsize=$(oack_tsize)
  [ "$tsize" = "$(stat -c %s "$T/up/$f")" ] || fail "dnsmasq: tsize of $f is ${tsize:-missing}: $(grep OACK "$T/atftp.out")"
done
grep -q 'received OACK <.*blksize: 1468' "$T/atftp.out" || fail "blksize was not negotiated: $(grep OACK "$T/atftp.out")"
# The bytes came through netbootfs from upstream: one GET of the kernel.
[ "$(nginx_count GET /images/linux 200)" -eq 1 ] \
  || fail "nginx served /images/linux $(nginx_count GET /images/linux 200) times, expected 1"
grep -q "sent $T/mnt/images/linux to 127.0.0.1" "$T/dnsmasq.log" \
  || fail "dnsmasq did not log sending the kernel: $(tail -n 5 "$T/dnsmasq.log")"

# A name the upstream does not have: an error packet, no data.
if ns_atftp_get pxelinux.cfg/0A000001 "$T/out.missing"; then fail "dnsmasq served a missing name"; fi
[ ! -s "$T/out.missing" ] || fail "a missing name produced data"
grep -qiE 'error|not found' "$T/atftp.out" || fail "no TFTP error for a missing name: $(cat "$T/atftp.out")"
grep -q "file $T/mnt/pxelinux.cfg/0A000001 not found" "$T/dnsmasq.log" \
  || fail "dnsmasq did not report the missing file: $(tail -n 5 "$T/dnsmasq.log")"

# The same tree mounted with the default owner (root): tftp-secure refuses it,
# which is why dnsmasq setups need uid=/gid=.
stop_dnsmasq
CACHE_DIR=$T/cache-root start_mount "$NGINX_URL" "$T/mnt-root"
[ "$(stat -c %u "$T/mnt-root/pxelinux.0")" = 0 ] || fail "the second mount is not owned by root"
# Mode 0444: dnsmasq's user can read it; only tftp-secure says no.
setpriv --reuid="$DUID" --regid="$DGID" --clear-groups timeout 20 cmp "$T/up/pxelinux.0" "$T/mnt-root/pxelinux.0" \
  || fail "$DNSMASQ_USER cannot read the root-owned mount at all"
start_dnsmasq "$T/mnt-root"
if ns_atftp_get pxelinux.0 "$T/out.refused"; then fail "tftp-secure served a file dnsmasq does not own"; fi
[ ! -s "$T/out.refused" ] || fail "a refused file produced data"
grep -q "cannot access $T/mnt-root/pxelinux.0" "$T/dnsmasq.log" \
  || fail "dnsmasq did not say why it refused: $(tail -n 5 "$T/dnsmasq.log")"
stop_dnsmasq
check_daemon_log
pass "dnsmasq (uid $DUID, tftp-secure) in $NS served $(stat -c %s "$T/up/images/linux") bytes byte-identical with exact tsize; missing name and root-owned mount refused"
