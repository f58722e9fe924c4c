#!/usr/bin/env bash
# The mount's control socket and what netbootfsctl does through it:
# - the socket is mode 0600; a peer that is neither root nor the daemon's
#   user is refused (by the file mode, and by SO_PEERCRED when the mode is
#   opened up); an oversized request is dropped and the daemon goes on;
# - status shows the live mount;
# - invalidate: with revalidate=3600 (and the kernel told to cache names and
#   attributes for an hour) a file changed upstream keeps its old bytes until
#   `invalidate PATH`, and a name looked up as missing appears after
#   `invalidate --all`; invalidating one file refreshes its directory's
#   listing (a file added or removed beside it shows in ls);
# - prefetch --recursive --jobs 4 caches the whole tree with each file GET
#   once although cat readers of the mount race it; --max-rate paces a
#   transfer; unmounted, prefetch uses the recorded upstream or --url.
source "$(dirname "$0")/lib.sh"
ctl() { with_timeout 60 "$NBCTL" --cache-dir "$T/cache" "$@"; }
# client USER JSON_LINE: one request from a python client run as USER; prints
# the first reply line, or the connect error.
client() {
  with_timeout 20 setpriv --reuid="$1" --regid="$(id -g "$1")" --clear-groups /usr/bin/python3 - "$T/cache/control.sock" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect:", e.strerror); sys.exit(0)
try:
    s.sendall(sys.argv[2].encode() + b"\n")
except OSError:
    pass  # refused: the reply may already be there and the socket closed
s.settimeout(10)
buf = b""
while b"\n" not in buf:
    c = s.recv(4096)
    if not c: break
    buf += c
print(buf.split(b"\n")[0].decode())
PY
}

KERNEL_MB=1 INITRD_MB=2 make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt" \
  "revalidate=3600,negative_ttl=3600,listing_ttl=3600,entry_timeout=3600,attr_timeout=3600"

# --- the socket --------------------------------------------------------------------
sock=$T/cache/control.sock
wait_until 5 test -S "$sock" || fail "no control socket at $sock"
[ "$(stat -c %a "$sock")" = 600 ] || fail "control socket mode $(stat -c %a "$sock"), want 600"
[ "$(cat "$T/cache/upstream")" = "$NGINX_URL" ] || fail "upstream not recorded in the cache dir"
chmod o+x "$T/cache"  # so that nobody reaches the socket file at all
out=$(client 0 '{"cmd":"status"}')
[[ $out == *'"ok":true'* ]] || fail "root's status request failed: $out"
out=$(client nobody '{"cmd":"status"}')
[[ $out == "connect: Permission denied" ]] || fail "nobody was not stopped by the mode: $out"
chmod 666 "$sock"
out=$(client nobody '{"cmd":"status"}')
[[ $out == *'"ok":false'* && $out == *'permission denied'* ]] || fail "nobody not refused by SO_PEERCRED: $out"
chmod 600 "$sock"
note "mode 0600; nobody refused by the mode and, with the mode opened, by SO_PEERCRED"
out=$(with_timeout 20 python3 - "$sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.settimeout(10)
try:
    s.sendall(b"x" * (200 * 1024))
except OSError:
    pass
buf = b""
try:
    while True:
        c = s.recv(4096)
        if not c: break
        buf += c
except OSError:
    pass
print(buf.decode().strip())
PY
)
[[ $out == *'longer than 65536'* ]] || fail "an oversized request was not refused: $out"
ctl status | grep -qE "^mount: +live at $T/mnt, pid $DAEMON_PID" \
  || fail "status does not show the live mount: $(ctl status)"
ctl --json status | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["mounted"] and j["mount"]["pid"] > 0 and j["mount"]["upstream_up"], j
assert "hit_ratio" in j["mount"] and "paths" in j, j' || fail "status --json lacks the live fields"
note "oversized request dropped; status (text and --json) shows the live mount"

# --- invalidate --------------------------------------------------------------------
f=pxelinux.cfg/default
cmp "$T/up/$f" "$T/mnt/$f" || fail "first read of $f differs"
printf 'DEFAULT rescue\nLABEL rescue\n  KERNEL images/rescue\n' >"$T/up/$f.new"
mv "$T/up/$f.new" "$T/up/$f"
grep -q "DEFAULT linux" "$T/mnt/$f" || fail "inside revalidate=3600 the new bytes were served at once"
out=$(ctl invalidate "/$f") || fail "invalidate failed: $out"
[[ $out == invalidated:* ]] || fail "invalidate said: $out"
cmp "$T/up/$f" "$T/mnt/$f" || fail "after invalidate $f still serves: $(cat "$T/mnt/$f")"
note "$f: old bytes inside the window, new bytes right after invalidate"

m=pxelinux.cfg/01-52-54-00-aa-bb-cc
[ -e "$T/mnt/$m" ] && fail "$m exists before it was created"
printf 'DEFAULT local\n' >"$T/up/$m"
chmod a+r "$T/up/$m"
[ -e "$T/mnt/$m" ] && fail "the negative entry of $m was not remembered (test proves nothing)"
ls "$T/mnt/pxelinux.cfg" | grep -qx "${m#*/}" && fail "the cached listing already shows $m"
out=$(ctl --json invalidate --all) || fail "invalidate --all failed: $out"
python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["negatives"] >= 1, j' <<<"$out" \
  || fail "invalidate --all dropped no negative entry: $out"
cmp "$T/up/$m" "$T/mnt/$m" || fail "$m did not appear after invalidate --all"
ls "$T/mnt/pxelinux.cfg" | grep -qx "${m#*/}" || fail "ls does not show $m after invalidate --all"
out=$(ctl invalidate ../etc 2>&1) && fail "a path escaping the tree was accepted: $out"
note "a name looked up as missing appears after invalidate --all; '..' refused"

# Invalidating one file also refreshes its directory: a file added beside it
# (looked up as missing before, so both the daemon and the kernel remember
# the name as absent) and one removed there show in `ls` right after, though
# listings, negative entries and kernel names are all cached for an hour.
printf 'old\n' >"$T/up/grub/old.cfg"
chmod a+r "$T/up/grub/old.cfg"
ctl invalidate grub >/dev/null  # the listing of grub/ may predate old.cfg
ls "$T/mnt/grub" | grep -qx old.cfg || fail "grub/old.cfg not listed at first"
[ -e "$T/mnt/grub/added.cfg" ] && fail "grub/added.cfg exists before it was created"
printf 'added\n' >"$T/up/grub/added.cfg"
chmod a+r "$T/up/grub/added.cfg"
rm "$T/up/grub/old.cfg"
ls "$T/mnt/grub" | grep -qx added.cfg && fail "grub/ was listed again by itself (test proves nothing)"
ls "$T/mnt/grub" | grep -qx old.cfg || fail "grub/old.cfg gone from ls by itself (test proves nothing)"
[ -e "$T/mnt/grub/added.cfg" ] && fail "grub/added.cfg not remembered as missing (test proves nothing)"
out=$(ctl invalidate grub/grub.cfg) || fail "invalidate grub/grub.cfg failed: $out"
listing=$(ls "$T/mnt/grub")
grep -qx added.cfg <<<"$listing" || fail "ls grub after invalidating grub/grub.cfg lacks added.cfg: $listing"
grep -qx old.cfg <<<"$listing" && fail "ls grub after invalidating grub/grub.cfg still shows old.cfg"
cmp "$T/up/grub/added.cfg" "$T/mnt/grub/added.cfg" || fail "grub/added.cfg listed but not readable"
note "invalidate of one file: a file added and one removed beside it show in ls at once"

# --- prefetch through the mount -----------------------------------------------------
mkdir -p "$T/up/deep/a/b"
for i in 1 2 3 4 5 6; do head -c $((i * 300000)) /dev/urandom >"$T/up/deep/f$i"; done
head -c 700000 /dev/urandom >"$T/up/deep/a/b/g"
chmod -R a+rX "$T/up"
ctl invalidate deep >/dev/null  # the cached listing of the root predates deep/
: >"$NGINX_LOG"
files=$(cd "$T/up" && find . -type f | sed 's|^\./||' | sort)
# Readers of the mount race the prefetch for the same files.
readers=()
for p in deep/f6 deep/f5 deep/a/b/g images/initrd; do
  (with_timeout 60 cat "$T/mnt/$p" >/dev/null 2>&1 || true) &
  readers+=($!)
done
out=$(ctl --json prefetch --recursive --jobs 4 /) || fail "prefetch failed: $out"
wait "${readers[@]}"
python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["failures"] == 0 and j["files"] == int(sys.argv[1]), j' "$(wc -l <<<"$files")" <<<"$out" \
  || fail "prefetch summary: $out"
listed=$(ctl --json ls | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    print(e["path"].lstrip("/"))' | sort)
missing=$(comm -23 <(echo "$files") <(echo "$listed"))
[ -z "$missing" ] || fail "not cached after prefetch: $missing"
while IFS= read -r p; do
  n=$(nginx_count GET "/$(python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1]))' "$p" | sed 's/[.+?()]/\\&/g')" 200)
  case $p in
    pxelinux.cfg/default|pxelinux.cfg/01-52-54-00-aa-bb-cc) ;;  # cached before the log was reset
    *) [ "$n" -le 1 ] || fail "$p was fetched $n times (prefetch and readers must share one GET)";;
  esac
done <<<"$files"
for p in deep/f6 deep/a/b/g images/initrd; do
  [ "$(nginx_count GET "/$p" 200)" -eq 1 ] || fail "$p: $(nginx_count GET "/$p" 200) GETs, want 1"
done
cmp "$T/up/deep/a/b/g" "$T/mnt/deep/a/b/g" || fail "prefetched bytes differ"
note "prefetch -r -j4: $(wc -l <<<"$files") files cached, each GET at most once with readers racing"

# --max-rate: a 3 MiB file at 1 MiB/s takes >= 0.8 * 3 s.
head -c $((3 * 1048576)) /dev/urandom >"$T/up/deep/big"
chmod a+r "$T/up/deep/big"
ctl invalidate deep >/dev/null
start=$(now_ms)
out=$(ctl --json prefetch --jobs 1 --max-rate 1M deep/big) || fail "rate-limited prefetch: $out"
took=$(($(now_ms) - start))
[ "$took" -ge 2400 ] || fail "3 MiB at --max-rate 1M took $took ms (< 2400)"
note "--max-rate 1M: 3 MiB in $took ms"
ctl prefetch --max-rate 10X / >/dev/null 2>&1 && fail "a bad rate was accepted"
# SIGTERM while a slow prefetch streams: the daemon cancels it, exits 0 and
# removes its socket; the client reports the end instead of hanging.
head -c $((4 * 1048576)) /dev/urandom >"$T/up/deep/big2"
chmod a+r "$T/up/deep/big2"
ctl invalidate deep >/dev/null  # the cached listing of deep/ predates big2
(with_timeout 60 "$NBCTL" --cache-dir "$T/cache" prefetch --max-rate 256K deep/big2 \
  >"$T/slow.out" 2>&1 || true) &
slow=$!
wait_until 10 grep -q "deep/big2: read" "$T/daemon.log" || fail "the slow prefetch did not start"
kill -TERM "$DAEMON_PID"
wait_until 15 dead "$DAEMON_PID" || fail "the daemon did not exit on SIGTERM during a prefetch"
rc=0
wait "$DAEMON_PID" 2>/dev/null || rc=$?
[ $rc -eq 0 ] || fail "the daemon exited $rc on SIGTERM"
wait "$slow"
[ ! -e "$sock" ] || fail "the control socket outlived the daemon"
wait_until 10 bash -c "! findmnt -n --mountpoint '$T/mnt' >/dev/null" || fail "still mounted after SIGTERM"
note "SIGTERM during a prefetch: clean exit, socket removed (client: $(tail -n 1 "$T/slow.out"))"
check_daemon_log

# --- unmounted ------------------------------------------------------------------------
out=$(ctl invalidate --all 2>&1) && fail "invalidate succeeded without a mount"
[[ $out == *"not mounted"*"revalidates anyway"* ]] || fail "invalidate unmounted said: $out"
ctl status | grep -q "^mount: *not mounted" || fail "status after the unmount: $(ctl status)"
printf 'new\n' >"$T/up/deep/late"
chmod a+r "$T/up/deep/late"
out=$(ctl --json prefetch deep/late) || fail "unmounted prefetch with the recorded upstream: $out"
[ "$(cache_entry deep/late | cut -d' ' -f2)" = 4 ] || fail "deep/late not cached: $out"
empty=$T/cache2
rc=0
out=$(with_timeout 30 "$NBCTL" --cache-dir "$empty" prefetch -r 2>&1) || rc=$?
[ $rc -eq 2 ] && [[ $out == *"--url"* ]] || fail "prefetch without an upstream: rc $rc, $out"
out=$(with_timeout 60 "$NBCTL" --cache-dir "$empty" --json prefetch -r --url "$NGINX_URL" grub) \
  || fail "unmounted prefetch --url: $out"
CACHE_DIR=$empty cache_entry grub/grub.cfg | grep -qv absent || fail "grub/grub.cfg not cached by --url"
rc=0
with_timeout 30 "$NBCTL" --cache-dir "$empty" prefetch --url "$NGINX_URL" nothere >/dev/null 2>&1 || rc=$?
[ $rc -eq 1 ] || fail "a missing file: exit $rc, want 1"
note "unmounted: invalidate refused (2), prefetch with recorded upstream and --url, missing file exit 1"
check_daemon_log
pass "control socket: mode, peer check, bounds, status, invalidate, prefetch"
