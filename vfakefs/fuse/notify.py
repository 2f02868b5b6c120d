"""Telling the kernel what changed: the FUSE notifications, from a worker thread.

The kernel takes the parent directory's lock to drop an entry, and a lookup that holds it
waits for this process to answer: so the notifications go from a thread while the loop can
serve. Each notification that drops a directory evicts the inodes the kernel held below it,
and each eviction queues a FORGET for this process; a loop that serves while the thread
notifies reads them one notification at a time, and hands the GIL to and fro with the
thread for each (after `lspci` walked 2,048 VFs, their disable sent ~1,000 FORGETs and the
thread waited as long as it worked). So the loop first waits for the thread without serving,
as long as the thread makes progress: the kernel then hands the FORGETs over in a few
batches. A notification the kernel holds behind a request waiting for us (a lookup in the
same directory) makes no progress: after PATIENCE the loop serves again, and waits as
trio.to_thread does; HOLD_MAX bounds how long readers wait for a long batch. Only a batch
of HOLD_MIN notifications or more is waited for so: a few (a write of 4 VFs) cost a few
FORGETs, whereas a walker's lookups under many such writers would keep meeting them
(bench/walk_under_writes.py, 16 writers: `ls -lR` 3x slower with every batch held).

With the patched pyfuse3 an entry is only marked stale (invalidate_entry below): the
kernel drops it, and evicts what it held below, when it next looks it up, so a disable's
notifications queue no FORGETs at all; the above holds for inodes and for stock pyfuse3.
"""
from __future__ import annotations

import logging
import threading
import time

import pyfuse3
import trio

from vfakefs.fuse.pagecache import ROUNDS

log = logging.getLogger("vfakefs")

RETRIES, RETRY_PAUSE = 50, 0.001   # a notification the kernel could not take at once (notify)
PATIENCE = 0.002   # seconds without a notification done before the loop serves again
HOLD_MAX = 0.1     # seconds at most that the loop waits for the thread without serving
HOLD_MIN = 64      # notifications in a batch for the loop to wait for it so


async def in_thread(fn, *args, hold: bool = True):
    """fn(progress, *args) in a worker thread (progress: a list it appends to as it goes), the
    loop waiting for it without serving while it makes progress (the module's doc; hold:
    only then), then serving. Not cancellable, as trio.to_thread.run_sync."""
    if not hold:
        return await trio.to_thread.run_sync(fn, [], *args)
    done = threading.Event()
    progress: list = []
    box: list = []
    token = trio.lowlevel.current_trio_token()
    woke = trio.Event()

    def finished(outcome) -> None:   # in the thread
        box.append(outcome)
        done.set()
        try:
            token.run_sync_soon(woke.set)
        except trio.RunFinishedError:
            pass

    trio.lowlevel.start_thread_soon(lambda: fn(progress, *args), finished)
    end = time.monotonic() + HOLD_MAX
    seen = -1
    while len(progress) != seen and time.monotonic() < end:
        seen = len(progress)
        if done.wait(PATIENCE):
            break
    if not done.is_set():
        with trio.CancelScope(shield=True):
            await woke.wait()
    return box[0].unwrap()


class Delivery:
    """Mixed into InodeTable: delivers its queued invalidations (pending: (dir ino, name)
    entries; pending_attrs, pending_pages: inodes) and, in cached mode, drops the pages
    of changed files (pages, a PageCache)."""

    def deliver_soon(self) -> None:
        """Deliver queued invalidations from a task of their own, for changes no request
        waits on (the engine's); a write delivers its own before it is answered. Until
        they are told, opens wait (untold): whoever saw the change through a file (the
        hotplug control) must not find the old entries in the kernel's cache next, as on
        the kernel, where the files go with the change."""
        if self.delivering:
            return
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            return   # no trio loop (a view test): nothing to deliver to
        self.delivering = True
        self.untold = trio.Event()   # set by this task (deliver() waits for any before it)
        trio.lowlevel.spawn_system_task(self._deliver_task)

    async def _deliver_task(self) -> None:
        self.delivering = False
        told = self.untold
        try:
            await self.deliver()
        except Exception:   # a system task's exception would end the whole trio run
            log.exception("delivering invalidations")
        finally:
            if self.untold is told:
                self.untold = None
            told.set()

    async def deliver(self) -> None:
        """Tell the kernel every invalidation queued so far, and return once it has taken
        them all (a later call waits for an earlier one still sending). The kernel takes
        the parent directory's lock to drop an entry, and a lookup that holds it waits for
        this process: so the notifications go from a thread while the loop serves on."""
        async with self.deliver_lock:
            if not (self.pending or self.pending_attrs or self.pending_pages):
                return
            entries, attrs, pages = self.pending, self.pending_attrs, self.pending_pages
            self.pending, self.pending_attrs, self.pending_pages = [], set(), set()
            self.sending = pages
            try:
                await in_thread(notify, entries, attrs, pages,
                                hold=len(entries) + len(attrs) + len(pages) >= HOLD_MIN)
            finally:
                self.sending = set()

    def settled(self, ino: int) -> bool:
        """Whether the kernel's cached pages of ino (a listing) are known current: no
        invalidation of them queued or on its way."""
        return ino not in self.pending_pages and ino not in self.sending

    async def invalidate_pages(self, inos) -> None:
        """Drop the kernel's pages and attributes of these files (cached mode), and return once
        it has, the new values told. Again for those the kernel asked for while the
        notification was out: it was told the old value then, and may have cached it."""
        inos = list(inos)
        for _ in range(ROUNDS - 1):
            before = [self.pages.asked.get(ino) for ino in inos]
            self.pending_pages.update(inos)
            await self.deliver()
            asked = [ino for ino, n in zip(inos, before) if self.pages.asked.get(ino) != n]
            self.pages.dropped(set(inos) - set(asked))   # at once, before any other request is served
            inos = asked
            if not inos:
                return
        # readers kept asking: the new value is told first, then everything cached is dropped,
        # so nothing older survives the write (a read overlapping it may be torn: pagecache.py)
        self.pages.dropped(inos)
        self.pending_pages.update(inos)
        await self.deliver()


_expire = [True]   # whether this pyfuse3 can send FUSE_EXPIRE_ONLY (the patched build)


def invalidate_entry(dino: int, name: bytes) -> None:
    """The kernel marks the entry stale and looks it up again at its next use, keeping
    what it cached below until then (FUSE_EXPIRE_ONLY: patches/), instead of dropping the
    entry and every inode below it while the writer waits: after `lspci` walked 2,048 VFs
    their disable dropped ~40,000 inodes, half the write's time. Stock pyfuse3 drops."""
    if _expire[0]:
        try:
            return pyfuse3.invalidate_entry(dino, name, expire=True)
        except TypeError:   # stock pyfuse3: no expire
            _expire[0] = False
    pyfuse3.invalidate_entry(dino, name)


def notify(progress: list, entries: list[tuple[int, bytes]], attrs: set[int], pages: set[int] = frozenset()) -> None:
    """In a worker thread: the FUSE notifications, each blocking until the kernel has
    applied it (progress grows by one after each). ENOENT: the kernel had already
    dropped the entry or inode."""
    for dino, name in entries:
        progress.append(None)
        for _ in range(RETRIES):
            try:
                invalidate_entry(dino, name)
            except FileNotFoundError:
                break
            except OSError as e:
                # EINVAL: the entry is between states in the kernel at this moment (a lookup
                # of the same name under way); ask again shortly, never drop the rest
                log.debug("invalidating entry %s %r: %s", dino, name, e)
                time.sleep(RETRY_PAUSE)
            else:
                break
    for ino in attrs | pages:
        progress.append(None)
        try:
            # pages of links (their cached target), directories (their cached listing) and
            # cached mode's read-only files: nobody holds those pages across a request,
            # whereas a file's writer holds its page lock (a full invalidation from there
            # deadlocks: DESIGN.md)
            pyfuse3.invalidate_inode(ino, attr_only=ino not in pages)
        except OSError:
            pass
