#!/usr/bin/env bash
# An upstream that lists no directory (nginx autoindex off: a directory URL
# answers 403, the name without its slash 301 to it): every file is still
# served by name at any depth, through the mount and through in.tftpd; a
# missing name is ENOENT, not EACCES; a directory is one because its name
# redirects to its URL; a cached file's reopens send no body GET.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=2 make_tree "$T/up"
deep="a/b/c/d/e"
mkdir -p "$T/up/$deep"
head -c 70000 /dev/urandom >"$T/up/$deep/deep.bin"
chmod -R a+rX "$T/up"
NGINX_AUTOINDEX=off start_nginx "$T/up"
[ "$(curl -s -o /dev/null -w '%{http_code}' "${NGINX_URL}images/")" = 403 ] \
  || fail "the upstream lists directories; this test needs one that does not"
start_mount "$NGINX_URL" "$T/mnt" "revalidate=600"

n=0
while IFS= read -r -d '' f; do
  rel=${f#"$T/up/"}
  with_timeout 30 cmp "$f" "$T/mnt/$rel" || fail "differs or unreadable: $rel ($(cat "$T/mnt/$rel" 2>&1 >/dev/null))"
  [ "$(stat -c %s "$T/mnt/$rel")" = "$(stat -c %s "$f")" ] || fail "size of $rel differs"
  n=$((n + 1))
done < <(find "$T/up" -type f -print0)
[ "$n" -ge 10 ] || fail "only $n files compared"

# Directories are directories; missing names are ENOENT at every depth.
for d in images a a/b a/b/c a/b/c/d "$deep"; do
  [ -d "$T/mnt/$d" ] || fail "$d is not a directory: $(stat -c %F "$T/mnt/$d" 2>&1)"
done
for d in "" images a a/b a/b/c a/b/c/d "$deep"; do
  out=$(cat "$T/mnt/$d${d:+/}no-such-file" 2>&1) && fail "$d/no-such-file read"
  [[ $out == *"No such file or directory"* ]] || fail "$d/no-such-file: $out (expected ENOENT)"
done

# Cached: five reopens within revalidate cost no body GET.
gets=$(nginx_count GET "/$deep/deep.bin" 200)
for _ in 1 2 3 4 5; do cmp -s "$T/up/$deep/deep.bin" "$T/mnt/$deep/deep.bin" || fail "reopen differs"; done
[ "$(nginx_count GET "/$deep/deep.bin" 200)" = "$gets" ] || fail "reopens of a cached file sent GETs"

# Through in.tftpd, as a PXE client asks: by name only.
start_tftpd "$T/mnt"
for rel in pxelinux.0 images/linux "$deep/deep.bin"; do
  tftp_get "$rel" "$T/got"
  cmp -s "$T/up/$rel" "$T/got" || fail "TFTP $rel differs: $(cat "$T/tftp.out")"
done
kill "$TFTPD_PID"
wait "$TFTPD_PID" 2>/dev/null || true
stop_mount "$T/mnt"
check_daemon_log
pass "files served by name at every depth of an upstream without listings, through the mount and in.tftpd; missing names ENOENT; reopens without body GETs"
