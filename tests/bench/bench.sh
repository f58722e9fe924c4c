#!/usr/bin/env bash
# Benchmark (not a test): netbootfs side by side with its baselines, in one run,
# against the same nginx on 127.0.0.1. Prints a Markdown table.
#
#   tests/bench/bench.sh [SIZE_MB]     (default 100; needs a build in build/)
#
# Rows: cold read of a file vs `curl -o` of the same URL; warm (page cache)
# read vs the same file read from a local directory; a herd of 100 concurrent
# cold readers vs one cold read; the daemon's peak memory.
set -euo pipefail
E2E_DEADLINE=${E2E_DEADLINE:-0}  # a benchmark of a big file may take long
source "$(dirname "$0")/../e2e/lib.sh"
SIZE_MB=${1:-100}
RUNS=${RUNS:-3}

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { echo "scale=2; $1 / $2" | bc; }
mbps() { echo "scale=0; $SIZE_MB / $1" | bc; }

# A sampler beside each daemon: every 20 ms, the peak RssAnon (leaves out
# LMDB's file-backed map) and VmHWM (includes it) so far, in KiB.
peak_anon=0 peak_hwm=0
start_sampler() {
  (
    a=0 h=0
    while [ -r "/proc/$DAEMON_PID/status" ]; do
      read -r ra hw < <(awk '/^RssAnon:/ {a=$2} /^VmHWM:/ {h=$2} END {print a+0, h+0}' \
                          "/proc/$DAEMON_PID/status" 2>/dev/null || echo "0 0")
      [ "${ra:-0}" -gt $a ] && a=$ra
      [ "${hw:-0}" -gt $h ] && h=$hw
      echo "$a $h" >"$T/peak.tmp" && mv "$T/peak.tmp" "$T/peak"
      sleep 0.02
    done
  ) &
  SAMPLER=$!
}
stop_sampler() {
  kill "$SAMPLER" 2>/dev/null || true
  wait "$SAMPLER" 2>/dev/null || true
  local a h
  read -r a h <"$T/peak" || return 0
  [ "$a" -gt "$peak_anon" ] && peak_anon=$a
  [ "$h" -gt "$peak_hwm" ] && peak_hwm=$h
  return 0
}

mkdir -p "$T/up/images"
head -c $((SIZE_MB * 1048576)) /dev/urandom >"$T/up/images/initrd"
chmod -R a+rX "$T/up"
start_nginx "$T/up"
url=${NGINX_URL}images/initrd
LOG_LEVEL=info

cold=() curl_t=() warm=() local_t=() herd=()
for run in $(seq "$RUNS"); do
  # curl -o: the network baseline (writes the file to disk, as the cache does).
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  cat "$T/up/images/initrd" >/dev/null  # nginx reads from page cache in every row
  s=$(now); curl -s -o "$T/curl.out" "$url"; curl_t+=("$(elapsed "$s")")
  rm -f "$T/curl.out"

  # netbootfs, cold: an empty cache.
  rm -rf "$T/cache"; CACHE_DIR=$T/cache start_mount "$NGINX_URL" "$T/mnt"; start_sampler
  s=$(now); cat "$T/mnt/images/initrd" >/dev/null; cold+=("$(elapsed "$s")")
  # warm: the kernel page cache serves it.
  s=$(now); cat "$T/mnt/images/initrd" >/dev/null; warm+=("$(elapsed "$s")")
  s=$(now); cat "$T/up/images/initrd" >/dev/null; local_t+=("$(elapsed "$s")")
  stop_sampler
  stop_mount "$T/mnt"

  # herd: 100 concurrent readers of a cold file.
  rm -rf "$T/cache"; CACHE_DIR=$T/cache start_mount "$NGINX_URL" "$T/mnt"; start_sampler
  s=$(now)
  pids=()
  for i in $(seq 100); do cat "$T/mnt/images/initrd" >/dev/null & pids+=($!); done
  wait "${pids[@]}"
  herd+=("$(elapsed "$s")")
  stop_sampler
  stop_mount "$T/mnt"
done
gets=$(nginx_count GET /images/initrd 200)

c=$(printf '%s\n' "${cold[@]}" | median)
k=$(printf '%s\n' "${curl_t[@]}" | median)
w=$(printf '%s\n' "${warm[@]}" | median)
l=$(printf '%s\n' "${local_t[@]}" | median)
h=$(printf '%s\n' "${herd[@]}" | median)

echo "## netbootfs benchmark: ${SIZE_MB} MB file, nginx on 127.0.0.1, median of $RUNS runs"
echo
echo "| scenario | netbootfs | baseline | ratio |"
echo "|---|---|---|---|"
printf '| cold read vs `curl -o` | %.3f s (%s MB/s) | %.3f s (%s MB/s) | %s |\n' "$c" "$(mbps "$c")" "$k" "$(mbps "$k")" "$(ratio "$c" "$k")"
printf '| warm read vs local directory | %.3f s (%s MB/s) | %.3f s (%s MB/s) | %s |\n' "$w" "$(mbps "$w")" "$l" "$(mbps "$l")" "$(ratio "$w" "$l")"
printf '| herd of 100 cold readers vs one cold read | %.3f s | %.3f s | %s |\n' "$h" "$c" "$(ratio "$h" "$c")"
echo
echo "Upstream GETs with status 200 for the file over all runs: $gets (curl: $RUNS, cold reads: $RUNS, herds: $RUNS)."
echo
echo "| daemon memory (peak over every mount, sampled every 20 ms) | KiB |"
echo "|---|---|"
echo "| RssAnon (heap, stacks) | $peak_anon |"
echo "| VmHWM (includes LMDB's file-backed map) | $peak_hwm |"
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%d GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)."
