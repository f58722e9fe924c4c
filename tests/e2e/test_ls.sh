#!/usr/bin/env bash
# ls -lR shows the upstream names and sizes without downloading any file body
# and without a FUSE request per name; with rewrite rules, only the small
# files they match are fetched (their size is known only once rewritten).
source "$(dirname "$0")/lib.sh"
KERNEL_MB=2 INITRD_MB=4 make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt" "no_default_rewrite,metrics_file=$T/ls.prom"
with_timeout 30 ls -lR --time-style=+%s "$T/mnt" >"$T/ls.out" || fail "ls -lR failed: $(tail -n 3 "$T/ls.out")"
# ls -lR's own view: every name, and the size of every file.
lsr_sizes() {  # "SIZE NAME" for each regular file line of ls -lR output
  sed -nE 's/^-[^ ]+ +[0-9]+ +[^ ]+ +[^ ]+ +([0-9]+) +[0-9]+ (.*)$/\1 \2/p' "$1" | sort
}
(cd "$T/up" && ls -lR --time-style=+%s . >"$T/ls.want")
lsr_sizes "$T/ls.want" >"$T/ls.want.sizes"
lsr_sizes "$T/ls.out" >"$T/ls.got.sizes"
[ "$(wc -l <"$T/ls.want.sizes")" -ge 9 ] || fail "parsing ls -lR found only $(wc -l <"$T/ls.want.sizes") files"
diff "$T/ls.want.sizes" "$T/ls.got.sizes" || fail "ls -lR shows other names or sizes than upstream"
(cd "$T/up" && find . -mindepth 1 -printf '%y %s %P\n' | sed 's/^d [0-9]*/d -/' | sort) >"$T/want"
(cd "$T/mnt" && find . -mindepth 1 -printf '%y %s %P\n' | sed 's/^d [0-9]*/d -/' | sort) >"$T/got"
diff "$T/want" "$T/got" || fail "names or sizes differ (< upstream, > mount)"
bodies=$(grep -E '^GET ' "$NGINX_LOG" | grep -vcE '^GET [^ ]*/ ' || true)
[ "$bodies" -eq 0 ] || fail "$bodies file bodies were downloaded by ls:
$(grep -E '^GET ' "$NGINX_LOG" | grep -vE '^GET [^ ]*/ ')"
heads=$(nginx_count HEAD '.*')
[ "$heads" -eq 0 ] || fail "$heads HEADs although the listings give exact sizes"
stop_mount "$T/mnt"
# The FUSE requests behind it (the metrics file is written once more at
# exit): the listings' sizes come with READDIRPLUS, so there is no LOOKUP per
# name; ls asks for security.selinux and the ACL once, not of every name.
fuse_ops() { awk -v op="$1" -F'[{}" ]+' '$1 == "netbootfs_fuse_requests_total" && $3 == op {print $NF}' "$T/ls.prom"; }
entries=$(wc -l <"$T/got")
[ "$(fuse_ops readdirplus)" -ge 1 ] || fail "no READDIRPLUS: $(grep fuse_requests "$T/ls.prom")"
[ "$(fuse_ops lookup)" -lt $((entries / 2)) ] || fail "$(fuse_ops lookup) LOOKUPs for $entries names"
[ "$(fuse_ops getxattr)" -le 4 ] || fail "$(fuse_ops getxattr) GETXATTRs for $entries names"
# With the default rule (proxy_host differs from the upstream host), ls fetches
# exactly the files the rule selects, and nothing else.
: >"$NGINX_LOG"
# A menu that names the upstream host, so the rule has something to rewrite.
printf 'DEFAULT linux\nLABEL linux\n  KERNEL http://127.0.0.1:%s/images/linux\n' "$NGINX_PORT" \
  >"$T/up/pxelinux.cfg/default"
CACHE_DIR=$T/cache2 start_mount "$NGINX_URL" "$T/mnt" "proxy_host=proxy.example.net"
with_timeout 30 ls -lR "$T/mnt" >/dev/null || fail "ls -lR failed with rewrite rules"
grep -E '^GET ' "$NGINX_LOG" | grep -vE '^GET [^ ]*/ ' | awk '{print $2}' | sort >"$T/bodies"
printf '%s\n' /grub/grub.cfg /pxelinux.cfg/01-52-54-00-12-34-56 /pxelinux.cfg/default >"$T/want_bodies"
diff "$T/want_bodies" "$T/bodies" || fail "ls with rewrite rules fetched other bodies than the matching files"
# With rewritten files in the cache, the mount still shows exactly upstream's
# names (no internal cache entries leak into a listing), also after a remount.
stop_mount "$T/mnt"
CACHE_DIR=$T/cache2 start_mount "$NGINX_URL" "$T/mnt" "proxy_host=proxy.example.net"
(cd "$T/up" && find . -mindepth 1 -printf '%y %P\n' | sort) >"$T/want_names"
(cd "$T/mnt" && find . -mindepth 1 -printf '%y %P\n' 2>"$T/find.err" | sort) >"$T/got_names" || true
[ ! -s "$T/find.err" ] || fail "with rewritten files cached, walking the mount failed: $(cat -v "$T/find.err")"
diff "$T/want_names" "$T/got_names" | cat -v >&2 && [ "${PIPESTATUS[0]}" -eq 0 ] \
  || fail "with rewritten files cached, the mount lists other names than upstream (< upstream, > mount)"
check_daemon_log
pass "$(wc -l <"$T/got") entries right, no bodies, no HEADs; with rules only the 3 matching menus"
