"""Misbehaving hardware on cue: the `faults` control's rules and where they act.

A rule is one line, so a timeline step can write it as it is:

    <bdf> <point> fail=<ERRNO> [times=<N>|always]
    <bdf> <point> delay=<seconds> [times=<N>|always]
    <bdf> <point> delay=<seconds> fail=<ERRNO> [times=...]    held, then refused
    clear

point is a writable file of the device (sriov_numvfs, reset, remove, driver_override,
...; `bind`, `unbind` and `drivers_probe` for the writes that name the device), or
`probe` (the driver core's probe of the device, whichever path starts it) or `netdev`
(its driver's register_netdev; delay= only) or `add` (a VF's pci_iov_add_virtfn;
delay= only: an SR-IOV enable written through the mount waits that long before adding
it, the VFs before it already in sysfs, sriov_numvfs still the old count). times: how
many hits the rule answers (default 1). The first rule of a point with hits left answers; a used rule stays listed
with its hit count until `clear` (a reset starts a machine without rules).

A store rule acts on the write before the store parses it: fail= refuses it with that
errno, a kernel-log line (`vfakefs: faults: <bdf> <file>: failed with error -N`) and
nothing changed; delay= holds the writer's write(2) for that much simulated
time (Machine.clock, which the engine advances), then the store runs. Meanwhile the
device is busy as under the kernel's device_lock: a write to a store that takes the
lock (LOCKED_STORES) waits behind it, every other file stays readable and writable,
and readers see the state before the store (sriov_numvfs shows the old count until
the enable is done, as 6.12's sriov_numvfs_show, which takes no lock).

A probe rule acts in the driver core: fail= fails the probe as really_probe() reports
it, and a bind write answers that errno (device_driver_attach), drivers_probe does not
(device_attach tries the next driver); delay= holds a bind or drivers_probe write, and
makes a probe the kernel starts itself (a new VF, a rescan, new_id) happen later: the
device shows no driver until then (a deferred probe, EPROBE_DEFER, is not retried). A
netdev rule registers the netdev later.

The control that writes and lists the rules is fault_control.py. The model never
awaits: a held store is a Held the FUSE write waits on, finished by the delayed work
the engine runs; a reset answers the old machine's held writes ENODEV.
"""
from __future__ import annotations

import errno
from collections import deque
from dataclasses import dataclass, field

from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_WARNING
from vfakefs.model.pci.bdf import Bdf

EPROBE_DEFER = 517           # include/linux/errno.h: kernel-internal, never reaches a user
DRIVER_CORE_POINTS = ("probe", "netdev", "add")
# the stores that name their device in the written text (bus.c bind_store, unbind_store,
# drivers_probe_store) rather than being one of its files
NAMING_STORES = ("bind", "unbind", "drivers_probe")
# stores that run under device_lock(): a second writer waits for the first
# (sriov_numvfs_store, bind_store/unbind_store via device_driver_attach/device_release_driver,
# drivers_probe via device_attach, driver_set_override, pci-sysfs enable_store, reset_store
# via pci_reset_function, remove via pci_stop_and_remove_bus_device_locked's release)
LOCKED_STORES = frozenset({"sriov_numvfs", "bind", "unbind", "drivers_probe", "driver_override",
                           "enable", "reset", "remove"})
# the stores a probe rule's delay holds: they probe synchronously
PROBING_STORES = ("bind", "drivers_probe")


@dataclass
class Rule:
    bdf: Bdf
    point: str
    delay: float = 0.0
    fail: int = 0
    times: int | None = 1        # None: always
    hits: int = 0

    @property
    def left(self) -> bool:
        return self.times is None or self.hits < self.times

    def __str__(self) -> str:
        words = [str(self.bdf), self.point]
        if self.delay:
            words.append(f"delay={self.delay:.15g}")
        if self.fail:
            words.append(f"fail={errno_name(self.fail)}")
        words.append("times=always" if self.times is None else f"times={self.times}")
        words.append(f"hits={self.hits}")
        return " ".join(words)


class Held:
    """A write the simulated device is still busy with: the writer's write(2) waits
    until done, then answers errno (0: the store's count)."""

    def __init__(self, bdf: Bdf):
        self.bdf = bdf
        self.done = False
        self.errno = 0
        self._wake: list = []

    def on_done(self, fn) -> None:
        """fn() once the write is answered (at once when it already is)."""
        if self.done:
            fn()
        else:
            self._wake.append(fn)

    def finish(self, err: int = 0) -> None:
        if self.done:
            return
        self.done, self.errno = True, err
        wake, self._wake = self._wake, []
        for fn in wake:
            fn()


@dataclass
class FaultTable:
    """The Machine's rules, its busy devices (the write holding each device's lock,
    then those waiting for it) and the rules an operation in progress already hit."""
    rules: list[Rule] = field(default_factory=list)
    busy: dict = field(default_factory=dict)         # Bdf -> deque[(Held, attempt)]
    current: dict = field(default_factory=dict)      # (Bdf, point) -> Rule being carried out
    pausing: dict = field(default_factory=dict)      # id(Held) -> an add rule's pause in an SR-IOV enable

    def __bool__(self) -> bool:
        return bool(self.rules or self.busy)

    def hit(self, bdf: Bdf, point: str, want=None) -> Rule | None:
        """The first rule of (bdf, point) with hits left (and that want(rule) accepts),
        counted as hit."""
        for r in self.rules:
            if r.bdf == bdf and r.point == point and r.left and (want is None or want(r)):
                r.hits += 1
                return r
        return None

    def held(self) -> list[Held]:
        return [h for q in self.busy.values() for h, _ in q]


def errno_name(n: int) -> str:
    return "EPROBE_DEFER" if n == EPROBE_DEFER else errno.errorcode.get(n, str(n))


# --- stores ----------------------------------------------------------------------------------
def store(obj, name: str, text: str, run):
    """A write of text to the file `name` of obj: run() is the store. Returns None when
    it ran (or raises its SysfsError), or a Held the writer waits on."""
    m = obj if isinstance(getattr(obj, "faults", None), FaultTable) else getattr(obj, "machine", None)
    if m is None:
        return run()
    if not m.faults:
        r = run()
        return r if r is None else _stepping(m, _target(m, obj, name, text), name, r)
    dev = _target(m, obj, name, text)
    if dev is None:
        return run()
    bdf = dev.bdf
    locked = name in LOCKED_STORES
    queue = m.faults.busy.get(bdf) if locked else None
    if queue:                                   # the device is busy: wait for its lock
        held = Held(bdf)
        queue.append((held, lambda: _attempt(m, dev, name, run, held)))
        return held
    return _attempt(m, dev, name, run, None, locked)


def _target(m, obj, name: str, text: str):
    """The device a store acts on: the attribute's own, or the one a bus or driver
    store names (a device of that name, as bus_find_device_by_name finds it)."""
    if name in NAMING_STORES:
        return m.lookup(text[:-1] if text.endswith("\n") else text)
    bdf = getattr(obj, "bdf", None)
    return obj if isinstance(bdf, Bdf) and m.by_bdf.get(bdf) is obj else None


def _attempt(m, dev, name: str, run, held: Held | None, locked: bool = True):
    """The write's turn (it holds the device's lock, if the store takes one): its rule
    refuses it, holds it, or lets it run."""
    t = m.faults
    bdf = dev.bdf
    rule = t.hit(bdf, name)
    probe_rule = None
    if rule is None and name in PROBING_STORES:
        probe_rule = t.hit(bdf, "probe", lambda r: r.delay > 0)
    delay = rule.delay if rule else probe_rule.delay if probe_rule else 0.0

    def finish():
        err = 0
        if rule is not None and rule.fail:
            m.kmsg.log(f"vfakefs: faults: {bdf} {name}: failed with error -{rule.fail}", KERN_WARNING)
            err = rule.fail
        elif m.by_bdf.get(bdf) is not dev:
            err = errno.ENODEV               # the device went while the write was held (kernfs)
        else:
            if probe_rule is not None:
                t.current[(bdf, "probe")] = probe_rule
            try:
                r = run()
                if r is not None:
                    r.finish()               # a store in steps, held or queued: all of it now
            except SysfsError as e:
                err = e.errno
            finally:
                t.current.pop((bdf, "probe"), None)
        return err

    def answer(h: Held) -> None:
        try:
            h.finish(finish())
        except Exception:
            h.finish(errno.EIO)              # a bug: the writer is answered, the engine logs it
            raise

    if not delay:
        if held is None:                     # the writer's own turn, with no delay: at once
            if rule is not None and rule.fail:
                finish()
                raise SysfsError(rule.fail)
            r = run()
            return r if r is None else _stepping(m, dev, name, r)
        answer(held)
        return held
    if held is None:
        held = Held(bdf)
        if locked:
            t.busy[bdf] = deque([(held, None)])

    def due():
        try:
            answer(held)
        finally:
            if locked:
                _unlock(m, bdf, held)
    m.schedule(delay, due)
    return held


def _stepping(m, dev, name: str, r):
    """A store the writer carries out in steps (sriov.Stepwise): it holds the device's
    lock until stepped() is told it is done, so a second writer waits behind it."""
    if r.done:
        return None
    if name in LOCKED_STORES and dev is not None:
        r.lock = Held(dev.bdf)
        m.faults.busy[dev.bdf] = deque([(r.lock, None)])
    return r


def stepped(r, err: int = 0) -> None:
    """The writer is done with r: the next writer waiting for the device takes its turn."""
    if r.lock is not None:
        r.lock.finish(err)
        _unlock(r.m, r.lock.bdf, r.lock)


def _unlock(m, bdf: Bdf, held: Held) -> None:
    """The held write is done: the next writer waiting for the device takes its turn."""
    q = m.faults.busy.get(bdf)
    if not q or q[0][0] is not held:
        return
    q.popleft()
    bug = None
    while q:
        nxt, attempt = q[0]
        try:
            attempt()                  # answers at once, or schedules (then keeps the lock)
        except Exception as e:         # answered EIO; the others still get their turns
            bug = bug or e
        if not nxt.done:
            break
        q.popleft()
    if not q:
        del m.faults.busy[bdf]
    if bug is not None:
        raise bug


def abandon(m) -> None:
    """The machine is replaced (a reset): its held writes are answered ENODEV, as
    kernfs answers a write to a file whose node went away."""
    for h in m.faults.held() + list(m.faults.pausing.values()):
        h.finish(errno.ENODEV)
    m.faults.busy.clear()
    m.faults.pausing.clear()


# --- the driver core -------------------------------------------------------------------------
def probe(m, drv, dev, failed) -> None:
    """A probe rule's fail= in really_probe(): ENODEV and ENXIO reject the match quietly,
    EPROBE_DEFER is answered EAGAIN by a bind (device_driver_attach), anything else is
    failed(m, drv, dev, err): the kernel's warning, and that errno."""
    t = m.faults
    if not t:
        return
    rule = t.current.get((dev.bdf, "probe")) or t.hit(dev.bdf, "probe", lambda r: not r.delay)
    if rule is None or not rule.fail:
        return
    if rule.fail in (errno.ENODEV, errno.ENXIO):
        raise SysfsError(rule.fail)
    if rule.fail == EPROBE_DEFER:
        raise SysfsError(errno.EAGAIN)
    failed(m, drv, dev, rule.fail)


def defer_probe(m, dev, later) -> bool:
    """A probe the kernel starts itself, with a probe rule's delay: later() runs then
    (the asynchronous probe); True when deferred."""
    t = m.faults
    if not t or (dev.bdf, "probe") in t.current:
        return False
    rule = t.hit(dev.bdf, "probe", lambda r: r.delay > 0)
    if rule is None:
        return False

    def due():
        if m.by_bdf.get(dev.bdf) is not dev or dev.driver is not None:
            return                       # removed, or bound some other way meanwhile
        t.current[(dev.bdf, "probe")] = rule
        try:
            later()
        finally:
            t.current.pop((dev.bdf, "probe"), None)
    m.schedule(rule.delay, due)
    return True


def adding(m, dev) -> Held | None:
    """An add rule's delay for a VF about to be added (pci_iov_add_virtfn taking time): a
    Held the simulated clock finishes then, that an enable carried out in steps waits for."""
    t = m.faults
    rule = t.hit(dev.bdf, "add", lambda r: r.delay > 0) if t.rules else None
    if rule is None:
        return None
    held = Held(dev.bdf)
    t.pausing[id(held)] = held          # a reset answers it with the rest
    m.schedule(rule.delay, lambda: (t.pausing.pop(id(held), None), held.finish()))
    return held


def defer_netdev(m, dev, drv, register) -> bool:
    """register_netdev() later, by a netdev rule's delay: register() runs then, if the
    device is still bound to drv. True when deferred."""
    t = m.faults
    if not t:
        return False
    rule = t.hit(dev.bdf, "netdev")
    if rule is None:
        return False

    def due():
        if m.by_bdf.get(dev.bdf) is dev and dev.driver is drv:
            register()
    m.schedule(rule.delay, due)
    return True
