"""When the kernel uses a device's ATS (drivers/iommu/intel/iommu.c, drivers/pci/ats.c).

At probe (intel_iommu_probe_device) a device is `ats_supported` when the unit has
Device-TLB support (ECAP.DT), the function has the ATS extended capability, and
dmar_ats_supported() agrees: an integrated device on the root bus, or one whose root
port an ATSR structure of the DMAR table names (or an ATSR with ALL_PORTS), with no
conventional PCI bridge on the way. Its legacy context entries then carry translation
type Device-TLB. ATS itself is enabled on attach to a translated domain
(iommu_enable_pci_caps: only with Page Aligned Request, pci_enable_ats with the 4 KiB
STU) and disabled for the identity domain or on release; while it is on, the device's
DMA goes through its ATC (intel/atc.py) and the domain's flushes reach it.
"""
from __future__ import annotations

from vfakefs.model.intel.devtlb import DevTlbTag
from vfakefs.model.pci import config as C

EXT_ATS = 0x0F                        # PCI_EXT_CAP_ID_ATS
ATS_CAP, ATS_CTRL = 0x04, 0x06        # PCI_ATS_CAP, PCI_ATS_CTRL
ATS_CAP_PAGE_ALIGNED = 0x0020         # PCI_ATS_CAP_PAGE_ALIGNED
ATS_CTRL_ENABLE = 0x8000              # PCI_ATS_CTRL_ENABLE; STU (bits 4:0) 0: 4 KiB
ATS_MAX_QDEP = 32                     # an Invalidate Queue Depth of 0 means 32
ECAP_DT = 1 << 2                      # ecap_dev_iotlb_support
ATSR_ALL_PORTS = 0x1


def ats_cap(dev) -> int | None:
    return dev.config.find_ext_cap(EXT_ATS) if dev.config.size > 256 else None


def _root_port(dev):
    """dmar_ats_supported()'s walk up: None for an integrated device, False behind a
    conventional PCI bridge, else the root port above dev."""
    up = (dev.physfn or dev).parent
    while up is not None:
        if up.pcie_type is None or up.pcie_type == C.PCIE_PCI_BRIDGE:
            return False
        if up.pcie_type == C.PCIE_ROOT_PORT:
            return up
        up = up.parent
    return None


def atsr_covers(m, port) -> bool:
    """An ATSR of the DMAR table names this root port (or covers all ports)."""
    for atsr in getattr(m, "acpi", {}).get("dmar", {}).get("atsr", ()):
        if atsr.get("flags", 0) & ATSR_ALL_PORTS:
            return True
        ports = atsr.get("ports")
        if ports is None or port.name in ports:
            return True          # an ATSR without `ports`: every root port in its scope
    return False


def ats_supported(m, u, dev) -> bool:
    """info->ats_supported of intel_iommu_probe_device()."""
    if not u.ecap & ECAP_DT or ats_cap(dev) is None:
        return False
    port = _root_port(dev)
    if port is False:
        return False
    return port is None or atsr_covers(m, port)


def probe(m, u, dev) -> None:
    """intel_iommu_probe_device(): remember ats_supported for the context entry."""
    if ats_supported(m, u, dev):
        u.ats_rids.add(dev.bdf.rid)
    else:
        u.ats_rids.discard(dev.bdf.rid)


def release(m, u, dev) -> None:
    disable(u, dev)
    u.ats_rids.discard(dev.bdf.rid)


def attached(m, u, dev, dom) -> None:
    """After dev's context entry points at dom: ATS on for a translated domain of an
    ats_supported device, off otherwise (identity, blocked)."""
    rid = dev.bdf.rid
    if rid not in u.ats_rids or dom is None or dom.table is None:
        disable(u, dev)
        return
    pos = ats_cap(dev)
    cap = dev.config.r16(pos + ATS_CAP)
    if not cap & ATS_CAP_PAGE_ALIGNED:               # pci_ats_page_aligned()
        return
    atc = u.atcs.get(rid)
    if atc is None:                                    # (its counters live on with the device)
        atc = u.atcs[rid] = dev.atc = dev.atc or u.new_atc()
        dev.config.w16(pos + ATS_CTRL, ATS_CTRL_ENABLE)  # pci_enable_ats(pdev, VTD_PAGE_SHIFT)
    qdep = cap & 0x1F or ATS_MAX_QDEP                  # pci_ats_queue_depth()
    for tags in u.devtlb.values():
        tags.pop(rid, None)
    u.devtlb.setdefault(dom.did, {})[rid] = DevTlbTag(rid, 0, qdep, atc)   # no ECAP.DIT: pfsid 0


def boot_state(m, u, dev, domain_type: str) -> None:
    """Before the unit's tables exist (they are made on first use, with numpy): only
    the ATS Enable bit, as the attach to a domain of this type would leave it; the ATC
    itself comes when the tables are made and the device attached for real."""
    pos = ats_cap(dev)
    if pos is None:
        return
    on = domain_type not in ("identity", "blocked") and ats_supported(m, u, dev) \
        and bool(dev.config.r16(pos + ATS_CAP) & ATS_CAP_PAGE_ALIGNED)
    ctrl = dev.config.r16(pos + ATS_CTRL)
    dev.config.w16(pos + ATS_CTRL, ctrl | ATS_CTRL_ENABLE if on else ctrl & ~ATS_CTRL_ENABLE)


def disable(u, dev) -> None:
    """pci_disable_ats(): the Enable bit cleared, the ATC gone, no tag left."""
    rid = dev.bdf.rid
    atc = u.atcs.pop(rid, None)
    for tags in u.devtlb.values():
        tags.pop(rid, None)
    if atc is not None:
        atc.drop()
    pos = ats_cap(dev)
    if pos is not None:
        dev.config.w16(pos + ATS_CTRL, dev.config.r16(pos + ATS_CTRL) & ~ATS_CTRL_ENABLE)


def stats(m) -> str:
    """vfakefs's own debugfs file atc_stats: per function with the ATS capability whether
    ATS is on, and its ATC's hits, misses (translation requests sent to the IOMMU),
    invalidation requests received and entries held."""
    u = m.dmar[0] if m.dmar and m.iommu_on and m.dmar[0].materialized else None   # iommu.booted()
    out = ["%-12s %-3s %12s %12s %14s %8s\n" % ("device", "ATS", "hits", "misses", "invalidations", "entries")]
    for f in m.functions:
        pos = ats_cap(f)
        if pos is None:
            continue
        on = bool(f.config.r16(pos + ATS_CTRL) & ATS_CTRL_ENABLE)
        a = f.atc if u is not None else None
        h, mi, inv, n = (a.hits, a.misses, a.invalidations, a.entries()) if a is not None else (0, 0, 0, 0)
        out.append("%-12s %-3s %12d %12d %14d %8d\n" % (f.name, "on" if on else "off", h, mi, inv, n))
    return "".join(out)
