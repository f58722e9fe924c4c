#!/usr/bin/env bash
# The prefetch progress bar: on a terminal (a pseudo-terminal from script(1))
# prefetch redraws one line ("\r[###...] N/M files, ...") several times, the
# last drawing shows every file done, and the summary follows on its own
# line; through the mount and unmounted alike. Without a terminal (stdout a
# pipe) only the summary is printed: no carriage return, no bar.
source "$(dirname "$0")/lib.sh"
command -v script >/dev/null || fail "script (util-linux) is not installed"
KERNEL_MB=1 INITRD_MB=2 make_tree "$T/up"
nfiles=$(find "$T/up" -type f | wc -l)
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt"

# check_tty_output FILE VIA: the bar was drawn more than once, its last
# drawing is full and counts every file, then the summary line ends the output.
check_tty_output() {
  python3 - "$1" "$nfiles" "$2" <<'PY' || fail "progress on a terminal ($2): $(cat -A "$1" | head -c 2000)"
import re, sys
out = open(sys.argv[1], "rb").read().decode()
n, via = int(sys.argv[2]), sys.argv[3]
# The pty turns "\n" into "\r\n"; a bar drawing starts with a bare "\r".
out = out.replace("\r\n", "\n")
bar = re.compile(r"\r\[([#.]{30})\] (\d+)/(\d+) files, [0-9.]+ [KMGT]?i?B, (\d+) failed, \d+ s ")
frames = list(bar.finditer(out))
assert len(frames) >= 2, f"{len(frames)} bar drawings"
last = frames[-1]
assert last.group(1) == "#" * 30, f"last bar not full: {last.group(0)!r}"
assert int(last.group(2)) == n and int(last.group(3)) == n, f"last bar counts {last.group(0)!r}, want {n}"
assert last.group(4) == "0", last.group(0)
rest = out[last.end():]
m = re.fullmatch(r"\nprefetched (\d+) files \([^)]*\), 0 failed, in [0-9.]+ s, (.*)\n", rest)
assert m, f"after the last bar: {rest!r}"
assert int(m.group(1)) == n and m.group(2).startswith(via), rest
PY
}

# Through the mount: --max-rate spreads the 3 MiB over about 1.5 s, so the
# mount's progress events (ten a second at most) reach the bar more than once.
with_timeout 60 script -qec "'$NBCTL' --cache-dir '$T/cache' prefetch -r --jobs 2 --max-rate 2M /" \
  /dev/null </dev/null >"$T/tty1.out" || fail "prefetch under a pty failed: $(cat "$T/tty1.out")"
check_tty_output "$T/tty1.out" "through the mount"
note "through the mount: $(grep -o $'\r\[' "$T/tty1.out" | wc -l) bar drawings, full at the end, then the summary"

# Without a terminal: the summary alone.
with_timeout 60 "$NBCTL" --cache-dir "$T/cache" prefetch -r / >"$T/pipe.out" \
  || fail "prefetch to a pipe failed: $(cat "$T/pipe.out")"
if grep -q $'\r' "$T/pipe.out" || grep -qF '[#' "$T/pipe.out" || grep -qF '[.' "$T/pipe.out"; then
  fail "progress bar characters without a terminal: $(cat -A "$T/pipe.out")"
fi
[ "$(wc -l <"$T/pipe.out")" -eq 1 ] && grep -qE "^prefetched $nfiles files .*, 0 failed, in .*through the mount$" "$T/pipe.out" \
  || fail "without a terminal: $(cat -A "$T/pipe.out")"
note "stdout a pipe: only the summary line"
stop_mount "$T/mnt"

# Unmounted, into an empty cache: the bar is drawn after every file.
with_timeout 60 script -qec "'$NBCTL' --cache-dir '$T/c2' prefetch -r --jobs 1 --url '$NGINX_URL' /" \
  /dev/null </dev/null >"$T/tty2.out" || fail "unmounted prefetch under a pty failed: $(cat "$T/tty2.out")"
check_tty_output "$T/tty2.out" "directly from $NGINX_URL"
with_timeout 60 "$NBCTL" --cache-dir "$T/c2" prefetch -r --url "$NGINX_URL" / >"$T/pipe2.out" \
  || fail "unmounted prefetch to a file failed: $(cat "$T/pipe2.out")"
grep -q $'\r' "$T/pipe2.out" && fail "unmounted, no terminal: carriage returns: $(cat -A "$T/pipe2.out")"
grep -qE "^prefetched $nfiles files .*directly from" "$T/pipe2.out" || fail "unmounted, no terminal: $(cat "$T/pipe2.out")"
note "unmounted: $(grep -o $'\r\[' "$T/tty2.out" | wc -l) bar drawings under a pty, none to a pipe"
check_daemon_log
pass "prefetch progress bar on a terminal only, full at the end, summary last"
