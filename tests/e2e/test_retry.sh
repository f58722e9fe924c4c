#!/usr/bin/env bash
# Transient upstream failures of an uncached file are retried (within
# retry_timeout, honouring Retry-After) and the read succeeds byte-identical;
# a 404 costs exactly one request; an upstream answering 503 for ever fails
# the read with EIO within retry_timeout plus a margin and caches nothing.
source "$(dirname "$0")/lib.sh"
mkdir -p "$T/up/images"
head -c 3000000 /dev/urandom >"$T/up/images/linux"
head -c 50000 /dev/urandom >"$T/up/images/gone"
head -c 70000 /dev/urandom >"$T/up/images/dead"
start_fault_server "$T/up"
start_mount "$FAULT_URL" "$T/mnt" "retry_timeout=4"
ls "$T/mnt/images" >/dev/null || fail "listing failed"

# gets PATH: the GETs of PATH in the fault log, as "status status ...".
gets() {
  fault_log | python3 -c '
import json, sys
print(" ".join(str(e["status"]) for e in json.load(sys.stdin)
               if e["path"] == sys.argv[1] and e["method"] == "GET"))' "$1"
}

# 1. 503 twice with Retry-After: 1, then the file.
fault '{"path":"/images/linux","mode":"status","status":503,"retry_after":1,"times":2}'
start=$(now_ms)
with_timeout 30 cmp "$T/up/images/linux" "$T/mnt/images/linux" || fail "read through two 503s differs or failed"
took=$(($(now_ms) - start))
g=$(gets /images/linux)
[ "$g" = "503 503 200" ] || fail "expected GETs 503 503 200, the fault log shows: $g"
[ "$took" -ge 1800 ] || fail "read took ${took} ms: Retry-After: 1 was not honoured"
note "two 503s retried: GETs $g, read in ${took} ms"

# 2. 404: never retried.
fault '{"path":"/images/gone","mode":"status","status":404}'
read -r err ms < <(timed_read "$T/mnt/images/gone")
[ "$err" = ENOENT ] || fail "a 404 read gave $err, want ENOENT"
g=$(gets /images/gone)
[ "$g" = "404" ] || fail "a 404 must cost exactly one GET, the fault log shows: $g"

# 3. 503 for ever: EIO within retry_timeout (4 s) plus a margin, nothing cached.
fault '{"path":"/images/dead","mode":"status","status":503}'
read -r err ms < <(timed_read "$T/mnt/images/dead")
[ "$err" = EIO ] || fail "a read against a failing upstream gave $err, want EIO"
[ "$ms" -lt 12000 ] || fail "the failing read took ${ms} ms (retry_timeout=4)"
n=$(gets /images/dead | wc -w)
[ "$n" -ge 3 ] || fail "only $n GETs of a 503-ing file: not retried"
"$NBCTL" --cache-dir "$T/cache" --json ls >"$T/ls.json" || fail "netbootfsctl ls failed"
python3 - "$T/ls.json" <<'PY' || fail "$(cat "$T/ls.verdict" 2>/dev/null)"
import json, sys
paths = [e.get("path") for e in json.load(open(sys.argv[1]))]
bad = [p for p in paths if p and p.endswith("images/dead")]
sys.exit(1 if bad or not any(p and p.endswith("images/linux") for p in paths) else 0)
PY
note "503 for ever: $err after ${ms} ms and $n GETs; not in the cache"

check_daemon_log 'images/dead: |upstream GET failed'
pass "503s retried ($took ms), 404 once, dead file EIO in ${ms} ms after $n GETs"
