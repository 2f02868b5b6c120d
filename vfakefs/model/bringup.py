"""Booting a Machine from a checked Topology: enumeration (functions, their config
space, BARs and bus numbers), the boot log, IOMMU groups, driver probe.

Every call builds a fresh Machine from the description and nothing else (no file
is read here: topology.parse() read them), so booting twice gives two equal
machines: a reset is a boot (host.Host).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from vfakefs.model import uevent
from vfakefs.model.base import irqs
from vfakefs.model.base.drivers import Driver, catalogue
from vfakefs.model.base.module import boot_plan
from vfakefs.model.boot import boot_log, default_domain, driver_boot_log, iommu_enabled, late_boot_log
from vfakefs.model.firmware import Firmware
from vfakefs.model.intel.dmar import DmarUnit
from vfakefs.model.iommu import iommu
from vfakefs.model.iommu.groups import Groups
from vfakefs.model.machine import Machine, Slot
from vfakefs.model.pci import config as C
from vfakefs.model.pci import pciehp
from vfakefs.model.pci.builder import bar_flags, build_config
from vfakefs.model.pci.iov import Sriov
from vfakefs.model.pci.pci import (EMPTY, IORESOURCE_MEM, IORESOURCE_MEM_64, IORESOURCE_PREFETCH,
                                   IORESOURCE_READONLY, IORESOURCE_SIZEALIGN, KINDS, PciFunction, Resource)
from vfakefs.model.pci.resources import Allocator, bridge_windows, covering_windows
from vfakefs.model.profile import PROFILES

if TYPE_CHECKING:
    from vfakefs.model.topology import Topology


def boot(topo: Topology) -> Machine:
    """A fresh Machine built from topo, booted: the state a real boot leaves."""
    d = topo.data
    cmdline = str(d.get("cmdline", "intel_iommu=on"))
    iommu_spec = d.get("iommu", {"type": "intel"})
    drivers = catalogue()
    for name in d.get("drivers", []):
        drivers.setdefault(name, Driver(name))
    specs = topo.specs
    used = {s["driver"] for s in specs} | {(s.get("sriov") or {}).get("vf_driver") for s in specs}
    # the topology names the loaded drivers (register those and the ones in use), or the
    # catalogue's boot set is loaded
    wanted = (lambda n, drv: n in d["drivers"]) if "drivers" in d else (lambda n, drv: drv.boot)
    drivers = {n: drv for n, drv in drivers.items() if n in used or wanted(n, drv)}
    intel = iommu_spec.get("type", "intel") == "intel"
    iommu_on = intel and iommu_enabled(cmdline)
    dmar = []
    if intel:
        dmar.append(DmarUnit(0, iommu_spec.get("reg_base", 0xFED90000), tuple(iommu_spec.get("version", (1, 0))),
                             iommu_spec.get("cap", 0xD2078C406F0462), iommu_spec.get("ecap", 0xF050DA),
                             iotlb_entries=iommu_spec.get("iotlb_entries", 4096)))
    m = Machine(PROFILES[str(d.get("kernel", "6.12"))], cmdline, [], drivers, dmar,
                bool(iommu_spec.get("interrupt_remapping", True)), name=d.get("name", ""),
                nr_cpus=int(d.get("cpus", 2)), root_dirs=tuple(d.get("root_dirs", ())))
    m.topology = topo
    if topo.locality is not None:
        m.locality = topo.locality
    # what the topology declares beyond the PCI tree (checked by topology._Checker.declared)
    m.acpi = {"dmar": dict(d.get("acpi", {}).get("dmar", {}))}
    m.recorded = d.get("recorded", {})
    m.net_config = {name: dict(cfg) for name, cfg in d.get("net", {}).items()}
    m.firmware = Firmware.from_table(d.get("firmware", {}))
    for s in specs:
        hw = {"mac": s["mac"].lower()} if s.get("mac") else {}
        if "nvme" in s:
            hw["nvme"] = dict(s["nvme"])
        if hw:
            m.hw[s["bdf"]] = hw
    _functions(m, topo.order, d.get("slot_module", "pciehp"))
    for obj in list(m.functions) + list(m.drivers.values()) + m.dmar:
        obj.machine = m
    m.modules.boot(boot_plan(m, m.recorded.get("modules", {}).get("loaded")), cmdline)   # what the registered drivers need
    for s in specs:
        f = m.by_bdf[s["bdf"]]
        if s["driver"]:
            f.driver, f.enable_cnt = drivers[s["driver"]], 1
            f.wakeup_enabled = f.driver.wakeup
    boot_log(m, iommu_on, iommu_spec.get("x2apic", True))
    if iommu_on:
        m.groups = Groups(default_domain(cmdline, dmar[0]), m,
                          pinned={f.pinned_group for f in m.functions if f.pinned_group is not None})
        for f in m.functions:
            g = m.groups.add_device(f, m.functions)
            m.kmsg.boot(f"pci {f.name}: Adding to iommu group {g.id}")
            iommu.attach_device(m, f)
        m.kmsg.boot("DMAR: Intel(R) Virtualization Technology for Directed I/O")
    for f in m.functions:
        if f.driver is not None:
            f.driver.devices.append(f)
            f.driver.instance(f)   # nvme0, nvme1 ... in probe order
    for s in specs:
        f = m.by_bdf[s["bdf"]]
        names = s.get("netdev", [])
        for name in [names] if isinstance(names, str) else names:
            m.add_netdev(f, f.driver, name)
    for f in m.functions:  # net drivers without a named interface get ethN
        if f.driver is not None and f.driver.registers_netdev(f) and not f.netdevs:
            m.add_netdev(f, f.driver)
    for u in m.dmar:
        u.on_materialize = lambda u=u: iommu.program_all(u)
    if iommu_on and m.interrupt_remapping and m.dmar[0].ir_supported:
        m.irq_remap_args = {"x2apic": iommu_spec.get("x2apic", True)}
    irqs.boot(m)                                      # the bound drivers' MSI/MSI-X vectors
    late_boot_log(m)                                  # (the port services name their vectors)
    driver_boot_log(m)
    uevent.booted(m)
    m.check()
    return m


def _functions(m: Machine, order: tuple, slot_module: str) -> None:
    alloc = Allocator()
    children: dict = {}
    for s in order:
        children.setdefault(s.get("parent"), []).append(s)
    slots_used = {(s["bdf"].domain, s["bdf"].bus, s["bdf"].dev) for s in order if s["bdf"].fn}
    made: dict = {}
    for s in reversed(order):  # children first, so bridge windows can cover them
        made[s["bdf"]] = _function(s, alloc, made, children, slots_used, m.cmdline)
    for s in order:
        f = made[s["bdf"]]
        f.parent = made.get(s.get("parent"))
        m.functions.append(f)
        if s.get("slot") is not None:
            port = f.parent
            m.slots.append(Slot(str(s["slot"]), "%04x:%02x:%02x" % (f.bdf.domain, f.bdf.bus, f.bdf.dev),
                                port.link_speed(False).strip() if port and port.kind == "root_port" else "Unknown",
                                port.link_speed(True).strip() if port else "Unknown", slot_module, port))
        if s.get("hotplug_slot") is not None:    # pciehp's slot below this port, empty or not
            present = bool(children.get(s["bdf"]))
            m.slots.append(Slot(str(s["hotplug_slot"]), "%04x:%02x:00" % (f.bdf.domain, f.secondary),
                                f.link_speed(False).strip(), f.link_speed(True).strip(), "pciehp", f,
                                powered=present, present=present, hotplug=True))
    m.by_bdf = {f.bdf: f for f in m.functions}


def _bars(bars: list[dict], alloc: Allocator, count: int) -> list[Resource]:
    out = [EMPTY] * count
    for b in bars:
        start = b["address"] if "address" in b else alloc.take(b["type"], b["size"])
        out[b["index"]] = Resource(start, b["size"], bar_flags(b["type"], b["prefetch"]))
    return out


def _function(s: dict, alloc: Allocator, made: dict, children: dict, slots_used: set,
              cmdline: str = "") -> PciFunction:
    ptype, htype = KINDS[s["kind"]]
    bars = _bars(s["bars"], alloc, 6 if htype == 0 else 2)
    rom = EMPTY
    if s.get("rom"):
        size = s["rom"]["size"]
        rom = Resource(s["rom"]["address"] if "address" in s["rom"] else alloc.take("mem32", size),
                       size, IORESOURCE_MEM | IORESOURCE_PREFETCH | IORESOURCE_READONLY | IORESOURCE_SIZEALIGN)
    sr = s.get("sriov")
    vf_bars = []
    if sr:
        vf_bars = _bars(sr["vf_bars"], Allocator(), 6)
        # the IOV resource holds TotalVFs copies of each VF BAR
        given = {b["index"] for b in sr["vf_bars"] if "address" in b}
        vf_bars = [r if not r.size or i in given else
                   Resource(alloc.take("mem64" if r.flags & IORESOURCE_MEM_64 else "mem32", r.size * sr["total_vfs"]),
                            r.size, r.flags) for i, r in enumerate(vf_bars)]
    windows = covering_windows(s["bdf"], made, children) if htype == 1 else []
    if s.get("hotplug_slot") is not None and not children.get(s["bdf"]):
        windows = pciehp.reserve_windows(alloc, cmdline)    # an empty hot-plug bridge's reservation
    sec, sub = s.get("bus_range", (0, 0))
    multifunction = s.get("multifunction", (s["bdf"].domain, s["bdf"].bus, s["bdf"].dev) in slots_used)
    if "config" in s:
        cfg = C.ConfigSpace(len(s["config"]), s["config"])
        if htype == 1:
            windows = bridge_windows(cfg)
    else:
        acs = s.get("acs")
        if acs is True:
            acs = C.ACS_SV | C.ACS_RR | C.ACS_CR | C.ACS_UF | (C.ACS_TB if s["kind"] == "downstream_port" else 0)
        elif acs is False:
            acs = None
        cfg = build_config(
            kind=s["kind"], pcie_type=ptype, header_type=htype, vendor=s["vendor"], device=s["device"],
            class_code=s["class"], revision=s.get("revision", 0),
            subsystem_vendor=s.get("subsystem_vendor", 0), subsystem_device=s.get("subsystem_device", 0),
            multifunction=multifunction, bars=bars, rom=rom, irq=s.get("irq", 0),
            bound=bool(s.get("driver")), msi=s.get("msi", 0), msix=s.get("msix", 0), acs=acs,
            link=s.get("link", {}), sriov=dict(sr, vf_bars=vf_bars) if sr else None,
            bus_numbers=(s["bdf"].bus, sec, sub), windows=windows,
            ari=bool(s.get("ari", bool(sr))), aer=bool(s.get("aer", ptype is not None)),
            ats=bool(s.get("ats", False)))
    if "command" in s:
        cfg.w16(0x04, s["command"])
    if s.get("hotplug_slot") is not None:
        pciehp.program_slot(cfg, str(s["hotplug_slot"]), bool(children.get(s["bdf"])))
    pcie = ptype is not None
    f = PciFunction(
        bdf=s["bdf"], kind=s["kind"], vendor=s["vendor"], device=s["device"], class_code=s["class"],
        config=cfg, subsystem_vendor=s.get("subsystem_vendor", 0),
        subsystem_device=s.get("subsystem_device", 0), revision=s.get("revision", 0),
        multifunction=multifunction, bars=bars + [EMPTY] * (6 - len(bars)), rom=rom, windows=windows,
        irq=s.get("irq", 0), numa_node=s.get("numa_node", -1), driver_override=None,
        pinned_group=s.get("iommu_group"), secondary=sec, subordinate=sub,
        dma_mask_bits=s.get("dma_mask_bits", 64 if pcie or s.get("driver") else 32),
        firmware_node=s.get("firmware_node"),
        reset_methods=tuple(s.get("reset_methods", ("flr", "bus") if pcie and htype == 0 else ())),
        aspm=tuple(s.get("aspm", ("l0s_aspm",) if pcie else ())), slot=s.get("slot"),
        extra_dirs=tuple(s.get("extra_dirs", ())))
    f.consistent_dma_mask_bits = f.dma_mask_bits
    f.msi_irqs = _msi_irqs(s.get("msi_irqs"))
    if s.get("rmrr"):
        f.rmrrs = tuple(tuple(r) for r in s["rmrr"])
    if sr:
        f.sriov = Sriov(f, cfg.find_ext_cap(C.EXT_SRIOV), sr.get("vf_driver"), vf_bars)
        f.sriov.vf_probe_fails_after = sr.get("vf_probe_fails_after")
        if "vf_config" in sr:
            f.sriov.vf_config = sr["vf_config"]
    return f


def _msi_irqs(spec) -> list[tuple[int, str]]:
    if spec is None:
        return []
    if isinstance(spec, dict) and "irqs" in spec:
        return [(irq, spec.get("kind", "msix")) for irq in spec["irqs"]]
    first, count, kind = spec if isinstance(spec, list) else (spec["first"], spec["count"], spec["kind"])
    return [(first + i, kind) for i in range(count)]
