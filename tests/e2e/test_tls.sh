#!/usr/bin/env bash
# https upstreams: a certificate from a private CA verifies with ca_file=, is
# refused clearly at mount time without it, and client certificates work.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=1 make_tree "$T/up"
pki=$T/pki
make_test_pki "$pki"

start_tls_nginx "$T/up" "$pki"
url=$NGINX_URL
curl -sf --cacert "$pki/ca.pem" -o /dev/null "$url" || fail "the test CA does not verify nginx"

# Without the CA: one clear line, non-zero exit, nothing mounted.
mkdir -p "$T/mnt"
rc=0
out=$(timeout 30 "$NBFS" "$url" "$T/mnt" -f -o "cache_dir=$T/c0" 2>&1) || rc=$?
[ $rc -ne 0 ] || fail "mounted an upstream whose certificate does not verify"
grep -q "TLS to $url failed" <<<"$out" || fail "unclear error: $out"
mounted "$T/mnt" && fail "something was mounted"

# With the CA: files read; without a client certificate /images/ is refused.
start_mount "$url" "$T/mnt" "ca_file=$pki/ca.pem,connect_timeout=3"
cmp "$T/up/pxelinux.cfg/default" "$T/mnt/pxelinux.cfg/default" || fail "read over https differs"
if cat "$T/mnt/images/linux" >/dev/null 2>&1; then fail "read without a client certificate"; fi
stop_mount "$T/mnt"
CACHE_DIR=$T/c2 start_mount "$url" "$T/mnt" \
  "ca_file=$pki/ca.pem,client_cert=$pki/client.pem,client_key=$pki/client.key"
cmp "$T/up/images/linux" "$T/mnt/images/linux" || fail "read with a client certificate differs"
stop_mount "$T/mnt"
# insecure: spelled out, and logged.
CACHE_DIR=$T/c3 start_mount "$url" "$T/mnt" "insecure"
cmp "$T/up/pxelinux.0" "$T/mnt/pxelinux.0" || fail "read with insecure differs"
grep -q "verification is disabled" "$T/daemon.log" || fail "insecure was not logged"
check_daemon_log
pass "private CA with ca_file=, clear refusal without it, client certificate, insecure logged"
