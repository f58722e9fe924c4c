#!/usr/bin/env bash
# Benchmark (not a test): netbootfs side by side with a local directory (the
# physical baseline), `curl -o` (the network baseline), rclone's VFS cache
# (`mount :http: --vfs-cache-mode full`) and httpdirfs (`--cache`), in one run,
# against the same nginx on 127.0.0.1 serving the same generated netboot tree;
# then netbootfs alone with a cache of 1k and of 100k entries (start-up,
# lookup and open latency); then the FUSE floor: floorfs (tests/bench/floorfs.c,
# built as build/tests/bench/netbootfs_floorfs), a bare passthrough of the
# local tree, in the hot, remount, herd, opens, ls, TFTP and PXE scenarios.
# Below the floor table: the FUSE requests netbootfs answered in one ls -lR
# (its metrics file).
#
#   tests/bench/run.sh [--quick] [--runs N] [--nice N] [--out FILE.md]
#
# Needs root (drop_caches, in.tftpd --secure, allow_other), a build in build/
# (or NETBOOTFS_BUILD_DIR), and installs rclone and httpdirfs from Debian when
# they are missing. --quick: small sizes and one run, a smoke run of a minute
# or two. --runs N (or RUNS=N; default 3, 1 with --quick) sets the repeats of
# every timed scenario; every time is the median of the runs. --nice N
# (default -10, as contrib/systemd's units start netbootfs; 0: as started by
# hand) runs every FUSE daemon at that nice level: the readers wait on their
# daemon, and at the same priority 300 of them copying a file starve the
# download they wait for.
# Writes the table to FILE.md (default tests/bench/results.md) and stdout.
set -euo pipefail
QUICK=0 OUT= RUNS_ARG= NICE=-10
usage() { echo "usage: $0 [--quick] [--runs N] [--nice N] [--out FILE.md]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --runs) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || usage; RUNS_ARG=$2; shift ;;
    --nice) [[ ${2:-} =~ ^-?[0-9]+$ ]] || usage; NICE=$2; shift ;;
    --out) [ $# -ge 2 ] || usage; OUT=$2; shift ;;
    *) usage ;;
  esac
  shift
done
E2E_DEADLINE=0
IO_TIMEOUT=600
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$here/results.md}
source "$here/../e2e/lib.sh"
FLOORFS=$NETBOOTFS_BUILD_DIR/tests/bench/netbootfs_floorfs
T_START=$SECONDS

# BIG_MB: the largest file of the memory scenario (0: none). ENTRIES_*: the
# two cache sizes of the scaling scenario; SAMPLE files are timed in each.
if [ $QUICK = 1 ]; then
  SIZE_MB=8 KERNEL_MB=1 RUNS=${RUNS_ARG:-${RUNS:-1}} REMOUNTS=2 HERD=20 NDIRS=10 PERDIR=20 PXE=5 OPENS=300 CAP=5m
  BIG_MB=0 ENTRIES_SMALL=1000 ENTRIES_BIG=10000 SAMPLE=300
else
  SIZE_MB=100 KERNEL_MB=10 RUNS=${RUNS_ARG:-${RUNS:-3}} REMOUNTS=5 HERD=300 NDIRS=100 PERDIR=100 PXE=50 OPENS=300 CAP=50m
  BIG_MB=1024 ENTRIES_SMALL=1000 ENTRIES_BIG=100000 SAMPLE=1000
fi
SYSTEMS=(local nbfs rclone httpdirfs)
REVALIDATE=1  # netbootfs' default revalidate window, seconds

for p in rclone httpdirfs atftp; do
  if ! command -v "$p" >/dev/null; then
    # As contrib/check.sh does: no service may start during the install.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p" >"$T/apt.log" 2>&1 || true
    rm -f /usr/sbin/policy-rc.d
  fi
done

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "n/a"}'; }
ratio() { [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] && echo "scale=2; $1 / $2" | bc | sed 's/^\./0./' || echo "n/a"; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
readall() { command cat "$1" >/dev/null; }
# The disk under $T (major:minor) and its busy time so far (ms, io_ticks in
# /proc/diskstats): a remount read waits on the disk, and a virtual disk's
# latency varies from one read to the next by more than FUSE costs.
DISK_DEV=$(stat -c '%Hd:%Ld' "$T")
disk_ms() { awk -v d="$DISK_DEV" '$1 ":" $2 == d {print $13; f=1} END {if (!f) print 0}' /proc/diskstats; }
# A FUSE client that fails a read is marked broken (with the last line of its
# log) and left out of the later scenarios; the table says so.
declare -A BROKEN
broken() {
  BROKEN[$1]="fails: $(grep -v LinkTable_print "$T/$1.log" 2>/dev/null | tail -n 1 | tr '|' ' ')"
  umount_sys "$MNT"
}

# --- the tree ---------------------------------------------------------------
UP=$T/up
KERNEL_MB=$KERNEL_MB INITRD_MB=$SIZE_MB make_tree "$UP"
head -c 1048576 /dev/urandom >"$UP/images/small1m"
[ "$BIG_MB" = 0 ] || head -c $((BIG_MB * 1048576)) /dev/urandom >"$UP/images/big"
# many/dNNNN/fNNN: ENTRIES_BIG files of distinct content (one blob each), 100
# a directory; the first ENTRIES_SMALL of them are the small cache.
python3 - "$UP/many" "$ENTRIES_BIG" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 100 + 1))
    if i % 100 == 0:
        os.makedirs(d)
    with open(os.path.join(d, "f%03d" % (i % 100 + 1)), "w") as f:
        f.write("many %d\n" % i)
PY
for d in $(seq -w 1 $NDIRS); do
  mkdir -p "$UP/tree/d$d"
  for f in $(seq -w 1 $PERDIR); do printf '%s %s\n' "$d" "$f" >"$UP/tree/d$d/f$f"; done
done
chmod -R a+rX "$UP"
# Two views of the same tree on the same nginx: / at loopback speed, /capped/
# with every connection limited to $CAP bytes/s (a WAN). HTML autoindex
# (exact sizes), the one listing format all three FUSE clients read.
NGINX_AUTOINDEX_FORMAT=html start_nginx "$UP" "location /capped/ { alias $UP/; limit_rate $CAP; }"
URL=$NGINX_URL

# --- the FUSE clients -------------------------------------------------------
# mount_sys SYS URL MNT CACHEDIR: sets FPID; the mount is there on return.
mount_sys() {
  local sys=$1 url=$2 mnt=$3 cache=$4
  mkdir -p "$mnt" "$cache"
  case $sys in
    nbfs)
      DAEMON_NICE=$NICE CACHE_DIR=$cache LOG_LEVEL=info start_mount "$url" "$mnt" "revalidate=$REVALIDATE${NBFS_OPTS:+,$NBFS_OPTS}"
      FPID=$DAEMON_PID; return ;;
    rclone)
      nice -n "$NICE" rclone mount :http: "$mnt" --http-url "$url" --vfs-cache-mode full --cache-dir "$cache" \
        --allow-other --read-only >>"$T/rclone.log" 2>&1 & ;;
    httpdirfs)
      nice -n "$NICE" httpdirfs -f --cache --cache-location "$cache" -o allow_other "$url" "$mnt" \
        >>"$T/httpdirfs.log" 2>&1 & ;;
    floor)  # not an HTTP client: FUSE over the local tree itself (tests/bench/floorfs.c)
      nice -n "$NICE" "$FLOORFS" "$UP" "$mnt" -f -o allow_other,ro >>"$T/floor.log" 2>&1 & ;;
  esac
  FPID=$!
  track_pid "$FPID"
  _mounts+=("$mnt")
  local end=$((SECONDS + 20))
  until any_mount "$mnt" && timeout 5 stat -f "$mnt" >/dev/null 2>&1; do
    dead "$FPID" && { echo "$sys exited before mounting" >&2; return 1; }
    [ $SECONDS -lt $end ] || { echo "$sys did not mount" >&2; return 1; }
    sleep 0.05
  done
}
umount_sys() {
  local mnt=$1
  timeout 20 fusermount3 -u "$mnt" 2>/dev/null || timeout 10 fusermount3 -uz "$mnt" || true
  wait_until 20 dead "$FPID" || { kill "$FPID" 2>/dev/null; sleep 1; }
  wait "$FPID" 2>/dev/null || true
}

# Peak RssAnon (KiB) of the daemon, sampled every 20 ms, per (system, scenario).
declare -A PEAK
start_sampler() {
  ( a=0
    while [ -r "/proc/$FPID/status" ]; do
      r=$(awk '/^RssAnon:/ {print $2}' "/proc/$FPID/status" 2>/dev/null || echo 0)
      [ "${r:-0}" -gt $a ] && { a=$r; echo $a >"$T/peak.tmp"; mv "$T/peak.tmp" "$T/peak"; }
      sleep 0.02
    done ) &
  SAMPLER=$!
  echo 0 >"$T/peak"
}
stop_sampler() {  # stop_sampler SYS SCENARIO
  kill "$SAMPLER" 2>/dev/null || true
  wait "$SAMPLER" 2>/dev/null || true
  local k="$1|$2" v; v=$(cat "$T/peak" 2>/dev/null || echo 0)
  [ "${PEAK[$k]:-0}" -ge "$v" ] || PEAK[$k]=$v
}

# Upstream requests by method and status between two marks of the access log.
log_mark() { wc -l <"$NGINX_LOG"; }
declare -A REQS
log_count() {  # log_count SYS SCENARIO MARK: appends "GET 200 ×n, HEAD 404 ×m" ...
  local k="$1|$2" s
  sleep 0.2  # nginx writes the line when the request ends
  s=$(tail -n +"$(($3 + 1))" "$NGINX_LOG" | awk '{n[$1" "$3 ($2 ~ /\/$/ ? " listing" : "")]++} END {for (k in n) print k" ×"n[k]}' \
      | sort | paste -sd, | sed 's/,/, /g')
  REQS[$k]=${s:-none}
}
declare -A TIME
# http SYS: true for the clients of the upstream (not the local directory, not
# floorfs, which passes the local tree through).
http() { [ "$1" != local ] && [ "$1" != floor ]; }
put() { TIME["$1|$2"]=$3; }   # put SYS SCENARIO SECONDS (the median)

# dir SYS: where the tree is for SYS (after mount_sys for the FUSE ones).
MNT=$T/mnt
dir_of() { [ "$1" = local ] && echo "$UP" || echo "$MNT"; }

# --- scenarios ---------------------------------------------------------------
# 1-3: cold read, hot re-read, re-read after a remount with the page cache
# dropped (REMOUNTS times a run), of images/initrd; loopback and capped.
declare -A DISK
sc_read() {
  local sys=$1 base=$2 tag=$3 cold=() hot=() remount=() busy=() r s mk h m b
  for r in $(seq $RUNS); do
    if [ "$sys" = local ]; then
      drop_caches; s=$(now); readall "$UP/images/initrd"; cold+=("$(since "$s")")
      for h in 1 2 3 4 5; do s=$(now); readall "$UP/images/initrd"; hot+=("$(since "$s")"); done
      for m in $(seq $REMOUNTS); do
        drop_caches; b=$(disk_ms); s=$(now); readall "$UP/images/initrd"; remount+=("$(since "$s")")
        busy+=($(($(disk_ms) - b)))
      done
      continue
    fi
    if [ "$sys" = curl ]; then
      drop_caches; readall "$UP/images/initrd"; mk=$(log_mark)
      s=$(now); curl -s -o "$T/curl.out" "$URL$base"images/initrd; cold+=("$(since "$s")")
      rm -f "$T/curl.out"; log_count curl "cold$tag" "$mk"
      continue
    fi
    rm -rf "$T/cache-$sys"; drop_caches; readall "$UP/images/initrd"
    mount_sys "$sys" "$URL$base" "$MNT" "$T/cache-$sys" || return 0
    start_sampler; mk=$(log_mark)
    s=$(now); readall "$MNT/images/initrd" || { stop_sampler "$sys" x; broken "$sys"; return 0; }
    cold+=("$(since "$s")")
    log_count "$sys" "cold$tag" "$mk"
    for h in 1 2 3 4 5; do s=$(now); readall "$MNT/images/initrd"; hot+=("$(since "$s")"); done
    stop_sampler "$sys" "read $SIZE_MB MB"
    umount_sys "$MNT"
    if [ -z "$tag" ]; then
      for m in $(seq $REMOUNTS); do
        drop_caches
        # nginx' copy warm, the client's cache cold (floorfs reads the local
        # file itself: that stays cold, as for the local directory)
        [ "$sys" = floor ] || readall "$UP/images/initrd"
        mount_sys "$sys" "$URL$base" "$MNT" "$T/cache-$sys" || return 0
        mk=$(log_mark); b=$(disk_ms)
        s=$(now); readall "$MNT/images/initrd"; remount+=("$(since "$s")")
        busy+=($(($(disk_ms) - b)))
        log_count "$sys" remount "$mk"
        umount_sys "$MNT"
      done
    fi
  done
  put "$sys" "cold$tag" "$(printf '%s\n' "${cold[@]}" | median)"
  [ ${#hot[@]} -gt 0 ] && [ -z "$tag" ] && put "$sys" hot "$(printf '%s\n' "${hot[@]}" | median)"
  [ ${#remount[@]} -gt 0 ] && put "$sys" remount "$(printf '%s\n' "${remount[@]}" | median)"
  [ ${#busy[@]} -gt 0 ] && DISK[$sys]="$(printf '%s\n' "${busy[@]}" | median) ms (range $(printf '%s\n' "${busy[@]}" | sort -n | sed -n '1p;$p' | paste -sd-))"
  return 0
}

# Cold reads of 1 MB (and of BIG_MB in a full run): memory flat from 1 MB to
# 100 MB and 1 GB. The caches go at once: 1 GB each.
sc_mem() {  # sc_mem SYS FILE LABEL
  local sys=$1
  rm -rf "$T/cache-$sys"
  mount_sys "$sys" "$URL" "$MNT" "$T/cache-$sys" || return 0
  start_sampler; readall "$MNT/$2" || true; stop_sampler "$sys" "$3"
  umount_sys "$MNT"
  rm -rf "$T/cache-$sys"
}

# 4: a herd of HERD concurrent readers of the cold file. The clients of the
# upstream read nginx' warm copy; floorfs reads the local file warm too (the
# page cache of its own file dropped): FUSE's cost alone, no disk in it.
sc_herd() {
  local sys=$1 t=() r s mk pids i
  for r in $(seq $RUNS); do
    if [ "$sys" = local ]; then drop_caches; d=$UP; else
      rm -rf "$T/cache-$sys"; drop_caches; readall "$UP/images/initrd"
      mount_sys "$sys" "$URL" "$MNT" "$T/cache-$sys" || return 0; start_sampler; d=$MNT; fi
    mk=$(log_mark); pids=()
    s=$(now)
    for i in $(seq $HERD); do command cat "$d/images/initrd" >/dev/null & pids+=($!); done
    wait "${pids[@]}" || true
    t+=("$(since "$s")")
    if [ "$sys" != local ]; then
      log_count "$sys" herd "$mk"; stop_sampler "$sys" "herd of $HERD"; umount_sys "$MNT"; fi
  done
  put "$sys" herd "$(printf '%s\n' "${t[@]}" | median)"
}

# 5: OPENS opens (open, read, close) of an unchanged small file, in a burst
# within the revalidate window, then spread over 3 windows.
opens() {  # opens FILE N SPREAD_SECONDS: prints the elapsed seconds
  python3 - "$@" <<'PY'
import sys, time
path, n, spread = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
t0 = time.monotonic()
for i in range(n):
    with open(path, "rb") as f:
        f.read()
    if spread:
        time.sleep(max(0, t0 + spread * (i + 1) / n - time.monotonic()))
print("%.4f" % (time.monotonic() - t0))
PY
}
sc_opens() {
  local sys=$1 f mk t
  if [ "$sys" = local ]; then
    put local opens "$(opens "$UP/pxelinux.cfg/default" $OPENS 0)"; return; fi
  rm -rf "$T/cache-$sys"
  mount_sys "$sys" "$URL" "$MNT" "$T/cache-$sys" || return 0
  f=$MNT/pxelinux.cfg/default
  readall "$f"; ! http "$sys" || sleep $((REVALIDATE + 1))  # floorfs has no revalidate window
  mk=$(log_mark); t=$(opens "$f" $OPENS 0); log_count "$sys" opens "$mk"; put "$sys" opens "$t"
  if http "$sys"; then  # the spread only counts upstream requests
    mk=$(log_mark); opens "$f" $OPENS $((3 * REVALIDATE)) >/dev/null; log_count "$sys" opens3w "$mk"
  fi
  umount_sys "$MNT"
}

# 6: ls -lR cold on the tree of NDIRS × PERDIR files.
sc_ls() {
  local sys=$1 t=() r s mk
  for r in $(seq $RUNS); do
    if [ "$sys" = local ]; then
      drop_caches; s=$(now); command ls -lR "$UP/tree" >/dev/null; t+=("$(since "$s")"); continue; fi
    rm -rf "$T/cache-$sys"; http "$sys" || drop_caches  # floorfs: the local tree, cold
    # netbootfs counts the FUSE requests it answers: its metrics file, which
    # it writes once more as it exits.
    rm -f "$T/ls.prom"
    NBFS_OPTS="metrics_file=$T/ls.prom" mount_sys "$sys" "$URL" "$MNT" "$T/cache-$sys" || return 0
    mk=$(log_mark)
    s=$(now); timeout 300 ls -lR "$MNT/tree" >/dev/null || true; t+=("$(since "$s")")
    log_count "$sys" ls "$mk"
    umount_sys "$MNT"
    if [ "$sys" = nbfs ] && [ -r "$T/ls.prom" ]; then
      LS_FUSE_OPS=$(awk -F'[{}" ]+' '/^netbootfs_fuse_requests_total/ && $NF > 0 {printf "%s%s %s", sep, $3, $NF; sep=", "}' "$T/ls.prom")
    fi
  done
  put "$sys" ls "$(printf '%s\n' "${t[@]}" | median)"
}

# 7: TFTP (in.tftpd --secure, atftp blksize 1468) of images/initrd, warm
# (cache and page cache warm) and cold (empty cache).
sc_tftp() {
  local sys=$1 warm=() cold=() r s d mk ok=1
  # Lock-step UDP: one lost datagram costs a 1 s retransmit; two more runs
  # keep such outliers out of the median.
  for r in $(seq $((RUNS + 2))); do
    if [ "$sys" = local ]; then d=$UP; else
      rm -rf "$T/cache-$sys"
      mount_sys "$sys" "$URL" "$MNT" "$T/cache-$sys" || return 0; d=$MNT; fi
    start_tftpd "$d"
    drop_caches; ! http "$sys" || readall "$UP/images/initrd"
    mk=$(log_mark)
    s=$(now); atftp_get images/initrd "$T/tftp.out" || ok=0; cold+=("$(since "$s")")
    ! http "$sys" || log_count "$sys" tftpcold "$mk"
    cmp -s "$T/tftp.out" "$UP/images/initrd" || ok=0
    s=$(now); atftp_get images/initrd "$T/tftp.out" || ok=0; warm+=("$(since "$s")")
    cmp -s "$T/tftp.out" "$UP/images/initrd" || ok=0
    rm -f "$T/tftp.out"
    kill "$TFTPD_PID"; wait "$TFTPD_PID" 2>/dev/null || true
    [ "$sys" = local ] || umount_sys "$MNT"
    [ $ok = 1 ] || break
  done
  if [ $ok = 1 ]; then
    put "$sys" tftpwarm "$(printf '%s\n' "${warm[@]}" | median)"
    put "$sys" tftpcold "$(printf '%s\n' "${cold[@]}" | median)"
  else
    put "$sys" tftpwarm "failed: $(tail -n 1 "$T/atftp.out" | tr '|' ' ')"
  fi
}

# 8: PXE boots at once through in.tftpd, cold: each the files pxelinux asks for.
LADDER=(pxelinux.cfg/00000000-0000-0000-0000-000000000000 pxelinux.cfg/01-52-54-00-aa-bb-cc
  pxelinux.cfg/7F000001 pxelinux.cfg/7F00000 pxelinux.cfg/7F0000 pxelinux.cfg/7F000
  pxelinux.cfg/7F00 pxelinux.cfg/7F0 pxelinux.cfg/7F pxelinux.cfg/7)
boot() {  # boot N DIR: one client; prints "ok" when every file is byte-identical
  local n=$1 w=$T/pxe/$1 f
  mkdir -p "$w"
  for f in ldlinux.c32 "${LADDER[@]}" pxelinux.cfg/default images/linux images/initrd; do
    atftp --option "blksize 1468" -g -r "$f" -l "$w/out" 127.0.0.1 "$TFTP_PORT" >/dev/null 2>&1 || true
    if [ -e "$UP/$f" ]; then
      cmp -s "$w/out" "$UP/$f" || { echo "bad $f"; return; }
    fi
    rm -f "$w/out"
  done
  echo ok
}
sc_pxe() {
  local sys=$1 d s mk i r pids t=() ok=0
  for r in $(seq $RUNS); do
    if [ "$sys" = local ]; then d=$UP; drop_caches; else
      rm -rf "$T/cache-$sys"; drop_caches; ! http "$sys" || readall "$UP/images/initrd"
      mount_sys "$sys" "$URL" "$MNT" "$T/cache-$sys" || return 0; start_sampler; d=$MNT; fi
    start_tftpd "$d"
    mk=$(log_mark); pids=()
    s=$(now)
    for i in $(seq $PXE); do with_timeout 900 bash -c "$(declare -f boot); $(declare -p LADDER T UP TFTP_PORT); boot $i" >"$T/boot.$i" 2>&1 & pids+=($!); done
    wait "${pids[@]}" || true
    t+=("$(since "$s")")
    ok=$((ok + $(grep -lx ok "$T"/boot.* 2>/dev/null | wc -l || true)))
    kill "$TFTPD_PID"; wait "$TFTPD_PID" 2>/dev/null || true
    rm -rf "$T/pxe" "$T"/boot.*
    if [ "$sys" != local ]; then  # the requests of the last run
      log_count "$sys" pxe "$mk"; stop_sampler "$sys" "$PXE PXE boots"; umount_sys "$MNT"; fi
  done
  put "$sys" pxe "$(printf '%s\n' "${t[@]}" | median)"
  REQS["$sys|pxeok"]="$ok/$((PXE * RUNS)) byte-identical"
}

# 9: netbootfs with a cache of ENTRIES_SMALL and of ENTRIES_BIG entries,
# filled by `netbootfsctl prefetch` unmounted. Per run: start-up after a
# clean stop with the page cache dropped and again warm, and after a kill -9
# (the full recovery) with the page cache dropped, each timed from exec to
# the first cached file being there (recovery, index open, the upstream
# probe, the mount, the listings of / and many/ for that first lookup); after
# the first two, SAMPLE random cached files: stat (a FUSE lookup each: the
# index) and open+read+close. revalidate is a day so that the opens are
# answered from the cache alone: a conditional GET per open would time
# nginx, not the cache.
declare -A CACHE
startup() {  # startup CACHEDIR: mounts it on $MNT; sets FPID and STARTUP (seconds)
  local probe=$MNT/many/d0001/f001 s end
  mkdir -p "$MNT"
  echo "=== netbootfs startup $1" >>"$T/daemon.log"
  s=$(now)
  nice -n "$NICE" "$NBFS" "$URL" "$MNT" -f -o "allow_other,cache_dir=$1,log_level=info,revalidate=86400" \
    >>"$T/daemon.log" 2>&1 &
  FPID=$!
  track_pid "$FPID"; _mounts+=("$MNT")
  end=$((SECONDS + 120))
  # [ -e ] is a builtin stat: no fork between polls.
  until [ -e "$probe" ]; do
    kill -0 "$FPID" 2>/dev/null || { echo "netbootfs exited at start-up" >&2; return 1; }
    [ $SECONDS -lt $end ] || { echo "netbootfs: no mount after 120 s" >&2; return 1; }
    sleep 0.01
  done
  STARTUP=$(since "$s")
}
latencies() {  # latencies N_ENTRIES: "stat_p50 stat_p99 open_p50 open_p99" in ms
  python3 - "$MNT/many" "$1" "$SAMPLE" <<'PY'
import os, random, sys, time
root, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
files = ["%s/d%04d/f%03d" % (root, i // 100 + 1, i % 100 + 1)
         for i in random.Random(7).sample(range(n), min(k, n))]
for d in {os.path.dirname(f) for f in files}:
    os.stat(d)  # untimed: directory lookups come from many/'s listing
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] * 1000
st, op = [], []
for f in files:
    t = time.perf_counter(); os.stat(f); st.append(time.perf_counter() - t)
for f in files:
    t = time.perf_counter()
    with open(f, "rb") as h:
        h.read()
    op.append(time.perf_counter() - t)
print("%.3f %.3f %.3f %.3f" % (pct(st, .5), pct(st, .99), pct(op, .5), pct(op, .99)))
PY
}
sc_cache_scale() {
  local n c s r l dirs a b x y cold warm crash sp50 sp99 op50 op99 wsp50 wsp99 wop50 wop99
  for n in $ENTRIES_SMALL $ENTRIES_BIG; do
    c=$T/cache-scale-$n
    rm -rf "$c"
    dirs=(); for r in $(seq $(((n + 99) / 100))); do dirs+=("many/d$(printf %04d "$r")"); done
    s=$(now)
    "$NBCTL" --cache-dir "$c" prefetch --url "$URL" -r --jobs 16 "${dirs[@]}" >"$T/prefetch.log" 2>&1 \
      || { CACHE["$n|fill"]="failed: $(tail -n 1 "$T/prefetch.log")"; continue; }
    CACHE["$n|fill"]=$(since "$s")
    CACHE["$n|entries"]=$("$NBCTL" --cache-dir "$c" --json status | python3 -c 'import json, sys; print(json.load(sys.stdin).get("paths", "?"))' 2>/dev/null || echo "?")
    cold=() warm=() crash=() sp50=() sp99=() op50=() op99=() wsp50=() wsp99=() wop50=() wop99=()
    for r in $(seq $RUNS); do
      drop_caches
      startup "$c" || break
      cold+=("$STARTUP")
      read -r a b x y <<<"$(latencies "$n")"
      sp50+=("$a") sp99+=("$b") op50+=("$x") op99+=("$y")
      umount_sys "$MNT"
      startup "$c" || break
      warm+=("$STARTUP")
      read -r a b x y <<<"$(latencies "$n")"
      wsp50+=("$a") wsp99+=("$b") wop50+=("$x") wop99+=("$y")
      # A crash: the next start runs the full recovery, a walk of every entry.
      kill -9 "$FPID"; wait "$FPID" 2>/dev/null || true
      timeout 10 fusermount3 -uz "$MNT" || true
      drop_caches
      startup "$c" || break
      crash+=("$STARTUP")
      umount_sys "$MNT"
    done
    for l in cold warm crash sp50 sp99 op50 op99 wsp50 wsp99 wop50 wop99; do
      local -n arr=$l
      CACHE["$n|$l"]=$(printf '%s\n' "${arr[@]}" | median)
      unset -n arr
    done
    CACHE["$n|du"]=$(du -sh "$c" | cut -f1)
    rm -rf "$c"
  done
}

# --- run ----------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
step() { echo "[$(date -u +%T) +$((SECONDS - T_START))s load $(cut -d' ' -f1 /proc/loadavg)] $*" >&2; }
for sys in local curl nbfs rclone httpdirfs; do
  [ -z "${BROKEN[$sys]:-}" ] || continue
  step "read $sys"; sc_read "$sys" "" ""
  step "capped read $sys"; [ "$sys" = local ] || [ -n "${BROKEN[$sys]:-}" ] || sc_read "$sys" capped/ _cap
done
for sys in "${SYSTEMS[@]}"; do
  [ -z "${BROKEN[$sys]:-}" ] || continue
  [ "$sys" = local ] || { step "1 MB $sys"; sc_mem "$sys" images/small1m "read 1 MB"; }
  [ "$sys" = local ] || [ "$BIG_MB" = 0 ] || { step "$BIG_MB MB $sys"; sc_mem "$sys" images/big "read $BIG_MB MB"; }
  step "herd $sys"; sc_herd "$sys"
  step "opens $sys"; sc_opens "$sys"
  step "ls $sys"; sc_ls "$sys"
  step "tftp $sys"; sc_tftp "$sys"
  step "pxe $sys"; sc_pxe "$sys"
done
step "cache of $ENTRIES_SMALL and $ENTRIES_BIG entries nbfs"; sc_cache_scale
if [ -x "$FLOORFS" ]; then
  step "read floor"; sc_read floor "" ""
  step "herd floor"; sc_herd floor
  step "opens floor"; sc_opens floor
  step "ls floor"; sc_ls floor
  step "tftp floor"; sc_tftp floor
  step "pxe floor"; sc_pxe floor
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report -------------------------------------------------------------------
g() {
  if [ -n "${BROKEN[$1]:-}" ]; then [[ $2 == cold ]] && echo "${BROKEN[$1]}" || echo "—"; return; fi
  local v=${TIME["$1|$2"]:-n/a}; [[ $v =~ ^[0-9.]+$ ]] && printf '%.3f s' "$v" || echo "$v"; }
q() { echo "${REQS["$1|$2"]:-}"; }
row() {  # row LABEL SCENARIO BASE_SYS [REQ_SCENARIO]
  local label=$1 sc=$2 base=$3 rq=${4:-$2} line sys
  line="| $label | $(g "$base" "$sc") |"
  for sys in nbfs rclone httpdirfs; do
    line+=" $(g "$sys" "$sc")"
    [ -n "${BROKEN[$sys]:-}" ] || line+=" (×$(ratio "${TIME["$sys|$sc"]:-x}" "${TIME["$base|$sc"]:-x}"))"
    [ -n "$(q "$sys" "$rq")" ] && line+="<br>$(q "$sys" "$rq")"
    line+=" |"
  done
  echo "$line"
}
{
echo "## netbootfs benchmark ($([ $QUICK = 1 ] && echo quick || echo full) run, $(date -u +%F))"
echo
echo "Median of $RUNS runs ($((RUNS + 2)) for TFTP, $((RUNS * REMOUNTS)) remounts; requests: of one run). Files: initrd $SIZE_MB MB, kernel $KERNEL_MB MB;"
echo "tree of $((NDIRS * PERDIR)) files in $NDIRS directories. Upstream: nginx on 127.0.0.1, HTML autoindex;"
echo "\"capped\": nginx \`limit_rate $CAP\` per connection. Ratio: to the baseline column. Every FUSE daemon runs at nice $NICE."
echo "Requests: upstream requests during the scenario from nginx's access log, \`METHOD STATUS ×count\`"
echo "(\"listing\": a directory URL; GET 304 is a conditional GET answered \"unchanged\")."
echo
echo "| scenario | baseline | netbootfs | rclone vfs full | httpdirfs --cache |"
echo "|---|---|---|---|---|"
TIME["curl|cold"]=${TIME["curl|cold"]:-}; TIME["curl|cold_cap"]=${TIME["curl|cold_cap"]:-}
row "cold read $SIZE_MB MB, loopback (baseline \`curl -o\`)" cold curl
row "cold read $SIZE_MB MB, capped $CAP/s (baseline \`curl -o\`)" cold_cap curl
row "hot re-read, median of 5 per run (baseline local dir)" hot local
row "remount, page cache dropped (baseline local dir, cold disk)" remount local
row "herd of $HERD cold readers (baseline local dir)" herd local
row "$OPENS opens of an unchanged file, in one burst (baseline local dir)" opens local
line="| $OPENS opens spread over $((3 * REVALIDATE)) s = 3 revalidate windows | requests |"
for sys in nbfs rclone httpdirfs; do line+=" $(q "$sys" opens3w) |"; done; echo "$line"
row "\`ls -lR\` cold, $((NDIRS * PERDIR)) files (baseline local dir, cold)" ls local
row "TFTP $SIZE_MB MB warm, atftp blksize 1468 (baseline in.tftpd on local dir)" tftpwarm local
row "TFTP $SIZE_MB MB cold (baseline in.tftpd on local dir, page cache dropped)" tftpcold local
line="| $PXE PXE boots at once, cold (baseline local dir) | $(g local pxe)<br>$(q local pxeok) |"
for sys in nbfs rclone httpdirfs; do
  if [ -n "${BROKEN[$sys]:-}" ]; then line+=" — |"; continue; fi
  line+=" $(g "$sys" pxe) (×$(ratio "${TIME["$sys|pxe"]:-x}" "${TIME["local|pxe"]:-x}"))<br>$(q "$sys" pxeok)<br>$(q "$sys" pxe) |"
done
echo "$line"
if [ -x "$FLOORFS" ]; then
  echo
  echo "The FUSE floor: \`tests/bench/floorfs.c\`, the thinnest read-only FUSE passthrough of the local tree (libfuse"
  echo "high-level API, keep_cache, one pread per READ; no cache, index or network), in the same scenarios:"
  echo "what FUSE itself costs here. Last column: netbootfs over the floor. Median of $RUNS runs:"
  echo
  echo "| scenario | local dir | floorfs | netbootfs | netbootfs / floorfs |"
  echo "|---|---|---|---|---|"
  for sc in hot remount herd opens ls tftpwarm tftpcold pxe; do
    case $sc in
      hot) label="hot re-read" ;; remount) label="remount, page cache dropped" ;; herd) label="herd of $HERD readers" ;;
      opens) label="$OPENS opens of an unchanged file, in one burst" ;; ls) label="\`ls -lR\` cold, $((NDIRS * PERDIR)) files" ;;
      tftpwarm) label="TFTP $SIZE_MB MB warm" ;; tftpcold) label="TFTP $SIZE_MB MB cold" ;;
      pxe) label="$PXE PXE boots at once ($(q floor pxeok) for floorfs)" ;;
    esac
    echo "| $label | $(g local $sc) | $(g floor $sc) (×$(ratio "${TIME["floor|$sc"]:-x}" "${TIME["local|$sc"]:-x}")) | $(g nbfs $sc) (×$(ratio "${TIME["nbfs|$sc"]:-x}" "${TIME["local|$sc"]:-x}")) | ×$(ratio "${TIME["nbfs|$sc"]:-x}" "${TIME["floor|$sc"]:-x}") |"
  done
  echo
  echo "FUSE requests netbootfs answered in its last \`ls -lR\` (netbootfs_fuse_requests_total): ${LS_FUSE_OPS:-n/a}."
  echo "Both answer READDIRPLUS with every entry's attributes (netbootfs from the listing's sizes), so \`ls -l\` sends"
  echo "no LOOKUP per name; floorfs has no xattrs (one ENOSYS and the kernel asks no more), netbootfs answers"
  echo "EOPNOTSUPP for security.* and system.* (ls stops asking for the mount) and serves user.netbootfs.*."
  echo
  echo "Disk busy during each remount read (io_ticks of $DISK_DEV in /proc/diskstats; each read fetches the same"
  echo "$SIZE_MB MB from the disk), median and range of the $((RUNS * REMOUNTS)) reads: local ${DISK[local]:-n/a},"
  echo "floorfs ${DISK[floor]:-n/a}, netbootfs ${DISK[nbfs]:-n/a}."
fi
echo
echo "Peak RssAnon of each daemon (KiB, sampled every 20 ms):"
echo
echo "| scenario | netbootfs | rclone | httpdirfs |"
echo "|---|---|---|---|"
mem_rows=("read 1 MB" "read $SIZE_MB MB")
[ "$BIG_MB" = 0 ] || mem_rows+=("read $BIG_MB MB")
for sc in "${mem_rows[@]}" "herd of $HERD" "$PXE PXE boots"; do
  echo "| $sc | ${PEAK["nbfs|$sc"]:-n/a} | ${PEAK["rclone|$sc"]:-n/a} | ${PEAK["httpdirfs|$sc"]:-n/a} |"
done
echo
echo "netbootfs with a cache of $ENTRIES_SMALL and of $ENTRIES_BIG entries (many/dNNNN/fNNN, 100 files a directory, distinct"
echo "contents), filled by \`netbootfsctl prefetch -r --jobs 16\` unmounted. Start-up: from exec to the first cached file"
echo "being there (recovery, index open, upstream probe, mount, listings of / and many/), after a clean stop with the page"
echo "cache dropped, then warm, and after a kill -9 (the full recovery: a walk of every entry) with the page cache dropped."
echo "Latency: $SAMPLE random cached files, \`stat\` (one FUSE lookup each) then open+read+close, on the mount of the cold"
echo "start-up (blobs not in the page cache) and again on the warm one (the same files, their blobs in the page cache);"
echo "revalidate=86400 so that opens are answered from the cache. Median of $RUNS runs of each figure:"
echo
echo "| cache of | $ENTRIES_SMALL entries | $ENTRIES_BIG entries | ratio |"
echo "|---|---|---|---|"
cs() { local v=${CACHE["$1|$2"]:-n/a}; [[ $v =~ ^[0-9.]+$ ]] && printf "%.${3:-3}f$4" "$v" || echo "$v"; }
crow() {  # crow LABEL KEY DECIMALS UNIT
  echo "| $1 | $(cs $ENTRIES_SMALL "$2" "$3" "$4") | $(cs $ENTRIES_BIG "$2" "$3" "$4") | ×$(ratio "${CACHE["$ENTRIES_BIG|$2"]:-x}" "${CACHE["$ENTRIES_SMALL|$2"]:-x}") |"
}
echo "| index entries (netbootfsctl status), size on disk | ${CACHE["$ENTRIES_SMALL|entries"]:-?}, ${CACHE["$ENTRIES_SMALL|du"]:-?} | ${CACHE["$ENTRIES_BIG|entries"]:-?}, ${CACHE["$ENTRIES_BIG|du"]:-?} | |"
crow "fill: prefetch, unmounted (one run)" fill 1 " s"
crow "start-up to a usable mount after a clean stop, page cache dropped" cold 3 " s"
crow "start-up to a usable mount, warm" warm 3 " s"
crow "start-up after a kill -9 (full recovery), page cache dropped" crash 3 " s"
crow "stat, median, cold" sp50 3 " ms"
crow "stat, p99, cold" sp99 3 " ms"
crow "open+read+close, median, cold" op50 3 " ms"
crow "open+read+close, p99, cold" op99 3 " ms"
crow "stat, median, warm" wsp50 3 " ms"
crow "stat, p99, warm" wsp99 3 " ms"
crow "open+read+close, median, warm" wop50 3 " ms"
crow "open+read+close, p99, warm" wop99 3 " ms"
echo
echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%d GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), libfuse $(pkg-config --modversion fuse3 2>/dev/null || echo '?'), $(rclone version 2>/dev/null | head -1), httpdirfs $(httpdirfs --version 2>&1 | grep -oE '[0-9]+\.[0-9.]+' | head -1)."
echo "Load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER (the machine was shared). Run time: $((SECONDS - T_START)) s."
} | tee "$OUT.new"
# The notes below the tables (investigations, earlier runs) are kept: from
# the first "## " heading that is not the generated one to the end.
if [ -f "$OUT" ]; then
  awk 'NR > 1 && /^## / { keep = 1 } keep' "$OUT" >"$OUT.notes"
  if [ -s "$OUT.notes" ]; then
    { echo; cat "$OUT.notes"; } >>"$OUT.new"
  fi
  rm -f "$OUT.notes"
fi
mv "$OUT.new" "$OUT"
