#!/usr/bin/env bash
# Benchmark (not a test): netbootfs side by side with a local directory (the
# physical baseline), `curl -o` (the network baseline), rclone's VFS cache
# (`mount :http: --vfs-cache-mode full`) and httpdirfs (`--cache`), in one run,
# against the same nginx on 127.0.0.1 serving the same generated netboot tree.
#
#   tests/bench/run.sh [--quick] [--out FILE.md]
#
# Needs root (drop_caches, in.tftpd --secure, allow_other), a build in build/
# (or NETBOOTFS_BUILD_DIR), and installs rclone and httpdirfs from Debian when
# they are missing. --quick: small sizes and one run, a smoke run of a minute.
# RUNS (3) sets the repeats; every time is the median of the runs.
# Writes the table to FILE.md (default tests/bench/results.md) and stdout.
set -euo pipefail
QUICK=0 OUT=
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --out) OUT=$2; shift ;;
    *) echo "usage: $0 [--quick] [--out FILE.md]" >&2; exit 2 ;;
  esac
  shift
done
E2E_DEADLINE=0
IO_TIMEOUT=600
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$here/results.md}
source "$here/../e2e/lib.sh"
T_START=$SECONDS

if [ $QUICK = 1 ]; then
  SIZE_MB=8 KERNEL_MB=1 RUNS=${RUNS:-1} HERD=20 NDIRS=10 PERDIR=20 PXE=5 OPENS=300 CAP=5m
else
  SIZE_MB=100 KERNEL_MB=10 RUNS=${RUNS:-3} HERD=300 NDIRS=100 PERDIR=100 PXE=50 OPENS=300 CAP=50m
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
      CACHE_DIR=$cache LOG_LEVEL=info start_mount "$url" "$mnt" "revalidate=$REVALIDATE"
      FPID=$DAEMON_PID; return ;;
    rclone)
      rclone mount :http: "$mnt" --http-url "$url" --vfs-cache-mode full --cache-dir "$cache" \
        --allow-other --read-only >>"$T/rclone.log" 2>&1 & ;;
    httpdirfs)
      httpdirfs -f --cache --cache-location "$cache" -o allow_other "$url" "$mnt" \
        >>"$T/httpdirfs.log" 2>&1 & ;;
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
put() { TIME["$1|$2"]=$3; }   # put SYS SCENARIO SECONDS (the median)

# dir SYS: where the tree is for SYS (after mount_sys for the FUSE ones).
MNT=$T/mnt
dir_of() { [ "$1" = local ] && echo "$UP" || echo "$MNT"; }

# --- scenarios ---------------------------------------------------------------
# 1-3: cold read, hot re-read, re-read after a remount with the page cache
# dropped, of images/initrd; loopback and capped.
sc_read() {
  local sys=$1 base=$2 tag=$3 cold=() hot=() remount=() r s mk h
  for r in $(seq $RUNS); do
    if [ "$sys" = local ]; then
      drop_caches; s=$(now); readall "$UP/images/initrd"; cold+=("$(since "$s")")
      for h in 1 2 3 4 5; do s=$(now); readall "$UP/images/initrd"; hot+=("$(since "$s")"); done
      drop_caches; s=$(now); readall "$UP/images/initrd"; remount+=("$(since "$s")")
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
      drop_caches; readall "$UP/images/initrd"  # nginx' copy warm, the client's cache cold
      mount_sys "$sys" "$URL$base" "$MNT" "$T/cache-$sys" || return 0
      mk=$(log_mark)
      s=$(now); readall "$MNT/images/initrd"; remount+=("$(since "$s")")
      log_count "$sys" remount "$mk"
      umount_sys "$MNT"
    fi
  done
  put "$sys" "cold$tag" "$(printf '%s\n' "${cold[@]}" | median)"
  [ ${#hot[@]} -gt 0 ] && [ -z "$tag" ] && put "$sys" hot "$(printf '%s\n' "${hot[@]}" | median)"
  [ ${#remount[@]} -gt 0 ] && put "$sys" remount "$(printf '%s\n' "${remount[@]}" | median)"
  return 0
}

# 1 MB cold read: memory flat from 1 MB to 100 MB.
sc_small_mem() {
  local sys=$1
  rm -rf "$T/cache-$sys"
  mount_sys "$sys" "$URL" "$MNT" "$T/cache-$sys" || return 0
  start_sampler; readall "$MNT/images/small1m"; stop_sampler "$sys" "read 1 MB"
  umount_sys "$MNT"
}

# 4: a herd of HERD concurrent readers of the cold file.
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
  readall "$f"; sleep $((REVALIDATE + 1))
  mk=$(log_mark); t=$(opens "$f" $OPENS 0); log_count "$sys" opens "$mk"; put "$sys" opens "$t"
  mk=$(log_mark); opens "$f" $OPENS $((3 * REVALIDATE)) >/dev/null; log_count "$sys" opens3w "$mk"
  umount_sys "$MNT"
}

# 6: ls -lR cold on the tree of NDIRS × PERDIR files.
sc_ls() {
  local sys=$1 t=() r s mk
  for r in $(seq $RUNS); do
    if [ "$sys" = local ]; then
      drop_caches; s=$(now); command ls -lR "$UP/tree" >/dev/null; t+=("$(since "$s")"); continue; fi
    rm -rf "$T/cache-$sys"
    mount_sys "$sys" "$URL" "$MNT" "$T/cache-$sys" || return 0
    mk=$(log_mark)
    s=$(now); timeout 300 ls -lR "$MNT/tree" >/dev/null || true; t+=("$(since "$s")")
    log_count "$sys" ls "$mk"
    umount_sys "$MNT"
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
    drop_caches; [ "$sys" = local ] || readall "$UP/images/initrd"
    mk=$(log_mark)
    s=$(now); atftp_get images/initrd "$T/tftp.out" || ok=0; cold+=("$(since "$s")")
    [ "$sys" = local ] || log_count "$sys" tftpcold "$mk"
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
  local sys=$1 d s mk i pids=() bad
  if [ "$sys" = local ]; then d=$UP; drop_caches; else
    rm -rf "$T/cache-$sys"; drop_caches; readall "$UP/images/initrd"
    mount_sys "$sys" "$URL" "$MNT" "$T/cache-$sys" || return 0; start_sampler; d=$MNT; fi
  start_tftpd "$d"
  mk=$(log_mark)
  s=$(now)
  for i in $(seq $PXE); do with_timeout 900 bash -c "$(declare -f boot); $(declare -p LADDER T UP TFTP_PORT); boot $i" >"$T/boot.$i" 2>&1 & pids+=($!); done
  wait "${pids[@]}" || true
  put "$sys" pxe "$(since "$s")"
  bad=$(grep -Lx ok "$T"/boot.* | wc -l)
  REQS["$sys|pxeok"]="$((PXE - bad))/$PXE byte-identical"
  kill "$TFTPD_PID"; wait "$TFTPD_PID" 2>/dev/null || true
  rm -rf "$T/pxe" "$T"/boot.*
  if [ "$sys" != local ]; then
    log_count "$sys" pxe "$mk"; stop_sampler "$sys" "$PXE PXE boots"; umount_sys "$MNT"; fi
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
  [ "$sys" = local ] || { step "1 MB $sys"; sc_small_mem "$sys"; }
  step "herd $sys"; sc_herd "$sys"
  step "opens $sys"; sc_opens "$sys"
  step "ls $sys"; sc_ls "$sys"
  step "tftp $sys"; sc_tftp "$sys"
  step "pxe $sys"; sc_pxe "$sys"
done
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
echo "Median of $RUNS runs ($((RUNS + 2)) for TFTP; 50 PXE boots: one run). Files: initrd $SIZE_MB MB, kernel $KERNEL_MB MB;"
echo "tree of $((NDIRS * PERDIR)) files in $NDIRS directories. Upstream: nginx on 127.0.0.1, HTML autoindex;"
echo "\"capped\": nginx \`limit_rate $CAP\` per connection. Ratio: to the baseline column."
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
echo
echo "Peak RssAnon of each daemon (KiB, sampled every 20 ms):"
echo
echo "| scenario | netbootfs | rclone | httpdirfs |"
echo "|---|---|---|---|"
for sc in "read 1 MB" "read $SIZE_MB MB" "herd of $HERD" "$PXE PXE boots"; do
  echo "| $sc | ${PEAK["nbfs|$sc"]:-n/a} | ${PEAK["rclone|$sc"]:-n/a} | ${PEAK["httpdirfs|$sc"]:-n/a} |"
done
echo
echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%d GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), libfuse $(pkg-config --modversion fuse3 2>/dev/null || echo '?'), $(rclone version 2>/dev/null | head -1), httpdirfs $(httpdirfs --version 2>&1 | grep -oE '[0-9]+\.[0-9.]+' | head -1)."
echo "Load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER (the machine was shared). Run time: $((SECONDS - T_START)) s."
} | tee "$OUT"
