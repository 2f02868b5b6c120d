"""pyfuse3 Operations over a view tree.

Inode numbers are stable per path for the life of the mount. Directory listings
are computed from the view once per Machine generation; after a structural
change the names the kernel has cached are compared with the new listing and
what vanished or changed is invalidated, so the next syscall sees it.
"""
from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass, field

import pyfuse3
import trio

from vfakefs.fuse.errmap import kernel_errors
from vfakefs.fuse.signals import signalled
from vfakefs.sysfs.nodes import Bound, CharDev, Dir, Link, node_type

TIMEOUT = 3600.0   # the kernel may cache entries and attributes: we invalidate on change
STREAM_POLL = 0.5  # a blocked /dev/kmsg read looks this often whether its reader has a signal
MAX_WAITERS = 64   # blocked stream reads at once (each holds one of pyfuse3's 99 workers)
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


class SysfsOps(pyfuse3.Operations):
    supports_dot_lookup = False

    def __init__(self, root: Dir, generation):
        super().__init__()
        self.generation = generation           # () -> int, bumps on structural change
        self.root = root
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: ""}
        self.inos: dict[str, int] = {"": pyfuse3.ROOT_INODE}
        self.next_ino = pyfuse3.ROOT_INODE
        self.nodes: dict[int, tuple[int, object]] = {}
        self.listings: dict[int, tuple[int, dict]] = {}
        self.attr_cache: dict[int, tuple[int, pyfuse3.EntryAttributes]] = {}
        self.rows_cache: dict[int, tuple[int, list]] = {}
        self.overrides: dict[int, dict] = {}   # chmod/chown by root, kept per inode like kernfs iattrs
        self.served: dict[int, dict[str, object]] = {}   # dir ino -> {name: node} the kernel may cache
        self.files: dict[int, OpenFile] = {}
        self.next_fh = 1
        self.waiters = 0
        self.published = generation()
        self.time_ns = time.time_ns()

    # --- tree walking ---------------------------------------------------------------
    def ino_of(self, path: str) -> int:
        ino = self.inos.get(path)
        if ino is None:
            self.next_ino += 1
            ino = self.inos[path] = self.next_ino
            self.paths[ino] = path
        return ino

    def path_of(self, ino: int) -> str:
        path = self.paths.get(ino)
        if path is None:   # a removed node the kernel still holds (an open directory)
            raise pyfuse3.FUSEError(errno.ENOENT)
        return path

    def node(self, ino: int):
        gen = self.generation()
        hit = self.nodes.get(ino)
        if hit is not None and hit[0] == gen:
            return hit[1]
        path = self.paths.get(ino)
        if path is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if path == "":
            node = self.root
        else:
            parent, _, name = path.rpartition("/")
            node = self.listing(self.ino_of(parent)).get(name)
            if node is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
        self.nodes[ino] = (gen, node)
        return node

    def listing(self, ino: int) -> dict:
        gen = self.generation()
        hit = self.listings.get(ino)
        if hit is not None and hit[0] == gen:
            return hit[1]
        node = self.node(ino)
        if not isinstance(node, Dir):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        with kernel_errors():
            entries = node.entries()
        self.listings[ino] = (gen, entries)
        return entries

    def child(self, parent: int, name: str):
        node = self.listing(parent).get(name)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        path = self.path_of(parent)
        ino = self.ino_of(f"{path}/{name}" if path else name)
        self.nodes[ino] = (self.generation(), node)
        self.served.setdefault(parent, {})[name] = node
        return ino, node

    # --- attributes -------------------------------------------------------------------
    def attrs(self, ino: int, node) -> pyfuse3.EntryAttributes:
        """Attributes, computed once per generation (a directory's nlink needs its listing)."""
        if isinstance(node, Bound) and node.stream:
            # a stream's size moves with every record: always fresh, never cached by the
            # kernel either, so that lseek(SEEK_END) asks for it
            a = self._attrs(ino, node)
            a.attr_timeout = 0
            return a
        gen = self.generation()
        hit = self.attr_cache.get(ino)
        if hit is not None and hit[0] == gen:
            return hit[1]
        a = self._attrs(ino, node)
        self.attr_cache[ino] = (gen, a)
        return a

    def _attrs(self, ino: int, node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_nlink = 1
        if isinstance(node, Dir):
            entries = self.listing(ino)
            a.st_nlink = 2 + sum(1 for n in entries.values() if isinstance(n, Dir))
            a.st_size = (len(entries) + 2) * 20 if node.tmpfs else 0  # tmpfs's BOGO_DIRENT_SIZE
        elif isinstance(node, CharDev):
            a.st_rdev = os.makedev(node.major, node.minor)
        else:
            with kernel_errors():
                a.st_size = node.size
        over = self.overrides.get(ino, {})
        a.st_mode = node_type(node) | over.get("mode", node.mode)
        a.st_uid, a.st_gid = over.get("uid", 0), over.get("gid", 0)
        a.st_blksize = 4096
        a.st_blocks = 0
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.time_ns
        a.entry_timeout = a.attr_timeout = TIMEOUT
        return a

    async def lookup(self, parent_inode, name, ctx=None):
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

    def mode_of(self, ino: int, node) -> int:
        return self.overrides.get(ino, {}).get("mode", node.mode)

    async def readlink(self, inode, ctx):
        node = self.node(inode)
        if not isinstance(node, Link):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(node.target)

    async def forget(self, inode_list):
        pass  # inode numbers stay bound to their paths for the life of the mount

    # --- directories --------------------------------------------------------------------
    async def opendir(self, inode, ctx):
        self.listing(inode)
        return inode

    async def readdir(self, fh, start_id, token):
        rows = self.dir_rows(fh)
        for i in range(start_id, len(rows)):
            name, attrs = rows[i]
            if not pyfuse3.readdir_reply(token, name, attrs, i + 1):
                return

    def dir_rows(self, ino: int) -> list:
        """(name, attributes) of ".", ".." and every entry, once per generation.
        READDIRPLUS hands the kernel each entry, so each counts as served."""
        gen = self.generation()
        hit = self.rows_cache.get(ino)
        if hit is not None and hit[0] == gen:
            return hit[1]
        pino = self.ino_of(self.path_of(ino).rpartition("/")[0])
        rows = [(b".", self.attrs(ino, self.node(ino))), (b"..", self.attrs(pino, self.node(pino)))]
        for name in sorted(self.listing(ino)):
            cino, node = self.child(ino, name)
            rows.append((os.fsencode(name), self.attrs(cino, node)))
        self.rows_cache[ino] = (gen, rows)
        return rows

    async def releasedir(self, fh):
        pass

    # --- files --------------------------------------------------------------------------
    async def open(self, inode, flags, ctx):
        node = self.node(inode)
        if not isinstance(node, Bound):
            raise pyfuse3.FUSEError(errno.EACCES if isinstance(node, CharDev) else errno.EISDIR)
        acc = flags & _O_ACC
        want_read = acc in (os.O_RDONLY, os.O_RDWR)
        want_write = acc in (os.O_WRONLY, os.O_RDWR)
        # kernfs checks the mode even for root, and that the attribute has the operation
        # at all (KERNFS_ROOT_EXTRA_OPEN_PERM_CHECK in kernfs_fop_open)
        mode = self.mode_of(inode, node)
        if node.stream:
            can_read = can_write = True
        elif node.binary:
            can_read, can_write = node.decl.read is not None, node.decl.write is not None
        else:
            can_read, can_write = node.decl.show is not None, node.decl.store is not None
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
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

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
        with kernel_errors():
            if of.stream is not None:
                n = of.stream.write(bytes(buf))
            elif of.node.binary:
                n = of.node.decl.write(of.node.obj, off, buf)
            else:
                buf = buf[:WRITE_MAX]
                decl = of.node.decl
                if decl.per_open:
                    decl.store(of.node.obj, buf.decode("latin-1"), of.state)
                    of.state["_fresh"] = True   # the next read starts the new answer
                else:
                    decl.store(of.node.obj, buf.decode("latin-1"))
                n = len(buf)
        self.publish()
        return n

    async def release(self, fh):
        self.files.pop(fh, None)

    # --- what sysfs refuses ---------------------------------------------------------------
    async def create(self, parent_inode, name, mode, flags, ctx):
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

    # --- publishing structural changes ------------------------------------------------------
    def publish(self) -> None:
        """After a change of the Machine's structure, drop what the kernel cached of it."""
        gen = self.generation()
        if gen == self.published:
            return
        self.published = gen
        old_listings = self.listings
        # caches of the old generation go now, so removed functions leave no memory behind
        self.listings, self.nodes, self.attr_cache, self.rows_cache = {}, {}, {}, {}
        gone: list[str] = []
        for dino, served in list(self.served.items()):
            before = old_listings.get(dino, (0, {}))[1]
            try:
                entries = self.listing(dino)
            except pyfuse3.FUSEError:
                self.served.pop(dino, None)   # the directory itself went away
                continue
            stale = [name for name, old in served.items() if not _same(old, entries.get(name))]
            for name in stale:
                del served[name]
                pyfuse3.invalidate_entry_async(dino, os.fsencode(name), ignore_enoent=True)
                if name not in entries:
                    gone.append(f"{self.paths[dino]}/{name}" if self.paths[dino] else name)
            if before.keys() != entries.keys():
                try:
                    pyfuse3.invalidate_inode(dino, attr_only=True)   # nlink and tmpfs sizes
                except OSError:
                    pass
        if gone:
            self.forget_paths(gone)

    def forget_paths(self, paths: list[str]) -> None:
        """Drop the inode numbers of removed subtrees, walking what the kernel was
        served (numbers are never reused: a path that comes back gets a new one)."""
        stack = list(paths)
        while stack:
            path = stack.pop()
            ino = self.inos.pop(path, None)
            if ino is None:
                continue
            del self.paths[ino]
            self.overrides.pop(ino, None)
            stack.extend(f"{path}/{name}" for name in self.served.pop(ino, {}))


def _same(old, new) -> bool:
    """Whether a cached entry still stands: a directory stays the same directory;
    a link must keep its target; an attribute its declaration and object."""
    if new is None or type(old) is not type(new):
        return False
    return isinstance(old, Dir) or old == new
