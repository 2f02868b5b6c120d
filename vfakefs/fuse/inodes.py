"""Inodes for a view tree, and keeping the kernel's caches of them true.

Inode numbers are stable per path for the life of the mount. Directory listings,
nodes and attributes are computed from the view once and kept; after a structural
change the directories it may have altered (as the view tells from what the
Machine says changed) are re-listed, the names the kernel has cached there are
compared with the new listing, and what vanished or changed is invalidated, so
the next syscall sees it. The caches of every other directory stay.
"""
from __future__ import annotations

import collections
import errno
import itertools
import os
import time

import pyfuse3
import trio

from vfakefs.fuse.errmap import kernel_errors
from vfakefs.fuse.notify import Delivery
from vfakefs.fuse.pagecache import cacheable
from vfakefs.sysfs.nodes import S_IFCHR, S_IFDIR, S_IFREG, Bound, CharDev, Dir, Link, node_type


NOTHING = frozenset()
TIMEOUT = 3600.0   # the kernel may cache entries and attributes: we invalidate on change
_NONES = itertools.repeat(None)   # (forget_paths: pop(ino, None) for each)
_drain = collections.deque(maxlen=0).extend   # runs an iterator to its end, keeping nothing


class InodeTable(Delivery):
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

    # --- publishing structural changes ------------------------------------------------------
    def publish(self) -> None:
        """After a change of the Machine's structure: drop what we cached of the directories
        it may have altered, re-list those the kernel was shown, and queue the invalidation
        of what the kernel cached that no longer stands (deliver() sends it before the
        write that made the change is answered). Only the directories dirty() names are
        looked at, so a change costs what it touches, not what the kernel was ever shown."""
        gen = self.generation()
        if gen == self.published:
            return
        self.published = gen
        spec = self.dirty() if self.dirty is not None else None
        if spec is None:
            self.republish_all()
        else:
            self.republish(spec)
        if self.pending or self.pending_attrs or self.pending_pages:
            self.deliver_soon()
        if self.pages is not None:
            self.pages.sweep_soon()   # values move with the structure

    def republish_all(self) -> None:
        """A change nobody could map: every directory is re-listed and compared."""
        old = self.listings
        targets = list(self.served.keys() | old.keys())
        self.listings, self.nodes, self.attr_cache, self.rows_cache, self.mending = {}, {}, {}, {}, {}
        self._compare(targets, old)

    def republish(self, spec) -> None:
        """The directories spec names (and below a deep one, those the kernel was shown).
        A directory where only some entries came or went (an item with their names) is not
        re-listed here: its listing is dropped, to be made again when next asked for, and
        what the kernel holds of those names is invalidated (one that stands anew is looked
        up afresh), so the cost is the change's, however many entries the directory has or
        the kernel was shown."""
        gone: list[str] = []
        prior: dict[int, dict] = {}   # the listings dropped so (a deep item may compare them)
        for item in spec:
            if len(item) > 3:
                self._entries_went(item[0], item[3], item[4], gone, prior)
        if gone:
            self.forget_paths(gone)   # (before the other items: no directory below is looked at)
        old: dict[int, dict | None] = {}
        targets: list[int] = []
        for path, deep, skip, *_ in spec:
            if _:
                continue
            ino = self.inos.get(path)
            if ino is None or ino in old:
                continue   # never shown to the kernel: nothing of it is cached
            stack = [(ino, skip if deep else None)]
            while stack:
                d, sk = stack.pop()
                if d in old:
                    continue
                below = [self._join(d, name) for name in self.served.get(d, ()) if sk is not None and name not in sk]
                targets.append(d)
                old[d] = self._drop(d)
                if old[d] is None:
                    old[d] = prior.get(d)
                for cpath in below:
                    c = self.inos.get(cpath)
                    if c is not None and (c in self.served or c in self.listings):
                        stack.append((c, NOTHING))
        self._compare(targets, old)

    def _entries_went(self, path: str, names, links: bool, gone: list[str], prior: dict) -> None:
        d = self.inos.get(path)
        if d is None:
            return   # never shown to the kernel: nothing of it is cached
        entries = self.listings.pop(d, None)
        if entries is not None:
            prior[d] = entries
        self._mend_later(d, entries, names)
        self.rows_cache.pop(d, None)
        if not links:   # directories came or went: its nlink changed (the kernel may hold it)
            self.attr_cache.pop(d, None)
            self.pending_attrs.add(d)
            if path:
                self.rows_cache.pop(self.inos.get(path.rpartition("/")[0]), None)
        self.pending_pages.add(d)   # entries came or went: the listing the kernel cached (FOPEN_CACHE_DIR)
        served = self.served.get(d)
        if not served:
            return
        prefix = f"{path}/" if path else ""
        for name in names:
            if served.pop(name, None) is not None:
                self.pending.append((d, os.fsencode(name)))
                gone.append(prefix + name)

    def _mend_later(self, d: int, entries: dict | None, names) -> None:
        """A large listing whose directory tells what one name holds now (Dir.entry:
        bus/pci/devices, 2,065 links) is kept aside with the names a change named, and
        mended for them when next asked for (_mended), not made again whole: a writer's
        lookup of the next PF after each PF's VFs came costs those VFs, and nothing is
        asked while nobody looks. One dropped unseen gathers the names of later changes."""
        if entries is None:
            held = self.mending.get(d)
            if held is not None:
                held[1].update(names)
                if len(held[1]) > len(held[0]):   # more to ask than to make: made again whole
                    del self.mending[d]
            return
        entry = getattr(self.nodes.get(d), "entry", None)
        if entry is not None and len(names) <= len(entries):
            self.mending[d] = (entries, set(names), entry)

    def _mended(self, d: int) -> dict | None:
        """d's listing kept aside by _mend_later, mended for its names, or None."""
        held = self.mending.pop(d, None)
        if held is None:
            return None
        entries, names, entry = held
        try:
            now = [(name, entry(name)) for name in names]
        except Exception:   # noqa: BLE001 - made again whole, as any other
            return None
        for name, new in now:
            if new is None:
                entries.pop(name, None)
            else:
                entries[name] = new
        self.listings[d] = entries
        return entries

    def _drop(self, d: int) -> dict | None:
        """Forget what we cached of directory d, its entries' nodes and attributes, and its
        parent's rows (they carry d's attributes); returns d's old listing."""
        nodes, attrs, rows, inos = self.nodes, self.attr_cache, self.rows_cache, self.inos
        entries = self.listings.pop(d, None)
        self.mending.pop(d, None)
        nodes.pop(d, None)
        attrs.pop(d, None)
        rows.pop(d, None)
        path = self.paths[d]
        if path:
            rows.pop(inos.get(path.rpartition("/")[0]), None)
        prefix = f"{path}/" if path else ""
        for name in self.served.get(d, ()):
            c = inos.get(prefix + name)
            nodes.pop(c, None)
            attrs.pop(c, None)
            rows.pop(c, None)
        return entries

    def _compare(self, targets: list[int], old: dict) -> None:
        """Re-list each target the kernel was shown; queue the invalidation of what it
        cached that no longer stands. A target that went away brings its parent in
        (whose listing then lacks it), so a removed subtree is always forgotten."""
        gone: list[str] = []
        work, seen = list(targets), set(targets)
        for d in work:   # grows as parents come in
            served, before = self.served.get(d), old.get(d)
            if served is None and before is None:
                continue   # the kernel knows nothing that came from its listing
            try:
                entries = self.listing(d)
            except pyfuse3.FUSEError:
                path = self.paths.get(d)
                if path:
                    p = self.inos.get(path.rpartition("/")[0])
                    if p is not None and p not in seen:
                        seen.add(p)
                        old[p] = self._drop(p)
                        work.append(p)
                continue
            retyped = False
            if served:
                stale = [(name, node) for name, node in served.items() if not _same(node, entries.get(name))]
                for name, node in stale:
                    del served[name]
                    self.pending.append((d, os.fsencode(name)))
                    new = entries.get(name)
                    if new is None:
                        gone.append(self._join(d, name))
                    elif isinstance(node, Link):
                        # a new target at the same path keeps the inode number, and the kernel
                        # its cached target (FUSE_CAP_CACHE_SYMLINKS) when only the entry goes
                        self.pending_pages.add(self.inos[self._join(d, name)])
                    retyped = retyped or type(new) is not type(node)
            if retyped or before is None or before.keys() != entries.keys():   # (None: a listing dropped unseen)
                self.pending_attrs.add(d)   # nlink and tmpfs sizes
                self.pending_pages.add(d)   # the listing the kernel cached (FOPEN_CACHE_DIR), d_type
        if gone:
            self.forget_paths(gone)

    def _join(self, dino: int, name: str) -> str:
        path = self.paths[dino]
        return f"{path}/{name}" if path else name

    def forget_paths(self, paths: list[str]) -> None:
        """Drop the inode numbers of removed subtrees and all we cached of them, walking
        what the kernel was served (numbers are never reused: a path that comes back
        gets a new one). After a walk the kernel holds ~8 inodes per VF: this runs over
        each of them, so it keeps to a few dict operations per inode."""
        inos, served = self.inos, self.served
        gone: list[int] = []
        add = gone.append
        stack = list(paths)
        while stack:
            path = stack.pop()
            ino = inos.pop(path, None)
            if ino is None:
                continue
            add(ino)
            below = served.pop(ino, None)
            if below:
                prefix = path + "/"
                stack += [prefix + name for name in below]
        orphaned = self._orphan()
        # each cache by inode, in one pass of C over the removed (no bytecode per inode and cache)
        for cache in (self.paths, self.nodes, self.attr_cache, self.listings, self.rows_cache,
                      self.overrides, self.mending):
            if cache:
                _drain(map(cache.pop, gone, _NONES))
        if self.pages is not None:
            self.pages.forget(gone)
            if orphaned:
                # files open there keep their inode in the kernel, and its pages: they go, so
                # that the next read asks (and fails, as a removed kernfs file's does)
                self.pending_pages.update(orphaned.intersection(self.pages.open_fh.values()))

    def _orphan(self) -> set[int]:
        """The open files forget_paths is removing (their paths have left self.inos, their
        caches by inode not yet): fstat on them goes on answering what they were (kernfs
        keeps the node's attributes), until the kernel forgets the inode. Looks at the open
        files only, not at every inode removed (a disable after a walk removes ~18,000)."""
        held = {of.ino for of in self.files.values()}
        if self.pages is not None:
            held.update(self.pages.open_fh.values())
        orphaned = set()
        for ino in held:
            path = self.paths.get(ino)
            if path is None or self.inos.get(path) == ino:
                continue   # removed before, or still there
            orphaned.add(ino)
            a = self.attr_cache.get(ino)
            node = self.nodes.get(ino)
            if a is None and node is not None:
                a = self._attrs(ino, node)
            if a is not None:
                self.orphans[ino] = a
        return orphaned

def _same(old, new) -> bool:
    """Whether the kernel's cached entry still stands: a directory stays the same
    directory; a link must keep its target; a device node its numbers; a file its
    kind, mode and size (what the kernel caches of it: its contents come from
    whatever object the entry names now, looked up afresh at each open)."""
    if new is None or type(old) is not type(new):
        return False
    if isinstance(old, Dir):
        return old.mode == new.mode
    if isinstance(old, Bound):
        if type(old.decl) is not type(new.decl) or old.mode != new.mode:
            return False
        if not old.binary:
            return True
        try:
            return old.size == new.size
        except Exception:   # noqa: BLE001 - a size that cannot be told is not the same
            return False
    return old == new
