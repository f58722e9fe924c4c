#!/usr/bin/env bash
# The systemd units pass `systemd-analyze verify`, and the daemon speaks the
# notify protocol: READY=1 once the mount serves, STOPPING=1 on SIGTERM, and a
# clean unmount.
source "$(dirname "$0")/lib.sh"
units=$NETBOOTFS_SOURCE_DIR/contrib/systemd
mkdir -p "$T/units"
# verify checks that ExecStart's binary exists: point it at the build.
sed "s|/usr/bin/netbootfs|$NBFS|" "$units/netbootfs.service" >"$T/units/netbootfs.service"
cp "$units/srv-tftpboot.mount" "$T/units/"
if command -v systemd-analyze >/dev/null; then
  out=$(cd "$T/units" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no \
        "$T/units/netbootfs.service" "$T/units/srv-tftpboot.mount" 2>&1 | grep -v 'Failed to .*bus' || true)
  # Only complaints about our own units count (not about the host's other units).
  bad=$(grep -E 'netbootfs.service|srv-tftpboot.mount' <<<"$out" || true)
  [ -z "$bad" ] || fail "systemd-analyze verify: $bad"
  note "systemd-analyze verify: clean"
else
  note "systemd-analyze not installed: unit check skipped"
fi

KERNEL_MB=1 INITRD_MB=1 make_tree "$T/up"
start_nginx "$T/up"
python3 - "$T/notify.sock" >"$T/notify.log" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
try:
    while True:
        msg = s.recv(4096).decode()
        print(msg.replace("\n", " | "), flush=True)
        if "STOPPING=1" in msg:
            break
except socket.timeout:
    pass
PY
listener=$!
track_pid "$listener"
wait_until 5 test -S "$T/notify.sock" || fail "notify listener did not start"
mkdir -p "$T/mnt"
NOTIFY_SOCKET=$T/notify.sock "$NBFS" "$NGINX_URL" "$T/mnt" -f \
  -o "allow_other,cache_dir=$T/cache,proxy_host=proxy.example.net" >>"$T/daemon.log" 2>&1 &
DAEMON_PID=$!
track_pid "$DAEMON_PID"
_mounts+=("$T/mnt")
wait_until 10 grep -q "READY=1" "$T/notify.log" || fail "no READY=1: $(cat "$T/notify.log")"
mounted "$T/mnt" || fail "READY=1 came before the mount"
cmp "$T/up/pxelinux.0" "$T/mnt/pxelinux.0" || fail "the mount does not serve after READY"
grep -q "STATUS=serving" "$T/notify.log" || fail "no STATUS line"
kill -HUP "$DAEMON_PID"
wait_until 5 grep -q "RELOADING=1" "$T/notify.log" || fail "no RELOADING=1 on SIGHUP"
kill -TERM "$DAEMON_PID"
wait_until 10 grep -q "STOPPING=1" "$T/notify.log" || fail "no STOPPING=1 on SIGTERM"
wait_until 10 dead $DAEMON_PID || fail "the daemon did not exit"
wait "$DAEMON_PID" || fail "the daemon exited non-zero after SIGTERM"
mounted "$T/mnt" && fail "a stale mount is left after SIGTERM"
check_daemon_log
pass "units verify; READY=1 after mount, RELOADING=1 on SIGHUP, STOPPING=1 and a clean unmount on SIGTERM"
