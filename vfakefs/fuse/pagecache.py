"""Cached mode (`vfakefs mount --cache`): attributes read through the kernel's page cache.

Strict mode (the default) serves every attribute direct_io and reports sysfs's 4096 in
stat, so every read reaches show(). Cached mode reports an attribute's content length as
st_size and opens it keep_cache for reading: a read of an unchanged value is answered
from the kernel's page cache, one OPEN and one RELEASE per read (DESIGN.md, "Performance
notes": a cached file must report its true length, or each GETATTR drops its pages).

`told[ino]` is what the kernel may hold of an inode: the content whose length it was
told and the content a READ of it is answered with. The kernel is told of a change
- at open, exactly: show() runs at every open, as in strict mode; if it differs from
  what the kernel may hold, that open is served direct_io (the value now) and the
  kernel's copy is dropped from a task of its own, so an open never reads a value
  older than the last change;
- after a write, before it is answered: files open now whose value moved have their
  pages and attributes dropped from the notify thread, and only then is the new value
  told (a reader that keeps its fd and reads offset 0 again). The kernel may ask for
  the old value while the notification is out (it is still told the old one then, whole):
  then it is dropped again, up to ROUNDS times, the last time with the new value told
  first (nothing older survives the write; a read overlapping it may be torn);
- after any change, in the background: every other inode the kernel was shown is checked
  in chunks between requests and invalidated the same way when its value moved (stat).
Only read-only attributes are cached. A writable one stays direct_io with sysfs's 4096, as
in strict mode: the kernel keeps its own size of a file being written (O_TRUNC sets it to
0 at open, a write to the written length) while the write is out, so a reader of the page
cache beside a writer would get a torn value. So do values that move by themselves
(Attr.volatile: a clock) and files with no fixed size (procfs, debugfs: size 0). The
files a write changes besides its own are invalidated from the notify thread: the
writer holds no page lock of theirs (DESIGN.md: never the written inode's pages inside
its own write handler).

What cached mode cannot promise: a read that overlaps a change of the same attribute may
get the new bytes cut to the length the kernel still held, or the old ones padded with
NULs (the kernel applies one of several concurrent GETATTR answers and cuts the page to
it); about 1-3% of reads in tests/mount/test_cache.py's contention test, none without a
concurrent change. A reader that saw a new value while its write was still out may see
the old one once more before the write is answered. Strict mode does neither.
"""
from __future__ import annotations

import logging
import time

import pyfuse3
import trio

from vfakefs.sysfs.nodes import Attr, BinAttr, Bound

log = logging.getLogger("vfakefs")

CHUNK = 256          # inodes checked between two yields to the request handlers
ROUNDS = 4           # invalidations of one change while readers keep asking for the old value


def cacheable(node) -> bool:
    """Read-only text attributes of a fixed size limit, and binary files that say so (config:
    for root only, as others read less of it)."""
    if not isinstance(node, Bound):
        return False
    d = node.decl
    if type(d) is BinAttr:
        return d.cacheable
    return type(d) is Attr and cacheable_attr(d)


def cacheable_attr(d: Attr) -> bool:
    """A text attribute the page cache may keep: shown, never stored, not volatile, and of
    a fixed size limit (ops.open's short path asks this of the Attrs it opens)."""
    return d.show is not None and d.store is None and not d.volatile and not callable(d.size) and d.size > 0


def current(node: Bound) -> bytes | None:
    """The content a read would get now (root's, for a binary file), or None when show()
    fails (read answers the errno: such a file is served direct_io)."""
    try:
        if node.binary:
            return node.decl.read(node.obj, 0, node.size, True)
        return node.decl.show(node.obj).encode("latin-1")
    except Exception:   # noqa: BLE001 - a failing show is served as strict mode serves it
        return None


class PageCache:
    def __init__(self, node_of, invalidate):
        self.node_of = node_of                  # InodeTable.node: ino -> the node there now
        self.invalidate = invalidate            # async (inos): drop them from the kernel, tell anew
        self.told: dict[int, bytes] = {}
        self.mtime: dict[int, int] = {}         # a new st_mtime_ns at each change told
        self.open_fh: dict[int, int] = {}       # fh -> ino of the cacheable files open now
        self.paged: set[int] = set()            # those of them read through the page cache
        self.sweeping = False
        self.again = False
        self.asked: dict[int, int] = {}         # ino -> how many times the kernel was told it
        self.stale: set[int] = set()            # seen moved at an open: for the next sweep

    # --- what stat, READDIRPLUS and READ say ------------------------------------------------
    def fix(self, ino: int, node, a: pyfuse3.EntryAttributes) -> None:
        """st_size and st_mtime of a cacheable attribute, as the kernel may hold it."""
        self.asked[ino] = self.asked.get(ino, 0) + 1
        content = self.told.get(ino)
        if content is None:
            content = current(node)   # first shown: no pages of it exist yet
            if content is None:
                a.st_size, a.attr_timeout = 0, 0   # show() fails: ask again
                return
            self.told[ino] = content
        a.st_size = len(content)
        t = self.mtime.get(ino)
        if t is not None:
            a.st_mtime_ns = a.st_ctime_ns = t

    def content(self, fh: int) -> bytes | None:
        """What a READ fills the kernel's pages with, for a file read through them (else None)."""
        if fh not in self.paged:
            return None
        ino = self.open_fh[fh]
        self.asked[ino] = self.asked.get(ino, 0) + 1
        return self.told.get(ino)

    # --- open and release ---------------------------------------------------------------------
    def open(self, fh: int, ino: int, content: bytes) -> bool:
        """Whether this read-only open may read through the page cache: only while the kernel
        holds the value now. Else this open is served direct_io (the value now, whole),
        and the kernel's copy is dropped and the new value told from a task of its own."""
        self.open_fh[fh] = ino
        if self.told.get(ino) == content:
            self.paged.add(fh)
            return True
        self.stale.add(ino)
        self.sweep_soon()
        return False

    def release(self, fh: int) -> None:
        self.open_fh.pop(fh, None)
        self.paged.discard(fh)

    def _tell(self, ino: int, content: bytes) -> None:
        self.asked[ino] = self.asked.get(ino, 0) + 1
        self.told[ino] = content
        self.mtime[ino] = time.time_ns()

    # --- after a change ----------------------------------------------------------------------------
    def moved(self, inos) -> list[int]:
        """Those of inos whose value is no longer what the kernel was told."""
        out = []
        for ino in inos:
            old = self.told.get(ino)
            if old is None:
                continue          # never shown: nothing of it is cached
            try:
                node = self.node_of(ino)
            except pyfuse3.FUSEError:
                continue          # gone: forget() follows
            if cacheable(node) and current(node) != old:
                out.append(ino)
        return out

    def changed_open(self) -> list[int]:
        """After a write: the cached inodes open now whose value moved (the written file is
        not one of them: writable attributes are not cached)."""
        return self.moved(set(self.open_fh.values()))

    def dropped(self, inos) -> None:
        """The kernel has dropped these inodes' pages and attributes: what it reads next is the
        value now."""
        for ino in inos:
            try:
                node = self.node_of(ino)
            except pyfuse3.FUSEError:
                continue
            content = current(node) if cacheable(node) else None
            if content is None:
                self.told.pop(ino, None)
            else:
                self._tell(ino, content)

    def forget(self, inos) -> None:
        for ino in inos:
            self.told.pop(ino, None)
            self.mtime.pop(ino, None)
            self.asked.pop(ino, None)

    def sweep_soon(self) -> None:
        """Check every inode the kernel was shown, from a task of its own. One sweep at a
        time: a change during a sweep brings another after it."""
        if self.sweeping:
            self.again = True
            return
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            return
        self.sweeping = True
        trio.lowlevel.spawn_system_task(self._sweep)

    async def _sweep(self) -> None:
        try:
            while True:
                self.again = False
                stale, self.stale = self.stale, set()
                moved = list(stale)
                inos = [ino for ino in self.told if ino not in stale]
                for i in range(0, len(inos), CHUNK):
                    moved += self.moved(inos[i:i + CHUNK])
                    await trio.lowlevel.checkpoint()
                if moved:
                    await self.invalidate(moved)
                if not self.again:
                    return
        except Exception:   # a system task's exception would end the whole trio run
            log.exception("revalidating cached attributes")
        finally:
            self.sweeping = False
