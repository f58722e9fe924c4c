#!/usr/bin/env bash
# ls -lR shows the upstream names and sizes without downloading any file body.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=2 INITRD_MB=4 make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt"
ls -lR "$T/mnt" >/dev/null
(cd "$T/up" && find . -mindepth 1 -printf '%y %s %P\n' | sed 's/^d [0-9]*/d -/' | sort) >"$T/want"
(cd "$T/mnt" && find . -mindepth 1 -printf '%y %s %P\n' | sed 's/^d [0-9]*/d -/' | sort) >"$T/got"
diff "$T/want" "$T/got" || fail "names or sizes differ"
bodies=$(grep -E '^GET ' "$T/nginx/logs/access.log" | grep -vcE '^GET [^ ]*/ ' || true)
[ "$bodies" -eq 0 ] || fail "$bodies file bodies were downloaded by ls"
heads=$(nginx_count HEAD '.*')
[ "$heads" -eq 0 ] || fail "$heads HEADs although the listings give exact sizes"
check_daemon_log
pass "$(wc -l <"$T/got") entries right, no bodies, no HEADs"
