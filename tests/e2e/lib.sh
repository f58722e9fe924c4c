# Sourced by every end-to-end test (and by contrib/demo.sh and tests/bench/).
#
# Each test gets its own temp dir ($T), its own servers on 127.0.0.1 ports it
# picked, and an EXIT trap that unmounts only its own mounts, stops only the
# processes it started (checked by PID *and* start time, so a recycled PID is
# never hit) and removes $T without crossing into a mount. Every wait is
# bounded. Exit 77 (skip) only when /dev/fuse is missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NETBOOTFS_SOURCE_DIR=${NETBOOTFS_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
NETBOOTFS_BUILD_DIR=${NETBOOTFS_BUILD_DIR:-$NETBOOTFS_SOURCE_DIR/build}
# NETBOOTFS_BIN_DIR runs the tests against installed binaries (the package).
NBFS=${NETBOOTFS_BIN_DIR:-$NETBOOTFS_BUILD_DIR/fs}/netbootfs
NBCTL=${NETBOOTFS_BIN_DIR:-$NETBOOTFS_BUILD_DIR/fs}/netbootfsctl
FAULT_SERVER=$NETBOOTFS_SOURCE_DIR/tests/tools/fault_server.py

if [ ! -e /dev/fuse ]; then
  echo "SKIP: /dev/fuse is missing"
  exit 77
fi
[ -x "$NBFS" ] || { echo "FAIL: $NBFS is not built" >&2; exit 1; }
[ -x "$NBCTL" ] || { echo "FAIL: $NBCTL is not built" >&2; exit 1; }

T=$(mktemp -d /tmp/netbootfs-e2e.XXXXXX)
chmod 755 "$T"  # in.tftpd drops to user tftp; nginx workers read the trees
_pids=()    # "PID:STARTTIME" of every process we started
_mounts=()  # mountpoints we created
_test_name=$(basename "$0" .sh)

# _starttime PID: field 22 of /proc/PID/stat (after the parenthesised comm).
_starttime() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  echo "${20}"
}

# track_pid PID: the cleanup trap stops it (only if it is still that process).
track_pid() { _pids+=("$1:$(_starttime "$1" || echo gone)"); }

# ours PID: PID is running and is the process we recorded.
ours() {
  local e
  for e in "${_pids[@]}"; do
    [ "${e%%:*}" = "$1" ] || continue
    [ "$(_starttime "$1" 2>/dev/null)" = "${e#*:}" ] && return 0
  done
  return 1
}

# alive PID: running and not a zombie waiting for us to reap it.
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ -n "$st" ] && [[ $st != Z* ]]; }
dead() { ! alive "$1"; }

mounted() { findmnt -n -t fuse.netbootfs --mountpoint "$1" >/dev/null 2>&1; }
# live_mount MOUNTPOINT: a netbootfs mount is there and answers statfs (which
# always reaches the daemon, unlike stat; a dead mount left by a crash answers
# ENOTCONN, and mount IDs are reused, so only an answer tells a new mount).
live_mount() { mounted "$1" && timeout 5 stat -f -c %T "$1" >/dev/null 2>&1; }
any_mount() { findmnt -n --mountpoint "$1" >/dev/null 2>&1; }

_cleanup() {
  local rc=$?
  set +e
  trap - EXIT
  local m p e kids
  for m in "${_mounts[@]}"; do
    if any_mount "$m"; then
      timeout 10 fusermount3 -u "$m" 2>/dev/null || timeout 10 fusermount3 -uz "$m" 2>/dev/null \
        || ! any_mount "$m" || echo "cleanup: could not unmount $m" >&2
    fi
  done
  # Background jobs of this shell (readers, clients) and their children.
  for p in $(jobs -p); do
    kids=$(pgrep -P "$p" 2>/dev/null)
    kill $kids "$p" 2>/dev/null
  done
  for e in "${_pids[@]}"; do
    p=${e%%:*}
    ours "$p" && kill "$p" 2>/dev/null
  done
  for e in "${_pids[@]}"; do
    p=${e%%:*}
    for _ in $(seq 50); do ours "$p" && alive "$p" || break; sleep 0.1; done
    ours "$p" && alive "$p" && kill -9 "$p" 2>/dev/null
  done
  if [ $rc -ne 0 ] && [ $rc -ne 77 ] && [ -s "$T/daemon.log" ]; then
    echo "--- last lines of the daemon log ($T/daemon.log) ---" >&2
    tail -n 40 "$T/daemon.log" >&2
  fi
  # Never descend into a mount that is somehow still there.
  if findmnt -rn -o TARGET | grep -q "^$T/"; then
    echo "cleanup: a mount is left under $T; not removing it" >&2
  else
    if [ -n "${KEEP_T:-}" ]; then echo "kept $T" >&2; else rm -rf --one-file-system "$T"; fi
  fi
  exit $rc
}
trap _cleanup EXIT
# A signal (ctest's timeout, ^C) still runs the cleanup: exit from the handler.
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { echo "FAIL [$_test_name]: $*" >&2; exit 1; }
# soft_fail MESSAGE: a failure that lets the test go on checking the rest;
# pass then fails the test with every such message.
_soft=()
soft_fail() { echo "FAIL [$_test_name] (continuing): $*" >&2; _soft+=("$*"); }
pass() {
  [ ${#_soft[@]} -eq 0 ] || fail "${#_soft[@]} check(s) failed: $(printf '%s; ' "${_soft[@]}")"
  echo "PASS [$_test_name]: $*"
}
note() { echo "  $*"; }

# wait_until SECONDS COMMAND...: polls every 0.1 s (shell functions allowed);
# false when time runs out.
wait_until() {
  local limit=$1; shift
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.1
  done
}

# with_timeout SECONDS COMMAND...: runs an external command bounded in time
# (SIGTERM, then SIGKILL 5 s later); says so when it had to stop it.
with_timeout() {
  local limit=$1; shift
  local rc=0
  timeout -k 5 "$limit" "$@" || rc=$?
  [ $rc -ne 124 ] && [ $rc -ne 137 ] || echo "timed out after ${limit}s: $*" >&2
  return $rc
}

# The commands tests use on the mount never block forever: a wedged daemon
# turns into a "timed out" failure, not a hung test. IO_TIMEOUT (120 s) bounds each.
for _cmd in cat cmp md5sum sha256sum stat ls find getfattr; do
  eval "$_cmd() { with_timeout \"\${IO_TIMEOUT:-120}\" $_cmd \"\$@\"; }"
done
unset _cmd

# A deadline for the whole test (E2E_DEADLINE, 300 s; 0 = none): past it the
# test shell and its direct children (the command it waits for) get SIGTERM,
# and the EXIT trap cleans up as usual.
if [ "${E2E_DEADLINE:-300}" != 0 ]; then
  ( sleep "${E2E_DEADLINE:-300}"
    echo "FAIL [$_test_name]: over the ${E2E_DEADLINE:-300}s deadline" >&2
    kill -TERM $$
    pkill -TERM -P $$ ) </dev/null >/dev/null &
fi

# now_ms: monotonic-enough wall clock in milliseconds.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

free_port() {  # free_port [tcp|udp]: a port nobody uses on 127.0.0.1 right now
  python3 - "${1:-tcp}" <<'EOF'
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}

# make_tree DIR: a netboot tree. KERNEL_MB (10) and INITRD_MB (100) set the
# sizes of images/linux and images/initrd for tests where size does not matter.
make_tree() {
  local d=$1
  mkdir -p "$d/pxelinux.cfg" "$d/grub" "$d/images" "$d/names with spaces" "$d/empty"
  head -c 26000 /dev/urandom >"$d/pxelinux.0"
  head -c 120000 /dev/urandom >"$d/ldlinux.c32"
  printf 'DEFAULT linux\nLABEL linux\n  KERNEL images/linux\n  APPEND initrd=images/initrd\n' \
    >"$d/pxelinux.cfg/default"
  printf 'DEFAULT local\n' >"$d/pxelinux.cfg/01-52-54-00-12-34-56"
  printf 'set timeout=1\nmenuentry linux {\n linux /images/linux\n}\n' >"$d/grub/grub.cfg"
  head -c $((${KERNEL_MB:-10} * 1048576)) /dev/urandom >"$d/images/linux"
  head -c $((${INITRD_MB:-100} * 1048576)) /dev/urandom >"$d/images/initrd"
  printf 'menu #1\n' >"$d/names with spaces/boot menu #1.cfg"
  printf 'odd\n' >"$d/names with spaces/50% off+more?é.cfg"
  chmod -R a+rX "$d"
}

# start_nginx ROOT [EXTRA_SERVER_DIRECTIVES]: sets NGINX_PORT, NGINX_URL,
# NGINX_PID, NGINX_LOG. Listings are nginx's JSON autoindex unless
# NGINX_AUTOINDEX_FORMAT=html; NGINX_AUTOINDEX=off lists nothing (a directory
# URL answers 403). NGINX_LISTEN_OPTS is appended to `listen`
# ("ssl" makes NGINX_URL https; the certificate goes in the extra directives). The access log has one line per request:
#   METHOD URI STATUS BODY_BYTES "If-None-Match" "Range"
start_nginx() {
  local root=$1 extra=${2:-}
  NGINX_PORT=$(free_port tcp)
  mkdir -p "$T/nginx/logs"
  NGINX_LOG=$T/nginx/logs/access.log
  cat >"$T/nginx/nginx.conf" <<EOF
worker_processes 1;
user root;
pid $T/nginx/nginx.pid;
error_log $T/nginx/logs/error.log;
events { worker_connections 1024; }
http {
  log_format nbfs '\$request_method \$request_uri \$status \$body_bytes_sent "\$http_if_none_match" "\$http_range"';
  access_log $NGINX_LOG nbfs;
  client_body_temp_path $T/nginx/tmp;
  proxy_temp_path $T/nginx/tmp;
  fastcgi_temp_path $T/nginx/tmp;
  uwsgi_temp_path $T/nginx/tmp;
  scgi_temp_path $T/nginx/tmp;
  sendfile on;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$NGINX_PORT ${NGINX_LISTEN_OPTS:-};
    root $root;
    autoindex ${NGINX_AUTOINDEX:-on};
    autoindex_format ${NGINX_AUTOINDEX_FORMAT:-json};
    $extra
  }
}
EOF
  nginx -t -q -c "$T/nginx/nginx.conf" -p "$T/nginx" -g 'daemon off;' 2>"$T/nginx/conf.err" \
    || fail "bad nginx configuration: $(cat "$T/nginx/conf.err")"
  _run_nginx
  : >"$NGINX_LOG"
}

_run_nginx() {
  nginx -c "$T/nginx/nginx.conf" -p "$T/nginx" -g 'daemon off;' &
  NGINX_PID=$!
  track_pid "$NGINX_PID"
  local scheme=http
  [[ " ${NGINX_LISTEN_OPTS:-} " == *" ssl "* ]] && scheme=https
  NGINX_URL=$scheme://127.0.0.1:$NGINX_PORT/
  # Any HTTP answer: without listings the root is 403.
  wait_until 10 curl -sk -o /dev/null --max-time 2 "$NGINX_URL" \
    || fail "nginx did not start: $(tail -n 5 "$T/nginx/logs/error.log" 2>/dev/null)"
}

# restart_nginx: after stop_nginx, the same configuration on the same port
# (the access log goes on).
restart_nginx() { _run_nginx; }

stop_nginx() {
  ours "$NGINX_PID" && kill "$NGINX_PID" 2>/dev/null
  wait_until 10 dead "$NGINX_PID" || kill -9 "$NGINX_PID"
  wait "$NGINX_PID" 2>/dev/null || true
}

# nginx_count METHOD [URI_REGEX] [STATUS_REGEX]: requests in nginx's access log
# (nginx writes a line when a request ends).
nginx_count() {
  local uri=${2:-[^ ]+} status=${3:-[0-9]+}
  grep -cE "^$1 $uri $status " "$NGINX_LOG" || true
}

# start_fault_server ROOT: tests/tools/fault_server.py; sets FAULT_PORT, FAULT_URL.
start_fault_server() {
  python3 "$FAULT_SERVER" --root "$1" --bind 127.0.0.1 --port 0 --port-file "$T/fault.port" \
    >"$T/fault.log" 2>&1 &
  FAULT_PID=$!
  track_pid "$FAULT_PID"
  wait_until 10 test -s "$T/fault.port" || fail "fault server did not start: $(cat "$T/fault.log")"
  FAULT_PORT=$(cat "$T/fault.port")
  FAULT_URL=http://127.0.0.1:$FAULT_PORT/
}
fault() {
  curl -sf --max-time 5 -X POST "http://127.0.0.1:$FAULT_PORT/__fault" -d "$1" >/dev/null \
    || fail "the fault server refused $1"
}
fault_log() { curl -sf --max-time 5 "http://127.0.0.1:$FAULT_PORT/__log"; }

# start_mount URL MOUNTPOINT [OPTIONS]: netbootfs in the foreground, its log
# appended to $T/daemon.log; sets DAEMON_PID. The cache is $T/cache unless
# CACHE_DIR is set; LOG_LEVEL (debug) sets log_level; DAEMON_NICE runs it at
# that nice level (nice execs it: the PID stays the daemon's). Waits
# (bounded) until the mount is there, and fails at once if the daemon exits
# first.
start_mount() {
  local url=$1 mnt=$2 opts=${3:-}
  mkdir -p "$mnt"
  local o="allow_other,cache_dir=${CACHE_DIR:-$T/cache},log_level=${LOG_LEVEL:-debug}"
  [ -n "$opts" ] && o="$o,$opts"
  echo "=== netbootfs $url $mnt -f -o $o" >>"$T/daemon.log"
  ${DAEMON_NICE:+nice -n "$DAEMON_NICE"} "$NBFS" "$url" "$mnt" -f -o "$o" >>"$T/daemon.log" 2>&1 &
  DAEMON_PID=$!
  track_pid "$DAEMON_PID"
  _mounts+=("$mnt")
  local end=$((SECONDS + ${MOUNT_TIMEOUT:-15}))
  until live_mount "$mnt"; do
    if dead "$DAEMON_PID"; then
      local rc=0
      wait "$DAEMON_PID" || rc=$?
      fail "netbootfs exited (status $rc) before mounting $mnt: $(tail -n 5 "$T/daemon.log")"
    fi
    [ $SECONDS -lt $end ] || fail "the mount did not appear on $mnt within ${MOUNT_TIMEOUT:-15}s"
    sleep 0.05
  done
}

# stop_mount MOUNTPOINT: a clean unmount; the daemon must exit by itself.
stop_mount() {
  local mnt=$1
  with_timeout 10 fusermount3 -u "$mnt" || fail "unmount of $mnt failed"
  wait_until 10 dead "$DAEMON_PID" || fail "the daemon did not exit after the unmount"
  local rc=0
  wait "$DAEMON_PID" 2>/dev/null || rc=$?
  [ $rc -eq 0 ] || fail "the daemon exited with status $rc after a clean unmount"
}

# make_test_pki DIR: a throw-away CA (DIR/ca.pem), a server certificate for
# 127.0.0.1 signed by it (server.pem, server.key) and a client certificate
# (client.pem, client.key, CN proxy1).
make_test_pki() {
  local pki=$1
  command -v openssl >/dev/null || fail "openssl is not installed"
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=netbootfs test CA" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
    printf 'subjectAltName=IP:127.0.0.1\n' >san.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile san.ext -out server.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=proxy1" -keyout client.key -out client.csr
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -out client.pem
  ) >"$T/pki.log" 2>&1 || fail "making the test PKI failed: $(cat "$T/pki.log")"
}

# start_tls_nginx ROOT PKI: start_nginx over https with make_test_pki's
# certificates; /images/ answers 403 unless the client shows a certificate
# of that CA.
start_tls_nginx() {
  local pki=$2
  NGINX_LISTEN_OPTS=ssl start_nginx "$1" "ssl_certificate $pki/server.pem; ssl_certificate_key $pki/server.key;
    ssl_client_certificate $pki/ca.pem; ssl_verify_client optional;
    location /images/ { if (\$ssl_client_verify != SUCCESS) { return 403; } }"
}

# udp_bound PORT: something listens on 127.0.0.1:PORT/udp.
udp_bound() { [ -n "$(ss -Hlun "src 127.0.0.1:$1" 2>/dev/null)" ]; }

# start_tftpd DIR: tftpd-hpa's in.tftpd in the foreground on a loopback UDP
# port, chrooted (--secure) into DIR and dropping to user tftp as packaged
# setups do; sets TFTP_PORT and TFTPD_PID.
start_tftpd() {
  TFTP_PORT=$(free_port udp)
  in.tftpd --foreground --listen --address "127.0.0.1:$TFTP_PORT" --secure --user tftp \
    --timeout 600 "$1" >"$T/tftpd.log" 2>&1 &
  TFTPD_PID=$!
  track_pid "$TFTPD_PID"
  wait_until 5 udp_bound "$TFTP_PORT" || fail "in.tftpd did not listen: $(cat "$T/tftpd.log")"
  alive "$TFTPD_PID" || fail "in.tftpd exited: $(cat "$T/tftpd.log")"
}

# tftp_get REMOTE LOCAL: tftp-hpa client. It exits 0 even when the server sent
# an error, so callers judge by content.
tftp_get() {
  rm -f "$2"
  (cd "$(dirname "$2")" && with_timeout "${TFTP_TIMEOUT:-120}" \
     tftp 127.0.0.1 "$TFTP_PORT" -m binary -c get "$1" "$2") >"$T/tftp.out" 2>&1 || true
}

# atftp_get REMOTE LOCAL: atftp with blksize 1468 and tsize; its trace (the
# server's OACK included) goes to $T/atftp.out. atftp exits non-zero on errors.
atftp_get() {
  rm -f "$2"
  with_timeout "${TFTP_TIMEOUT:-120}" atftp --option "blksize 1468" --option "tsize 0" \
    --trace --verbose -g -r "$1" -l "$2" 127.0.0.1 "$TFTP_PORT" >"$T/atftp.out" 2>&1
}

# oack_tsize: the tsize the server announced in the last atftp_get.
oack_tsize() { grep -oE 'received OACK <.*tsize: [0-9]+' "$T/atftp.out" | grep -oE '[0-9]+$' | tail -1; }

# check_daemon_log [ALLOWED_REGEX]: fails on error/critical lines of the
# daemon log that the test did not declare expected.
check_daemon_log() {
  local allowed=${1:-^$}
  local bad
  bad=$(grep -E '^[0-9T:.-]+ (error|critical) ' "$T/daemon.log" | grep -vE "$allowed" || true)
  [ -z "$bad" ] || fail "unexpected errors in the daemon log:
$bad"
}

# started_with WHAT [CONTEXT]: the last start-up line of the daemon log
# (log_level=debug) is "start-up: WHAT" ("after a clean stop", "full
# recovery"); fails the test otherwise, CONTEXT first in the message.
started_with() {
  local got
  got=$(grep -o 'start-up: .*' "$T/daemon.log" | tail -n 1)
  [ "$got" = "start-up: $1" ] || fail "${2:+$2: }expected 'start-up: $1', the daemon logged '${got:-nothing}'"
}

md5() { md5sum "$1" | cut -d' ' -f1; }

# cache_entry PATH: "SHA256 SIZE" of PATH in the index of $T/cache (or
# CACHE_DIR), or "absent".
cache_entry() {
  "$NBCTL" --cache-dir "${CACHE_DIR:-$T/cache}" --json ls | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e["path"].lstrip("/") == sys.argv[1]:
        sys.exit(print(e["sha256"], e["size"]))
print("absent")' "$1"
}

# timed_read PATH: "ERRNO MS" of a full read of PATH ("OK MS" when it succeeds),
# bounded.
timed_read() {
  with_timeout 30 python3 - "$1" <<'PY'
import errno, sys, time
t0 = time.monotonic()
try:
    with open(sys.argv[1], "rb") as f:
        while f.read(1 << 20):
            pass
    res = "OK"
except OSError as e:
    res = errno.errorcode.get(e.errno, str(e.errno))
print(res, int((time.monotonic() - t0) * 1000))
PY
}
