"""pyfuse3 Operations over a view tree: requests in, errnos out.

The inode side (stable numbers, cached listings and attributes, and
invalidation after structural changes) is InodeTable in inodes.py.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

import pyfuse3
import trio

from vfakefs.fuse.errmap import kernel_errors
from vfakefs.fuse.inodes import InodeTable
from vfakefs.fuse.signals import signalled
from vfakefs.fuse.stepping import Stepping
from vfakefs.sysfs.nodes import Bound, CharDev, Dir, Link, store

STREAM_POLL = 0.5  # a blocked /dev/kmsg read looks this often whether its reader has a signal
# Each blocked stream read holds one of pyfuse3's worker tasks until a record comes, so
# serve() runs pyfuse3.main(max_tasks=MAX_TASKS) with RESERVE workers always left for
# every other request (the write that brings the record among them). A worker costs a
# trio task and a request buffer that stays unused virtual memory.
RESERVE = 64
MAX_WAITERS = 1 << 14
MAX_TASKS = MAX_WAITERS + RESERVE
WRITE_MAX = 4096   # sysfs stores see at most one page (6.12 truncates; earlier kernels E2BIG)
_O_ACC = os.O_RDONLY | os.O_WRONLY | os.O_RDWR


@dataclass(slots=True)
class OpenFile:
    node: Bound
    content: bytes | None = None   # show() at open: one snapshot per open, like kernfs
    error: int = 0                 # show() failed: reads report it, as seq_file does
    privileged: bool = False
    used: bool = False             # read once already: offset 0 means start over
    stream: object = None          # a Stream's reader (/dev/kmsg): keeps its own position
    pid: int = 0                   # who opened it (a blocked read checks it was not killed)
    state: dict = field(default_factory=dict)   # per-open state of per_open attributes


class SysfsOps(InodeTable, Stepping, pyfuse3.Operations):
    supports_dot_lookup = False

    def __init__(self, root: Dir, generation, dirty=None):
        pyfuse3.Operations.__init__(self)
        InodeTable.__init__(self, root, generation, dirty)
        self.files: dict[int, OpenFile] = {}
        self.next_fh = 1
        self.waiters = 0
        self.holding: set = set()   # the trio.Events of the writes a held store keeps (wait_held)
        self.closing = False        # the daemon is shutting down: held writers are let go
        self.batches: set = set()   # the open batches of stores carried out in steps (drive)
        self.settle = None    # async: other views of the machine a write waits for (`vfakefs run`'s networks)
        self.catch_up = None  # async: changes made through them that an open must see first

    async def lookup(self, parent_inode, name, ctx=None):
        if self.batches:
            self.publish_steps()         # the VFs added so far, before this request sees the tree
        name = os.fsdecode(name)
        if name == ".":
            return self.attrs(parent_inode, self.node(parent_inode))
        if name == "..":
            ppath = self.path_of(parent_inode).rpartition("/")[0]
            pino = self.ino_of(ppath)
            return self.attrs(pino, self.node(pino))
        ino, node = self.child(parent_inode, name)
        return self.attrs(ino, node)

    async def getattr(self, inode, ctx=None):
        if self.batches:
            self.publish_steps()         # the VFs added so far, before this request sees the tree
        return self.attrs(inode, self.node(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
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
        if self.batches:
            self.publish_steps()         # the VFs added so far, before this request sees the tree
        node = self.node(inode)
        if not isinstance(node, Link):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(node.target)

    async def forget(self, inode_list):
        pass  # inode numbers stay bound to their paths for the life of the mount

    # --- directories --------------------------------------------------------------------
    async def opendir(self, inode, ctx):
        if self.batches:
            self.publish_steps()         # the VFs added so far, before this request sees the tree
        self.listing(inode)
        return inode

    async def readdir(self, fh, start_id, token):
        rows = self.dir_rows(fh)
        for i in range(start_id, len(rows)):
            name, attrs = rows[i]
            if not pyfuse3.readdir_reply(token, name, attrs, i + 1):
                return

    async def releasedir(self, fh):
        pass

    # --- files --------------------------------------------------------------------------
    async def open(self, inode, flags, ctx):
        if self.catch_up is not None:
            await self.catch_up()
        if self.batches:
            self.publish_steps()
        node = self.node(inode)
        if not isinstance(node, Bound):
            raise pyfuse3.FUSEError(errno.EACCES if isinstance(node, CharDev) else errno.EISDIR)
        acc = flags & _O_ACC
        want_read = acc in (os.O_RDONLY, os.O_RDWR)
        want_write = acc in (os.O_WRONLY, os.O_RDWR)
        # kernfs checks the mode even for root, and that the attribute has the operation
        # at all (KERNFS_ROOT_EXTRA_OPEN_PERM_CHECK in kernfs_fop_open)
        mode = self.mode_of(inode, node)
        if node.binary:
            can_read, can_write = node.decl.read is not None, node.decl.write is not None
        else:
            # a text attribute has the kobject's show and store (dev_attr_show/store),
            # which answer EIO for the half it lacks: root's chmod makes it openable
            can_read = can_write = True
        if (want_read and not (mode & 0o444 and can_read)) or (want_write and not (mode & 0o222 and can_write)):
            raise pyfuse3.FUSEError(errno.EACCES)
        of = OpenFile(node, privileged=ctx.uid == 0, pid=ctx.pid)
        if node.stream:
            with kernel_errors():
                of.stream = node.decl.open(node.obj, bool(flags & os.O_NONBLOCK))
        elif want_read and not node.binary:
            self.reshow(of)
        fh = self.next_fh
        self.next_fh += 1
        self.files[fh] = of
        # fixed files (the simulated /lib/modules) go through the page cache as disk files
        # do: their pages are kept across opens (every kmod run maps the indexes) and a
        # shared mapping works (direct_io refuses MAP_SHARED); attributes are read afresh
        return pyfuse3.FileInfo(fh=fh, direct_io=not node.cached, keep_cache=node.cached)

    async def read(self, fh, off, size):
        of = self.files[fh]
        if of.stream is not None:
            return await self.stream_read(of, off, size)
        if of.node.binary:
            with kernel_errors():
                return of.node.decl.read(of.node.obj, off, size, of.privileged)
        if of.node.decl.per_open:
            return self.answer_read(of, size)
        if off == 0 and of.used:
            # a read from offset 0 starts over and calls show() again, as seq_read_iter
            # does: pollers lseek(0) and re-read one open file
            self.reshow(of)
        of.used = True
        if of.error:
            raise pyfuse3.FUSEError(of.error)
        return of.content[off:off + size]

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
        of.content, of.error = None, 0
        if of.node.decl.show is None:
            of.error = errno.EIO   # dev_attr_show without a show
            return
        try:
            with kernel_errors():
                decl = of.node.decl
                text = decl.show(of.node.obj, of.state) if decl.per_open else decl.show(of.node.obj)
                of.content = text.encode("latin-1")
        except pyfuse3.FUSEError as e:
            of.error = e.errno

    async def write(self, fh, off, buf):
        of = self.files[fh]
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
        self.files.pop(fh, None)

    # --- what sysfs refuses ---------------------------------------------------------------
    async def create(self, parent_inode, name, mode, flags, ctx):
        self.node(parent_inode)   # ENOENT: a removed directory (a shell's cwd) has no names
        raise pyfuse3.FUSEError(errno.EACCES)   # no ->create on kernfs directories

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    async def mkdir(self, parent_inode, name, mode, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    async def unlink(self, parent_inode, name, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    async def rmdir(self, parent_inode, name, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    async def symlink(self, parent_inode, name, target, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s
