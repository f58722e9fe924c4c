#!/usr/bin/env bash
# Every fault of the upstream, through the mount: a reader gets bytes identical
# to a complete upstream version, or EIO within the configured timeouts, never
# a short or mixed file; nothing partial lands in the cache (netbootfsctl ls
# shows the path absent or with the upstream sha256, verify passes); and the
# fault server's log shows what upstream saw (resumes with Range + If-Range,
# redirects followed or refused, bounded retries).
# When a download fails for good, a read(2) spanning the last bytes received
# returns short before the EIO (the kernel hands back the page-cache bytes
# before the failing page): noted here; test_tftp_faults.sh shows why a TFTP
# client still never ends up with a truncated file.
source "$(dirname "$0")/lib.sh"
RST=3  # read_stall_timeout
mkdir -p "$T/up/f" "$T/up/t" "$T/up2"
for n in cut1 cutx short1 shortx stallx drip sh big ol olx after_ol rp rh rf rftp loop chg; do
  head -c $((1500000 + RANDOM)) /dev/urandom >"$T/up/f/$n"
done
head -c 600000 /dev/urandom >"$T/up/f/drip"
cp "$T/up/f/rp" "$T/up/t/rp"  # the redirect targets hold the same bytes
cp "$T/up/f/rh" "$T/up2/rh"
chmod -R a+rX "$T/up" "$T/up2"
start_fault_server "$T/up"
# A second upstream on another loopback port, the target of a cross-server redirect.
python3 "$FAULT_SERVER" --root "$T/up2" --bind 127.0.0.1 --port 0 --port-file "$T/fault2.port" \
  >"$T/fault2.log" 2>&1 &
track_pid $!
wait_until 10 test -s "$T/fault2.port" || fail "second fault server did not start"
PORT2=$(cat "$T/fault2.port")
start_mount "$FAULT_URL" "$T/mnt" \
  "read_stall_timeout=$RST,low_speed_time=2,connect_timeout=2,request_timeout=3,revalidate=0"
ls "$T/mnt/f" >/dev/null

# rd NAME: reads $T/mnt/f/NAME whole (64 KiB reads, one open) into $T/out/NAME
# and prints "ok|short|ERRNO BYTES SECONDS[ partial@OFFSET]": partial@ names
# the first read(2) that returned fewer bytes than asked before the end of the
# file (what in.tftpd would send as the last block of a truncated file).
mkdir -p "$T/out"
rd() {
  with_timeout 60 python3 - "$T/mnt/f/$1" "$T/out/$1" "$(stat -c %s "$T/up/f/$1")" <<'PY' || true
import errno, sys, time
t0 = time.monotonic()
got = 0
verdict = None
partial = []  # offsets of read(2)s that returned fewer bytes than asked
with open(sys.argv[2], "wb") as out:
    try:
        with open(sys.argv[1], "rb", buffering=0) as f:
            while True:
                b = f.read(65536)
                if not b:
                    break
                if len(b) < 65536:
                    partial.append((got, len(b)))
                out.write(b)
                got += len(b)
        verdict = "ok" if got == int(sys.argv[3]) else "short"
    except OSError as e:
        verdict = errno.errorcode.get(e.errno, str(e.errno))
# The read that reaches the end of a complete file is short by nature.
partial = [off for off, n in partial if not (verdict == "ok" and off + n == got)]
print(f"{verdict} {got} {time.monotonic() - t0:.1f}" + (f" partial@{partial[0]}" if partial else ""))
PY
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

# identical NAME VERDICT: the read succeeded with upstream's bytes (sets SAME).
identical() {
  SAME=0
  case $2 in ok\ *) ;; *) soft_fail "$1: read gave '$2', expected upstream's bytes"; return 0 ;; esac
  if cmp -s "$T/up/f/$1" "$T/out/$1"; then SAME=1; else soft_fail "$1: the read returned other bytes"; fi
  case $2 in *partial@*) soft_fail "$1: a read(2) mid-file returned short ($2)" ;; esac
}
# eio NAME VERDICT MIN_S MAX_S: the read failed with EIO after MIN..MAX s, and
# every byte it returned before was upstream's.
eio() {
  local v n s p
  read -r v n s p <<<"$2"
  [ "$v" = EIO ] || { soft_fail "$1: read gave '$2', expected EIO"; return 0; }
  # Through the page cache the bytes before the failing page come back as a
  # short read(2) first; the reader then gets the EIO. in.tftpd would stop at
  # the short read: test_tftp_faults.sh shows the client gives up first.
  [ -z "$p" ] || note "$1: a short read(2) at byte ${p#partial@} came before the EIO"
  awk -v s="$s" -v lo="$3" -v hi="$4" 'BEGIN { exit !(s >= lo && s <= hi) }' \
    || soft_fail "$1: EIO after ${s}s, expected within ${3}..${4}s"
  cmp -s -n "$n" "$T/up/f/$1" "$T/out/$1" || soft_fail "$1: the bytes before the error differ"
}
# entry NAME: "SHA256 SIZE" of f/NAME in the cache index, or "absent".
entry() { cache_entry "f/$1"; }
# cached_as NAME SHA...: the cache holds NAME with one of these sha256, or not at all.
cached_as() {
  local name=$1 got want; shift
  got=$(entry "$name")
  [ "$got" = absent ] && return 0
  for want in "$@"; do [ "${got%% *}" = "$want" ] && return 0; done
  soft_fail "$name: the cache holds sha256/size $got, not a complete upstream version"
}
# absent NAME: a failed download left nothing in the cache.
absent() {
  local got
  got=$(entry "$1")
  [ "$got" = absent ] || soft_fail "$1: a failed download is in the cache ($got)"
}
# present NAME: the complete read was cached with upstream's sha256.
present() {
  local got
  got=$(entry "$1")
  [ "${got%% *}" = "$(sha "$T/up/f/$1")" ] || soft_fail "$1: cached as '$got', not upstream's sha256"
}
# ulog NAME [PORT]: upstream's log for /f/NAME (or any path matching NAME), one
# "METHOD STATUS RANGE IF_RANGE FAULT" line per request.
ulog() {
  curl -sf --max-time 5 "http://127.0.0.1:${2:-$FAULT_PORT}/__log" | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e["path"] == sys.argv[1]:
        print(e["method"], e["status"], e["range"] or "-", e["if_range"] or "-", e["fault"] or "-")' \
    "${3:-/f/$1}"
}
gets() { ulog "$@" | grep -c '^GET ' || true; }

# --- cut once: resumed with Range + If-Range, identical ------------------------
fault '{"path":"/f/cut1","mode":"cut","after":700000,"times":1}'
v=$(rd cut1); note "cut once: $v"
identical cut1 "$v"
present cut1
ulog cut1 >"$T/l"
[ "$(sed -n 1p "$T/l")" = "GET 200 - - cut" ] || soft_fail "cut1: first GET was not the cut one: $(cat "$T/l")"
sed -n 2p "$T/l" | grep -qE '^GET 206 bytes=([1-9][0-9]{0,5}|700000)- "[^"]+" -$' \
  || soft_fail "cut1: no 206 resume with Range bytes=N- (N <= 700000) and If-Range: $(cat "$T/l")"
[ "$(gets cut1)" -eq 2 ] || soft_fail "cut1: $(gets cut1) GETs, expected 2: $(cat "$T/l")"

# --- the slow failures run side by side ---------------------------------------
# cut for ever (a RST after 1 MB, then at byte 0 on every resume); short for
# ever (the last byte never comes); stall for ever (1 MiB then nothing); and a
# slow but steady drip that must complete.
fault '{"path":"/f/cutx","mode":"cut","after":1000000,"reset":true,"times":1,"then":{"mode":"cut","after":0,"reset":true}}'
fault '{"path":"/f/shortx","mode":"short","missing":1}'
fault '{"path":"/f/stallx","mode":"stall","after":1048576,"times":1,"then":{"mode":"stall","after":0}}'
fault '{"path":"/f/drip","mode":"drip","after":0,"rate":200000}'
bg=()
for n in cutx shortx stallx drip; do
  (rd $n >"$T/v.$n") &
  bg+=($!)
done
wait "${bg[@]}"
for n in cutx shortx stallx drip; do note "$n: $(cat "$T/v.$n")"; done
eio cutx "$(cat "$T/v.cutx")" $((RST - 1)) 30
eio shortx "$(cat "$T/v.shortx")" $((RST - 1)) 30
eio stallx "$(cat "$T/v.stallx")" $((RST - 1)) 30
read -r _ n _ <"$T/v.stallx"
[ "${n:-0}" -ge $((1048576 - 524288)) ] \
  || soft_fail "stallx: the reader failed after $n bytes, before the 1 MiB upstream had sent"
[ "${n:-0}" -le 1048576 ] || soft_fail "stallx: $n bytes read, more than upstream sent"
identical drip "$(cat "$T/v.drip")"
read -r _ _ s <"$T/v.drip"
awk -v s="$s" 'BEGIN { exit !(s >= 2) }' || soft_fail "drip: took ${s}s: the drip did not apply"
for n in cutx shortx stallx; do absent $n; done
present drip
ulog cutx >"$T/l"
[ "$(sed -n 1p "$T/l")" = "GET 200 - - cut" ] || soft_fail "cutx: first GET: $(cat "$T/l")"
[ "$(gets cutx)" -ge 2 ] && [ "$(gets cutx)" -le 12 ] \
  || soft_fail "cutx: $(gets cutx) GETs, expected a bounded number of resumes: $(cat "$T/l")"
sed -n '2,$p' "$T/l" | grep -vqE '^GET 206 bytes=[0-9]+- "[^"]+" cut$' \
  && soft_fail "cutx: a retry was not a Range + If-Range resume: $(cat "$T/l")"
ulog shortx >"$T/l"
size=$(stat -c %s "$T/up/f/shortx")
grep -q "^GET 206 bytes=$((size - 1))- " "$T/l" \
  || soft_fail "shortx: no resume for the missing last byte: $(cat "$T/l")"
[ "$(gets shortx)" -le 12 ] || soft_fail "shortx: $(gets shortx) GETs: $(cat "$T/l")"
ulog stallx >"$T/l"
# (One GET, or a resume or two: libcurl averages the speed over ~5 s, so the
# stall may outlast read_stall_timeout before the transfer counts as broken.)
[ "$(gets stallx)" -ge 1 ] && [ "$(gets stallx)" -le 6 ] \
  || soft_fail "stallx: $(gets stallx) GETs, expected one or a few resumes: $(cat "$T/l")"
sed -n 1p "$T/l" | grep -q '^GET 200 - - stall$' || soft_fail "stallx: first GET: $(cat "$T/l")"
[ "$(gets drip)" -eq 1 ] || soft_fail "drip: $(gets drip) GETs: a slow body was broken: $(ulog drip)"
# Cleared, the failed files read whole: a failure is not remembered as content.
curl -sf -X DELETE "http://127.0.0.1:$FAULT_PORT/__fault" >/dev/null
for n in cutx shortx stallx; do
  v=$(rd $n)
  identical $n "$v"; present $n
done

# --- redirects ------------------------------------------------------------------
fault '{"path":"/f/rp","mode":"redirect","location":"/t/rp"}'
fault "{\"path\":\"/f/rh\",\"mode\":\"redirect\",\"status\":307,\"location\":\"http://127.0.0.1:$PORT2/rh\"}"
fault '{"path":"/f/rf","mode":"redirect","location":"file:///etc/passwd"}'
fault "{\"path\":\"/f/rftp\",\"mode\":\"redirect\",\"status\":301,\"location\":\"ftp://127.0.0.1:$FAULT_PORT/f/rftp\"}"
fault '{"path":"/f/loop","mode":"redirect","location":"/f/loop"}'
v=$(rd rp); note "redirect to a path: $v"
identical rp "$v"; present rp
[ "$(ulog rp)" = "GET 302 - - redirect" ] || soft_fail "rp: upstream saw $(ulog rp)"
[ "$(ulog rp "" /t/rp)" = "GET 200 - - -" ] || soft_fail "rp: the target saw $(ulog rp "" /t/rp)"
v=$(rd rh); note "redirect to another server: $v"
identical rh "$v"; present rh
[ "$(ulog rh "$PORT2" /rh)" = "GET 200 - - -" ] || soft_fail "rh: the other server saw $(ulog rh "$PORT2" /rh)"
for n in rf rftp; do
  v=$(rd $n); note "redirect to another scheme ($n): $v"
  eio $n "$v" 0 10
  [ ! -s "$T/out/$n" ] || soft_fail "$n: bytes were returned: $(head -c 80 "$T/out/$n" | od -c | head -2)"
  absent $n
done
grep -rqs "$(head -n1 /etc/passwd)" "$T/out" "$T/cache" && soft_fail "bytes of /etc/passwd were served or cached"
ulog rftp | grep -vq '^GET 301 ' && soft_fail "rftp: upstream saw more than the redirects: $(ulog rftp)"
v=$(rd loop); note "redirect loop: $v"
eio loop "$v" 0 15
absent loop
n1=$(gets loop)
sleep 1
[ "$n1" -ge 2 ] && [ "$n1" -le 30 ] && [ "$(gets loop)" -eq "$n1" ] \
  || soft_fail "loop: $n1 then $(gets loop) requests: not bounded"

# --- big headers: a clean error -------------------------------------------------
fault '{"path":"/f/big","mode":"big_headers","size":262144}'
v=$(rd big); note "256 KiB header: $v"
eio big "$v" 0 15
absent big
[ "$(gets big)" -ge 1 ] && [ "$(gets big)" -le 5 ] || soft_fail "big: $(gets big) GETs: $(ulog big)"

# --- overlong: exactly Content-Length bytes ---------------------------------------
fault '{"path":"/f/ol","mode":"overlong","extra":4096,"times":1}'
fault '{"path":"/f/olx","mode":"overlong","extra":16}'
for n in ol olx after_ol; do
  v=$(rd $n); note "overlong $n: $v"
  identical $n "$v"; present $n
done
[ "$(gets after_ol)" -eq 1 ] || soft_fail "after_ol: $(ulog after_ol)"

# --- change: every read is one version whole ----------------------------------------
alt=$(head -c 60000 /dev/urandom | base64 -w0)  # one curl argument: under 128 KiB
printf '%s' "$alt" >"$T/alt"
A=$(sha "$T/up/f/chg")
B=$(sha "$T/alt")
fault "{\"path\":\"/f/chg\",\"mode\":\"change\",\"content\":\"$alt\"}"
# Each read opens anew (revalidate=0: a conditional GET, which flips the
# version): "VERDICT:A|B|other" per read. rd's "short" means "not A's size".
seen=""
for i in 1 2 3 4 5 6; do
  v=$(rd chg)
  s=$(sha "$T/out/chg")
  w=other
  [ "$s" = "$A" ] && w=A
  [ "$s" = "$B" ] && w=B
  r=${v%% *}
  [ "$r" = short ] && r=ok  # an EOF: the read completed (B is shorter than A)
  seen="$seen $r:$w"
  [ "$r" = ok ] && [ "$w" = other ] && soft_fail "chg read $i: a complete read returned a mix ($v)"
done
note "change, one reader at a time:$seen"
[[ $seen == *ok:A* && $seen == *ok:B* ]] || soft_fail "chg: the reads did not see both versions:$seen"
# Two readers overlapping: the first opens and reads 64 KiB, the second opens
# (a revalidation: the other version) and reads whole, then the first finishes.
with_timeout 60 python3 - "$T/mnt/f/chg" "$A" "$B" >"$T/overlap" <<'PY' || true
import hashlib, sys, time
path, a, b = sys.argv[1:4]
name = {a: "A", b: "B"}
out = []
for round_ in range(3):
    try:
        f1 = open(path, "rb", buffering=0)
        first = f1.read(65536)
        time.sleep(1.2)  # past entry_timeout: the second open looks the name up again
        with open(path, "rb") as f2:
            second = f2.read()
        rest = b""
        while True:
            piece = f1.read(65536)
            if not piece:
                break
            rest += piece
        f1.close()
        v1 = name.get(hashlib.sha256(first + rest).hexdigest(), "other")
        v2 = name.get(hashlib.sha256(second).hexdigest(), "other")
        out.append(f"{v1}/{v2}")
    except OSError as e:
        out.append(f"error:{e.strerror}")
print(" ".join(out))
PY
note "change, two readers overlapping: $(cat "$T/overlap")"
grep -q other "$T/overlap" && soft_fail "chg: an overlapping read returned a mix: $(cat "$T/overlap")"
grep -qE 'A/B|B/A' "$T/overlap" || soft_fail "chg: the overlapping readers never held two versions: $(cat "$T/overlap")"
cached_as chg "$A" "$B"
[ "$(entry chg)" != absent ] || soft_fail "chg: nothing cached"

# --- stall_headers: a miss fails within the timeouts, no hang -----------------
# Last: timeouts may count against the upstream as a whole (retries, upstream
# down), which is not what the cases above are about.
fault '{"path":"/f/sh","mode":"stall_headers"}'
v=$(rd sh); note "stall_headers: $v"
eio sh "$v" 0 20
absent sh
[ "$(ulog sh | grep -c '^GET 0 ')" -ge 1 ] || soft_fail "sh: the GET never reached upstream: $(ulog sh)"
[ "$(gets sh)" -le 5 ] || soft_fail "sh: $(gets sh) GETs for one read"

"$NBCTL" --cache-dir "$T/cache" verify >"$T/verify" 2>&1 || soft_fail "verify failed: $(cat "$T/verify")"
pass "cut, short, stall, stall_headers, drip, redirects, big headers, overlong, change: identical bytes or EIO, cache clean"
