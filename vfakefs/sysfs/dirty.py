"""Which directories of the view a structural change can alter.

The Machine tells its listeners what changed (Machine.changes: functions added,
removed, bound or unbound, their drivers and groups). From that the view names
every directory whose listing may now differ, so the FUSE layer re-lists and
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
from vfakefs.model.pci.pci import PciFunction

# Listings drawn from all functions (or all netdevs, groups, buses): any function's
# change may alter them. Each is one directory, re-listed in time linear in the functions;
# deep where the listing above builds its subdirectories' contents (bus/virtio, pci_express).
GLOBAL = (("sys/devices", False), ("sys/bus/pci/devices", False), ("sys/bus/pci/drivers", False),
          ("sys/bus/pci_express", True), ("sys/bus/virtio", True), ("sys/class/net", False),
          ("sys/class/nvme", False), ("sys/class/pci_bus", False), ("sys/kernel/iommu_groups", False),
          ("sys/kernel/debug/iommu/intel", False), ("dev/vfio", False))
NOTHING = frozenset()


def dirty(v, changes) -> list[tuple[str, bool, frozenset]] | None:
    if changes is None:
        return None
    funcs: dict[int, PciFunction] = {}
    drivers: dict[int, Driver] = {}
    groups: dict[int, IommuGroup] = {}
    for o in changes:
        if isinstance(o, PciFunction):
            funcs[id(o)] = o
        elif isinstance(o, Driver):
            drivers[id(o)] = o
        elif isinstance(o, IommuGroup):
            groups[id(o)] = o
        else:
            return None   # not mapped: everything may have changed
    out: list[tuple[str, bool, frozenset]] = []
    if funcs:
        out += [(p, deep, NOTHING) for p, deep in GLOBAL]
        out += [(f"sys/devices/virtual/iommu/{u.name}/devices", False, NOTHING) for u in v.m.dmar]
    for f in funcs.values():
        here = "sys/" + v.device_path(f)
        # the device's own directory and everything in it (attribute groups, driver,
        # net/, msi_irqs/, the driver's own directories), but not its child devices
        skip = frozenset(c.name for c in v.m.children(f)) if f.is_bridge else NOTHING
        out.append((here, True, skip))
        out.append((posixpath.dirname(here), False, NOTHING))   # where it sits
        if f.is_virtfn:
            out.append(("sys/" + v.device_path(f.physfn), False, NOTHING))   # virtfnN links
        if f.group is not None:
            groups[id(f.group)] = f.group
        if f.firmware_node:   # the ACPI nodes firmware_tree() draws from the functions
            parts = f.firmware_node.split("/")
            out += [("sys/devices/" + "/".join(parts[:i]), False, NOTHING) for i in range(1, len(parts) + 1)]
        out.append((f"sys/kernel/debug/iommu/intel/{f.name}", False, NOTHING))
        if f.driver is not None:
            drivers[id(f.driver)] = f.driver
    for drv in drivers.values():
        out.append((f"sys/bus/pci/drivers/{drv.name}", False, NOTHING))
    for g in groups.values():
        out.append((f"sys/kernel/iommu_groups/{g.id}", True, NOTHING))
    return out
