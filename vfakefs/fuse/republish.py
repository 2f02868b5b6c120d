"""Keeping the kernel's caches of the inodes true after a structural change.

The directories the change may have altered (as the view tells from what the Machine
says changed) are re-listed, the names the kernel has cached there are compared with
the new listing, and what vanished or changed is queued for invalidation (notify.py
delivers it), so the next syscall sees it. The caches of every other directory stay.
"""
from __future__ import annotations

import collections
import itertools
import os

import pyfuse3

from vfakefs.sysfs.dirty import NOTHING
from vfakefs.sysfs.nodes import Bound, Dir, Link

_NONES = itertools.repeat(None)   # (forget_paths: pop(ino, None) for each)
_drain = collections.deque(maxlen=0).extend   # runs an iterator to its end, keeping nothing


class Republish:
    """Mixed into InodeTable: needs its caches (listings, nodes, attr_cache, rows_cache,
    served, mending, overrides, orphans, files, pages), listing(), _attrs(), and
    Delivery's queues (pending, pending_attrs, pending_pages, deliver_soon)."""

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
        # ino -> the open file's own node (a change before may have dropped ours)
        held = dict.fromkeys(self.pages.open_fh.values()) if self.pages is not None else {}
        held.update((of.ino, of.node) for of in self.files.values())
        orphaned = set()
        for ino, node in held.items():
            path = self.paths.get(ino)
            if path is None or self.inos.get(path) == ino:
                continue   # removed before, or still there
            orphaned.add(ino)
            a = self.attr_cache.get(ino)
            node = self.nodes.get(ino) or node
            if a is None and node is not None:
                try:
                    a = self._attrs(ino, node)
                except pyfuse3.FUSEError:
                    continue   # its size cannot be told now: fstat asks the kernel's copy
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
