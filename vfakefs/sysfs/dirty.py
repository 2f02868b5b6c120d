"""Which directories of the view a structural change can alter.

The Machine tells its listeners what changed (Machine.changes): functions bound,
unbound, added or removed (then with their address, a Bdf), their drivers and
groups. From that the view names every directory whose listing may now differ, so the FUSE layer re-lists and
compares those alone and keeps what it knows of the rest. Whatever cannot be
mapped precisely (a reset, an object of another kind) answers None: re-list all.

Paths are relative to the mount's root ("sys/bus/pci/devices"). Each item is
(path, deep, skip): deep takes in every directory below the path that the
kernel was shown, except the entries named in skip (a bridge's child devices,
which have directories of their own and are named when they change).
"""
from __future__ import annotations

import posixpath

from vfakefs.model.base.drivers import Driver
from vfakefs.model.iommu.groups import IommuGroup
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.pci.pci import PciFunction

NOTHING = frozenset()


def dirty(v, changes) -> list[tuple[str, bool, frozenset]] | None:
    if changes is None:
        return None
    funcs: dict[int, PciFunction] = {}
    drivers: dict[int, Driver] = {}
    groups: dict[int, IommuGroup] = {}
    moved: set[Bdf] = set()   # addresses where a function came or went
    for o in changes:
        if isinstance(o, PciFunction):
            funcs[id(o)] = o
        elif isinstance(o, Driver):
            drivers[id(o)] = o
        elif isinstance(o, IommuGroup):
            groups[id(o)] = o
        elif isinstance(o, Bdf):
            moved.add(o)
        else:
            return None   # not mapped: everything may have changed
    out: list[tuple[str, bool, frozenset]] = []
    add = out.append
    for f in funcs.values():
        here = "sys/" + v.device_path(f)
        # the device's own directory and everything in it (attribute groups, driver,
        # net/, msi_irqs/, the driver's own directories), but not its child devices
        skip = frozenset(c.name for c in v.m.children(f)) if f.is_bridge else NOTHING
        add((here, True, skip))
        if f.driver is not None:
            drivers[id(f.driver)] = f.driver
        if f.is_bridge:   # pcieport's port services, and the buses
            add(("sys/bus/pci_express", True, NOTHING))
        if f.bdf not in moved:
            continue
        # it came or went: every listing of all functions, where it sits, its group
        add((posixpath.dirname(here), False, NOTHING))
        if f.is_virtfn:
            add(("sys/" + v.device_path(f.physfn), False, NOTHING))   # virtfnN links
        if f.group is not None:
            groups[id(f.group)] = f.group
        if f.firmware_node:   # the ACPI nodes firmware_tree() draws from the functions
            parts = f.firmware_node.split("/")
            out += [("sys/devices/" + "/".join(parts[:i]), False, NOTHING) for i in range(1, len(parts) + 1)]
        if f.firmware_node or f.parent is None:
            add(("sys/devices", False, NOTHING))   # the firmware tree, pciDDDD:00
        if f.is_bridge:
            add(("sys/class/pci_bus", False, NOTHING))
        add((f"sys/kernel/debug/iommu/intel/{f.name}", False, NOTHING))
    if moved:
        out += [(p, False, NOTHING) for p in ALL_FUNCTIONS]
        out += [(f"sys/devices/virtual/iommu/{u.name}/devices", False, NOTHING) for u in v.m.dmar]
    for drv in drivers.values():
        add((f"sys/bus/pci/drivers/{drv.name}", False, NOTHING))
        if drv.net or drv.netdev_subdir:
            add(("sys/class/net", False, NOTHING))
        if drv.netdev_subdir:
            add(("sys/bus/virtio", True, NOTHING))   # its listing builds devices/ and drivers/
        if drv.device_dirs:
            add(("sys/class/nvme", False, NOTHING))
        if drv.vfio:
            add(("dev/vfio", False, NOTHING))   # Machine.vfio_groups' rule
    for g in groups.values():
        add((f"sys/kernel/iommu_groups/{g.id}", True, NOTHING))
    return out


# Listings drawn from all functions: a function that comes or goes alters them. Each is
# one directory, re-listed in time linear in the functions.
ALL_FUNCTIONS = ("sys/bus/pci/devices", "sys/kernel/iommu_groups", "sys/kernel/debug/iommu/intel", "dev/vfio")
