"""vfakefs's own controls on the VT-d unit (MNT/sys/kernel/debug/vfakefs/): a device's
context-entry FPD bit (`fpd`), the simulated physical memory the remapping structures
live in (`physmem`), and the fault registers as software writes them (`regset`).

No kernel has them. They exist so a test can do what a buggy driver, firmware or
hardware would: corrupt a table, mask the fault interrupt, clear a register. Each parser
checks everything before it changes anything: a rejected write (EINVAL, with a
`vfakefs: <control>: <why>` line in the kernel log) leaves the machine as it was.
"""
from __future__ import annotations

from vfakefs.model.controls import _device, _int, reject
from vfakefs.model.iommu import iommu
from vfakefs.model.intel.faults import CTX_FPD

U64 = (1 << 64) - 1


def _unit(m, control: str):
    u = iommu.unit(m)
    if u is None:
        reject(m, control, "no DMA-remapping unit (the IOMMU is off)")
    return u


# --- fpd: `<bdf> 1|0` --------------------------------------------------------------------------
def fpd_show(m) -> str:
    """Each function with a context entry: `<bdf> <FPD>` (its own requester ID's entry)."""
    u = iommu.booted(m)
    if u is None:
        return ""
    out = []
    for f in m.functions:
        slot = u.context_slot(f.bdf.rid, create=False)
        if slot is not None:
            out.append(f"{f.name} {u.mem.read(slot) >> 1 & 1}\n")
    return "".join(out)


def fpd_store(m, text: str) -> None:
    """Set (1) or clear (0) the Fault Processing Disable field of a device's context
    entries: its own requester ID's and its DMA alias's (iommu.rids). With FPD set the
    unit records no qualified fault from them (VT-d 7.1.3; faults.QUALIFIED). The kernel
    programs context entries with FPD clear, so a later domain change clears it again."""
    words = text.split()
    if len(words) != 2:
        reject(m, "fpd", "expected '<bdf> 1' or '<bdf> 0'")
    dev = _device(m, "fpd", words[0])
    if words[1] not in ("0", "1"):
        reject(m, "fpd", f"value {words[1][:32]!r} is not 0 or 1")
    u = _unit(m, "fpd")
    slots = [u.context_slot(rid, create=False) for rid in sorted(iommu.rids(dev))]
    if None in slots:
        reject(m, "fpd", f"{dev.name} has no context table on its bus")
    for slot in slots:
        lo = u.mem.read(slot)
        u.mem.write(slot, lo | CTX_FPD if words[1] == "1" else lo & ~CTX_FPD)


# --- physmem: `<hpa> <qword>...`, `dump <hpa> [<count>]` -------------------------------------------
MAX_QWORDS = 512           # one page a request
PHYSMEM_USAGE = "expected '<hpa> <qword> [<qword>...]' or 'dump <hpa> [<count>]'"


def physmem_show(m) -> str:
    """What a fresh open reads: the range the remapping structures live in."""
    u = iommu.unit(m)
    if u is None:
        return ""
    mem = u.mem
    return f"{mem.base:#x}-{mem.base + mem.used * 4096 - 1:#x} ({mem.used} pages)\n"


def physmem_request(m, text: str) -> str:
    """Write qwords to, or dump them from, the unit's physical memory (intel/memory.py):
    root, context and page tables, the invalidation queue. hpa is 8-byte aligned and the
    whole range lies in the pages handed out so far (the range a fresh open reads); a
    request touches at most 512 qwords (a page). Nothing else is reachable (EINVAL): the
    hosts' RAM is not this memory. Like a CPU store, a write invalidates no cache: a
    translation the IOTLB holds stays until the kernel invalidates it.

    The answer (read on the same open file) is each qword of the range, `<hpa> <value>`."""
    words = text.split()
    if len(words) < 2:
        reject(m, "physmem", PHYSMEM_USAGE)
    u = _unit(m, "physmem")
    if words[0] == "dump":
        if len(words) > 3:
            reject(m, "physmem", PHYSMEM_USAGE)
        hpa = _int(m, "physmem", words[1], "hpa")
        count = _int(m, "physmem", words[2], "count", 1, MAX_QWORDS) if len(words) == 3 else 1
        values = None
    else:
        hpa = _int(m, "physmem", words[0], "hpa")
        if len(words) - 1 > MAX_QWORDS:
            reject(m, "physmem", f"{len(words) - 1} qwords is more than one request writes ({MAX_QWORDS})")
        values = [_int(m, "physmem", w, "qword", 0, U64) for w in words[1:]]
        count = len(values)
    mem = u.mem
    if hpa & 7:
        reject(m, "physmem", f"hpa {hpa:#x} is not 8-byte aligned")
    end = mem.base + mem.used * 4096
    if not mem.base <= hpa or hpa + 8 * count > end:
        reject(m, "physmem", f"{hpa:#x}+{8 * count} is outside the remapping structures' memory "
                             f"{mem.base:#x}-{end - 1:#x}")
    for k, v in enumerate(values or ()):
        mem.write(hpa + 8 * k, v)
    return "".join(f"{hpa + 8 * k:#x} {mem.read(hpa + 8 * k):#018x}\n" for k in range(count))


# --- regset: `<register> <value>` ---------------------------------------------------------------
REGSET_USAGE = "expected '<register> <value>': FSTS, FECTL, RTADDR or FRCD<n> (or its offset)"


def regset_show(m) -> str:
    """The registers this control writes, in iommu_regset's format, with the fault recording
    registers as two qwords each (iommu_regset does not show those), then the unit's counts."""
    u = iommu.unit(m)
    if u is None:
        return ""
    regs = {n: (off, v) for n, off, v in u.registers()}
    rows = [(n, *regs[n]) for n in ("FSTS", "FECTL", "RTADDR")] + u.fault_registers()
    out = [f"IOMMU: {u.name} Register Base Address: {u.reg_base:x}\n", "Name\t\t\tOffset\t\tContents\n"]
    out += ["%-16s\t0x%02x\t\t0x%016x\n" % r for r in rows]
    out.append(f"\nfault events issued: {u.fault_irqs}\nqualified faults not recorded (FPD): "
               f"{u.faults_suppressed}\n")
    return "".join(out)


def _register(m, u, word: str):
    """(name, frcd index or None) from a name or an offset."""
    offsets = {0x34: "FSTS", 0x38: "FECTL", 0x20: "RTADDR"}
    offsets.update({u.fro + 16 * i + 12: f"FRCD{i}" for i in range(u.nfr)})
    name = word.upper()
    if name[:1].isdigit():
        off = _int(m, "regset", word, "offset")
        if off not in offsets:
            reject(m, "regset", f"offset {off:#x} is not a register this control writes "
                                "(FSTS 0x34, FECTL 0x38, RTADDR 0x20, each FRCD's top dword)")
        name = offsets[off]
    if name in ("FSTS", "FECTL", "RTADDR"):
        return name, None
    if name.startswith("FRCD") and name[4:].isdigit() and int(name[4:]) < u.nfr:
        return name, int(name[4:])
    reject(m, "regset", f"unknown register {word[:32]!r}; {REGSET_USAGE}")


def regset_store(m, text: str) -> None:
    """A register write as software makes it, with the hardware's semantics (VT-d 10.4):
    FSTS (32-bit) clears the RW1C bits written as 1 (PFO, IQE, ICE, ITE, PRO; PPF and FRI are
    read-only); FECTL (32-bit) sets IM (bit 31), IP being read-only, and unmasking with IP set
    issues the held fault event; FRCD<n> is the 32-bit write to the register's top dword, as
    dmar_fault makes it: 0x80000000 clears F; RTADDR (64-bit, a 4 KiB aligned address, legacy
    mode) moves the root table the hardware walks, as RTADDR then GCMD.SRTP would.
    A fault event issued by the write runs the kernel's handler (dmar_fault)."""
    words = text.split()
    if len(words) != 2:
        reject(m, "regset", REGSET_USAGE)
    u = _unit(m, "regset")
    name, i = _register(m, u, words[0])
    value = _int(m, "regset", words[1], "value", 0, U64 if name == "RTADDR" else 0xFFFF_FFFF)
    if name == "RTADDR":
        if value & 0xFFF:
            reject(m, "regset", f"RTADDR {value:#x}: bits 11:0 must be 0 (legacy mode, 4 KiB aligned)")
        u.rtaddr = value
    elif name == "FSTS":
        u.write_fsts(value)
    elif name == "FECTL":
        u.write_fectl(value)
    else:
        u.write_frcd_high(i, value)
    iommu.handle_faults(m)
