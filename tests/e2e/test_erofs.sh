#!/usr/bin/env bash
# Every write-type operation fails with EROFS.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=1 make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt"
python3 - "$T/mnt" >"$T/ops.out" <<'PY' || fail "write-type operations not answered EROFS: $(cat "$T/ops.out")"
import errno, os, sys
m = sys.argv[1]
f = os.path.join(m, "pxelinux.cfg/default")
d = os.path.join(m, "grub")
ops = {
    "create": lambda: os.open(os.path.join(m, "new"), os.O_CREAT | os.O_WRONLY, 0o644),
    "open-write": lambda: os.open(f, os.O_WRONLY),
    "open-rdwr": lambda: os.open(f, os.O_RDWR),
    "open-trunc": lambda: os.open(f, os.O_WRONLY | os.O_TRUNC),
    "open-append": lambda: os.open(f, os.O_WRONLY | os.O_APPEND),
    "create-in-subdir": lambda: os.open(os.path.join(d, "new.cfg"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644),
    "create-existing": lambda: os.open(f, os.O_CREAT | os.O_WRONLY, 0o644),
    "truncate": lambda: os.truncate(f, 0),
    "mkdir": lambda: os.mkdir(os.path.join(m, "dir")),
    "rmdir": lambda: os.rmdir(d),
    "unlink": lambda: os.unlink(f),
    "rename": lambda: os.rename(f, os.path.join(m, "moved")),
    "chmod": lambda: os.chmod(f, 0o777),
    "chmod-dir": lambda: os.chmod(d, 0o777),
    "rename-dir": lambda: os.rename(d, os.path.join(m, "grub2")),
    "chown": lambda: os.chown(f, 1, 1),
    "utime": lambda: os.utime(f, (0, 0)),
    "utime-now": lambda: os.utime(f, None),
    "symlink": lambda: os.symlink("x", os.path.join(m, "link")),
    "link": lambda: os.link(f, os.path.join(m, "hard")),
    "mknod": lambda: os.mkfifo(os.path.join(m, "fifo")),
    "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
    "removexattr": lambda: os.removexattr(f, "user.x"),
}
bad = []
for name, op in ops.items():
    try:
        op()
        bad.append(f"{name}: succeeded")
    except OSError as e:
        if e.errno != errno.EROFS:
            bad.append(f"{name}: {errno.errorcode.get(e.errno, e.errno)}")
for b in bad:
    print(b)
print(f"{len(ops) - len(bad)} of {len(ops)} operations answered EROFS")
sys.exit(1 if bad else 0)
PY
note "$(tail -1 "$T/ops.out")"
# The command-line tools admins would use say so too.
for cmd in "touch $T/mnt/pxelinux.0" "setfattr -n user.x -v 1 $T/mnt/pxelinux.0" \
           "mkdir $T/mnt/newdir" "rm -f $T/mnt/ldlinux.c32"; do
  out=$($cmd 2>&1) && fail "'$cmd' succeeded"
  [[ $out == *"Read-only file system"* ]] || fail "'$cmd' failed otherwise: $out"
done
cmp "$T/up/pxelinux.cfg/default" "$T/mnt/pxelinux.cfg/default" || fail "the file changed"
check_daemon_log
pass "$(tail -1 "$T/ops.out"); touch, setfattr, mkdir, rm too"
