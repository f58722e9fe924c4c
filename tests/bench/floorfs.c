// floorfs: the thinnest read-only FUSE filesystem the benchmark can compare
// netbootfs with. It mirrors a local directory: getattr and readdir(plus)
// from lstat and readdir, open with keep_cache (as netbootfs opens cached
// files), read with one pread on the underlying file. No cache, no index, no network: what
// it costs over the local directory is what FUSE itself costs on this kernel
// and libfuse, the floor under netbootfs' figures.
//
//   floorfs SOURCE_DIR MOUNTPOINT [FUSE options, e.g. -f -o allow_other]
//
// A benchmark tool, not part of the product (tests/bench/run.sh uses it).
#define FUSE_USE_VERSION 35
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char source[PATH_MAX];

static int full_path(char* out, const char* path) {
  if ((size_t)snprintf(out, PATH_MAX, "%s%s", source, path) >= PATH_MAX) return -ENAMETOOLONG;
  return 0;
}

static int ff_getattr(const char* path, struct stat* st, struct fuse_file_info* fi) {
  (void)fi;
  char p[PATH_MAX];
  int r = full_path(p, path);
  if (r) return r;
  if (lstat(p, st) < 0) return -errno;
  st->st_mode &= ~0222;  // read-only, as netbootfs presents its tree
  return 0;
}

static int ff_readdir(const char* path, void* buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info* fi, enum fuse_readdir_flags flags) {
  (void)off, (void)fi;
  char p[PATH_MAX];
  int r = full_path(p, path);
  if (r) return r;
  DIR* d = opendir(p);
  if (!d) return -errno;
  struct dirent* e;
  while ((e = readdir(d)) != NULL) {
    // READDIRPLUS: each entry's attributes along (what netbootfs does with
    // the sizes of a listing), so `ls -l` sends no LOOKUP per name.
    struct stat st;
    if ((flags & FUSE_READDIR_PLUS) &&
        fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
      st.st_mode &= ~0222;
      if (fill(buf, e->d_name, &st, 0, FUSE_FILL_DIR_PLUS)) break;
    } else if (fill(buf, e->d_name, NULL, 0, 0)) {
      break;
    }
  }
  closedir(d);
  return 0;
}

static int ff_open(const char* path, struct fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
  char p[PATH_MAX];
  int r = full_path(p, path);
  if (r) return r;
  int fd = open(p, O_RDONLY);
  if (fd < 0) return -errno;
  fi->fh = (uint64_t)fd;
  fi->keep_cache = 1;  // the bytes never change: the page cache survives opens
  return 0;
}

static int ff_read(const char* path, char* buf, size_t size, off_t off,
                   struct fuse_file_info* fi) {
  (void)path;
  ssize_t n = pread((int)fi->fh, buf, size, off);
  return n < 0 ? -errno : (int)n;
}

static int ff_release(const char* path, struct fuse_file_info* fi) {
  (void)path;
  close((int)fi->fh);
  return 0;
}

static void* ff_init(struct fuse_conn_info* conn, struct fuse_config* cfg) {
  (void)conn;
  cfg->kernel_cache = 1;
  cfg->attr_timeout = 3600;
  cfg->entry_timeout = 3600;
  cfg->negative_timeout = 3600;
  return NULL;
}

static const struct fuse_operations ops = {
    .getattr = ff_getattr,
    .open = ff_open,
    .read = ff_read,
    .release = ff_release,
    .readdir = ff_readdir,
    .init = ff_init,
};

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s SOURCE_DIR MOUNTPOINT [FUSE options]\n", argv[0]);
    return 2;
  }
  if (!realpath(argv[1], source)) {
    perror(argv[1]);
    return 1;
  }
  // fuse_main sees everything but SOURCE_DIR.
  argv[1] = argv[0];
  return fuse_main(argc - 1, argv + 1, &ops, NULL);
}
