#!/usr/bin/env bash
# A download whose connection is cut mid-body resumes with a Range request, and
# readers get byte-identical data.
source "$(dirname "$0")/lib.sh"
mkdir -p "$T/up/images"
head -c 8000000 /dev/urandom >"$T/up/images/initrd"
start_fault_server "$T/up"
start_mount "$FAULT_URL" "$T/mnt"
ls "$T/mnt/images" >/dev/null
fault '{"path":"/images/initrd","mode":"cut","after":3000000,"times":1}'
readers=()
for i in 1 2 3; do
  (cmp "$T/up/images/initrd" "$T/mnt/images/initrd" && touch "$T/ok$i") &
  readers+=($!)
done
wait "${readers[@]}" || true
for i in 1 2 3; do [ -e "$T/ok$i" ] || fail "reader $i got other bytes"; done
fault_log >"$T/log.json"
grep -q '"range": "bytes=3000000-", "if_none_match": ""' "$T/log.json" || \
  grep -q '"range": "bytes=3000000-"' "$T/log.json" || fail "no Range request after the cut: $(cat "$T/log.json")"
grep -q '"status": 206' "$T/log.json" || fail "the resume was not answered 206"
check_daemon_log
pass "cut at 3000000 bytes, resumed with Range, readers identical"
