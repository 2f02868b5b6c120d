#!/usr/bin/env python3
"""A minimal pyfuse3 + trio server over a copied tree: the floor of the whole-machine walks.

bench/whole_machine.py mounts it over its tmpfs copy of vfakefs's sys/devices and sys/bus
and runs there the lspci and ls -lR it runs over vfakefs. At start it reads the whole tree
into dicts (inode numbers, attributes as the copy's lstat, listings, link targets,
contents); then every request is a dict lookup and nothing more. It asks the kernel for
the caches vfakefs asks for (entries and attributes for vfakefs's TIMEOUT, symlink targets,
directory listings kept with cache_readdir), so a walk sends it the requests it sends
vfakefs: what the walk costs here is pyfuse3, trio and the kernel, and whatever vfakefs
costs beyond it is vfakefs's own code. bench/pyfuse3_minimal.py is the same floor for one file.

    taskset -c 0 python bench/pyfuse3_tree.py TREE MOUNTPOINT [--keep-cache] [--max-tasks N] [--requests REL]

Default, strict mode's twin: a regular file reports sysfs's st_size 4096 (its own size when
larger, or when it is a binary attribute whose size sysfs reports: config, rom,
resourceN), and is opened direct_io. --keep-cache, cached mode's twin (`vfakefs mount
--cache`): st_size is the content's length, and the file is opened keep_cache.
--requests REL: a read-only file at REL under the mount that lists the requests served so
far, `NAME N` a line, as vfakefs's sys/kernel/debug/vfakefs/requests (one increment each).
SIGTERM or SIGINT unmounts and exits.
"""
from __future__ import annotations

import argparse
import errno
import itertools
import os
import re
import stat

import pyfuse3
import trio

from pyfuse3_minimal import serve   # (its directory is on sys.path: run as a script)

TIMEOUT = 3600.0   # vfakefs/fuse/inodes.py's TIMEOUT: the kernel keeps entries and attributes
PAGE = 4096        # what sysfs's stat says of a text attribute, whatever its length
BINARY = re.compile(rb"config|rom|vpd|resource\d+(_wc)?")   # bin attributes: sysfs reports their size
# as vfakefs/fuse/ops.py: the patched pyfuse3 (patches/) lets the kernel keep listings
KERNEL_CACHES = os.environ.get("VFAKEFS_KERNEL_CACHES", "1") != "0"
CACHE_LISTINGS = KERNEL_CACHES and hasattr(pyfuse3.FileInfo, "cache_readdir")
OPS = ("lookup", "forget", "getattr", "readlink", "open", "read", "release", "opendir", "readdir", "releasedir")
CONTROL_FH = 0     # no inode is 0: the requests file's snapshot, taken at each open


class Tree(pyfuse3.Operations):
    supports_dot_lookup = False
    # the kernel keeps link targets; a link's size is its target's length (the copy's lstat),
    # so even a kernel before 6.14, which cuts the target at i_size, serves it whole
    enable_symlink_cache = KERNEL_CACHES

    def __init__(self, top: bytes, keep_cache: bool, requests: str | None = None):
        super().__init__()
        self.keep_cache = keep_cache
        self.attrs: dict[int, pyfuse3.EntryAttributes] = {}
        self.entries: dict[tuple[int, bytes], pyfuse3.EntryAttributes] = {}   # (dir ino, name) ->
        self.rows: dict[int, list] = {}       # dir ino -> [(name, attrs)], "." and ".." first, as vfakefs's
        self.targets: dict[int, bytes] = {}   # link ino -> target
        self.data: dict[int, bytes] = {}      # file ino (its fh) -> content
        self.n = dict.fromkeys(OPS, 0)
        self.control = None
        self._inos = itertools.count(pyfuse3.ROOT_INODE + 1)
        root = self._load(top, b"", pyfuse3.ROOT_INODE, os.lstat(top))
        self._fill(top, root, root)
        if requests:
            self._add_control(os.fsencode(requests).strip(b"/").split(b"/"))

    def _load(self, path: bytes, name: bytes, ino: int, st) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino, a.st_mode, a.st_nlink, a.st_size = ino, st.st_mode, st.st_nlink, st.st_size
        a.st_uid, a.st_gid = st.st_uid, st.st_gid
        a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
        a.entry_timeout = a.attr_timeout = TIMEOUT
        self.attrs[ino] = a
        if stat.S_ISLNK(st.st_mode):
            self.targets[ino] = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                self.data[ino] = f.read()
            if not self.keep_cache and a.st_size <= PAGE and not BINARY.fullmatch(name):
                a.st_size = PAGE
        return a

    def _fill(self, path: bytes, a: pyfuse3.EntryAttributes, parent: pyfuse3.EntryAttributes) -> None:
        rows = self.rows[a.st_ino] = [(b".", a), (b"..", parent)]
        for name in sorted(os.listdir(path)):
            p = os.path.join(path, name)
            ca = self._load(p, name, next(self._inos), os.lstat(p))
            self.entries[(a.st_ino, name)] = ca
            rows.append((name, ca))
            if stat.S_ISDIR(ca.st_mode):
                self._fill(p, ca, a)

    def _add_control(self, names: list[bytes]) -> None:
        """The requests file, and the directories to it the tree lacks."""
        parent = self.attrs[pyfuse3.ROOT_INODE]
        for i, name in enumerate(names):
            a = self.entries.get((parent.st_ino, name))
            if a is None:
                a = pyfuse3.EntryAttributes()
                a.st_ino, a.st_mode = next(self._inos), (stat.S_IFREG | 0o444 if i == len(names) - 1 else
                                                          stat.S_IFDIR | 0o755)
                a.entry_timeout = a.attr_timeout = TIMEOUT
                self.attrs[a.st_ino] = self.entries[(parent.st_ino, name)] = a
                self.rows[parent.st_ino].append((name, a))
                if stat.S_ISDIR(a.st_mode):
                    self.rows[a.st_ino] = [(b".", a), (b"..", parent)]
            parent = a
        self.control = parent.st_ino

    async def lookup(self, parent_inode, name, ctx=None):
        self.n["lookup"] += 1
        try:
            return self.entries[(parent_inode, name)]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    async def forget(self, inode_list):
        self.n["forget"] += 1

    async def getattr(self, inode, ctx=None):
        self.n["getattr"] += 1
        return self.attrs[inode]

    async def readlink(self, inode, ctx):
        self.n["readlink"] += 1
        return self.targets[inode]

    async def opendir(self, inode, ctx):
        self.n["opendir"] += 1
        return pyfuse3.FileInfo(fh=inode, keep_cache=True, cache_readdir=True) if CACHE_LISTINGS else inode

    async def readdir(self, fh, start_id, token):
        self.n["readdir"] += 1
        rows = self.rows[fh]
        for i in range(start_id, len(rows)):
            if not pyfuse3.readdir_reply(token, rows[i][0], rows[i][1], i + 1):
                return

    async def releasedir(self, fh):
        self.n["releasedir"] += 1

    async def open(self, inode, flags, ctx):
        self.n["open"] += 1
        if inode == self.control:
            self.data[CONTROL_FH] = "".join(f"{op} {n}\n" for op, n in self.n.items()).encode()
            return pyfuse3.FileInfo(CONTROL_FH, True, False)
        return pyfuse3.FileInfo(inode, not self.keep_cache, self.keep_cache)   # (fh, direct_io, keep_cache)

    async def read(self, fh, off, size):
        self.n["read"] += 1
        return self.data[fh][off:off + size]

    async def release(self, fh):
        self.n["release"] += 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tree", help="the directory served (read whole at start)")
    ap.add_argument("mountpoint")
    ap.add_argument("--keep-cache", action="store_true", help="content length in stat, keep_cache (cached mode's twin)")
    ap.add_argument("--max-tasks", type=int, default=99, help="pyfuse3.main's max_tasks (99, its default)")
    ap.add_argument("--requests", metavar="REL", help="serve the request counts at REL under the mount")
    a = ap.parse_args(argv)
    ops = Tree(os.fsencode(a.tree), a.keep_cache, a.requests)
    # vfakefs/fuse/mount.py's MOUNT_OPTIONS, under our own name
    pyfuse3.init(ops, a.mountpoint, {"fsname=pyfuse3tree", "subtype=pyfuse3tree", "allow_other",
                                     "default_permissions", "nodev", "nosuid"})
    try:
        trio.run(serve, a.max_tasks)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
