# Sourced by every end-to-end test. Each test gets its own temp dir, its own
# servers on 127.0.0.1 ports it picked, and a trap that unmounts and kills
# only what it started. Every wait is bounded.
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

T=$(mktemp -d /tmp/netbootfs-e2e.XXXXXX)
chmod 755 "$T"
_pids=()
_mounts=()
_test_name=$(basename "$0" .sh)

_cleanup() {
  local rc=$?
  set +e
  for m in "${_mounts[@]}"; do
    if grep -qs " $m fuse" /proc/mounts; then
      fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
    fi
  done
  for p in "${_pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${_pids[@]}"; do
    for _ in $(seq 50); do alive "$p" || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  if [ $rc -ne 0 ] && [ -f "$T/daemon.log" ]; then
    echo "--- last lines of the daemon log ---" >&2
    tail -n 40 "$T/daemon.log" >&2
  fi
  rm -rf "$T"
  exit $rc
}
trap _cleanup EXIT

fail() { echo "FAIL [$_test_name]: $*" >&2; exit 1; }
pass() { echo "PASS [$_test_name]: $*"; }
note() { echo "  $*"; }

# wait_until SECONDS COMMAND...: polls every 0.1 s; false when time runs out.
wait_until() {
  local limit=$1; shift
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.1
  done
}

free_port() {  # free_port tcp|udp
  python3 - "$1" <<'EOF'
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}

# make_tree DIR: a small netboot tree. KERNEL_MB and INITRD_MB set the sizes.
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

# start_nginx ROOT [EXTRA_SERVER_DIRECTIVES]: sets NGINX_PORT and NGINX_URL.
start_nginx() {
  local root=$1 extra=${2:-}
  NGINX_PORT=$(free_port tcp)
  mkdir -p "$T/nginx/logs"
  cat >"$T/nginx/nginx.conf" <<EOF
worker_processes 1;
user root;
pid $T/nginx/nginx.pid;
error_log $T/nginx/logs/error.log;
daemon off;
events { worker_connections 1024; }
http {
  log_format nbfs '\$request_method \$request_uri \$status \$body_bytes_sent "\$http_if_none_match" "\$http_range"';
  access_log $T/nginx/logs/access.log nbfs;
  sendfile on;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $root;
    autoindex on;
    autoindex_format json;
    $extra
  }
}
EOF
  nginx -c "$T/nginx/nginx.conf" -p "$T/nginx" &
  NGINX_PID=$!
  _pids+=("$NGINX_PID")
  NGINX_URL=http://127.0.0.1:$NGINX_PORT/
  wait_until 10 curl -sf -o /dev/null "$NGINX_URL" || fail "nginx did not start"
  : >"$T/nginx/logs/access.log"
}

stop_nginx() {
  kill "$NGINX_PID" 2>/dev/null || true
  wait_until 10 bash -c "$(declare -f alive); ! alive $NGINX_PID" || kill -9 "$NGINX_PID"
}

# nginx_count METHOD URI_REGEX [STATUS_REGEX]: requests in nginx's access log.
nginx_count() {
  local status=${3:-[0-9]+}
  grep -cE "^$1 $2 $status " "$T/nginx/logs/access.log" || true
}

# start_fault_server ROOT: sets FAULT_PORT and FAULT_URL.
start_fault_server() {
  python3 "$FAULT_SERVER" --root "$1" --port-file "$T/fault.port" >"$T/fault.log" 2>&1 &
  _pids+=("$!")
  wait_until 10 test -s "$T/fault.port" || fail "fault server did not start"
  FAULT_PORT=$(cat "$T/fault.port")
  FAULT_URL=http://127.0.0.1:$FAULT_PORT/
}
fault() { curl -sf -X POST "http://127.0.0.1:$FAULT_PORT/__fault" -d "$1" >/dev/null; }
fault_log() { curl -sf "http://127.0.0.1:$FAULT_PORT/__log"; }

mounted() { grep -qs " $1 fuse.netbootfs " /proc/mounts; }

# alive PID: running and not a zombie waiting for us to reap it.
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ -n "$st" ] && [[ $st != Z* ]]; }

# start_mount URL MOUNTPOINT [OPTIONS]: sets DAEMON_PID. Cache in $T/cache
# unless CACHE_DIR is set.
start_mount() {
  local url=$1 mnt=$2 opts=${3:-}
  mkdir -p "$mnt"
  local o="allow_other,cache_dir=${CACHE_DIR:-$T/cache},log_level=${LOG_LEVEL:-debug}"
  [ -n "$opts" ] && o="$o,$opts"
  "$NBFS" "$url" "$mnt" -f -o "$o" >>"$T/daemon.log" 2>&1 &
  DAEMON_PID=$!
  _pids+=("$DAEMON_PID")
  _mounts+=("$mnt")
  wait_until 10 mounted "$mnt" || fail "the mount did not appear on $mnt"
}

stop_mount() {
  local mnt=$1
  fusermount3 -u "$mnt" || fail "unmount of $mnt failed"
  wait_until 10 bash -c "$(declare -f alive); ! alive $DAEMON_PID" || fail "daemon did not exit"
}

# start_tftpd DIR: in.tftpd on a loopback UDP port; sets TFTP_PORT.
start_tftpd() {
  TFTP_PORT=$(free_port udp)
  in.tftpd --foreground --listen --address "127.0.0.1:$TFTP_PORT" --secure --user tftp \
    "$1" >"$T/tftpd.log" 2>&1 &
  _pids+=("$!")
  sleep 0.3
}

# tftp_get REMOTE LOCAL: tftp-hpa; judge by content (it exits 0 on errors too).
tftp_get() {
  rm -f "$2"
  (cd "$(dirname "$2")" && timeout 120 tftp 127.0.0.1 "$TFTP_PORT" -m binary -c get "$1" "$2")
}

# atftp_get REMOTE LOCAL: blksize 1468 and tsize; the trace (OACK included) in $T/atftp.out.
atftp_get() {
  rm -f "$2"
  timeout 120 atftp --option "blksize 1468" --option "tsize 0" --trace --verbose -g -r "$1" -l "$2" \
    127.0.0.1 "$TFTP_PORT" >"$T/atftp.out" 2>&1
}

# check_daemon_log [ALLOWED_REGEX]: fails on error/critical lines not allowed.
check_daemon_log() {
  local allowed=${1:-^$}
  local bad
  bad=$(grep -E '^[0-9T:.-]+ (error|critical) ' "$T/daemon.log" | grep -vE "$allowed" || true)
  [ -z "$bad" ] || fail "unexpected errors in the daemon log:
$bad"
}

md5() { md5sum "$1" | cut -d' ' -f1; }
