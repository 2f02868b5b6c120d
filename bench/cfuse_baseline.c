/*
 * The "minimal C libfuse, direct_io" baseline of DESIGN.md's performance notes.
 *
 * A single-threaded low-level libfuse3 server with one file, /vendor, holding
 * the 7 bytes "0x8086\n", mode 0444 and st_size 4096 as sysfs reports them,
 * opened with direct_io so every read reaches the server (as vfakefs's default
 * mount does).  FLUSH is left unimplemented: libfuse answers ENOSYS and the
 * kernel stops sending it.  Per open+read+close the kernel sends GETATTR, OPEN,
 * READ, RELEASE.
 *
 * bench/read_rate.py compiles this at run time into a temporary directory:
 *     cc -O2 -o cfuse_baseline cfuse_baseline.c $(pkg-config --cflags --libs fuse3)
 * and runs it as:  taskset -c 0 ./cfuse_baseline MOUNTPOINT [-d]   (foreground;
 * SIGTERM or `fusermount3 -u MOUNTPOINT` ends it and unmounts).
 */
#define FUSE_USE_VERSION 34

#include <fuse_lowlevel.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char file_name[] = "vendor";
static const char file_text[] = "0x8086\n";
#define FILE_INO 2
#define TIMEOUT 86400.0

static int stat_of(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else if (ino == FILE_INO) {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = 4096;
	} else {
		return -1;
	}
	return 0;
}

static void bl_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	if (parent != FUSE_ROOT_ID || strcmp(name, file_name) != 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = FILE_INO;
	e.attr_timeout = TIMEOUT;
	e.entry_timeout = TIMEOUT;
	stat_of(e.ino, &e.attr);
	fuse_reply_entry(req, &e);
}

static void bl_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	if (stat_of(ino, &st) != 0)
		fuse_reply_err(req, ENOENT);
	else
		fuse_reply_attr(req, &st, TIMEOUT);
}

static void bl_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	char buf[512];
	size_t len = 0;
	struct stat st;
	const char *names[] = { ".", "..", file_name };
	const fuse_ino_t inos[] = { FUSE_ROOT_ID, FUSE_ROOT_ID, FILE_INO };

	(void)fi;
	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	for (off_t i = off; i < 3; i++) {
		size_t n;

		memset(&st, 0, sizeof(st));
		st.st_ino = inos[i];
		st.st_mode = (inos[i] == FILE_INO) ? S_IFREG : S_IFDIR;
		n = fuse_add_direntry(req, buf + len, sizeof(buf) - len, names[i], &st, i + 1);
		if (n > sizeof(buf) - len || len + n > size)
			break;
		len += n;
	}
	fuse_reply_buf(req, buf, len);
}

static void bl_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino != FILE_INO)
		fuse_reply_err(req, EISDIR);
	else if ((fi->flags & O_ACCMODE) != O_RDONLY)
		fuse_reply_err(req, EACCES);
	else {
		fi->direct_io = 1;
		fuse_reply_open(req, fi);
	}
}

static void bl_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	size_t len = sizeof(file_text) - 1;

	(void)ino;
	(void)fi;
	if ((size_t)off >= len)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, file_text + off, len - off < size ? len - off : size);
}

static const struct fuse_lowlevel_ops ops = {
	.lookup = bl_lookup,
	.getattr = bl_getattr,
	.readdir = bl_readdir,
	.open = bl_open,
	.read = bl_read,
};

int main(int argc, char *argv[])
{
	/* argv: MOUNTPOINT [libfuse low-level options such as -d] */
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se;
	int ret = 1;

	if (argc < 2) {
		fprintf(stderr, "usage: %s MOUNTPOINT [-d]\n", argv[0]);
		return 2;
	}
	fuse_opt_add_arg(&args, argv[0]);
	for (int i = 2; i < argc; i++)
		fuse_opt_add_arg(&args, argv[i]);
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (se == NULL)
		return 1;
	if (fuse_set_signal_handlers(se) == 0) {
		if (fuse_session_mount(se, argv[1]) == 0) {
			ret = fuse_session_loop(se);
			fuse_session_unmount(se);
		}
		fuse_remove_signal_handlers(se);
	}
	fuse_session_destroy(se);
	fuse_opt_free_args(&args);
	return ret ? 1 : 0;
}
