"""The uevents the simulated kernel announces (lib/kobject_uevent.c), in its format.

Every add, remove, bind, unbind and change the kernel would send on NETLINK_KOBJECT_UEVENT
is emitted here, from the model code where the change happens (machine.add_function,
binding.attach/release, sriov.enable, add_netdev/remove_netdev, a write to a `uevent`
file). Each event gets the next SEQNUM, global to the machine as the kernel's
uevent_seqnum (/sys/kernel/uevent_seqnum shows the last one), and its environment in the
kernel's order (kobject_uevent_env):

    ACTION, DEVPATH, SUBSYSTEM, the caller's keys (SYNTH_UUID, SYNTH_ARG_*), the kset's
    uevent() keys (dev_uevent: DRIVER while bound; then the bus's or class's own:
    pci_uevent's PCI_CLASS ... MODALIAS, net_uevent's INTERFACE and IFINDEX), SEQNUM.

On the wire (alloc_uevent_skb) an event is "ACTION@DEVPATH\\0" then each KEY=VALUE\\0.
KOBJ_UNBIND drops MODALIAS (zap_modalias_env: nothing should load a module for it).

Who listens: subscribe(fn) calls fn(event) for each new event (the syscall adapter
queues it to every NETLINK_KOBJECT_UEVENT socket of a `vfakefs run`). The log keeps the
last few thousand events, for tests.

Announcing from elsewhere: m.uevent(action, obj[, extra]) with a PciFunction, NetDev,
Driver, NvmeCtrl, the Machine (/bus/pci) or a Kobj. For module loading (not wired here):
load_module's mod_sysfs_setup announces `add /module/<name>` (m.uevent("add",
Kobj(m, "/module/<name>", "module"))) before the module's init runs; pci_register_driver's
bus_add_driver announces `add /bus/pci/drivers/<name>` (m.uevent("add", drv)) after its
driver_attach has bound (and announced) the devices it matches; driver_unregister and
the module's removal announce `remove` of both, after the unbinds.

What does not announce: an IOMMU group's kobject (iommu_group_alloc adds it to its kset
with kobject_init_and_add and never calls kobject_uevent), the host bridge pci0000:00
(no bus, no class: dev_uevent_filter drops its events). Not modelled, as the tree lacks
them: the netdev queue kobjects (queues/rx-N, tx-N, SUBSYSTEM=queues), the VFIO group
char devices (/devices/virtual/vfio/N), the nvme namespaces' block devices, ptp and
wakeup class devices, and a bridge's pci_bus device on remove/rescan.
"""
from __future__ import annotations

import errno
import re
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from vfakefs.model.base.drivers import Driver
from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_ERR, KERN_WARNING
from vfakefs.model.net import NetDev
from vfakefs.model.nvme import NvmeCtrl
from vfakefs.model.pci.pci import PciFunction

ACTIONS = ("add", "remove", "change", "move", "online", "offline", "bind", "unbind")   # kobject_actions[]
KEEP = 4096
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
UUID_STRING_LEN = 36


class Uevent(NamedTuple):
    """One uevent as the kernel sends it. A named tuple: immutable, and made at a third
    of a frozen dataclass's cost (thousands of VFs announce four events each)."""
    action: str
    devpath: str
    env: tuple                      # (key, value) pairs in the kernel's order, SEQNUM last
    seqnum: int

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.env if k == key), None)

    @property
    def subsystem(self) -> str | None:
        return self.get("SUBSYSTEM")

    def wire(self) -> bytes:
        """The netlink message the kernel multicasts (alloc_uevent_skb): header then env."""
        return (f"{self.action}@{self.devpath}\0" + "".join(f"{k}={v}\0" for k, v in self.env)).encode()


@dataclass(frozen=True, slots=True)
class Kobj:
    """Any other kobject that announces (a pci_bus, a port service, a virtio device, an
    IOMMU, a module): its path, its subsystem, the keys its kset adds, its Machine."""
    machine: object
    devpath: str
    subsystem: str
    env: tuple = ()

    def show(self) -> str:
        """Its uevent file: the keys its events carry (uevent_show)."""
        return "".join(f"{k}={v}\n" for k, v in self.env)


_new_event = tuple.__new__


class UeventLog:
    def __init__(self):
        self.seqnum = 0                 # uevent_seqnum: the last one sent
        self.events: deque[Uevent] = deque(maxlen=KEEP)
        self._listeners: list = []

    def subscribe(self, fn):
        """fn(event) for every event from now on; returns the unsubscribe function."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def emit(self, action: str, devpath: str, env) -> Uevent:
        """kobject_uevent_env's last step: take the next SEQNUM, send to every listener."""
        self.seqnum = seq = self.seqnum + 1
        ev = _new_event(Uevent, (action, devpath, tuple(env) + (("SEQNUM", str(seq)),), seq))   # Uevent(...)
        self.events.append(ev)
        if self._listeners:
            for fn in list(self._listeners):
                fn(ev)
        return ev


# --- the kobjects that announce, and their environments -------------------------------------------
# What never changes in a function's life (its path, ids, slot name, modalias) is kept in
# the function (PciFunction.uevent_static): thousands of VFs announce four events each.
# The id keys and the modalias by (vendor, device, subsystem ids, class): the same for
# every VF of a PF.
_IDS: dict[tuple, tuple] = {}


def _static(dev) -> tuple:
    """(devpath, pci_uevent's keys, then what follows ACTION in its events unbound: DEVPATH,
    SUBSYSTEM and the keys; and (driver name, the same with DRIVER) once bound)."""
    got = dev.uevent_static
    if got is None:
        key = (dev.vendor, dev.device, dev.subsystem_vendor, dev.subsystem_device, dev.class_code)
        ids = _IDS.get(key)
        if ids is None:
            ids = _IDS[key] = (
                ("PCI_CLASS", "%04X" % dev.class_code), ("PCI_ID", "%04X:%04X" % (dev.vendor, dev.device)),
                ("PCI_SUBSYS_ID", "%04X:%04X" % (dev.subsystem_vendor, dev.subsystem_device)),
                ("MODALIAS", dev.modalias()))
        devpath = _devpath(dev)
        keys = ids[:3] + (("PCI_SLOT_NAME", dev.name),) + ids[3:]
        got = dev.uevent_static = (devpath, keys, (("DEVPATH", devpath), ("SUBSYSTEM", "pci")) + keys, None)
    return got


def _pci_tail(dev) -> tuple:
    """What follows ACTION in dev's events: DEVPATH, SUBSYSTEM, DRIVER while bound, the keys."""
    st = _static(dev)
    drv = dev.driver
    if drv is None:
        return st[2]
    bound = st[3]
    if bound is None or bound[0] != drv.name:
        bound = (drv.name, st[2][:2] + (("DRIVER", drv.name),) + st[1])
        dev.uevent_static = st[:3] + (bound,)
    return bound[1]


_ACTION = {a: (("ACTION", a),) for a in ACTIONS}      # the first key of each action's events


def pci_devpath(dev) -> str:
    return _static(dev)[0]


def _devpath(dev) -> str:
    """kobject_get_path(): /devices/pci0000:00/<bridges>/<function> (a VF beside its PF; pci0000:17
    for a function below root bus 17)."""
    if dev.is_virtfn:                   # beside its PF, whose path is made once
        pf = pci_devpath(dev.physfn)
        return f"{pf[:pf.rindex('/')]}/{dev.name}"
    parts = []
    f = dev
    while f is not None:
        parts.append(f.name)
        f = f.physfn.parent if f.is_virtfn else f.parent
    return "/devices/pci%04x:%02x/" % dev.root_bus + "/".join(reversed(parts))


def net_devpath(nd) -> str:
    base = pci_devpath(nd.dev) if nd.dev is not None else "/devices/virtual"
    return f"{base}/{nd.subdir}/net/{nd.name}" if nd.subdir else f"{base}/net/{nd.name}"


def pci_env(dev) -> tuple:
    """dev_uevent() then pci_uevent(): DRIVER while bound, the ids, the slot name, the modalias."""
    static = _static(dev)[1]
    return (("DRIVER", dev.driver.name),) + static if dev.driver is not None else static


def net_env(nd) -> tuple:
    """net_uevent()."""
    return (("INTERFACE", nd.name), ("IFINDEX", str(nd.ifindex)))


def kobject(obj):
    """(devpath, subsystem, env) of a model object that announces, else None (filtered)."""
    if isinstance(obj, PciFunction):
        return pci_devpath(obj), "pci", pci_env(obj)
    if isinstance(obj, Kobj):
        return obj.devpath, obj.subsystem, tuple(obj.env)
    if isinstance(obj, NetDev):
        return net_devpath(obj), "net", net_env(obj)
    if isinstance(obj, NvmeCtrl):
        return f"{pci_devpath(obj.dev)}/nvme/nvme{obj.inst}", "nvme", tuple(obj.uevent_env())
    if isinstance(obj, Driver):
        # a driver's kobject sits in its bus's drivers kset, which has no uevent ops:
        # SUBSYSTEM is the kset's name
        return f"/bus/pci/drivers/{obj.name}", "drivers", ()
    if getattr(obj, "functions", None) is not None and hasattr(obj, "drivers"):   # the Machine: /sys/bus/pci
        return "/bus/pci", "bus", ()
    return None


def announce(m, action: str, obj, extra=()) -> Uevent | None:
    """kobject_uevent_env(obj, action, extra) on the Machine's log."""
    if isinstance(obj, PciFunction) and not extra:
        # kobject(obj)'s keys as the function keeps them: thousands of VFs announce four each
        tail = _pci_tail(obj)
        if action == "unbind":
            tail = tail[:-1]   # zap_modalias_env: MODALIAS is the last of pci_uevent's keys
        return m.uevents.emit(action, obj.uevent_static[0],
                              (_ACTION.get(action) or (("ACTION", action),)) + tail)
    if isinstance(obj, PciFunction):
        devpath, env = _static(obj)[:2]
        subsystem = "pci"
        if obj.driver is not None:
            env = (("DRIVER", obj.driver.name),) + env
    else:
        k = kobject(obj)
        if k is None:
            return None
        devpath, subsystem, env = k
    if action == "unbind":
        env = tuple((key, v) for key, v in env if key != "MODALIAS")    # zap_modalias_env
    head = (("ACTION", action), ("DEVPATH", devpath), ("SUBSYSTEM", subsystem))
    return m.uevents.emit(action, devpath, head + tuple(extra) + env if extra else head + env)


# --- writes to a uevent file (kobject_synth_uevent) ---------------------------------------------
def _alnum(word: str) -> bool:
    return bool(word) and word.isascii() and word.isalnum()


def parse_synth(text: str) -> tuple[str, list]:
    """kobject_action_type() and kobject_action_args(): the action, and the keys it adds
    (SYNTH_UUID=0 without arguments; else a UUID then ' KEY=VALUE' pairs). Raises
    SysfsError(EINVAL, message) with the kernel's message."""
    buf = text[:-1] if text[-1:] in ("\n", "\0") else text
    action, sp, args = buf.partition(" ")
    if not buf or action not in ACTIONS:
        raise SysfsError(errno.EINVAL, "unknown uevent action string")
    if not sp:
        return action, [("SYNTH_UUID", "0")]
    bad = SysfsError(errno.EINVAL, "incorrect uevent action arguments")
    args = text[len(action) + 1:]             # kobject_action_args strips its own one newline
    args = args[:-1] if args[-1:] in ("\n", "\0") else args
    if len(args) < UUID_STRING_LEN or not _UUID.fullmatch(args[:UUID_STRING_LEN]):
        raise bad
    extra = [("SYNTH_UUID", args[:UUID_STRING_LEN])]
    rest = args[UUID_STRING_LEN:]
    while rest:
        # each pair: one space, then KEY=VALUE, both non-empty and alphanumeric
        # (action_arg_word_end)
        if rest[0] != " ":
            raise bad
        key, eq, tail = rest[1:].partition("=")
        value, sp2, tail = tail.partition(" ")
        if not eq or not _alnum(key) or not _alnum(value):
            raise bad
        extra.append((f"SYNTH_ARG_{key}", value))
        rest = sp2 + tail
    return action, extra


def _dev_string(obj) -> str | None:
    """dev_err()'s prefix for a device (driver, else bus, else class, then its name);
    None for kobjects that are no devices (a driver, a bus)."""
    if isinstance(obj, PciFunction):
        return f"{obj.driver.name if obj.driver is not None else 'pci'} {obj.name}"
    if isinstance(obj, NetDev):
        return f"net {obj.name}"
    if isinstance(obj, NvmeCtrl):
        return f"nvme nvme{obj.inst}"
    return None


def machine_of(obj):
    """The Machine an announcing object belongs to (None for objects of no machine, as lo)."""
    if isinstance(obj, Kobj):
        return obj.machine
    if getattr(obj, "functions", None) is not None and hasattr(obj, "drivers"):
        return obj
    if isinstance(obj, PciFunction):
        return obj.machine
    dev = getattr(obj, "dev", None)                             # a NetDev, an nvme controller
    if dev is not None:
        return dev.machine
    return getattr(obj, "machine", None)                        # a Driver


def synth(obj, text: str) -> None:
    """A write to obj's uevent file (uevent_store -> kobject_synth_uevent): the event it
    names, announced. A bad write sends nothing, fails EINVAL and logs the kernel's lines
    (kobject_synth_uevent's pr_warn, then a device's uevent_store dev_err)."""
    m = machine_of(obj)
    k = kobject(obj) if m is not None else None
    try:
        action, extra = parse_synth(text)
    except SysfsError as e:
        if k is not None:
            m.kmsg.log(f"synth uevent: {k[0]}: {e}", KERN_WARNING)
            who = _dev_string(obj)
            if who is not None:
                m.kmsg.log(f"{who}: uevent: failed to send synthetic uevent", KERN_ERR)
        raise SysfsError(errno.EINVAL) from None
    if k is not None:
        announce(m, action, obj, extra)


def booted(m) -> None:
    """What the boot announced went out before anyone listened (each function's add and
    bind, each class device's and netdev's add, each driver's add): SEQNUM stands past
    it, the log is empty."""
    bound = [f for f in m.functions if f.driver is not None]
    classes = sum(len(class_devices(f, f.driver)) for f in bound)
    m.uevents.events.clear()
    m.uevents.seqnum = len(m.functions) + len(bound) + classes + len(m.netdevs) + len(m.drivers)


def class_devices(dev, drv) -> list:
    """The class devices a driver's probe adds below dev that announce (an nvme
    controller; other class directories here have no uevent of their own)."""
    if "nvme" in drv.device_dirs and drv.device_dirs["nvme"] == "nvme":
        return [NvmeCtrl(dev, drv.instance(dev))]
    return []
