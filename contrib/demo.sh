#!/usr/bin/env bash
# The two-minute tour: installs what is missing, builds, starts an nginx
# upstream on 127.0.0.1 with a small netboot tree, mounts it with netbootfs,
# serves it with in.tftpd on a loopback port, fetches a boot menu and a kernel
# over TFTP, and shows what happened. Everything it starts is stopped at exit.
set -euo pipefail
NETBOOTFS_ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$NETBOOTFS_ROOT"
source contrib/lib/deps.sh
install_deps
build=${BUILD_DIR:-build}
configure_and_build "$build" >/dev/null
export NETBOOTFS_BUILD_DIR=$NETBOOTFS_ROOT/$build
source tests/e2e/lib.sh  # temp dir, loopback servers, and a trap that stops them

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

say "1. An upstream: nginx on 127.0.0.1 serving a netboot tree"
KERNEL_MB=8 INITRD_MB=32 make_tree "$T/upstream"
start_nginx "$T/upstream"
# A boot menu that names the server, as Uyuni and Cobbler menus do.
printf 'DEFAULT linux\nLABEL linux\n  KERNEL http://127.0.0.1:%s/images/linux\n' "$NGINX_PORT" \
  >"$T/upstream/pxelinux.cfg/default"
echo "   $NGINX_URL"

say "2. Mount it: netbootfs $NGINX_URL $T/tftpboot -o allow_other,cache_dir=$T/cache,proxy_host=proxy.example.net"
LOG_LEVEL=info start_mount "$NGINX_URL" "$T/tftpboot" "proxy_host=proxy.example.net"
ls -l "$T/tftpboot" "$T/tftpboot/images"

say "3. Serve the mount with a stock in.tftpd (on a loopback port)"
start_tftpd "$T/tftpboot"
echo "   in.tftpd --foreground --listen --address 127.0.0.1:$TFTP_PORT --secure --user tftp $T/tftpboot"

say "4. A PXE client's view: fetch the boot menu and the kernel over TFTP"
atftp_get pxelinux.cfg/default "$T/default" || { cat "$T/atftp.out"; exit 1; }
tsize=$(oack_tsize || true)
echo "   pxelinux.cfg/default upstream ($(stat -c %s "$T/upstream/pxelinux.cfg/default") bytes):"
sed 's/^/     /' "$T/upstream/pxelinux.cfg/default"
echo "   pxelinux.cfg/default as the client got it over TFTP ($(stat -c %s "$T/default") bytes, tsize ${tsize:-?}):"
sed 's/^/     /' "$T/default"
getfattr --absolute-names -n user.netbootfs.rewritten "$T/tftpboot/pxelinux.cfg/default" | sed 's/^/   /'
start=$(now_ms)
atftp_get images/linux "$T/linux" || { cat "$T/atftp.out"; exit 1; }
ms=$(($(now_ms) - start))
up_md5=$(md5 "$T/upstream/images/linux")
got_md5=$(md5 "$T/linux")
echo "   images/linux upstream: $(stat -c %s "$T/upstream/images/linux") bytes, md5 $up_md5"
echo "   images/linux over TFTP: $(stat -c %s "$T/linux") bytes, md5 $got_md5, tsize $(oack_tsize || echo '?'), ${ms} ms (cold)"
if [ "$up_md5" = "$got_md5" ]; then
  echo "   md5 match: the kernel is byte-identical"
else
  echo "   md5 MISMATCH: the kernel differs from upstream"
  exit 1
fi
start=$(now_ms)
atftp_get images/linux "$T/linux2" || { cat "$T/atftp.out"; exit 1; }
echo "   again, warm: $(($(now_ms) - start)) ms, md5 $(md5 "$T/linux2")"

say "5. What upstream saw (nginx access log)"
cat "$T/nginx/logs/access.log"

say "6. What the cache holds: netbootfsctl --cache-dir $T/cache status / ls"
"$NBCTL" --cache-dir "$T/cache" status
"$NBCTL" --cache-dir "$T/cache" ls

say "Done: everything is stopped and removed on exit."
