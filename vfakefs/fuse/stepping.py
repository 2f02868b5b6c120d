"""Stores carried out in steps (model sriov.Stepwise: an SR-IOV enable of thousands of VFs),
driven by the FUSE write that made them: a slice of steps, then every other request waiting
runs, so that `ls virtfn*` sees the VFs appear while the writer's write(2) waits for all.

Publishing a change costs a notification of the Machine's listeners, a look at what the
change named (sysfs/dirty.py) and a delivery of invalidations through a thread, so the steps
hold a Machine.batch open and publish every PUBLISH_EVERY, or at once when a request comes
(SysfsOps calls publish_steps() first), never per step. No engine tick is waited for
between steps.

Writers take turns under contention (write_turn), so that many writers do not starve the
readers of the same loop.
"""
from __future__ import annotations

import errno
import logging
from contextlib import asynccontextmanager

import pyfuse3
import trio

from vfakefs.model import faults

STEP_SLICE = 0.02     # seconds of steps before the other requests have a turn
PUBLISH_EVERY = 0.1   # seconds between two publishes of the steps' changes (a request publishes first)
# Writers take turns, and under contention each waits for the other requests to pause
# QUIET seconds first, at most QUIET_MAX: readers are not starved by a crowd of writers,
# nor writers by a reader that never pauses (bench/walk_under_writes.py, 16 writers: `ls -lR`
# 1.5-2x its idle time, the writers at half their rate alone; with 20 ms, 1-1.3x and a fifth)
QUIET = 0.001
QUIET_MAX = 0.005
log = logging.getLogger("vfakefs")


class Stepping:
    """Mixed into SysfsOps: needs its publish(), wait_done() and batches."""

    _turns = None   # the writers' turnstile (write_turn), made in the loop on first use
    _writers = 0    # writes in progress (stores of a file's attributes)

    @asynccontextmanager
    async def write_turn(self):
        """Around a write: while other writes are in progress, writers pass one at a time
        and each waits, before its store, until every request in the loop has been waiting
        on something (the kernel, a timer) for QUIET, at most QUIET_MAX. A store holds the
        loop for its whole store and publish: without turns, 16 writers' stores ran back to
        back in one pass of the scheduler before the next request of a reader was even read
        (trio runs every runnable task, then looks at /dev/fuse), so `ls -lR` waited ~16
        stores per request. A write with no other in progress passes at once."""
        gate = self._turns
        if gate is None:
            gate = self._turns = trio.Lock()
        self._writers += 1
        try:
            if self._writers > 1 or gate.locked():
                async with gate:
                    from trio.testing import wait_all_tasks_blocked   # (imported on first contention)
                    with trio.move_on_after(QUIET_MAX):
                        await wait_all_tasks_blocked(QUIET)
            yield
        finally:
            self._writers -= 1

    async def drive(self, of, steps) -> None:
        """A store carried out in steps (sriov.Stepwise: an enable of thousands of VFs): after
        each step what changed is published and every request waiting runs (`ls virtfn*`
        sees the VFs appear), with no engine tick between steps. It holds the device's
        lock until done (faults.stepped lets the next writer in). The kernel's store cannot
        be interrupted: it goes to its end; a writer killed while a VF's delayed probe holds
        it is answered EINTR and the rest goes on without it. A reset answers ENODEV."""
        handed = False
        try:
            handed = await self._step_all(steps, of)
        finally:
            if not handed:
                faults.stepped(steps)
        if handed:
            raise pyfuse3.FUSEError(errno.EINTR)
        if steps.lock is not None and steps.lock.errno:
            raise pyfuse3.FUSEError(steps.lock.errno)

    async def _step_all(self, steps, of) -> bool:
        """The steps to the end (or a reset): True when handed to a task of their own.
        Slices of STEP_SLICE, then every request waiting runs. The changes are published
        (the Machine notifies its listeners) every PUBLISH_EVERY, or at once when a request
        comes: meanwhile the steps hold a Machine.batch open."""
        batch = _Batch(steps.m)
        self.batches.add(batch)
        try:
            published = trio.current_time()
            while True:
                end = trio.current_time() + STEP_SLICE
                while not steps.step() and steps.wait is None and trio.current_time() < end:
                    pass
                if steps.done:
                    return False
                wait = steps.wait
                if trio.current_time() - published >= PUBLISH_EVERY:
                    batch.flush()
                    published = trio.current_time()
                if wait is not None and not wait.done:
                    batch.close()           # the engine's changes publish as usual meanwhile
                    try:
                        if await self._pause(wait, steps, of):
                            return True
                    finally:
                        batch.open()
                await trio.sleep(0)
                if steps.lock is not None and steps.lock.done:
                    return False             # the machine was reset meanwhile
        finally:
            self.batches.discard(batch)
            batch.close()

    async def _pause(self, wait, steps, of) -> bool:
        """An add rule's pause: True when the writer was killed meanwhile (the rest of the
        steps then goes on in a task of its own)."""
        if await self.wait_done(wait, None if of is None else of.pid):
            return False
        trio.lowlevel.spawn_system_task(self._step_rest, steps)
        return True

    def publish_steps(self) -> None:
        """Publish what the stores in steps changed so far (their batches closed and opened
        again: the Machine notifies), before a request sees the tree."""
        for b in list(self.batches):
            b.close()
        for b in list(self.batches):
            b.open()

    async def _step_rest(self, steps) -> None:
        try:
            await self._step_all(steps, None)
        except Exception:   # a system task's exception would end the whole trio run
            log.exception("carrying out a store in steps")
        finally:
            faults.stepped(steps)
            self.publish()


class _Batch:
    """A Machine.batch() held open across the pauses of a store carried out in steps."""

    def __init__(self, m):
        self.m, self.cm = m, None
        self.open()

    def open(self) -> None:
        if self.cm is None:
            self.cm = self.m.batch()
            self.cm.__enter__()

    def close(self) -> None:
        cm, self.cm = self.cm, None
        if cm is not None:
            cm.__exit__(None, None, None)

    def flush(self) -> None:
        self.close()
        self.open()
