"""/sys/devices: the PCI hierarchy, one directory per function nested below its bridge."""
from __future__ import annotations

import weakref

from vfakefs.sysfs import aspm, bus, iov, nvme, pci_sysfs, power, system
from vfakefs.sysfs.cpumask import cpulist, cpumap
from vfakefs.sysfs.nodes import Attr, AttrGroup, Dir, Link, rel

# PCIe port services pcieport registers below each port it drives, named as
# portdrv does: pcie<port type - root port><service>, services PME 01, AER 02,
# hotplug 04, DPC 08, bandwidth notification 10.
PORT_SERVICES = {"root_port": ("pcie001", "pcie002", "pcie010"), "upstream_port": ("pcie102",),
                 "downstream_port": ("pcie202",)}


# What else every x86 machine has below /sys/devices (empty here): the reference lists them
PLATFORM_DEVICES = ("breakpoint", "kprobe", "msr", "platform", "pnp0", "software", "system", "tracepoint", "uprobe")


def devices_entries(v) -> dict:
    out = {name: Dir({}) for name in PLATFORM_DEVICES}
    out["system"] = Dir(lambda: system.system_entries(v))
    out.update({"pci%04x:%02x" % r: Dir(lambda r=r: host_bridge_entries(v, *r))
                for r in sorted({f.root_bus for f in v.m.functions})})
    out.update(firmware_tree(v))
    out["virtual"] = Dir(lambda: {"iommu": Dir(lambda: {u.name: Dir(lambda u=u: iommu_dir_entries(v, u))
                                                        for u in v.m.dmar if v.m.iommu_on}),
                                  "net": Dir(lambda: {"lo": Dir(lambda: loopback_entries(v))})})
    return out


_LOOPBACK: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def loopback_entries(v) -> dict:
    from vfakefs.sysfs.net import NETDEV
    from vfakefs.model.net import NetDev
    lo = _LOOPBACK.get(v.m)
    if lo is None:
        lo = _LOOPBACK[v.m] = NetDev.loopback()   # one per machine: its stores stick
    out = NETDEV.entries(lo)
    # lo belongs to no PCI function: its events are the Machine's all the same
    out["uevent"] = pci_sysfs.kobj_uevent(v.m, "devices/virtual/net/lo", "net", (("INTERFACE", "lo"), ("IFINDEX", "1")))
    out["subsystem"] = Link(rel("devices/virtual/net/lo", "class/net"))
    out["power"] = Dir({})
    return out


def firmware_tree(v) -> dict:
    """The ACPI nodes devices' firmware_node links point at (LNXSYSTM:00/...), as empty directories."""
    tree: dict = {}
    for f in v.m.functions:
        if f.firmware_node:
            node = tree
            for part in f.firmware_node.split("/"):
                node = node.setdefault(part, {})

    def build(t):
        return {k: Dir(lambda sub=sub: build(sub)) for k, sub in t.items()}
    return build(tree)


def iommu_dir_entries(v, unit):
    from vfakefs.sysfs.iommu import dmar_entries
    return dmar_entries(v, unit)


def root_companion(v, domain: int, bus: int = 0) -> str | None:
    """The host bridge's ACPI node (acpi_pci_root's PNP0A08): the one the root bus's functions'
    companions sit under, as acpi_pci_find_companion() looks below the bus bridge's companion."""
    for f in v.m.children(None):
        if f.root_bus == (domain, bus) and f.firmware_node:
            return f.firmware_node.rpartition("/")[0] or None
    return None


def host_bridge_entries(v, domain: int, bus: int = 0) -> dict:
    out = {f.name: device_dir(v, f) for f in v.m.children(None) if f.root_bus == (domain, bus)}
    out["pci_bus"] = Dir(lambda: {"%04x:%02x" % (domain, bus): Dir(lambda: pci_bus_dir(v, None, domain, bus))})
    for name in v.m.root_dirs:
        out[name] = Dir({"power": Dir({})})
    out["power"] = Dir({})
    node = root_companion(v, domain, bus)
    if node:
        out["firmware_node"] = Link(rel(v.root_path(domain, bus), f"devices/{node}"))
    out["uevent"] = Attr("uevent", lambda o: "", pci_sysfs.uevent_store, 0o644).bind(None)
    out["waiting_for_supplier"] = Attr("waiting_for_supplier", lambda o: "0\n").bind(None)
    return out


def pci_bus_dir(v, bridge, domain: int = 0, root: int = 0) -> dict:
    """pci_bus/DDDD:BB: the bus a bridge (or the host bridge of root bus `root`) opens."""
    here = v.device_path(bridge) if bridge else v.root_path(domain, root)
    domain = bridge.bdf.domain if bridge else domain
    return {
        # cpumask_of_pcibus(): the bus's node's CPUs, every CPU without one
        "cpuaffinity": Attr("cpuaffinity", lambda o: cpumap(o.node_cpus(o.bus_node(bridge, domain)),
                                                            o.nr_cpus)).bind(v.m.locality),
        "cpulistaffinity": Attr("cpulistaffinity", lambda o: cpulist(o.node_cpus(o.bus_node(bridge, domain)))
                                ).bind(v.m.locality),
        "rescan": Attr("rescan", None, bus.bus_rescan_store, 0o200).bind(v.m),   # pci_bus rescan: the same walk
        "device": Link(rel(f"{here}/pci_bus/x", here)),
        "subsystem": Link(rel(f"{here}/pci_bus/x", "class/pci_bus")),
        "power": Dir({}),
        "uevent": pci_sysfs.kobj_uevent(v.m, f"{here}/pci_bus/" + ("%04x:%02x" % (bridge.bdf.domain, bridge.secondary)
                                                               if bridge else "%04x:%02x" % (domain, root)), "pci_bus"),
    }


def class_pci_bus_entries(v) -> dict:
    out = {}
    for domain, busnr, bridge in v.m.buses():
        base = v.device_path(bridge) if bridge else v.root_path(domain, busnr)
        out["%04x:%02x" % (domain, busnr)] = Link(rel("class/pci_bus", f"{base}/pci_bus/%04x:%02x" % (domain, busnr)))
    return out


def msi_irqs_entries(dev) -> dict:
    return {str(irq): Attr(str(irq), lambda o, k=kind: k + "\n").bind(dev) for irq, kind in dev.msi_irqs}


def device_dir(v, dev) -> Dir:
    return Dir(lambda: device_entries(v, dev), find=lambda name: device_attr(dev, name),
               subdirs=lambda: device_subdirs(v, dev))


def device_entries(v, dev) -> dict:
    here = v.device_path(dev)
    out: dict = {}
    for g in pci_sysfs.GROUPS + iov.GROUPS:
        out.update(g.entries(dev))
    out.update(pci_sysfs.bin_files(dev))
    out["subsystem"] = Link(rel(here, "bus/pci"))
    if dev.driver is not None:
        out["driver"] = Link(rel(here, f"bus/pci/drivers/{dev.driver.name}"))
    if dev.group is not None:
        out["iommu_group"] = Link(rel(here, f"kernel/iommu_groups/{dev.group.id}"))
        out["iommu"] = Link(rel(here, f"devices/virtual/iommu/{v.m.dmar[0].name}"))
    if dev.firmware_node:
        out["firmware_node"] = Link(rel(here, f"devices/{dev.firmware_node}"))
    if dev.is_virtfn:
        out["physfn"] = Link(rel(here, v.device_path(dev.physfn)))
    if dev.sriov is not None:
        for vf in dev.sriov.vfs:
            out[f"virtfn{vf.vf_id}"] = Link(rel(here, v.device_path(vf)))
    out["power"] = Dir(lambda: power.power_dir_entries(dev))
    if dev.msi_irqs:
        out["msi_irqs"] = Dir(lambda: msi_irqs_entries(dev))
    if dev.aspm:
        out["link"] = Dir(lambda: aspm.link_entries(dev))
    plain = [nd for nd in dev.netdevs if not nd.subdir]
    if plain:
        from vfakefs.sysfs.net import net_subdir
        out["net"] = Dir(lambda: net_subdir(v, dev, None))
    for sub in sorted({nd.subdir for nd in dev.netdevs if nd.subdir}):
        from vfakefs.sysfs.net import virtio_dir
        out[sub] = Dir(lambda s=sub: virtio_dir(v, dev, s))
    for name in dev.extra_dirs:
        out[name] = Dir({})
    if dev.driver is not None:
        instance = dev.driver.instance(dev)
        for name, prefix in dev.driver.device_dirs.items():
            child = Dir(lambda: nvme.ctrl_entries(v, dev, instance)) if name == "nvme" else Dir({})
            out[name] = Dir({f"{prefix}{instance}": child})
        for name, text in dev.driver.device_files.items():
            out[name] = Attr(name, lambda o, t=text: t).bind(dev)
    if dev.is_bridge:
        busname = "%04x:%02x" % (dev.bdf.domain, dev.secondary)
        out["pci_bus"] = Dir(lambda: {busname: Dir(lambda: pci_bus_dir(v, dev))})
        for child in v.m.children(dev):
            out[child.name] = device_dir(v, child)
        if dev.driver is not None and dev.driver.port_services:
            for svc in PORT_SERVICES.get(dev.kind, ()):
                out[f"{dev.name}:{svc}"] = Dir(lambda s=svc: port_service_entries(v, dev, s))
    return out


# A function's attributes by name, from the unnamed groups. Nothing else in its directory
# takes such a name (sysfs refuses a second entry of a name): not its links, directories
# or binary files, nor a driver's (tests/view/test_function_dirs.py)
_ATTRS = {a.name: (g, a) for g in pci_sysfs.GROUPS + iov.GROUPS if not g.name for a in g.attrs}
_NAMED = tuple(g for g in pci_sysfs.GROUPS + iov.GROUPS if g.name)   # each a directory where visible


def device_attr(dev, name: str):
    """device_entries(v, dev)[name] when name is config or an attribute of its groups,
    without the listing; else None (ask the listing)."""
    got = _ATTRS.get(name)
    if got is None:
        return pci_sysfs.config.bind(dev) if name == "config" else None
    return got[1].bind(dev) if got[0].is_visible(dev) else None


def device_subdirs(v, dev) -> int:
    """How many of device_entries(v, dev) are directories, without it: the names it gives
    directories, in its order, less those a later file takes."""
    dirs = {g.name for g in _NAMED if g.is_visible(dev)}
    dirs.add("power")
    if dev.msi_irqs:
        dirs.add("msi_irqs")
    if dev.aspm:
        dirs.add("link")
    for nd in dev.netdevs:
        dirs.add(nd.subdir or "net")
    dirs.update(dev.extra_dirs)
    drv = dev.driver
    if drv is not None:
        dirs.update(drv.device_dirs)
        dirs.difference_update(drv.device_files)
    if dev.is_bridge:
        dirs.add("pci_bus")
        dirs.update(c.name for c in v.m.children(dev))
        if drv is not None and drv.port_services:
            dirs.update(f"{dev.name}:{svc}" for svc in PORT_SERVICES.get(dev.kind, ()))
    return len(dirs)


def port_service_entries(v, dev, svc: str) -> dict:
    here = f"{v.device_path(dev)}/{dev.name}:{svc}"
    return {"power": Dir({}), "subsystem": Link(rel(here, "bus/pci_express")),
            "uevent": pci_sysfs.kobj_uevent(v.m, here, "pci_express")}


EMPTY_GROUP = AttrGroup(())
