#!/usr/bin/env bash
# Every file read through the mount is byte-identical to upstream, awkward names included.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=2 INITRD_MB=8 make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt"
n=0
while IFS= read -r -d '' f; do
  rel=${f#"$T/up/"}
  cmp "$f" "$T/mnt/$rel" || fail "differs: $rel"
  n=$((n + 1))
done < <(find "$T/up" -type f -print0)
[ "$n" -ge 9 ] || fail "only $n files compared"
# Mode bits a TFTP server needs, and read-only directories.
[ "$(stat -c %a "$T/mnt/pxelinux.0")" = 444 ] || fail "file mode is not 0444"
[ "$(stat -c %a "$T/mnt/grub")" = 555 ] || fail "directory mode is not 0555"
# Names are exact and case-sensitive.
[ ! -e "$T/mnt/PXELINUX.0" ] || fail "a name matched case-insensitively"
check_daemon_log
pass "$n files byte-identical"
