#!/usr/bin/env bash
# https upstreams: a certificate from a private CA verifies with ca_file=, is
# refused clearly at mount time without it, and client certificates work.
source "$(dirname "$0")/lib.sh"
command -v openssl >/dev/null || fail "openssl is not installed"
KERNEL_MB=1 INITRD_MB=1 make_tree "$T/up"
pki=$T/pki
mkdir -p "$pki"
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=netbootfs test CA" \
    -keyout ca.key -out ca.pem
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
  printf 'subjectAltName=IP:127.0.0.1\n' >san.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile san.ext -out server.pem
  openssl req -newkey rsa:2048 -nodes -subj "/CN=proxy1" -keyout client.key -out client.csr
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -out client.pem
) >"$T/pki.log" 2>&1 || fail "making the test PKI failed: $(cat "$T/pki.log")"

NGINX_LISTEN_OPTS=ssl start_nginx "$T/up" "ssl_certificate $pki/server.pem; ssl_certificate_key $pki/server.key;
    ssl_client_certificate $pki/ca.pem; ssl_verify_client optional;
    location /images/ { if (\$ssl_client_verify != SUCCESS) { return 403; } }"
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
