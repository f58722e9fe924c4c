#!/usr/bin/env bash
# Boot menus that name the upstream server come back naming the proxy, with
# exact sizes (stat and TFTP tsize); kernels stay byte-identical; an upstream
# change and a rule change (SIGHUP) show up as new rewritten content.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=2 INITRD_MB=1 make_tree "$T/up"
start_nginx "$T/up"
up=127.0.0.1:$NGINX_PORT
cat >"$T/up/pxelinux.cfg/default" <<EOF2
DEFAULT linux
LABEL linux
  KERNEL http://$up/images/linux
  APPEND initrd=http://$up/images/initrd MASTER=127.0.0.1 tftp-server 10.0.0.5 not 10.0.0.50
EOF2
printf 'set root=(http,127.0.0.1)\nlinux /images/linux server=127.0.0.1.example\r\n' >"$T/up/grub/grub.cfg"
cat >"$T/up/boot.ipxe" <<'EOF2'
#!ipxe
chain http://127.0.0.1/boot/menu.ipxe
EOF2
chmod -R a+rX "$T/up"
cat >"$T/netbootfs.toml" <<'EOF2'
[[rewrite]]
name = "ipxe-extra"
files = ["*.ipxe"]
replace = [ { from = "/boot/menu.ipxe", to = "/menus/proxy.ipxe" } ]
EOF2
start_mount "$NGINX_URL" "$T/mnt" \
  "proxy_host=proxy.example.net,upstream_ip=10.0.0.5,proxy_ip=10.1.0.1,config=$T/netbootfs.toml,revalidate=0.5"

expect_default() {
  sed -e "s/127\.0\.0\.1:$NGINX_PORT/proxy.example.net:$NGINX_PORT/g" -e 's/MASTER=127.0.0.1/MASTER=proxy.example.net/' \
      -e 's/tftp-server 10\.0\.0\.5 /tftp-server 10.1.0.1 /' "$T/up/pxelinux.cfg/default"
}
expect_default >"$T/want.default"
cmp "$T/want.default" "$T/mnt/pxelinux.cfg/default" || {
  diff "$T/want.default" "$T/mnt/pxelinux.cfg/default" >&2 || true
  fail "pxelinux.cfg/default is not rewritten as expected"
}
[ "$(stat -c %s "$T/mnt/pxelinux.cfg/default")" = "$(stat -c %s "$T/want.default")" ] || fail "stat does not give the rewritten size"
printf 'set root=(http,proxy.example.net)\nlinux /images/linux server=127.0.0.1.example\r\n' >"$T/want.grub"
cmp "$T/want.grub" "$T/mnt/grub/grub.cfg" || fail "grub.cfg is not rewritten as expected (boundaries, CRLF)"
printf '#!ipxe\nchain http://proxy.example.net/menus/proxy.ipxe\n' >"$T/want.ipxe"
cmp "$T/want.ipxe" "$T/mnt/boot.ipxe" || fail "the configured rule and the default rule did not both apply"
cmp "$T/up/images/linux" "$T/mnt/images/linux" || fail "the kernel is not byte-identical"
getfattr -n user.netbootfs.rewritten --only-values "$T/mnt/pxelinux.cfg/default" | grep -q "rewritten by default" \
  || fail "getfattr does not report the rule"
getfattr -n user.netbootfs.rewritten --only-values "$T/mnt/boot.ipxe" | grep -q "ipxe-extra,default" \
  || fail "getfattr does not report both rules"
getfattr -n user.netbootfs.rewritten --only-values "$T/mnt/images/linux" | grep -q "not rewritten" \
  || fail "getfattr on a kernel"
# The cache keeps upstream's bytes.
sha=$(sha256sum "$T/up/pxelinux.cfg/default" | cut -d' ' -f1)
"$NBCTL" --cache-dir "$T/cache" --json ls pxelinux.cfg/default | grep -q "$sha" || fail "the cached blob is not upstream's bytes"

# Through in.tftpd: tsize is the rewritten size and the bytes are the rewritten bytes.
start_tftpd "$T/mnt"
atftp_get pxelinux.cfg/default "$T/tftp.default" || fail "atftp failed"
cmp "$T/want.default" "$T/tftp.default" || fail "TFTP did not serve the rewritten bytes"
tsize=$(grep -oE 'received OACK <tsize: [0-9]+' "$T/atftp.out" | grep -oE '[0-9]+$')
[ "$tsize" = "$(stat -c %s "$T/want.default")" ] || fail "tsize $tsize is not the rewritten size"
tftp_get grub/grub.cfg "$T/tftp.grub"
cmp "$T/want.grub" "$T/tftp.grub" || fail "tftp-hpa did not get the rewritten grub.cfg"
atftp_get images/linux "$T/tftp.linux" || fail "atftp of the kernel failed"
cmp "$T/up/images/linux" "$T/tftp.linux" || fail "the kernel over TFTP differs"

# Upstream changes the menu: after the revalidate window, the new rewritten content.
printf 'DEFAULT rescue\nKERNEL http://127.0.0.1/rescue\n' >"$T/up/pxelinux.cfg/default.new"
mv "$T/up/pxelinux.cfg/default.new" "$T/up/pxelinux.cfg/default"
sleep 0.6
printf 'DEFAULT rescue\nKERNEL http://proxy.example.net/rescue\n' >"$T/want2"
cmp "$T/want2" "$T/mnt/pxelinux.cfg/default" || fail "the changed menu is not served rewritten"

# Rules change: SIGHUP re-reads the config; the next lookup gets the new content.
cat >"$T/netbootfs.toml" <<'EOF2'
[[rewrite]]
name = "rescue"
files = ["pxelinux.cfg/*"]
replace = [ { from = "rescue", to = "install" } ]
EOF2
kill -HUP "$DAEMON_PID"
wait_until 5 grep -q "SIGHUP: rules reloaded" "$T/daemon.log" || fail "SIGHUP did not reload the rules"
printf 'DEFAULT install\nKERNEL http://proxy.example.net/install\n' >"$T/want3"
cmp "$T/want3" "$T/mnt/pxelinux.cfg/default" || fail "the new rules are not applied after SIGHUP"
mounted "$T/mnt" || fail "SIGHUP unmounted the filesystem"
check_daemon_log
pass "menus rewritten with exact sizes over stat and TFTP; kernel identical; upstream and rule changes applied"
