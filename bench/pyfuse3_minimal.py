#!/usr/bin/env python3
"""The "minimal pyfuse3 + trio, direct_io" server of DESIGN.md's performance notes.

The Python twin of bench/cfuse_baseline.c: one file, /vendor, holding the 7 bytes
"0x8086\\n", mode 0444 and st_size 4096 as sysfs reports them, opened direct_io,
FLUSH left to pyfuse3's ENOSYS. Per open+read+close the kernel sends GETATTR, OPEN,
READ, RELEASE, as to the C server. It is the ceiling vfakefs's strict mode can reach
with pyfuse3: whatever vfakefs costs beyond it is vfakefs's own code.

    taskset -c 0 python bench/pyfuse3_minimal.py MOUNTPOINT [--max-tasks N] [--min-tasks N] [--keep-cache]

--keep-cache: the twin of cached mode (`vfakefs mount --cache`): st_size is the content's
length and the file is opened keep_cache, so a read of it costs OPEN and RELEASE.

--max-tasks is pyfuse3.main's cap on worker tasks (vfakefs runs with files.MAX_TASKS):
read_rate.py --pyfuse3-tasks measures whether the cap costs anything per request.
SIGTERM or SIGINT unmounts and exits.
"""
from __future__ import annotations

import argparse
import errno
import signal
import stat

import pyfuse3
import trio

NAME, TEXT, INO = b"vendor", b"0x8086\n", pyfuse3.ROOT_INODE + 1
TIMEOUT = 86400.0


class Minimal(pyfuse3.Operations):
    supports_dot_lookup = False

    def __init__(self, keep_cache: bool = False):
        super().__init__()
        self.keep_cache = keep_cache
        self.attrs = {pyfuse3.ROOT_INODE: self._attr(pyfuse3.ROOT_INODE, stat.S_IFDIR | 0o755, 0),
                      INO: self._attr(INO, stat.S_IFREG | 0o444, len(TEXT) if keep_cache else 4096)}

    @staticmethod
    def _attr(ino, mode, size):
        a = pyfuse3.EntryAttributes()
        a.st_ino, a.st_mode, a.st_size, a.st_nlink = ino, mode, size, 1
        a.st_blksize = 4096
        a.entry_timeout = a.attr_timeout = TIMEOUT
        return a

    async def lookup(self, parent_inode, name, ctx=None):
        if parent_inode != pyfuse3.ROOT_INODE or name != NAME:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.attrs[INO]

    async def getattr(self, inode, ctx=None):
        try:
            return self.attrs[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, fh, start_id, token):
        if start_id == 0:
            pyfuse3.readdir_reply(token, NAME, self.attrs[INO], 1)

    async def releasedir(self, fh):
        pass

    async def open(self, inode, flags, ctx):
        if self.keep_cache:
            return pyfuse3.FileInfo(fh=inode, direct_io=False, keep_cache=True)
        return pyfuse3.FileInfo(fh=inode, direct_io=True)

    async def read(self, fh, off, size):
        return TEXT[off:off + size]

    async def release(self, fh):
        pass


async def serve(max_tasks: int, min_tasks: int = 1) -> None:
    """pyfuse3.main until SIGTERM or SIGINT (bench/pyfuse3_tree.py serves so too)."""
    async with trio.open_nursery() as nursery:
        async def stop():
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                async for _ in sigs:
                    pyfuse3.terminate()
                    return
        nursery.start_soon(stop)
        await pyfuse3.main(min_tasks=min_tasks, max_tasks=max_tasks)
        nursery.cancel_scope.cancel()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mountpoint")
    ap.add_argument("--max-tasks", type=int, default=99, help="pyfuse3.main's max_tasks (99, its default)")
    ap.add_argument("--min-tasks", type=int, default=1, help="pyfuse3.main's min_tasks (1, its default)")
    ap.add_argument("--keep-cache", action="store_true", help="content length in stat, keep_cache (cached mode's twin)")
    a = ap.parse_args(argv)
    pyfuse3.init(Minimal(a.keep_cache), a.mountpoint, {"fsname=pyfuse3min", "default_permissions"})
    try:
        trio.run(serve, a.max_tasks, a.min_tasks)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
