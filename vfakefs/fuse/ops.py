"""pyfuse3 Operations over a view tree: requests in, errnos out.

The inode side (stable numbers, cached listings and attributes, and
invalidation after structural changes) is InodeTable in inodes.py and
republish.py; the file
handlers (open, read, write, release) are Files in files.py.
"""
from __future__ import annotations

import errno
import os
import re
import stat
import sys

import pyfuse3

from vfakefs.fuse.files import Files
from vfakefs.fuse.inodes import InodeTable
from vfakefs.fuse.pagecache import PageCache
from vfakefs.fuse.stepping import Stepping
from vfakefs.sysfs.nodes import Dir, Link

_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
# The pyfuse3 the Makefile builds (patches/) lets the kernel keep two more things in its
# page cache, which InodeTable drops when they change (_notify): directory listings, when
# opendir answers a FileInfo with keep_cache and cache_readdir (FOPEN_KEEP_CACHE,
# FOPEN_CACHE_DIR), and symlink targets, when enable_symlink_cache asks for
# FUSE_CAP_CACHE_SYMLINKS. Stock pyfuse3 takes a bare handle from opendir and ignores
# enable_symlink_cache: every listing and every walk through a link is then asked for.
# VFAKEFS_KERNEL_CACHES=0 leaves both off (bench/kernel_caches.py compares in one run).
KERNEL_CACHES = os.environ.get("VFAKEFS_KERNEL_CACHES", "1") != "0"
CACHE_LISTINGS = KERNEL_CACHES and hasattr(pyfuse3.FileInfo, "cache_readdir")


def symlink_cache_safe(release: str | None = None) -> bool:
    """Whether the kernel serves a cached symlink target whole. Before 6.14 fuse_get_link
    served it through page_get_link(), which cuts it at i_size, and a sysfs link's size is
    0 (kernfs sets none): every link would read as "". 6.14 serves it whole
    (page_get_link_raw, commit b4c173dfbb6c); stable kernels that took the fix later are
    not told apart here, and go without the cache."""
    m = re.match(r"(\d+)\.(\d+)", os.uname().release if release is None else release)
    return m is not None and (int(m[1]), int(m[2])) >= (6, 14)


# every request pyfuse3 hands to Operations, by handler name, in FUSE opcode order
# (READDIRPLUS is readdir, RENAME2 rename, BATCH_FORGET forget); the `requests` control
# lists how many of each the mount has served
OPCODES = ("lookup", "forget", "getattr", "setattr", "readlink", "symlink", "mknod", "mkdir", "unlink",
           "rmdir", "rename", "link", "open", "read", "write", "statfs", "release", "fsync", "setxattr",
           "getxattr", "listxattr", "removexattr", "flush", "opendir", "readdir", "releasedir",
           "fsyncdir", "access", "create", "poll")


def _enosys(op: str):
    """A handler counted, then answered as pyfuse3 does one not implemented: ENOSYS, after
    which the kernel stops sending that request (FLUSH once per mount, not on every close)."""
    async def handler(self, *args):
        self.requests[op] += 1
        raise pyfuse3.FUSEError(errno.ENOSYS)
    handler.__name__ = handler.__qualname__ = op
    return handler


class SysfsOps(Files, InodeTable, Stepping, pyfuse3.Operations):
    supports_dot_lookup = False
    enable_symlink_cache = KERNEL_CACHES and symlink_cache_safe()

    def __init__(self, root: Dir, generation, dirty=None, cache: bool = False):
        pyfuse3.Operations.__init__(self)
        InodeTable.__init__(self, root, generation, dirty)
        if cache:
            self.pages = PageCache(self.node, self.invalidate_pages)   # `vfakefs mount --cache` (pagecache.py)
        self.next_fh = 1
        self.waiters = 0
        self.holding: set = set()   # the trio.Events of the writes a held store keeps (wait_held)
        self.closing = False        # the daemon is shutting down: held writers are let go
        self.batches: set = set()   # the open batches of stores carried out in steps (drive)
        self.settle = None    # async: other views of the machine a write waits for (`vfakefs run`'s networks)
        self.catch_up = None  # async: changes made through them that an open must see first
        self.requests = dict.fromkeys(OPCODES, 0)   # served so far, per handler: one increment each

    async def lookup(self, parent_inode, name, ctx=None):
        self.requests["lookup"] += 1
        if self.batches:
            self.publish_steps()         # the VFs added so far, before this request sees the tree
        name = name.decode(_FS_ENCODING, _FS_ERRORS)   # os.fsdecode(name), without its call
        if name == ".":
            return self.attrs(parent_inode, self.node(parent_inode))
        if name == "..":
            ppath = self.path_of(parent_inode).rpartition("/")[0]
            pino = self.ino_of(ppath)
            return self.attrs(pino, self.node(pino))
        ino, node = self.child(parent_inode, name)
        return self.attrs(ino, node)

    async def getattr(self, inode, ctx=None):
        self.requests["getattr"] += 1
        if self.batches:
            self.publish_steps()         # the VFs added so far, before this request sees the tree
        if self.pages is None:
            a = self.attr_cache.get(inode)   # attrs()'s hit, without its calls
            if a is not None:
                return a
        if self.orphans and inode in self.orphans:
            return self.orphans[inode]   # fstat of a removed file still open: what it was
        return self.attrs(inode, self.node(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        self.requests["setattr"] += 1
        node = self.node(inode)
        # root may chmod and chown sysfs nodes (kernfs_iop_setattr keeps them on the node);
        # default_permissions has already refused everyone else. O_TRUNC's size=0 (from
        # `echo x > attr`) and touch's times are accepted, as sysfs accepts them.
        if fields.update_mode or fields.update_uid or fields.update_gid:
            over = self.overrides.setdefault(inode, {})
            if fields.update_mode:
                over["mode"] = stat.S_IMODE(attr.st_mode)
            if fields.update_uid:
                over["uid"] = attr.st_uid
            if fields.update_gid:
                over["gid"] = attr.st_gid
            self.attr_cache.pop(inode, None)
        return self.attrs(inode, node)

    async def readlink(self, inode, ctx):
        self.requests["readlink"] += 1
        if self.batches:
            self.publish_steps()         # the VFs added so far, before this request sees the tree
        node = self.node(inode)
        if not isinstance(node, Link):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(node.target)

    async def forget(self, inode_list):
        self.requests["forget"] += 1   # inode numbers stay bound to their paths for the mount's life
        if self.orphans:
            for ino, _ in inode_list:
                self.orphans.pop(ino, None)

    # --- directories --------------------------------------------------------------------
    async def opendir(self, inode, ctx):
        self.requests["opendir"] += 1
        if self.batches:
            self.publish_steps()         # the VFs added so far, before this request sees the tree
        self.listing(inode)
        if CACHE_LISTINGS:
            # a listing whose invalidation has not reached the kernel yet (a change the engine
            # made a moment ago) is dropped by this open instead: ls sees the change at once
            return pyfuse3.FileInfo(fh=inode, keep_cache=self.settled(inode), cache_readdir=True)
        return inode

    async def readdir(self, fh, start_id, token):
        self.requests["readdir"] += 1
        rows = self.dir_rows(fh)
        for i in range(start_id, len(rows)):
            name, attrs = rows[i]
            if not pyfuse3.readdir_reply(token, name, attrs, i + 1):
                return

    async def releasedir(self, fh):
        self.requests["releasedir"] += 1

    # --- what sysfs refuses ---------------------------------------------------------------
    async def create(self, parent_inode, name, mode, flags, ctx):
        self.requests["create"] += 1
        self.node(parent_inode)   # ENOENT: a removed directory (a shell's cwd) has no names
        raise pyfuse3.FUSEError(errno.EACCES)   # no ->create on kernfs directories

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        self.requests["mknod"] += 1
        raise pyfuse3.FUSEError(errno.EPERM)

    async def mkdir(self, parent_inode, name, mode, ctx):
        self.requests["mkdir"] += 1
        raise pyfuse3.FUSEError(errno.EPERM)

    async def unlink(self, parent_inode, name, ctx):
        self.requests["unlink"] += 1
        raise pyfuse3.FUSEError(errno.EPERM)

    async def rmdir(self, parent_inode, name, ctx):
        self.requests["rmdir"] += 1
        raise pyfuse3.FUSEError(errno.EPERM)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        self.requests["rename"] += 1
        raise pyfuse3.FUSEError(errno.EPERM)

    async def symlink(self, parent_inode, name, target, ctx):
        self.requests["symlink"] += 1
        raise pyfuse3.FUSEError(errno.EPERM)

    async def link(self, inode, new_parent_inode, new_name, ctx):
        self.requests["link"] += 1
        raise pyfuse3.FUSEError(errno.EPERM)

    async def statfs(self, ctx):
        self.requests["statfs"] += 1
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s

    # --- not implemented (as sysfs has no xattrs here, flush or fsync), only counted ------
    flush, fsync, fsyncdir, access, poll = (_enosys(op) for op in ("flush", "fsync", "fsyncdir", "access", "poll"))
    getxattr, setxattr, listxattr, removexattr = (
        _enosys(op) for op in ("getxattr", "setxattr", "listxattr", "removexattr"))
