"""The simulated computer a mount serves: its topology and the Machine booted from it.

A reset is a power cycle: a fresh Machine booted from the same topology replaces
the old one whole. Whoever serves the machine (the sysfs view, the FUSE layer,
the engine) holds the Host and asks it for `.machine` each time, so nothing keeps
a dead Machine; the change listeners move to the new Machine and the kernel log
goes on (a reset is not a reboot of the reader's dmesg).
"""
from __future__ import annotations

from vfakefs.model import bringup, faults
from vfakefs.model.machine import Machine


class Host:
    def __init__(self, machine: Machine):
        self.machine = machine
        self.scenario = None    # the daemon's timeline runner (fuse/timeline.py): the scenario control
        self.requests: dict[str, int] = {}   # FUSE requests served per opcode since the mount (fuse/ops.py)

    @property
    def topology(self):
        return self.machine.topology

    def subscribe(self, fn) -> None:
        """fn() after every structural change, of this Machine and of those after a reset."""
        self.machine.subscribe(fn)

    def unsubscribe(self, fn) -> None:
        self.machine.unsubscribe(fn)

    def subscribe_net(self, fn) -> None:
        """fn(netdev) when a netdev's own state changes (mtu, flags, carrier), of this
        Machine and of those after a reset (a reset itself is a structural change)."""
        self.machine.net_listeners.append(fn)

    def unsubscribe_net(self, fn) -> None:
        if fn in self.machine.net_listeners:
            self.machine.net_listeners.remove(fn)

    def reset(self) -> None:
        old = self.machine
        new = bringup.boot(old.topology)
        new.kmsg = old.kmsg                     # the log goes on; the fresh boot's lines stay out of it
        new.uevents = old.uevents               # so do SEQNUM and its listeners
        new.generation = old.generation         # generations only grow: every cached listing is stale
        new._listeners = old._listeners
        new.net_listeners = old.net_listeners
        self.machine = new
        faults.abandon(old)                     # writes the old machine held get their answer
        new.kmsg.log("vfakefs: machine reset to its topology")
        new.changed()
