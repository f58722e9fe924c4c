#!/usr/bin/env bash
# A download whose connection is cut once mid-body resumes with a Range request
# (with If-Range, so a changed file cannot be spliced), answered 206; readers
# that were waiting get byte-identical data, and nothing is fetched twice.
source "$(dirname "$0")/lib.sh"
mkdir -p "$T/up/images"
head -c 8000000 /dev/urandom >"$T/up/images/initrd"
start_fault_server "$T/up"
start_mount "$FAULT_URL" "$T/mnt"
ls "$T/mnt/images" >/dev/null
cut=3000000
fault "{\"path\":\"/images/initrd\",\"mode\":\"cut\",\"after\":$cut,\"times\":1}"
readers=()
for i in 1 2 3; do
  (with_timeout 60 cmp "$T/up/images/initrd" "$T/mnt/images/initrd" >"$T/cmp$i" 2>&1 && touch "$T/ok$i") &
  readers+=($!)
done
for p in "${readers[@]}"; do wait "$p" || true; done
for i in 1 2 3; do [ -e "$T/ok$i" ] || fail "reader $i: $(cat "$T/cmp$i")"; done
fault_log >"$T/log.json"
python3 - "$T/log.json" "$cut" >"$T/verdict" <<'PY' || fail "$(cat "$T/verdict")"
import json, re, sys
log = [e for e in json.load(open(sys.argv[1])) if e["path"] == "/images/initrd" and e["method"] == "GET"]
cut = int(sys.argv[2])
lines = "\n".join(json.dumps(e) for e in log)
first, rest = (log[0], log[1:]) if log else (None, [])
if not first or first.get("fault") != "cut" or first["range"]:
    sys.exit(print(f"the first GET was not the plain one that got cut:\n{lines}"))
if len(rest) != 1:
    sys.exit(print(f"expected exactly one request after the cut, saw {len(rest)}:\n{lines}"))
r = rest[0]
m = re.fullmatch(r"bytes=(\d+)-", r["range"] or "")
if not m or not 0 < int(m.group(1)) <= cut:
    sys.exit(print(f"the resume did not ask for 'bytes=N-' with 0 < N <= {cut}:\n{lines}"))
if r["status"] != 206:
    sys.exit(print(f"the resume was answered {r['status']}, not 206:\n{lines}"))
if not r.get("if_range"):
    sys.exit(print(f"the resume carried no If-Range validator:\n{lines}"))
print(f"resumed with Range {r['range']} If-Range {r['if_range']}")
PY
note "$(cat "$T/verdict")"
check_daemon_log
pass "cut at $cut bytes, resumed with Range and If-Range, 3 readers identical"
