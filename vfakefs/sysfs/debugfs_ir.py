"""/sys/kernel/debug/iommu/intel/ir_translation_struct (drivers/iommu/intel/debugfs.c,
ir_translation_struct_show, ir_tbl_remap_entry_show, ir_tbl_posted_entry_show)."""
from __future__ import annotations

import numpy as np

from vfakefs.model.intel.irq_remap import IrqRemapTable


def _units(obj) -> list[tuple[object, IrqRemapTable | None]]:
    """(unit, its table or None) for every active IOMMU: from a Machine (its dmar units and
    `irq_remap`, one table or a list of them), a table, or a list of tables."""
    if isinstance(obj, IrqRemapTable):
        return [(obj.unit, obj)]
    if isinstance(obj, (list, tuple)):
        return [(t.unit, t) for t in obj]
    tables = getattr(obj, "irq_remap", None)
    if isinstance(tables, IrqRemapTable):
        tables = [tables]
    tables = list(tables or [])
    out = []
    for u in obj.dmar:
        mine = [t for t in tables if t.unit is u] or [t for t in tables if t.unit is None]
        out.append((u, mine[0] if mine else None))
    return out


def _name(unit, table) -> str:
    return unit.name if unit is not None else table.name


def _rows(table: IrqRemapTable, posted: bool) -> list[str]:
    lo, hi = table.lo, table.hi
    mask = (lo & np.uint64(1)) != 0
    im = (lo >> np.uint64(15) & np.uint64(1)) != 0
    out = []
    for idx in np.nonzero(mask & (im if posted else ~im))[0]:
        e = table[idx]
        low, high = int(lo[idx]), int(hi[idx])
        sid = "%02x:%02x.%01x" % (e.sid >> 8, e.sid >> 3 & 0x1F, e.sid & 7)
        if posted:
            # pda_l << 6 printed with %08x: the descriptor address's low 32 bits
            out.append(" %-5d %s %08x %08x %02x  %016x\t%016x\n"
                       % (idx, sid, e.pda >> 32, e.pda & 0xFFFFFFFF, e.vector, high, low))
        else:
            out.append(" %-5d %s %08x %02x  %016x\t%016x\n" % (idx, sid, e.dest_id, e.vector, high, low))
    return out


def ir_translation_struct_show(obj) -> str:
    """Remapped entries of every IR-capable unit, `****`, then posted entries of every
    PI-capable unit. The remapped half needs GSTS.IRES; the posted half only a table."""
    units = _units(obj)
    out = []
    for unit, table in units:
        if not (unit.ecap >> 3 & 1 if unit is not None else True):           # ECAP.IR
            continue
        out.append("Remapped Interrupt supported on IOMMU: %s\n" % _name(unit, table))
        if table is not None and table.enabled:
            out.append(" IR table address:%x\n" % table.address)
            out.append(" Entry SrcID   DstID    Vct IRTE_high\t\tIRTE_low\n")
            out += _rows(table, posted=False)
        else:
            out.append("Interrupt Remapping is not enabled\n")
        out.append("\n")
    out.append("****\n\n")
    for unit, table in units:
        if not (unit.cap >> 59 & 1 if unit is not None else table.pi_supported):   # CAP.PI
            continue
        out.append("Posted Interrupt supported on IOMMU: %s\n" % _name(unit, table))
        if table is not None:
            out.append(" IR table address:%x\n" % table.address)
            out.append(" Entry SrcID   PDA_high PDA_low  Vct IRTE_high\t\tIRTE_low\n")
            out += _rows(table, posted=True)
        else:
            out.append("Interrupt Remapping is not enabled\n")
        out.append("\n")
    return "".join(out)


show = ir_translation_struct_show
