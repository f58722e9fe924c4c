#!/usr/bin/env bash
# in.tftpd serves the mount unchanged: tftp-hpa and atftp (blksize, tsize) get
# byte-identical files, and a cold, slow download starts flowing to the client
# before it completes.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=2 INITRD_MB=${TFTP_INITRD_MB:-20} make_tree "$T/up"
start_nginx "$T/up" 'location /slow/ { limit_rate 2m; }'
mkdir -p "$T/up/slow"
cp "$T/up/images/initrd" "$T/up/slow/initrd"
start_mount "$NGINX_URL" "$T/mnt"
start_tftpd "$T/mnt"
tftp_get images/initrd "$T/out1"
cmp "$T/up/images/initrd" "$T/out1" || fail "tftp-hpa: initrd differs"
tftp_get pxelinux.cfg/default "$T/out2"
cmp "$T/up/pxelinux.cfg/default" "$T/out2" || fail "tftp-hpa: config differs"
atftp_get images/linux "$T/out3" || fail "atftp failed: $(cat "$T/atftp.out")"
cmp "$T/up/images/linux" "$T/out3" || fail "atftp: kernel differs"
tsize=$(grep -oE 'received OACK <tsize: [0-9]+' "$T/atftp.out" | grep -oE '[0-9]+$')
[ "$tsize" = "$(stat -c %s "$T/up/images/linux")" ] || fail "tsize $tsize is not the file size"
grep -q 'received OACK <.*blksize: 1468' "$T/atftp.out" || fail "blksize was not negotiated"
# Cold and rate-limited: the first data must reach the client long before the end.
size=$(stat -c %s "$T/up/slow/initrd")
atftp_get slow/initrd "$T/out4" &
client=$!
start=$SECONDS
wait_until 30 test -s "$T/out4" || fail "no TFTP data within 30 s"
first=$((SECONDS - start))
[ "$(stat -c %s "$T/out4")" -lt "$size" ] || fail "the transfer only started once complete"
grep -q 'slow/initrd: downloaded' "$T/daemon.log" && fail "the download had finished before the first block"
wait "$client" || fail "atftp of the slow file failed: $(cat "$T/atftp.out")"
cmp "$T/up/slow/initrd" "$T/out4" || fail "the slow file differs"
check_daemon_log
pass "tftp-hpa and atftp byte-identical, tsize exact, first block after ${first}s of a cold download"
