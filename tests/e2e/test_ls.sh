#!/usr/bin/env bash
# ls -lR shows the upstream names and sizes without downloading any file body;
# with rewrite rules, only the small files they match are fetched (their size
# is known only once rewritten).
source "$(dirname "$0")/lib.sh"
KERNEL_MB=2 INITRD_MB=4 make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt" "no_default_rewrite"
ls -lR "$T/mnt" >/dev/null
(cd "$T/up" && find . -mindepth 1 -printf '%y %s %P\n' | sed 's/^d [0-9]*/d -/' | sort) >"$T/want"
(cd "$T/mnt" && find . -mindepth 1 -printf '%y %s %P\n' | sed 's/^d [0-9]*/d -/' | sort) >"$T/got"
diff "$T/want" "$T/got" || fail "names or sizes differ"
bodies=$(grep -E '^GET ' "$T/nginx/logs/access.log" | grep -vcE '^GET [^ ]*/ ' || true)
[ "$bodies" -eq 0 ] || fail "$bodies file bodies were downloaded by ls"
heads=$(nginx_count HEAD '.*')
[ "$heads" -eq 0 ] || fail "$heads HEADs although the listings give exact sizes"
stop_mount "$T/mnt"
# With the default rule (proxy_host differs from the upstream host), ls fetches
# exactly the files the rule selects, and nothing else.
: >"$T/nginx/logs/access.log"
CACHE_DIR=$T/cache2 start_mount "$NGINX_URL" "$T/mnt" "proxy_host=proxy.example.net"
ls -lR "$T/mnt" >/dev/null
grep -E '^GET ' "$T/nginx/logs/access.log" | grep -vE '^GET [^ ]*/ ' | awk '{print $2}' | sort >"$T/bodies"
printf '%s\n' /grub/grub.cfg /pxelinux.cfg/01-52-54-00-12-34-56 /pxelinux.cfg/default >"$T/want_bodies"
diff "$T/want_bodies" "$T/bodies" || fail "ls with rewrite rules fetched other bodies than the matching files"
check_daemon_log
pass "$(wc -l <"$T/got") entries right, no bodies, no HEADs; with rules only the 3 matching menus"
