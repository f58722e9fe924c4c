#!/usr/bin/env bash
# Every write-type operation fails with EROFS.
source "$(dirname "$0")/lib.sh"
KERNEL_MB=1 INITRD_MB=1 make_tree "$T/up"
start_nginx "$T/up"
start_mount "$NGINX_URL" "$T/mnt"
python3 - "$T/mnt" <<'PY' || fail "a write-type operation did not fail with EROFS"
import errno, os, sys
m = sys.argv[1]
f = os.path.join(m, "pxelinux.cfg/default")
d = os.path.join(m, "grub")
ops = {
    "create": lambda: os.open(os.path.join(m, "new"), os.O_CREAT | os.O_WRONLY, 0o644),
    "open-write": lambda: os.open(f, os.O_WRONLY),
    "open-rdwr": lambda: os.open(f, os.O_RDWR),
    "truncate": lambda: os.truncate(f, 0),
    "mkdir": lambda: os.mkdir(os.path.join(m, "dir")),
    "rmdir": lambda: os.rmdir(d),
    "unlink": lambda: os.unlink(f),
    "rename": lambda: os.rename(f, os.path.join(m, "moved")),
    "chmod": lambda: os.chmod(f, 0o777),
    "chown": lambda: os.chown(f, 1, 1),
    "utime": lambda: os.utime(f, (0, 0)),
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
sys.exit(1 if bad else 0)
PY
cmp "$T/up/pxelinux.cfg/default" "$T/mnt/pxelinux.cfg/default" || fail "the file changed"
check_daemon_log
pass "all 16 write-type operations answered EROFS"
