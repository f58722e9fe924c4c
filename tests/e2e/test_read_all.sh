#!/usr/bin/env bash
# Every file read through the mount is byte-identical to upstream, awkward
# names included ('%', '+', '?', '#', spaces, UTF-8), with nginx's JSON
# listings and again with its HTML listings (sizes there are not exact).
source "$(dirname "$0")/lib.sh"
KERNEL_MB=2 INITRD_MB=8 make_tree "$T/up"
awkward=("names with spaces/boot menu #1.cfg" "names with spaces/50% off+more?é.cfg")
for format in json html; do
  NGINX_AUTOINDEX_FORMAT=$format start_nginx "$T/up"
  CACHE_DIR=$T/cache-$format start_mount "$NGINX_URL" "$T/mnt"
  for f in "${awkward[@]}"; do
    [ -f "$T/mnt/$f" ] || fail "[$format] '$f' is missing; the mount lists: $(ls "$T/mnt/names with spaces" 2>&1)"
  done
  n=0
  while IFS= read -r -d '' f; do
    rel=${f#"$T/up/"}
    cmp "$f" "$T/mnt/$rel" || fail "[$format] differs: $rel"
    [ "$(stat -c %s "$T/mnt/$rel")" = "$(stat -c %s "$f")" ] || fail "[$format] size of $rel differs"
    n=$((n + 1))
  done < <(find "$T/up" -type f -print0)
  [ "$n" -ge 9 ] || fail "only $n files compared"
  # Warm: the second read comes from the cache and must be the same.
  cmp "$T/up/images/linux" "$T/mnt/images/linux" || fail "[$format] warm read of images/linux differs"
  # Mode bits a TFTP server needs, and read-only directories.
  [ "$(stat -c %a "$T/mnt/pxelinux.0")" = 444 ] || fail "file mode is $(stat -c %a "$T/mnt/pxelinux.0"), not 444"
  [ "$(stat -c %a "$T/mnt/grub")" = 555 ] || fail "directory mode is $(stat -c %a "$T/mnt/grub"), not 555"
  # Names are exact and case-sensitive.
  [ ! -e "$T/mnt/PXELINUX.0" ] || fail "a name matched case-insensitively"
  stop_mount "$T/mnt"
  stop_nginx
  note "$format listings: $n files byte-identical"
done
check_daemon_log
pass "$n files byte-identical with JSON and HTML listings, awkward names included"
