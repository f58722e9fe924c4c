#!/usr/bin/env bash
# A stock in.tftpd (chrooted, dropping to user tftp) serves the mount: tftp-hpa
# and atftp (blksize 1468, tsize) get byte-identical files and the OACK's tsize
# is the file size; a missing name is an error at once; and with the file cold
# and upstream rate-limited, TFTP data reaches the client before the download
# completes.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=2 INITRD_MB=${TFTP_INITRD_MB:-20} make_tree "$T/up"
mkdir -p "$T/up/slow"
cp "$T/up/images/initrd" "$T/up/slow/initrd"
chmod -R a+rX "$T/up"
start_nginx "$T/up" 'location /slow/ { limit_rate 2m; }'
start_mount "$NGINX_URL" "$T/mnt"
start_tftpd "$T/mnt"

tftp_get images/initrd "$T/out1"
cmp "$T/up/images/initrd" "$T/out1" || fail "tftp-hpa: initrd differs ($(stat -c %s "$T/out1" 2>/dev/null || echo no) bytes): $(cat "$T/tftp.out")"
tftp_get pxelinux.cfg/default "$T/out2"
cmp "$T/up/pxelinux.cfg/default" "$T/out2" || fail "tftp-hpa: config differs: $(cat "$T/tftp.out")"
tftp_get "names with spaces/boot menu #1.cfg" "$T/out2b"
cmp "$T/up/names with spaces/boot menu #1.cfg" "$T/out2b" || fail "tftp-hpa: a name with spaces differs: $(cat "$T/tftp.out")"

atftp_get images/linux "$T/out3" || fail "atftp failed: $(cat "$T/atftp.out")"
cmp "$T/up/images/linux" "$T/out3" || fail "atftp: kernel differs"
tsize=$(oack_tsize)
[ "$tsize" = "$(stat -c %s "$T/up/images/linux")" ] || fail "tsize ${tsize:-missing} is not the file size $(stat -c %s "$T/up/images/linux"): $(grep OACK "$T/atftp.out")"
grep -q 'received OACK <.*blksize: 1468' "$T/atftp.out" || fail "blksize was not negotiated: $(grep OACK "$T/atftp.out")"
atftp_get pxelinux.cfg/default "$T/out3b" || fail "atftp of the config failed: $(cat "$T/atftp.out")"
cmp "$T/up/pxelinux.cfg/default" "$T/out3b" || fail "atftp: config differs"
[ "$(oack_tsize)" = "$(stat -c %s "$T/up/pxelinux.cfg/default")" ] || fail "tsize of the config is $(oack_tsize)"

# A pxelinux probe for a name that does not exist: an error, at once.
start=$(now_ms)
if atftp_get pxelinux.cfg/0A000001 "$T/out5"; then fail "atftp got a file that does not exist"; fi
ms=$(($(now_ms) - start))
[ "$ms" -lt 3000 ] || fail "the error for a missing file took ${ms} ms"
[ ! -s "$T/out5" ] || fail "a missing file produced data"

# Cold and rate-limited (about 10 s upstream): the first data must reach the
# client long before the end.
size=$(stat -c %s "$T/up/slow/initrd")
atftp_get slow/initrd "$T/out4" &
client=$!
start=$(now_ms)
wait_until 30 test -s "$T/out4" || fail "no TFTP data within 30 s"
first=$(($(now_ms) - start))
got=$(stat -c %s "$T/out4")
ended=$(nginx_count GET /slow/initrd)
[ "$got" -lt "$size" ] || fail "the client had the whole file at its first look: the transfer started only once complete"
[ "$ended" -eq 0 ] || fail "nginx had finished sending /slow/initrd before the first TFTP data arrived"
wait "$client" || fail "atftp of the slow file failed: $(cat "$T/atftp.out")"
total=$(($(now_ms) - start))
cmp "$T/up/slow/initrd" "$T/out4" || fail "the slow file differs"
[ "$(oack_tsize)" = "$size" ] || fail "tsize of the cold file is $(oack_tsize), not $size"
[ "$(nginx_count GET /slow/initrd)" -eq 1 ] || fail "the slow file was fetched $(nginx_count GET /slow/initrd) times"
check_daemon_log
pass "tftp-hpa and atftp byte-identical, tsize exact, missing name fails in ${ms} ms; cold: first data after ${first} ms of ${total} ms"
