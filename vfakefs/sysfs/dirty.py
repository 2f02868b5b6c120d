"""Which directories of the view a structural change can alter.

The Machine tells its listeners what changed (Machine.changes): functions bound,
unbound, added or removed (then with their address, a Bdf), their drivers and
groups. From that the view names every directory whose listing may now differ, so the FUSE layer re-lists and
compares those alone and keeps what it knows of the rest. Whatever cannot be
mapped precisely (a reset, an object of another kind) answers None: re-list all.

Paths are relative to the mount's root ("sys/bus/pci/devices"). Each item is
(path, deep, skip): deep takes in every directory below the path that the
kernel was shown, except the entries named in skip (a bridge's child devices,
which have directories of their own and are named when they change); or
(path, False, NOTHING, names, links): in that directory only the entries named
may have come, gone or been replaced (a listing of all functions, where one came
or went), so its cost is the change's, not the directory's size; every other
entry stands as it was; links: all those entries are symlinks (the directory's
own attributes, its nlink, stay).
"""
from __future__ import annotations

import posixpath

from vfakefs.model.base.drivers import Driver
from vfakefs.model.iommu.groups import IommuGroup
from vfakefs.model.net import NetDev
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.pci.pci import PciFunction

NOTHING = frozenset()


# what each kind of object a change names is (its index in _KINDS), learnt once per type:
# a change of 2,048 VFs names ~14,000 objects, one isinstance chain each otherwise
_KINDS = (PciFunction, Driver, IommuGroup, Bdf, NetDev)
_KIND_OF: dict[type, int] = {}


def _kind(t: type) -> int:
    k = _KIND_OF.get(t)
    if k is None:
        k = _KIND_OF[t] = next((i for i, base in enumerate(_KINDS) if issubclass(t, base)), -1)
    return k


def dirty(v, changes) -> list[tuple] | None:
    if changes is None:
        return None
    funcs: dict[int, PciFunction] = {}
    drivers: dict[int, Driver] = {}
    groups: dict[int, IommuGroup] = {}
    moved: set[str] = set()   # the names of the addresses where a function came or went
    netdevs: dict[int, NetDev] = {}   # registered or unregistered
    kind_of = _KIND_OF
    for o in changes:
        k = kind_of.get(type(o))
        if k is None:
            k = _kind(type(o))
        if k == 0:
            funcs[id(o)] = o
        elif k == 1:
            drivers[id(o)] = o
        elif k == 2:
            groups[id(o)] = o
        elif k == 3:
            moved.add(str(o))
        elif k == 4:
            netdevs[id(o)] = o
        else:
            return None   # not mapped: everything may have changed
    out: list[tuple] = []
    add = out.append
    # directories where only some entries came or went: path -> their names
    named: dict[str, set] = {}
    subdirs: set[str] = set()   # those where some of them are directories

    def names(path: str, *which: str, dirs: bool = False) -> set:
        got = named.get(path)
        if got is None:
            got = named[path] = set()
        got.update(which)
        if dirs:
            subdirs.add(path)
        return got

    m = v.m
    device_path = v.device_path
    gone: list[str] = []   # the names of the functions that came or went
    pf_sets: dict[int, tuple[set, set]] = {}   # PF -> its parent's named set and its own (thousands of VFs)
    for f in funcs.values():
        name = f.name
        drv = f.driver
        if drv is not None:
            drivers[id(drv)] = drv
        if name in moved:
            # it came or went: its directory is an entry of the listings named below (every
            # listing of all functions, where it sits, its group), and whatever the kernel
            # was shown of it goes with that entry; no item of its own (thousands of VFs)
            gone.append(name)
            if f.group is not None:
                groups[id(f.group)] = f.group
            physfn = f.physfn
            if physfn is not None:
                sets = pf_sets.get(id(physfn))
                if sets is None:
                    pf = "sys/" + device_path(physfn)
                    sets = pf_sets[id(physfn)] = names(posixpath.dirname(pf), dirs=True), names(pf)
                sets[0].add(name)                   # beside its PF
                sets[1].add(f"virtfn{f.vf_id}")     # its virtfnN link
                continue                            # (a VF is never a bridge, nor in the firmware tree)
            here = "sys/" + device_path(f)
            names(posixpath.dirname(here), name, dirs=True)
            firmware = f.firmware_node
            if firmware:   # the ACPI nodes firmware_tree() draws from the functions
                parts = firmware.split("/")
                out += [("sys/devices/" + "/".join(parts[:i]), False, NOTHING) for i in range(1, len(parts) + 1)]
            if firmware or f.parent is None:
                add(("sys/devices", False, NOTHING))   # the firmware tree, pciDDDD:00
            if f.is_bridge:   # pcieport's port services, and the buses
                add(("sys/bus/pci_express", True, NOTHING))
                add(("sys/class/pci_bus", False, NOTHING))
            continue
        # bound or unbound: the device's own directory and everything in it (attribute
        # groups, driver, net/, msi_irqs/, the driver's own directories), not its child devices
        here = "sys/" + device_path(f)
        if f.is_bridge:   # pcieport's port services, and the buses
            add((here, True, frozenset(c.name for c in m.children(f))))
            add(("sys/bus/pci_express", True, NOTHING))
        else:
            add((here, True, NOTHING))
    if moved:   # the listings drawn from all functions: each one's entry (iommu_groups: by group)
        names("sys/bus/pci/devices", *gone)
        names("sys/kernel/debug/iommu/intel", *gone, dirs=True)
        for u in m.dmar:
            names(f"sys/devices/virtual/iommu/{u.name}/devices", *gone)
        # the groups that went with them (one that stays keeps its entry)
        names("sys/kernel/iommu_groups",
              *(str(g.id) for g in groups.values() if m.groups is None or m.groups.by_id.get(g.id) is not g),
              dirs=True)
        add(("dev/vfio", False, NOTHING))
    # a driver's directory differs in the links of the functions bound or unbound
    # (with them in the change); a driver changed alone is re-listed whole
    if drivers and funcs:
        by_bdf = m.by_bdf
        here_now = {id(f): by_bdf.get(f.bdf) is f for f in funcs.values() if f.driver is not None}
    for drv in drivers.values():
        if funcs:
            names(f"sys/bus/pci/drivers/{drv.name}",
                  *(f.name for f in funcs.values() if f.driver is not drv or not here_now[id(f)]))
        else:
            add((f"sys/bus/pci/drivers/{drv.name}", False, NOTHING))
        if (drv.net or drv.netdev_subdir) and not netdevs:
            add(("sys/class/net", False, NOTHING))
        if drv.netdev_subdir:
            add(("sys/bus/virtio", True, NOTHING))   # its listing builds devices/ and drivers/
        if drv.device_dirs:
            add(("sys/class/nvme", False, NOTHING))
        if drv.vfio:
            add(("dev/vfio", False, NOTHING))   # Machine.vfio_groups' rule
    for g in groups.values():
        add((f"sys/kernel/iommu_groups/{g.id}", True, NOTHING))
    if netdevs:   # class/net: one link per interface (Machine.add_netdev, remove_netdev note them)
        names("sys/class/net", *(nd.name for nd in netdevs.values()))
    out += [(p, False, NOTHING, frozenset(n), p not in subdirs) for p, n in named.items()]
    return out
