"""/sys/kernel/debug/iommu/intel/ (drivers/iommu/intel/debugfs.c, perf.c), in the
kernel's formats, plus two files of vfakefs's own: dmar_table_errors (the
essay's name; no kernel has it) and iotlb_stats."""
from __future__ import annotations

import errno

from vfakefs.model.iommu import iommu
from vfakefs.model.errors import SysfsError
from vfakefs.sysfs.nodes import Attr, Dir
from vfakefs.sysfs.parse import kstrtoint

NO_PASID = "-1    \t0x%016x:0x%016x:0x%016x\n" % (0, 0, 0)


def _unit(m):
    return iommu.unit(m)   # the tables are made (and programmed) on first use


def iommu_regset_show(m) -> str:
    u = _unit(m)
    out = [f"IOMMU: {u.name} Register Base Address: {u.reg_base:x}\n", "Name\t\t\tOffset\t\tContents\n"]
    out += ["%-16s\t0x%02x\t\t0x%016x\n" % r for r in u.registers()]
    return "".join(out) + "\n"


def dmar_translation_struct_show(m) -> str:
    u = _unit(m)
    out = [f"IOMMU {u.name}: Root Table Address: {u.root:#x}\n",
           "B.D.F\tRoot_entry\t\t\t\tContext_entry\t\t\t\tPASID\tPASID_table_entry\n"]
    for bus in sorted(u.context_tables):
        root_lo, root_hi = u.mem.read(u.root + 16 * bus), u.mem.read(u.root + 16 * bus + 8)
        for devfn in range(256):
            lo, hi = u.context(bus << 8 | devfn)
            if lo & 1:
                out.append("%02x:%02x.%x\t0x%016x:0x%016x\t0x%016x:0x%016x\t" % (
                    bus, devfn >> 3, devfn & 7, root_hi, root_lo, hi, lo) + NO_PASID)
    return "".join(out) + "\n"


def _domain_rows(dom, legacy: bool) -> list[str]:
    rows, levels = [], dom.table.levels
    for iova, level, path in dom.table.leaves():
        cols = [0] * (5 - levels) + path + [0] * (levels - len(path))   # PML5E .. PTE
        head = "0x%013x |\t0x%016x\t0x%016x\t0x%016x" % (iova >> 12, cols[0], cols[1], cols[2])
        if legacy:
            rows.append(head + "\t0x%016x\t0x%016x\n" % (cols[3], cols[4]))
        else:
            rows.append(head + "".join("\t0x%016x" % c for c in cols[3:] if c) + "\n")
    return rows


def domain_translation_struct_show(m) -> str:
    """The single file of kernels before 6.7: every device's page tables."""
    out = []
    for f in m.functions:
        dom = f.group.domain if f.group is not None else None
        if dom is None or dom.table is None:
            continue
        out.append(f"Device {f.name} @{dom.table.pgd:#x}\n")
        out.append("IOVA_PFN\t\tPML5E\t\t\tPML4E\t\t\tPDPE\t\t\tPDE\t\t\tPTE\n")
        out += _domain_rows(dom, legacy=True)
        out.append("\n")
    return "".join(out)


def device_domain_show(dev) -> str:
    """<dev>/domain_translation_struct of 6.7 and later."""
    dom = dev.group.domain if dev.group is not None else None
    if dom is None or dom.table is None:
        return ""
    b = dev.bdf
    out = ["Device %04x:%02x:%02x.%x @0x%x\n" % (b.domain, b.bus, b.dev, b.fn, dom.table.pgd),
           "%-17s\t%-18s\t%-18s\t%-18s\t%-18s\t%-s\n" % ("IOVA_PFN", "PML5E", "PML4E", "PDPE", "PDE", "PTE")]
    return "".join(out + _domain_rows(dom, legacy=False))


def invalidation_queue_show(m) -> str:
    u = _unit(m)
    head = tail = u.iq_tail
    out = [f"Invalidation queue on IOMMU: {u.name}\n", f" Base: {u.iq_base:#x}\tHead: {head}\tTail: {tail}\n",
           "Index\t\tqw0\t\t\tqw1\t\t\tstatus\n"]
    out += ["%5d\t%016x\t%016x\t%016x\n" % (i, qw0, qw1, st) for i, (qw0, qw1, st) in enumerate(u.iq)]
    return "".join(out) + "\n"


PERF_HEADER = ("                  <0.1us   0.1us-1us    1us-10us  10us-100us   100us-1ms    1ms-10ms      >=10ms"
               "     min(us)     max(us) average(us)")
PERF_TYPES = {1: "   inv_iotlb", 2: "  inv_devtlb", 3: "     inv_iec"}


def dmar_perf_latency_show(m) -> str:
    u = _unit(m)
    out = [f"IOMMU: {u.name} Register Base Address: {u.reg_base:x}\n", PERF_HEADER]
    for t, name in PERF_TYPES.items():
        if t in u.perf:
            counts = u.perf[t]
            out.append("\n" + name + "".join("%12d" % c for c in counts))
    return "".join(out) + "\n"


def dmar_perf_latency_store(m, text: str) -> None:
    """0 disables every counter; 1, 2, 3 enable inv_iotlb, inv_devtlb, inv_iec."""
    # dmar_perf_latency_write(): the first 63 bytes, kstrtoint (no spaces, one trailing
    # newline), any failure EINVAL
    try:
        n = kstrtoint(text[:63])
    except SysfsError:
        raise SysfsError(errno.EINVAL) from None
    u = _unit(m)
    if n == 0:
        u.perf.clear()
    elif n in PERF_TYPES:
        u.perf.setdefault(n, [0] * 10)
    else:
        raise SysfsError(errno.EINVAL)


def dmar_table_errors_show(m) -> str:
    """vfakefs's own file: the DMA faults the handler serviced (the last FAULT_LOG_MAX), as it logged them."""
    return "".join(f.log_line().removeprefix("DMAR: ") + "\n" for f in _unit(m).fault_log)


def iotlb_stats_show(m) -> str:
    """vfakefs's own file: IOTLB hits, misses and invalidations per domain id."""
    u = _unit(m)
    out = [f"IOTLB on {u.name}: {u.iotlb.size} entries, {u.iotlb.invalidations['global']} global invalidations\n",
           "%-6s %12s %12s %14s\n" % ("DID", "hits", "misses", "invalidations")]
    out += ["%-6d %12d %12d %14d\n" % (did, h, mi, inv) for did, (h, mi, inv) in u.iotlb.stats().items()]
    return "".join(out)


def intel_entries(v) -> dict:
    m = v.m
    from vfakefs.sysfs import debugfs_ir
    out = {
        "dmar_perf_latency": Attr("dmar_perf_latency", dmar_perf_latency_show, dmar_perf_latency_store, 0o644, 0),
        "dmar_translation_struct": Attr("dmar_translation_struct", dmar_translation_struct_show, size=0),
        "invalidation_queue": Attr("invalidation_queue", invalidation_queue_show, size=0),
        "iommu_regset": Attr("iommu_regset", iommu_regset_show, size=0),
        "ir_translation_struct": Attr("ir_translation_struct", debugfs_ir.show, size=0),
        "dmar_table_errors": Attr("dmar_table_errors", dmar_table_errors_show, size=0),
        "iotlb_stats": Attr("iotlb_stats", iotlb_stats_show, size=0),
    }
    out = {k: a.bind(m) for k, a in out.items()}
    if m.profile.debugfs_per_device_domain:
        for f in m.functions:
            out[f.name] = Dir(lambda f=f: {"domain_translation_struct":
                                           Attr("domain_translation_struct", device_domain_show, size=0).bind(f)})
    else:
        out["domain_translation_struct"] = Attr("domain_translation_struct", domain_translation_struct_show,
                                                size=0).bind(m)
    return out


def debug_iommu_dir(v) -> Dir:
    return Dir(lambda: {"intel": Dir(lambda: intel_entries(v))} if v.m.iommu_on else {})
