"""pyfuse3 Operations over a view tree: requests in, errnos out.

The inode side (stable numbers, cached listings and attributes, and
invalidation after structural changes) is InodeTable in inodes.py.
"""
from __future__ import annotations

import errno
import os
import re
import stat
import sys
from dataclasses import dataclass

import pyfuse3
import trio

from vfakefs.fuse.errmap import errno_of, kernel_errors
from vfakefs.fuse.inodes import InodeTable
from vfakefs.fuse.pagecache import PageCache, cacheable, cacheable_attr, current
from vfakefs.fuse.signals import signalled
from vfakefs.fuse.stepping import Stepping
from vfakefs.sysfs.nodes import Attr, Bound, CharDev, Dir, Link, store

STREAM_POLL = 0.5  # a blocked /dev/kmsg read looks this often whether its reader has a signal
# Each blocked stream read holds one of pyfuse3's worker tasks until a record comes, so
# serve() runs pyfuse3.main(max_tasks=MAX_TASKS) with RESERVE workers always left for
# every other request (the write that brings the record among them). A worker costs a
# trio task and a request buffer that stays unused virtual memory. The cap costs nothing
# per request: the pyfuse3 the Makefile builds (patches/) wakes or starts another worker
# only when a handler suspends, so a sequential reader is served by one, at one trio
# scheduler pass per request (stock pyfuse3: two workers handing a lock over, two passes;
# bench/request_cost.py counts both). tests/mount/test_session_loop.py pins the guarantee.
RESERVE = 64
MAX_WAITERS = 1 << 14
MAX_TASKS = MAX_WAITERS + RESERVE
WRITE_MAX = 4096   # sysfs stores see at most one page (6.12 truncates; earlier kernels E2BIG)
_O_ACC = os.O_RDONLY | os.O_WRONLY | os.O_RDWR
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


@dataclass(slots=True)
class OpenFile:
    node: Bound
    content: bytes | None = None   # show() at open: one snapshot per open, like kernfs
    error: int = 0                 # show() failed: reads report it, as seq_file does
    privileged: bool = False
    used: bool = False             # read once already: offset 0 means start over
    stream: object = None          # a Stream's reader (/dev/kmsg): keeps its own position
    pid: int = 0                   # who opened it (a blocked read checks it was not killed)
    state: dict | None = None      # per-open state of per_open attributes
    plain: bool = False            # a text attribute, not per_open: read() serves content
    ino: int | None = None         # where it was opened: once that is gone, reads and writes fail


def shown(decl, obj, state: dict | None = None) -> tuple[bytes | None, int]:
    """A text attribute's show() at open, as kernfs keeps it for the reads: the content,
    or None and the errno they report (EIO without a show, as dev_attr_show)."""
    show = decl.show
    if show is None:
        return None, errno.EIO
    try:
        return (show(obj) if state is None else show(obj, state)).encode("latin-1"), 0
    except Exception as e:   # noqa: BLE001 - errno_of logs a bug, answers EIO
        return None, errno_of(e)


# what files[fh] holds for a text attribute opened through the page cache (cached mode): its
# READs are answered with what the kernel was told (PageCache.content), nothing per open
PAGED = OpenFile(None)


class SysfsOps(InodeTable, Stepping, pyfuse3.Operations):
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

    # --- files --------------------------------------------------------------------------
    async def open(self, inode, flags, ctx):
        self.requests["open"] += 1
        if self.catch_up is not None:
            await self.catch_up()
        if self.batches:
            self.publish_steps()
        while self.untold is not None:
            await self.untold.wait()   # an engine's change: the kernel drops what it cached first
        node = self.nodes.get(inode)
        if node is None:
            if inode in self.orphans:
                raise pyfuse3.FUSEError(errno.ENODEV)   # reopened through /proc/PID/fd: removed
            node = self.node(inode)
        decl = node.decl if type(node) is Bound else None
        if type(decl) is Attr and not flags & _O_ACC and not decl.per_open:
            # the common open, a text attribute's for reading: what the general path below
            # does for it, in fewer steps (every cat and every lspci read comes here)
            if not (self.mode_of(inode, node) if self.overrides else decl.mode) & 0o444:
                raise pyfuse3.FUSEError(errno.EACCES)
            content, error = shown(decl, node.obj)
            fh = self.next_fh
            self.next_fh = fh + 1
            pages = self.pages
            if pages is not None and content is not None and cacheable_attr(decl) and pages.open(fh, inode, content):
                self.files[fh] = PAGED   # its READs fill the page cache: read() serves what the kernel was told
                return pyfuse3.FileInfo(fh, False, True)   # (fh, direct_io, keep_cache): no keywords to parse
            self.files[fh] = OpenFile(node, content, error, ctx.uid == 0, False, None, ctx.pid, None, True, inode)
            return pyfuse3.FileInfo(fh, True, False)
        if not isinstance(node, Bound):
            raise pyfuse3.FUSEError(errno.EACCES if isinstance(node, CharDev) else errno.EISDIR)
        acc = flags & _O_ACC
        want_read = acc in (os.O_RDONLY, os.O_RDWR)
        want_write = acc in (os.O_WRONLY, os.O_RDWR)
        # kernfs checks the mode even for root, and that the attribute has the operation
        # at all (KERNFS_ROOT_EXTRA_OPEN_PERM_CHECK in kernfs_fop_open)
        mode = self.mode_of(inode, node)
        binary = node.binary
        if binary:
            can_read, can_write = node.decl.read is not None, node.decl.write is not None
        else:
            # a text attribute has the kobject's show and store (dev_attr_show/store),
            # which answer EIO for the half it lacks: root's chmod makes it openable
            can_read = can_write = True
        if (want_read and not (mode & 0o444 and can_read)) or (want_write and not (mode & 0o222 and can_write)):
            raise pyfuse3.FUSEError(errno.EACCES)
        of = OpenFile(node, privileged=ctx.uid == 0, pid=ctx.pid, ino=inode)
        if node.stream:
            with kernel_errors():
                of.stream = node.decl.open(node.obj, bool(flags & os.O_NONBLOCK))
        elif not binary:
            if node.decl.per_open:
                of.state = {}
            else:
                of.plain = True
            if want_read:
                self.reshow(of)
        fh = self.next_fh
        self.next_fh += 1
        self.files[fh] = of
        if self.pages is not None and acc == os.O_RDONLY and cacheable(node) and self.cached_open(fh, inode, of):
            of.plain = False   # its READs fill the page cache: read() serves what the kernel was told
            return pyfuse3.FileInfo(fh=fh, direct_io=False, keep_cache=True)
        # fixed files (the simulated /lib/modules) go through the page cache as disk files
        # do: their pages are kept across opens (every kmod run maps the indexes) and a
        # shared mapping works (direct_io refuses MAP_SHARED); attributes are read afresh
        cached = binary and node.cached
        return pyfuse3.FileInfo(fh=fh, direct_io=not cached, keep_cache=cached)

    def cached_open(self, fh: int, ino: int, of: OpenFile) -> bool:
        """Cached mode: whether this open reads through the page cache (pagecache.py). A
        binary file only for root: others read less of it, and the pages are everyone's."""
        if of.node.binary:
            content = current(of.node) if of.privileged else None
        else:
            content = of.content   # show() at this open (None: it failed, reads answer its errno)
        return content is not None and self.pages.open(fh, ino, content)

    async def read(self, fh, off, size):
        self.requests["read"] += 1
        of = self.files[fh]
        if of.ino is not None and of.ino not in self.paths:
            raise pyfuse3.FUSEError(errno.ENODEV)   # removed, as kernfs_get_active() fails on a removed node
        if of.plain:
            if off == 0 and of.used:
                # a read from offset 0 starts over and calls show() again, as seq_read_iter
                # does: pollers lseek(0) and re-read one open file
                self.reshow(of)
            of.used = True
            if of.error:
                raise pyfuse3.FUSEError(of.error)
            return of.content[off:off + size]
        if of.stream is not None:
            return await self.stream_read(of, off, size)
        if self.pages is not None and (told := self.pages.content(fh)) is not None:
            return told[off:off + size]   # cached mode: what the kernel was told, whole
        if of is PAGED:
            # what the kernel was told is gone (the value fails now, or the file went away):
            # this fd reads the value now, as a direct_io open would
            ino = self.pages.open_fh[fh]
            if ino not in self.paths:
                raise pyfuse3.FUSEError(errno.ENODEV)
            of = self.files[fh] = OpenFile(self.node(ino), used=True, plain=True, ino=ino)
            self.reshow(of)
            if of.error:
                raise pyfuse3.FUSEError(of.error)
            return of.content[off:off + size]
        if of.node.binary:
            with kernel_errors():
                return of.node.decl.read(of.node.obj, off, size, of.privileged)
        return self.answer_read(of, size)   # a per_open attribute

    def answer_read(self, of: OpenFile, size: int) -> bytes:
        """A request/answer control: reads run through the answer of the last request
        made on this fd, whatever the file offset (so `exec 3<>dma; echo ... >&3;
        cat <&3` works from a shell that cannot seek)."""
        if of.state.pop("_fresh", False) or of.content is None:
            self.reshow(of)
            of.state["_pos"] = 0
        if of.error:
            raise pyfuse3.FUSEError(of.error)
        pos = of.state.get("_pos", 0)
        of.state["_pos"] = pos + size
        return of.content[pos:pos + size]

    async def stream_read(self, of: OpenFile, off: int, size: int) -> bytes:
        """One record per read (/dev/kmsg). At the end: EAGAIN for O_NONBLOCK (as the
        file was opened: a later fcntl(F_SETFL) never reaches the server), else wait
        for the next record. pyfuse3 does not pass FUSE_INTERRUPT on, so a waiting
        read checks now and then whether its reader has a signal pending, and
        answers EINTR then (^C, or a kill: the reader waits for that answer)."""
        while True:
            with kernel_errors():
                data = of.stream.read(off, size)
            if data is not None:
                return data
            if of.stream.nonblock or self.waiters >= MAX_WAITERS:
                raise pyfuse3.FUSEError(errno.EAGAIN)
            if self.closing:   # SIGTERM: pyfuse3.main returns only once every read is answered
                raise pyfuse3.FUSEError(errno.ENOTCONN)   # what a reader of a dead FUSE server gets
            event = trio.Event()
            unsubscribe = of.node.decl.subscribe(of.node.obj, event.set)
            self.waiters += 1
            try:
                with trio.move_on_after(STREAM_POLL):
                    await event.wait()
            finally:
                self.waiters -= 1
                unsubscribe()
            if not event.is_set() and signalled(of.pid):
                raise pyfuse3.FUSEError(errno.EINTR)

    def reshow(self, of: OpenFile) -> None:
        of.content, of.error = shown(of.node.decl, of.node.obj, of.state)

    async def write(self, fh, off, buf):
        self.requests["write"] += 1
        of = self.files[fh]
        if of.ino is not None and of.ino not in self.paths:
            raise pyfuse3.FUSEError(errno.ENODEV)   # removed (kernfs_fop_write_iter)
        if not buf:
            return 0  # a zero-length write never reaches store()
        if of.stream is not None:
            return await self._write(of, off, buf)
        async with self.write_turn():     # readers are not starved by many writers (stepping.py)
            return await self._write(of, off, buf)

    async def _write(self, of: OpenFile, off: int, buf) -> int:
        if self.batches:
            self.publish_steps()          # a store sees the tree as published (another enable in steps)
        held = None
        with kernel_errors():
            if of.stream is not None:
                n = of.stream.write(bytes(buf))
            elif of.node.binary:
                n = of.node.decl.write(of.node.obj, off, buf)
            else:
                buf = buf[:WRITE_MAX]
                decl = of.node.decl
                if decl.store is None:
                    raise pyfuse3.FUSEError(errno.EIO)   # dev_attr_store without a store
                if decl.per_open:
                    decl.store(of.node.obj, buf.decode("latin-1"), of.state)
                    of.state["_fresh"] = True   # the next read starts the new answer
                else:
                    held = store(of.node, buf.decode("latin-1"), stepwise=True)
                n = len(buf)
        if hasattr(held, "step"):
            await self.drive(of, held)
        elif held is not None:
            await self.wait_held(of, held)
        # the writer's next syscall must see the new tree: answer once the kernel has
        # dropped what changed (with stores in steps going on, through their batches)
        if self.batches:
            self.publish_steps()
        self.publish()
        await self.deliver()
        if self.settle is not None:
            await self.settle()
        if self.pages is not None:
            # files open now read their new value once the write is answered; the others
            # (stat's size) are looked at after it
            moved = self.pages.changed_open()
            if moved:
                await self.invalidate_pages(moved)
            self.pages.sweep_soon()
        return n

    async def wait_held(self, of: OpenFile, held) -> None:
        """A store the simulated device is still busy with (model/faults.py): the writer
        waits, on the engine's simulated clock, while every other request goes on. The
        kernel's store cannot be interrupted, and goes on here too; but a writer that was
        killed (or has another signal) is answered EINTR at once, as pyfuse3 drops the
        FUSE_INTERRUPT that would tell us, so that it can die."""
        if not await self.wait_done(held, of.pid):
            raise pyfuse3.FUSEError(errno.EINTR)
        if held.errno:
            raise pyfuse3.FUSEError(held.errno)

    async def wait_done(self, held, pid: int | None) -> bool:
        """Until held (a Held, model/faults.py) is done: True; False as soon as the writer
        pid (None: nobody to look at) has a signal pending. Other requests go on meanwhile."""
        event = trio.Event()
        held.on_done(event.set)
        self.waiters += 1
        self.holding.add(event)
        try:
            while not held.done:
                if self.closing:
                    # pyfuse3.main waits for every request before it returns: answer as the
                    # connection about to go away would
                    raise pyfuse3.FUSEError(errno.ENOTCONN)
                with trio.move_on_after(STREAM_POLL):
                    await event.wait()
                if not held.done and pid is not None and signalled(pid):
                    return False
        finally:
            self.waiters -= 1
            self.holding.discard(event)
        return True

    def shutdown(self) -> None:
        """The daemon stops serving (SIGTERM): writes still held are answered now."""
        self.closing = True
        for event in list(self.holding):
            event.set()

    async def release(self, fh):
        self.requests["release"] += 1
        self.files.pop(fh, None)
        pages = self.pages
        if pages is not None and pages.open_fh.pop(fh, None) is not None:
            pages.paged.discard(fh)   # (pages.release(), inline)

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
