#!/usr/bin/env bash
# The pxelinux probe ladder: 20 missing names looked up 10 times each within
# negative_ttl cost at most 20 upstream requests (none with a listing).
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=1 make_tree "$T/up"
mkdir -p "$T/up/nolist"
echo x >"$T/up/nolist/present"
start_nginx "$T/up" 'location /nolist/ { autoindex off; }'
start_mount "$NGINX_URL" "$T/mnt" "negative_ttl=30"
for dir in pxelinux.cfg nolist; do
  for round in $(seq 10); do
    for i in $(seq 20); do
      name=$(printf '0A00%04X' "$i")
      [ ! -e "$T/mnt/$dir/$name" ] || fail "$dir/$name exists"
    done
  done
done
listed=$(grep -cE "^[A-Z]+ /pxelinux.cfg/0A00" "$T/nginx/logs/access.log" || true)
[ "$listed" -eq 0 ] || fail "$listed requests for names absent from a fresh listing"
unlisted=$(grep -cE "^[A-Z]+ /nolist/0A00" "$T/nginx/logs/access.log" || true)
[ "$unlisted" -le 20 ] || fail "$unlisted requests for 20 missing names without a listing"
[ -e "$T/mnt/nolist/present" ] || fail "a file in a directory without listing is missing"
check_daemon_log
pass "with a listing: 0 requests; without: $unlisted for 200 lookups"
