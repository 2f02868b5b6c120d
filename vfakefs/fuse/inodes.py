"""Inodes for a view tree.

Inode numbers are stable per path for the life of the mount. Directory listings,
nodes and attributes are computed from the view once and kept until a change names
them (republish.py keeps the kernel's caches of them true; notify.py tells it).
"""
from __future__ import annotations

import errno
import os
import time

import pyfuse3
import trio

from vfakefs.fuse.errmap import kernel_errors
from vfakefs.fuse.notify import Delivery
from vfakefs.fuse.pagecache import cacheable
from vfakefs.fuse.republish import Republish
from vfakefs.sysfs.nodes import S_IFCHR, S_IFDIR, S_IFREG, Bound, CharDev, Dir, node_type


TIMEOUT = 3600.0   # the kernel may cache entries and attributes: we invalidate on change


class InodeTable(Republish, Delivery):
    def __init__(self, root: Dir, generation, dirty=None):
        """generation() -> int bumps on every structural change; dirty() -> the
        directories the change being published may have altered, as
        [(path, deep, skip)] (sysfs/dirty.py), or None for any (then all are re-listed)."""
        self.generation = generation
        self.dirty = dirty
        self.root = root
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: ""}
        self.inos: dict[str, int] = {"": pyfuse3.ROOT_INODE}
        self.next_ino = pyfuse3.ROOT_INODE
        # caches, each kept until a change names the directory (publish) or it goes away
        self.nodes: dict[int, object] = {}
        self.listings: dict[int, dict] = {}
        self.attr_cache: dict[int, pyfuse3.EntryAttributes] = {}
        self.rows_cache: dict[int, list] = {}
        self.overrides: dict[int, dict] = {}   # chmod/chown by root, kept per inode like kernfs iattrs
        self.orphans: dict[int, pyfuse3.EntryAttributes] = {}   # removed files still open (_orphan)
        self.files: dict = {}                   # fh -> OpenFile (SysfsOps)
        # listings a change dropped that are mended for the names it named when next asked
        # for (Dir.entry), instead of made again whole: dir ino -> (listing, names, entry)
        self.mending: dict[int, tuple[dict, set, object]] = {}
        self.served: dict[int, dict[str, object]] = {}   # dir ino -> {name: node} the kernel may cache
        self.published = generation()
        self.pending: list[tuple[int, bytes]] = []   # (dir ino, name) the kernel must drop
        self.pending_attrs: set[int] = set()          # dir inos whose attributes changed
        self.pending_pages: set[int] = set()          # inos whose cached pages must go: links, dirs, cached files
        self.sending: set[int] = set()                # those of them the notify thread is telling now
        self.pages = None                              # a PageCache in cached mode (pagecache.py)
        self.deliver_lock = trio.Lock()
        self.delivering = False
        self.untold: trio.Event | None = None          # set once an engine's change is told (deliver_soon)
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
        node = self.nodes.get(ino)
        if node is not None:
            return node
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
        self.nodes[ino] = node
        return node

    def listing(self, ino: int) -> dict:
        entries = self.listings.get(ino)
        if entries is not None:
            return entries
        if self.mending:
            entries = self._mended(ino)
            if entries is not None:
                return entries
        node = self.node(ino)
        if not isinstance(node, Dir):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        with kernel_errors():
            entries = node.entries()
        self.listings[ino] = entries
        return entries

    def child(self, parent: int, name: str):
        node = None
        if parent not in self.listings:
            find = getattr(self.nodes.get(parent), "find", None)   # (a function's attribute: no listing)
            if find is not None:
                with kernel_errors():
                    node = find(name)
        if node is None:
            node = self.listing(parent).get(name)
            if node is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
        path = self.path_of(parent)
        ino = self.ino_of(f"{path}/{name}" if path else name)
        self.nodes[ino] = node
        served = self.served.get(parent)
        if served is None:
            served = self.served[parent] = {}
        served[name] = node
        return ino, node

    # --- attributes -------------------------------------------------------------------
    def attrs(self, ino: int, node) -> pyfuse3.EntryAttributes:
        """Attributes, kept until a change names the directory (a directory's nlink needs its listing)."""
        a = self.attr_cache.get(ino)   # never a stream's: the hit needs no look at the node
        if a is None:
            a = self._attrs(ino, node)
            if isinstance(node, Bound) and node.stream:
                # a stream's size moves with every record: always fresh, never cached by the
                # kernel either, so that lseek(SEEK_END) asks for it
                a.attr_timeout = 0
                return a
            self.attr_cache[ino] = a
        if self.pages is not None and cacheable(node):
            self.pages.fix(ino, node, a)   # the content's length, as the kernel may hold it
        return a

    def _attrs(self, ino: int, node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()   # its __cinit__ sets st_nlink 1, st_blksize 4096, the rest 0
        a.st_ino = ino
        if type(node) is Bound:   # most of what is looked up: attributes, without node's properties
            decl = node.decl
            size = decl.size
            if callable(size):
                with kernel_errors():
                    size = size(node.obj)
            a.st_size = size
            kind, mode = S_IFREG, decl.mode
        elif isinstance(node, Dir):
            if node.subdirs is not None and ino not in self.listings:
                with kernel_errors():
                    a.st_nlink = 2 + node.subdirs()   # (not tmpfs: size 0)
            else:
                entries = self.listing(ino)
                a.st_nlink = 2 + sum(1 for n in entries.values() if isinstance(n, Dir))
                a.st_size = (len(entries) + 2) * 20 if node.tmpfs else 0  # tmpfs's BOGO_DIRENT_SIZE
            kind, mode = S_IFDIR, node.mode
        elif isinstance(node, CharDev):
            a.st_rdev = os.makedev(node.major, node.minor)
            kind, mode = S_IFCHR, node.mode
        else:
            a.st_size = node.size
            kind, mode = node_type(node), node.mode
        over = self.overrides.get(ino) if self.overrides else None
        if over:
            a.st_uid, a.st_gid = over.get("uid", 0), over.get("gid", 0)
            mode = over.get("mode", mode)
        a.st_mode = kind | mode
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.time_ns
        a.entry_timeout = a.attr_timeout = TIMEOUT
        return a

    def mode_of(self, ino: int, node) -> int:
        over = self.overrides.get(ino)
        return node.mode if over is None else over.get("mode", node.mode)

    def dir_rows(self, ino: int) -> list:
        """(name, attributes) of ".", ".." and every entry, kept like the listing.
        READDIRPLUS hands the kernel each entry, so each counts as served."""
        rows = self.rows_cache.get(ino)
        if rows is not None:
            if self.pages is not None:   # the sizes of cached attributes move with their values
                for _, a in rows[2:]:
                    node = self.nodes.get(a.st_ino)
                    if cacheable(node):
                        self.pages.fix(a.st_ino, node, a)
            return rows
        pino = self.ino_of(self.path_of(ino).rpartition("/")[0])
        rows = [(b".", self.attrs(ino, self.node(ino))), (b"..", self.attrs(pino, self.node(pino)))]
        for name in sorted(self.listing(ino)):
            cino, node = self.child(ino, name)
            rows.append((os.fsencode(name), self.attrs(cino, node)))
        self.rows_cache[ino] = rows
        return rows
