"""The file handlers of SysfsOps (ops.py): open, read, write and release of attributes,
as kernfs serves them. An open runs show() once (seq_file's snapshot), a read serves it
(again from offset 0: show() anew), a write runs the store through the machine's fault
rules and answers once the kernel has dropped what the change made stale; /dev/kmsg
reads block, binary files read and write at offsets, and cached mode (pagecache.py)
serves unchanged values from the kernel's page cache. A file whose node went (its
device removed) answers ENODEV, as kernfs_get_active() fails.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass

import pyfuse3
import trio

from vfakefs.fuse.errmap import errno_of, kernel_errors
from vfakefs.fuse.pagecache import cacheable, cacheable_attr, current
from vfakefs.fuse.signals import signalled
from vfakefs.sysfs.nodes import Attr, Bound, CharDev, store

STREAM_POLL = 0.5  # a blocked /dev/kmsg read looks this often whether its reader has a signal
WRITE_MAX = 4096   # sysfs stores see at most one page (6.12 truncates; earlier kernels E2BIG)
_O_ACC = os.O_RDONLY | os.O_WRONLY | os.O_RDWR
# Each blocked stream read holds one of pyfuse3's worker tasks until a record comes, so
# serve() runs pyfuse3.main(max_tasks=MAX_TASKS) with RESERVE workers always left for
# every other request (the write that brings the record among them). A worker costs a
# trio task and a request buffer that stays unused virtual memory. The cap costs nothing
# per request: the pyfuse3 the Makefile builds (patches/) wakes or starts another worker
# only when a handler suspends, so a sequential reader is served by one, mostly reading
# request after request without a trio scheduler pass (stock pyfuse3: two workers handing a
# lock over, two passes; bench/request_cost.py counts both). tests/mount/test_session_loop.py
# pins the guarantee.
RESERVE = 64
MAX_WAITERS = 1 << 14
MAX_TASKS = MAX_WAITERS + RESERVE


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


class Files:
    """Mixed into SysfsOps: needs its InodeTable (nodes, paths, pages, orphans, files),
    Stepping (drive, write_turn, publish_steps, batches) and requests."""
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
