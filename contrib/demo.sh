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
echo "   $NGINX_URL"

say "2. Mount it: netbootfs $NGINX_URL $T/tftpboot -o allow_other,cache_dir=$T/cache"
LOG_LEVEL=info start_mount "$NGINX_URL" "$T/tftpboot"
ls -l "$T/tftpboot" "$T/tftpboot/images"

say "3. Serve the mount with a stock in.tftpd (on a loopback port)"
start_tftpd "$T/tftpboot"
echo "   in.tftpd --listen --address 127.0.0.1:$TFTP_PORT --secure $T/tftpboot"

say "4. A PXE client's view: fetch the boot menu and the kernel over TFTP"
start=$(date +%s.%N)
atftp_get pxelinux.cfg/default "$T/default" || true
atftp_get images/linux "$T/linux" || true
cold=$(echo "$(date +%s.%N) - $start" | bc)
start=$(date +%s.%N)
atftp_get images/linux "$T/linux2" || true
warm=$(echo "$(date +%s.%N) - $start" | bc)
cat "$T/default"
for f in default linux linux2; do
  src=$T/upstream/images/linux
  [ $f = default ] && src=$T/upstream/pxelinux.cfg/default
  if cmp -s "$src" "$T/$f"; then echo "   $f: $(stat -c %s "$T/$f") bytes, identical to upstream"
  else echo "   $f: DIFFERENT from upstream"; exit 1; fi
done
printf '   cold (fetched from upstream while serving): %.2f s, warm (from the cache): %.2f s\n' "$cold" "$warm"

say "5. What upstream saw (nginx access log)"
cat "$T/nginx/logs/access.log"

say "6. What the cache holds: netbootfsctl --cache-dir $T/cache status / ls"
"$NBCTL" --cache-dir "$T/cache" status
"$NBCTL" --cache-dir "$T/cache" ls

say "Done: everything is stopped and removed on exit."
