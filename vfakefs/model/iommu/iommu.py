"""The IOMMU core between groups and the remapping hardware (drivers/iommu/iommu.c,
intel/iommu.c, dma-iommu.c): each group's default domain, the context entries
of its members, the DMA API drivers map through, and the fault handler's policy."""
from __future__ import annotations

import errno

from vfakefs.model.errors import SysfsError
from vfakefs.model.intel.dmar import Fault, Translation
from vfakefs.model.iommu import ats, dma_stats, flush_queue, groups
from vfakefs.model.iommu.groups import dma_alias_root
from vfakefs.model.kmsg import KERN_WARNING
from vfakefs.model.intel.pte import R, W

DEFAULT_FAULT_THRESHOLD = 100
DMA_BUFFER = "dma_map"      # host memory dma_map allocated itself: dma_unmap frees it


def unit(m):
    """The remapping unit, its tables made (and programmed) on first use."""
    u = m.dmar[0] if m.dmar and m.iommu_on else None
    if u is not None:
        u.materialize()
    return u


def program_all(u) -> None:
    """When the tables are made: every function into its group's domain, in probe order."""
    m = u.machine
    if m.iommu_on:
        for f in m.functions:
            attach_device(m, f)


def booted(m):
    """The unit if its tables exist; before that there is nothing to re-program
    (unit() programs every function from its group when it makes them)."""
    u = m.dmar[0] if m.dmar and m.iommu_on else None
    return u if u is not None and u.materialized else None


def rids(dev) -> set[int]:
    """The requester IDs a function's DMA can carry: its own and a bridge alias."""
    out = {dev.bdf.rid}
    alias = dma_alias_root(dev)
    if alias is not dev:
        out.add(alias.secondary << 8 if alias.is_bridge else alias.bdf.rid)
    return out


def new_default_domain(u, group):
    """A domain of the group's type with its direct regions (RMRRs, the ISA floppy
    window) mapped 1:1 in 4 KiB pages, as iommu_create_device_direct_mappings does."""
    dom = u.new_domain(group.default_domain)
    if dom.table is not None:
        for start, end, kind in group.reserved_regions():
            if kind.startswith("direct"):
                dom.table.map(start, start, end - start + 1, R | W, superpages=False)
    return dom


def attach_device(m, dev) -> None:
    """iommu_probe_device + attach to the group's default domain."""
    u = booted(m)
    if u is None and dev.group is not None and m.dmar and m.iommu_on:
        ats.boot_state(m, m.dmar[0], dev, dev.group.default_domain)   # tables not made yet
    if u is None or dev.group is None:
        return
    group = dev.group
    if group.domain is None:
        group.domain = new_default_domain(u, group)
    ats.probe(m, u, dev)
    for rid in rids(dev):
        u.set_context(rid, group.domain)
    ats.attached(m, u, dev, group.domain)


def detach_device(m, dev, group) -> None:
    u = booted(m)
    if u is None:
        return
    for rid in rids(dev):
        u.set_context(rid, None)
    ats.release(m, u, dev)
    if not group.devices and group.domain is not None:
        u.free_domain(group.domain)          # iommu_group_release: the default domain goes
        group.domain = None


def change_domain(m, group) -> None:
    """A `type` write: a new default domain, every member's context entry re-programmed."""
    u = booted(m)
    if u is None:
        for dev in group.devices if m.dmar and m.iommu_on else ():
            ats.boot_state(m, m.dmar[0], dev, group.default_domain)
        return
    old = group.domain
    set_group_domain(u, group, new_default_domain(u, group))
    if old is not None:
        u.free_domain(old)


def set_group_domain(u, group, dom) -> None:
    """__iommu_group_set_domain(): every member's context entries re-programmed for dom
    (the unit flushes the context cache and the old domain's IOTLB as it goes)."""
    group.domain = dom
    for dev in group.devices:
        for rid in rids(dev):
            u.set_context(rid, dom)
        ats.attached(u.machine, u, dev, dom)


def store_type(m, group, text: str) -> None:
    """iommu_group_store_type(): the group's rules decide, then a new default domain."""
    if groups.set_type(m, group, text):
        change_domain(m, group)


# --- the DMA API a driver maps through -----------------------------------------------------------
def dma_domain(group):
    """iommu_get_dma_domain(): the DMA API maps in the group's default domain, also while a
    DMA owner (a VFIO group, group.owner) has displaced it; it comes back, mappings and all."""
    owner = group.owner
    return owner.default_domain if owner is not None else group.domain


def dma_map(m, dev, size: int, write: bool = True, hpa: int | None = None) -> int:
    """dma_map_single(): an IOVA for `size` bytes of host memory (identity: the address itself).
    The IOVA comes from below 4 GiB first, then from the whole width, as
    iommu_dma_alloc_iova does for a PCI device; ENOMEM when neither has room."""
    size = (size + 0xFFF) & ~0xFFF
    u = unit(m)
    dom = dma_domain(dev.group) if u is not None and dev.group is not None else None
    iova = None
    if dom is not None and dom.table is not None:
        reserved = [(start, end) for start, end, _ in dev.group.reserved_regions()]
        iova = dom.alloc_iova(size, 1 << 32, reserved)
        if iova is None:
            iova = dom.alloc_iova(size, 1 << dom.table.width, reserved)
        if iova is None:
            raise SysfsError(errno.ENOMEM, f"no IOVA space for {size} bytes")
    if hpa is None:
        # a buffer of 2 MiB or more from the page allocator is 2 MiB aligned, so
        # intel_iommu maps it with superpages where the unit has them
        hpa = m.alloc_host_memory(size, align=min(1 << 21, 1 << (size - 1).bit_length()), owner=DMA_BUFFER)
    if iova is None:
        return hpa
    dom.table.map(iova, hpa, size, R | (W if write else 0))
    dom.mappings[iova] = (hpa, size, R | (W if write else 0))
    if u.cap & 0x80:                                  # caching mode: invalidate on map too
        u.invalidate_pages(dom.did, iova, size)
    return iova


def dma_unmap(m, dev, iova: int) -> None:
    """dma_unmap_single(), and the buffer dma_map allocated goes back (dma_free_coherent):
    its IOVA range (iommu_dma_free_iova), the page-table pages the unmap emptied, and the
    host pages. Translated: the range is cleared, then invalidated at once (DMA, strict) or
    queued for the flush queue's domain-wide flush, which frees the IOVA (DMA-FQ,
    flush_queue.py). Identity or no IOMMU: the bus address is the buffer."""
    u = unit(m)
    dom = dma_domain(dev.group) if u is not None and dev.group is not None else None
    if dom is not None and dom.table is not None:
        if iova not in dom.mappings:
            return
        hpa, size, _ = dom.mappings.pop(iova)
        if dom.type == "DMA-FQ":                  # deferred: the flush queue flushes and frees the IOVA
            u.unmap_pages(dom, iova, size, flush=False)
            flush_queue.queue_iova(m, u, dom, iova, size)
        else:
            u.unmap_pages(dom, iova, size)
    else:
        hpa = iova
    if m.host_memory.owner(hpa) == DMA_BUFFER:
        m.free_host_memory(hpa)


# --- DMA from a device, and what the kernel does with faults ---------------------------------------
def dma(m, dev, iova: int, size: int, write: bool) -> Translation:
    """One DMA request from dev: no bus mastering, no request; else the unit translates."""
    if not dev.config.r16(0x04) & 0x4:
        return Translation(fault=None)
    u = unit(m)
    if u is None:
        dma_stats.count(dev, None, (0, 0), 1, size, 0)
        return Translation(hpa=iova)
    mark = dma_stats.iotlb_mark(u)
    t = u.device_translate(dev.bdf.rid, iova, size, write)      # its ATC first when ATS is on
    dma_stats.count(dev, u, mark, 1, size if t.fault is None else 0, t.fault is not None)
    if t.fault is not None:
        handle_faults(m)
    return t


def handle_faults(m) -> list[Fault]:
    """dmar_fault(), when the unit issued its fault event interrupt, plus vfakefs's policy:
    count faults per device and, past the threshold, disable the device's bus mastering
    (the essay's FAULT_THRESHOLD)."""
    u = unit(m)
    if u is None or not u.take_fault_irq():     # no fault event issued (none recorded, or FECTL.IM)
        return []
    faults = u.service_faults(m.kmsg.log, m.kmsg.uptime_usec() / 1e6)
    for f in faults:
        dev = m.by_rid(f.sid)
        if dev is None:
            continue
        dev.dma_faults += 1
        if dev.dma_faults == m.fault_threshold and dev.config.r16(0x04) & 0x4:
            dev.config.w16(0x04, dev.config.r16(0x04) & ~0x4)
            m.kmsg.dev(dev, f"DMAR: {dev.dma_faults} DMA faults reached the threshold; "
                            "bus mastering disabled", KERN_WARNING)
    return faults
