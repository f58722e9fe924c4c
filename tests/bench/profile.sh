#!/usr/bin/env bash
# Profile (not a test): the daemon under `valgrind --tool=callgrind`, one run
# per scenario, against nginx on 127.0.0.1. Instruction counts do not drift
# with machine load the way wall times do, so they show where the CPU goes and
# whether a change moved it.
#
#   tests/bench/profile.sh [--size MB] [--opens N] [--out DIR]
#
# Scenarios (each in its own daemon, so each profile holds one thing):
#   cold    one read of a SIZE MB file that is not cached (download, hash, write)
#   warm    the same file read again after the page cache was dropped (FUSE
#           read path from the blob file)
#   opens   N open+read+close of a small cached file inside the revalidate
#           window (lookup, open, the hit path)
#   idle    start, mount, unmount, exit: the baseline subtracted from the others
# Prints, per scenario, the daemon's total instructions, instructions per MiB
# or per open above idle, and the top functions (inclusive) by callgrind_annotate; keeps
# the callgrind.out files in DIR (default: a temp dir, printed).
# Needs root (drop_caches, allow_other), valgrind and a build in build/.
set -euo pipefail
SIZE_MB=20 OPENS=300 OUTDIR=
while [ $# -gt 0 ]; do
  case $1 in
    --size) SIZE_MB=$2; shift ;;
    --opens) OPENS=$2; shift ;;
    --out) OUTDIR=$2; shift ;;
    *) echo "usage: $0 [--size MB] [--opens N] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
E2E_DEADLINE=0
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../e2e/lib.sh"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
OUTDIR=${OUTDIR:-$T/profiles}
mkdir -p "$OUTDIR"

UP=$T/up
KERNEL_MB=1 INITRD_MB=$SIZE_MB make_tree "$UP"
start_nginx "$UP"

# The daemon under callgrind: a wrapper that execs valgrind keeps the PID that
# start_mount tracks. Instrumentation slows the daemon down by ~50x; every
# timeout is stretched to match.
REAL_NBFS=$NBFS
NBFS=$T/nbfs-callgrind
cat >"$NBFS" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file="\$CG_OUT" --separate-threads=no "$REAL_NBFS" "\$@"
EOF
chmod +x "$NBFS"
MOUNT_TIMEOUT=120
OPTS="revalidate=3600,read_stall_timeout=600,attr_timeout=1,entry_timeout=1"

run() {  # run NAME: mounts under callgrind with $T/cache kept between runs
  export CG_OUT=$OUTDIR/callgrind.$1.out
  LOG_LEVEL=info start_mount "$NGINX_URL" "$T/mnt" "$OPTS"
}
finish() {  # finish NAME UNITS UNIT: unmount, then print the profile
  with_timeout 60 fusermount3 -u "$T/mnt" || fail "unmount failed"
  wait_until 120 dead "$DAEMON_PID" || fail "the daemon did not exit"
  wait "$DAEMON_PID" 2>/dev/null || true
  local total
  callgrind_annotate "$CG_OUT" >"$CG_OUT.txt" 2>/dev/null || true
  callgrind_annotate --inclusive=yes "$CG_OUT" >"$CG_OUT.incl.txt" 2>/dev/null || true
  total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}' "$CG_OUT.txt")
  if [ "$1" = idle ]; then
    IDLE=$total
    echo "## idle (start, mount, unmount, exit): $total instructions"
  else
    echo "## $1: $total instructions, $(((total - IDLE) / $2)) per $3 above idle"
  fi
  awk '/^-+$/ {s++; next} s >= 3 && NF' "$CG_OUT.incl.txt" | sed -n 1,25p \
    | sed -E 's/\([^)]*\)//g; s/ \[[^]]*\]$//' | cut -c1-150
  echo
}

echo "# netbootfs under callgrind, $(date -u +%F), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
echo

IDLE=0
run idle
finish idle 1 run

run cold
cat "$T/mnt/images/initrd" >/dev/null
cat "$T/mnt/pxelinux.0" >/dev/null
finish cold "$SIZE_MB" MiB

sync; echo 3 >/proc/sys/vm/drop_caches
run warm
cat "$T/mnt/images/initrd" >/dev/null
finish warm "$SIZE_MB" MiB

run opens
for _ in $(seq "$OPENS"); do command cat "$T/mnt/pxelinux.0" >/dev/null; done
finish opens "$OPENS" open

echo "callgrind output: $OUTDIR (callgrind_annotate FILE, or kcachegrind)"
