"""The daemon's side of `vfakefs run`'s network namespace (netns.py): a task per program
that keeps its namespace showing the machine's netdevs, and brings the program's own
changes to its links (up/down, MTU) back into the machine."""
from __future__ import annotations

import logging

import trio

from vfakefs.model.errors import SysfsError
from vfakefs.syscall.netns import IFF_UP, NetNamespace, desired

log = logging.getLogger("vfakefs")


class NetMirror:
    """One program's namespace, following the machine: each change (structural, or a
    netdev's own) wakes the task, which applies the machine's state as it is then.
    settled() waits until what changed before it is applied: a write to the mount
    answers after it (sysfs's rule: the writer's next system call sees the change; the
    kernel registers a VF's netdev before `echo 4 > sriov_numvfs` returns)."""

    def __init__(self, host, pid: int):
        self.host = host
        self.ns = NetNamespace(pid)
        self._busy = False                   # an update runs in a worker thread
        self._idle = trio.Event()
        self._wake = trio.Event()
        self._scope = trio.CancelScope()     # stop() may cancel it before follow() enters it
        self._attached = False
        self._asked = self._done = 0         # changes seen, changes applied
        self._applied = trio.Event()
        self._shown: dict | None = None      # the last state applied

    def _poke(self, *_args) -> None:
        self._asked += 1
        self._wake.set()

    async def fill(self) -> None:
        """The namespace as the machine is now, before the program runs; then it follows."""
        self.host.subscribe(self._poke)
        self.host.subscribe_net(self._poke)
        self._attached = True
        want = desired(self.host.machine)
        await trio.to_thread.run_sync(self.ns.apply, want)
        self._shown = want

    async def follow(self) -> None:
        """Until stop(): an update in progress finishes first (a worker thread is never
        abandoned with the namespace half done or its files closed under it)."""
        if self._shown is None:
            self._wake.set()                 # fill() failed: try again
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    if self.ns.events is not None:
                        nursery.start_soon(self._watch)
                    await self._updates()
        finally:
            self._unsubscribe()
            with trio.CancelScope(shield=True):      # a worker thread: it may take a while
                await trio.to_thread.run_sync(self.ns.close)

    async def _updates(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            asked = self._asked
            want = desired(self.host.machine)
            if want != self._shown:         # most changes are not the netdevs' (a bind of a GPU)
                self._shown = None
                self._busy = True
                try:
                    await trio.to_thread.run_sync(self.ns.apply, want)
                    self._shown = want
                except Exception:      # noqa: BLE001 - logged; the next change tries again
                    log.exception("network namespace update")
                finally:
                    self._busy = False
                    self._idle.set()
                    self._idle = trio.Event()
            self._done = asked
            self._applied.set()
            self._applied = trio.Event()

    async def _watch(self) -> None:
        """The program's own changes to the links (`ip link set eth0 down`, `... mtu 9000`),
        as soon as they are made (and before any file of the mount is opened: take_events)."""
        while True:
            await trio.lowlevel.wait_readable(self.ns.events.fileno())
            if self._busy:
                await self._idle.wait()      # the update reads (and drops) its own notifications
            else:
                self.take_events()

    def take_events(self) -> bool:
        """What the program did to its links, made the machine's: the kernel's dev_change_flags
        (ndo_open/ndo_stop) and dev_set_mtu on the simulated netdev. What the simulated
        driver refuses (an MTU outside its range) the next update sets back."""
        if self._busy or self.ns.events is None:
            return False
        seen = self.ns.observe()
        if not seen:
            return False
        self._shown = None                   # the namespace is not what was applied: compare again
        by_index = {nd.ifindex: nd for nd in self.host.machine.netdevs.values()}
        for i, up, mtu in seen:
            nd = by_index.get(i)
            if nd is None:
                continue
            if up is not None and up != nd.running:
                nd.set_flags(nd.flags | IFF_UP if up else nd.flags & ~IFF_UP, None)
            if mtu is not None and mtu != nd.mtu:
                try:
                    nd.set_mtu(mtu)
                except SysfsError:
                    pass
        self._poke()
        return True

    async def settled(self) -> None:
        asked = self._asked
        while self._done < asked and self._attached:
            await self._applied.wait()

    def stop(self) -> None:
        self._scope.cancel()

    def _unsubscribe(self) -> None:
        if self._attached:
            self.host.unsubscribe(self._poke)
            self.host.unsubscribe_net(self._poke)
            self._attached = False
        self._applied.set()                  # nobody waits for a namespace that is gone

    def detach(self) -> None:
        """For a mirror whose follow() never ran."""
        self._unsubscribe()
        self.ns.close()
