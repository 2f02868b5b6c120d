"""VT-d faults in the model (no mount): each legacy fault reason from a corrupted
structure, FPD against the qualified ones, translate_batch agreeing with translate on
corrupted tables, and primary fault logging as VT-d 7.2.1 / 10.4.9-10.4.14 describe it
(PFO stops recording, PPF from the F bits, FECTL.IM holds the event, W1C writes) with
the kernel's dmar_fault servicing it (drivers/iommu/intel/dmar.c)."""
from __future__ import annotations

import numpy as np
import pytest

from vfakefs.model import topology
from vfakefs.model.intel.faults import FECTL_IM, FECTL_IP, QUALIFIED
from vfakefs.model.intel.pagetable import ADDR, PS
from vfakefs.model.iommu import iommu

RID = 0x0200                    # seed-vtd's 02:00.0 (igb), 4-level tables, 8 recording registers


def setup():
    m = topology.load("seed-vtd")
    u = iommu.unit(m)
    dev = m.lookup("0000:02:00.0")
    iova = iommu.dma_map(m, dev, 4096)
    u.iotlb.invalidate_global()
    lo, _ = u.context(RID)
    return m, u, iova, u.context_slot(RID, create=False), lo & ADDR


def pte_addrs(u, pgd, iova):
    """The address of the entry at each level (4, 3, 2, 1) of iova's walk."""
    out, table = [], pgd
    for lv in (4, 3, 2, 1):
        a = table + 8 * ((iova >> (12 + 9 * (lv - 1))) & 511)
        out.append(a)
        table = u.mem.read(a) & ADDR
    return out


def corrupt(u, slot, pgd, iova, reason):
    mem, root = u.mem, u.rtaddr + 16 * (RID >> 8)
    if reason == 0x01:
        mem.write(root, 0)
    elif reason == 0x02:
        mem.write(slot, mem.read(slot) & ~1)
    elif reason == 0x03:
        mem.write(slot, mem.read(slot) | 3 << 2)                   # TT 11b: reserved
    elif reason == 0x07:
        mem.write(pte_addrs(u, pgd, iova)[1], 0x1000 | 3)          # level 3 points below memory
    elif reason == 0x08:
        u.rtaddr = 0x1000
    elif reason == 0x09:
        mem.write(root, 0x1000 | 1)
    elif reason == 0x0a:
        mem.write(root, mem.read(root) | 1 << 5)                   # bits 11:1 reserved
    elif reason == 0x0b:
        mem.write(slot + 8, mem.read(slot + 8) | 1 << 40)          # bits 63:24 reserved
    elif reason == 0x0c:
        mem.write(pte_addrs(u, pgd, iova)[0], mem.read(pte_addrs(u, pgd, iova)[0]) | PS)   # PS in a PML4E


REQUEST = {0x04: (1 << 48, False, 0), 0x05: (None, True, 0), 0x0d: (None, False, 2)}   # (addr, write, AT)


@pytest.mark.parametrize("reason", range(0x01, 0x0e))
@pytest.mark.parametrize("fpd", [False, True])
def test_each_reason_and_fpd(reason, fpd):
    m, u, iova, slot, pgd = setup()
    corrupt(u, slot, pgd, iova, reason)
    addr, write, at = REQUEST.get(reason, (None, False, 0))
    if reason in (0x05, 0x06):
        addr = iova + 0x10000                                       # unmapped
    if fpd:
        u.mem.write(slot, u.mem.read(slot) | 2)
    t = u.translate(RID, iova if addr is None else addr, 4, write, at)
    assert t.hpa is None and t.fault is not None and t.fault.reason == reason
    recorded = not (fpd and reason in QUALIFIED)
    assert (u.frcd[0] is t.fault) == recorded
    assert u.faults_suppressed == (0 if recorded else 1)
    assert u.fsts == (0x2 if recorded else 0)


def test_qualified_is_the_context_entry_readable_set():
    assert QUALIFIED == {0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0b, 0x0c, 0x0d}


def test_reserved_bits_and_widths_per_entry():
    m, u, iova, slot, pgd = setup()
    mem = u.mem
    lo, hi = mem.read(slot), mem.read(slot + 8)
    for bad_hi in (hi | 1 << 7, hi | 1 << 24, (hi & ~7) | 1):      # bit 7, bits 63:24; AW 39-bit not in SAGAW
        mem.write(slot + 8, bad_hi)
        want = 0x03 if bad_hi & 7 == 1 else 0x0b
        assert u.translate(RID, iova).fault.reason == want, hex(bad_hi)
    mem.write(slot + 8, hi)
    mem.write(slot, lo | 1 << 48)                                  # SLPTPTR above HAW (48)
    assert u.translate(RID, iova).fault.reason == 0x0b
    mem.write(slot, (lo & 0xFFF) | 0x1000)                         # SLPTPTR cannot be read
    assert u.translate(RID, iova).fault.reason == 0x03
    u.ecap &= ~0x4                                                  # (seed-vtd's unit has DT: ATS)
    mem.write(slot, lo | 1 << 2)                                    # TT 01b without ECAP.DT
    assert u.translate(RID, iova).fault.reason == 0x03
    u.ecap |= 0x4
    mem.write(slot, lo)
    leaf = pte_addrs(u, pgd, iova)[3]
    e = mem.read(leaf)
    mem.write(leaf, e | 1 << 50)                                    # a PTE address bit above HAW
    assert u.translate(RID, iova).fault.reason == 0x0c
    mem.write(leaf, (e | 1 << 50) & ~3)                             # not present: reserved bits not looked at
    assert u.translate(RID, iova).fault.reason == 0x06
    mem.write(leaf, e)
    assert u.translate(RID, iova).hpa is not None


@pytest.mark.parametrize("reason", [0x01, 0x03, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c])
@pytest.mark.parametrize("write", [False, True])
def test_batch_agrees_with_translate_on_corrupted_tables(reason, write):
    m, u, iova, slot, pgd = setup()
    corrupt(u, slot, pgd, iova, reason)
    iovas = [iova, iova + 0x10000, 1 << 48, iova + 0x123]
    _, r = u.translate_batch(RID, np.array(iovas, dtype=np.uint64), write)
    for i, a in enumerate(iovas):
        assert int(r[i]) == u.translate(RID, a, 1, write).fault.reason, (hex(a), reason)


# --- recording ------------------------------------------------------------------------------------
def faults(m, u, n, start=0x10_0000):
    for i in range(n):
        u.translate(RID, start + 0x1000 * i, 4, False)


def test_pfo_stops_recording_until_cleared():
    m, u, *_ = setup()
    u.write_fectl(FECTL_IM)
    faults(m, u, 9)
    assert u.fsts == 0x3 and u.fectl == FECTL_IM | FECTL_IP and u.fault_irqs == 0
    u.write_frcd_high(3, 1 << 31)                   # a free register, but PFO is set
    faults(m, u, 1, 0x90_0000)
    assert u.frcd[3] is None and u.frcd[0].addr == 0x10_0000
    u.write_fsts(0x2)                              # PPF is read-only
    assert u.fsts == 0x3
    u.write_fsts(0x1)
    assert u.fsts == 0x2
    faults(m, u, 1, 0x90_0000)                     # the internal index wrapped to 0: still full
    assert u.fsts == 0x3
    assert iommu.handle_faults(m) == []             # masked: nothing issued, the kernel saw nothing
    u.write_fectl(0)                               # unmasking issues the held event
    assert u.fault_irqs == 1 and u.fectl == 0
    n = len(m.kmsg.records)
    served = iommu.handle_faults(m)
    # dmar_fault from FRI 0: registers 0-2, then stops at the freed register 3
    assert [f.addr for f in served] == [0x10_0000, 0x10_1000, 0x10_2000]
    assert m.kmsg.records[n].text == "DMAR: DRHD: handling fault status reg 3"
    assert u.fsts == 0x2 and sum(f is not None for f in u.frcd) == 4   # 4-7 wait: PPF stays set


def test_no_new_interrupt_while_a_status_field_is_set():
    m, u, *_ = setup()
    u.write_fectl(FECTL_IM)
    faults(m, u, 1)
    u.write_frcd_high(0, 1 << 31)                  # software serviced it: IP clears
    assert u.fsts == 0 and u.fectl == FECTL_IM
    u._fsts |= 0x10                                 # IQE pending
    u.write_fectl(0)
    faults(m, u, 1, 0x20_0000)
    assert u.fault_irqs == 0                         # a status field was already set
    u.write_fsts(0x10)
    faults(m, u, 1, 0x30_0000)                       # PPF still set from the last one
    assert u.fault_irqs == 0
    iommu.handle_faults(m)
    u.frcd = [None] * u.nfr
    faults(m, u, 1, 0x40_0000)
    assert u.fault_irqs == 1


def test_dmar_fault_with_pfo_alone_leaves_it():
    """dmar_fault: without PPF it prints FSTS and returns; PFO stays (drivers/iommu/intel/dmar.c)."""
    m, u, *_ = setup()
    u._fsts = 0x1
    log = []
    assert u.service_faults(lambda text, level: log.append(text)) == []
    assert log == ["DMAR: DRHD: handling fault status reg 1"] and u.fsts == 0x1


def test_frcd_layout():
    m, u, iova, *_ = setup()
    u.write_fectl(FECTL_IM)
    u.translate(RID, iova, 4, True)                  # dma_map'd read-write: no fault
    u.translate(RID, 1 << 48, 4, True)
    name = {n: v for n, _, v in u.fault_registers()}
    assert name["FRCD0_LO"] == 1 << 48
    assert name["FRCD0_HI"] == 1 << 63 | 0 << 62 | 0x04 << 32 | RID
    assert [off for n, off, _ in u.fault_registers()][:2] == [u.fro, u.fro + 8]
