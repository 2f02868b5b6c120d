"""The kernel's tree of memory resources (kernel/resource.c iomem_resource), as
/proc/iomem shows it.

What fills it, in the order the kernel inserts it:
- the firmware's e820 map (e820__reserve_resources: e820_type_to_string's names), its
  first page made Reserved as trim_bios_range() does;
- the host bridge's memory windows, `PCI Bus 0000:00`;
- the platform's registers: the IOAPIC, HPET and local APIC at the PC's fixed addresses,
  each DMAR unit (`dmar0`, its register page(s) as map_iommu() requests them), and the
  ECAM region (`PCI MMCONFIG 0000 [bus 00-ff]`, 6.8+ `PCI ECAM ...`) over the e820 entry
  that reserves it;
- the PCI tree, bus by bus as pci_claim_resource() places each resource in its bus's
  window (pci_find_parent_resource, a prefetchable one in a prefetchable window first):
  each bridge's memory windows `PCI Bus 0000:NN`, each memory BAR, ROM and IOV BAR under
  the function's name, each VF's BAR inside its PF's IOV BAR, and under a bound driver's
  BARs the name it claimed them with (pci_request_regions: Driver.regions).
A resource no window of its bus holds, or that overlaps one already claimed there, is not
claimed (the kernel logs a conflict and leaves it unassigned), so it is not shown.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vfakefs.model.firmware import E820_TYPES
from vfakefs.model.pci.pci import IORESOURCE_PREFETCH

PAGE = 0x1000
MAX_IORES_LEVEL = 5                 # r_show() indents at most this deep
PLATFORM = ((0xFEC00000, 0xFEC003FF, "IOAPIC 0"), (0xFED00000, 0xFED003FF, "HPET 0"),
            (0xFEE00000, 0xFEE00FFF, "Local APIC"))


@dataclass
class Res:
    start: int
    end: int
    name: str
    prefetch: bool = False
    children: list = field(default_factory=list)

    def holds(self, r: Res) -> bool:
        return self.start <= r.start and r.end <= self.end


def insert(level: list, r: Res, over_equal: bool = False) -> Res:
    """insert_resource(): into the deepest resource that holds it; what it holds itself
    becomes its children (over_equal: a resource of the very same range too, as
    __insert_resource() takes it when the new one is inserted later). Returns r."""
    for p in level:
        if p.holds(r) and not (over_equal and (p.start, p.end) == (r.start, r.end)):
            return insert(p.children, r, over_equal)
    inside = [c for c in level if r.holds(c)]
    for c in inside:
        level.remove(c)
    r.children.extend(inside)
    r.children.sort(key=lambda c: c.start)
    level.append(r)
    level.sort(key=lambda c: c.start)
    return r


def _e820(m) -> list[Res]:
    out = []
    for start, end, kind in m.firmware.e820:
        if kind == "usable" and start == 0:      # trim_bios_range(): the first page is the BIOS's
            out.append(Res(0, PAGE - 1, "Reserved"))
            start = PAGE
        if start <= end:
            out.append(Res(start, end, E820_TYPES[kind]))
    return out


def _dmar_size(u) -> int:
    """map_iommu(): a page, or as far as the fault-recording and IOTLB registers reach."""
    fault = ((u.cap >> 24) & 0x3FF) * 16 + (((u.cap >> 40) & 0xFF) + 1) * 16
    iotlb = ((u.ecap >> 8) & 0x3FF) * 16 + 16
    return max(PAGE, (max(fault, iotlb) + PAGE - 1) // PAGE * PAGE)


def request(parent: Res, r: Res) -> Res | None:
    """request_resource(): r becomes a child of parent, unless it overlaps one (a conflict:
    the kernel leaves r unclaimed)."""
    if any(c.start <= r.end and r.start <= c.end for c in parent.children):
        return None
    parent.children.append(r)
    parent.children.sort(key=lambda c: c.start)
    return r


def _place(windows: list[Res], r: Res) -> Res | None:
    """pci_claim_resource(): pci_find_parent_resource() picks the bus window holding r,
    a prefetchable one first for a prefetchable resource; request_resource() there."""
    fits = [w for w in windows if w.holds(r)]
    fits.sort(key=lambda w: not (w.prefetch and r.prefetch))
    return request(fits[0], r) if fits else None


def _claims(m, f, node: Res, index: int) -> None:
    drv = f.driver
    if drv is not None and drv.regions and index >= 0:
        node.children.append(Res(node.start, node.end, drv.regions))


def build(m) -> list[Res]:
    top: list[Res] = []
    for r in _e820(m):
        insert(top, r)
    root = [insert(top, Res(s, e, "PCI Bus 0000:00", prefetch=False))
            for s, e, flags in m.firmware.pci_windows if not flags & 0x100]
    for s, e, name in PLATFORM:
        insert(top, Res(s, e, name))
    for u in m.dmar:
        insert(top, Res(u.reg_base, u.reg_base + _dmar_size(u) - 1, f"dmar{u.seq_id}"))
    if m.firmware.ecam is not None:      # pci_mmcfg_late_insert_resources, over its e820 reservation
        s, e = m.firmware.ecam
        insert(top, Res(s, e, m.profile.ecam_name.format(domain="0000", bus="00-ff")), over_equal=True)

    def mem(r) -> bool:
        return bool(r.size) and not r.is_io

    def walk(bridge, windows: list[Res]) -> None:
        for f in m.children(bridge):
            if f.is_virtfn:
                continue
            res = [(i, b) for i, b in enumerate(f.bars) if mem(b)] + ([(-1, f.rom)] if mem(f.rom) else [])
            for i, b in res:
                node = _place(windows, Res(b.start, b.end, f.name, bool(b.flags & IORESOURCE_PREFETCH)))
                if node is not None:
                    _claims(m, f, node, i)
            if f.sriov is not None:
                for i, iov in enumerate(f.sriov.iov_resources()):
                    if not mem(iov):
                        continue
                    node = _place(windows, Res(iov.start, iov.end, f.name, bool(iov.flags & IORESOURCE_PREFETCH)))
                    for vf in f.sriov.vfs if node is not None else ():
                        b = vf.bars[i]
                        vf_node = request(node, Res(b.start, b.end, vf.name)) if mem(b) else None
                        if vf_node is not None:     # pci_iov_add_virtfn: request_resource(the IOV BAR, the VF's)
                            _claims(m, vf, vf_node, i)
            if f.is_bridge:
                below = []
                for w in f.windows[1:3]:
                    if w.size:
                        node = _place(windows, Res(w.start, w.end, "PCI Bus 0000:%02x" % f.secondary,
                                                   bool(w.flags & IORESOURCE_PREFETCH)))
                        if node is not None:
                            below.append(node)
                walk(f, below)
    walk(None, root)
    return top


def show(m, capable: bool) -> str:
    """r_show(): two spaces per level, at least 8 hex digits (iomem ends above 0xffff),
    `start-end : name`; both addresses 0 for a reader without CAP_SYS_ADMIN."""
    out: list[str] = []

    def emit(level: list, depth: int) -> None:
        for r in level:
            s, e = (r.start, r.end) if capable else (0, 0)
            out.append("%s%08x-%08x : %s\n" % ("  " * min(depth, MAX_IORES_LEVEL), s, e, r.name))
            emit(r.children, depth + 1)
    emit(build(m), 0)
    return "".join(out)
