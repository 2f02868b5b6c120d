"""The VT-d model against hand-computed walks, the kernel's fault log lines and
the reference capture (KERNEL-FACTS.md §7; VT-d spec 3.6-3.7, 6.5, 7.2, 9.3-9.8;
drivers/iommu/intel/dmar.c, iommu.c).

Every expected value here is written out by hand: table indexes from the IOVA's
9-bit fields, entry values from addr | R | W | PS | SNP, context entries from
pgd | TT << 2 | P and DID << 8 | AW."""
from __future__ import annotations

import numpy as np
import pytest

from vfakefs.model.iommu import groups, iommu
from vfakefs.model.pci import sriov
from vfakefs.model import topology
from vfakefs.model.intel.dmar import FAULT_LOG_MAX, DmarUnit, Fault
from vfakefs.model.intel.iotlb import Iotlb
from vfakefs.model.intel.memory import PhysMem
from vfakefs.model.intel.pagetable import PS, R, SNP, W, PageTable
from tests.model.clock import fq_timer


KB4, MB2, GB1 = 1 << 12, 1 << 21, 1 << 30
SEED_CAP = 0xD2078C406F0462          # 48-bit, 4-level, NFR 8, not caching mode
QEMU_CAP = 0xD2008C22260286          # 39-bit, 3-level, NFR 1, caching mode


def lines(m, n):
    return [r.text for r in m.kmsg.records[-n:]]


def levels_of(m, n):
    return [r.level for r in m.kmsg.records[-n:]]


def service(m):
    return iommu.handle_faults(m)


# ================================================================ page tables, by hand
BASE = 0x100000

# 4-level IOVAs: L4 index 3, L3 index 5, L2 index 7, L1 index 9 -> 3<<39 | 5<<30 | 7<<21 | 9<<12
IOVA_4K = 0x0000_0181_40E0_9000
IOVA_2M = 0x0000_0181_4100_0000      # L4 3, L3 5, L2 8 (same L3 and L2 tables as IOVA_4K)
IOVA_1G = 0x0000_0181_8000_0000      # L4 3, L3 6


def test_hand_computed_iovas():
    assert IOVA_4K == 3 << 39 | 5 << 30 | 7 << 21 | 9 << 12
    assert IOVA_2M == 3 << 39 | 5 << 30 | 8 << 21
    assert IOVA_1G == 3 << 39 | 6 << 30


@pytest.fixture
def pt4():
    mem = PhysMem(base=BASE, pages=8)
    return mem, PageTable(mem, 4, superpages=(2, 3))


def test_4k_map_writes_one_entry_per_level(pt4):
    mem, pt = pt4
    assert pt.pgd == 0x100000 and pt.width == 48
    pt.map(IOVA_4K, 0x7654_3000, KB4, R | W)
    # tables allocated in walk order: L3 table at 0x101000, L2 at 0x102000, L1 at 0x103000
    assert mem.used == 4
    assert mem.read(0x100000 + 8 * 3) == 0x101003          # L4[3] -> L3 table | R | W
    assert mem.read(0x101000 + 8 * 5) == 0x102003          # L3[5] -> L2 table
    assert mem.read(0x102000 + 8 * 7) == 0x103003          # L2[7] -> L1 table
    assert mem.read(0x103000 + 8 * 9) == 0x7654_3003       # L1[9]: the page | R | W
    assert pt.entries(IOVA_4K) == [0x101003, 0x102003, 0x103003, 0x7654_3003]
    assert pt.mapped_pages == 1
    # nothing else in any of the four tables
    assert np.count_nonzero(mem.q[:4 * 512]) == 4


def test_2m_superpage_is_a_ps_leaf_at_level_2(pt4):
    mem, pt = pt4
    pt.map(IOVA_4K, 0x7654_3000, KB4, R | W)
    pt.map(IOVA_2M, 0x4000_0000, MB2, R)
    assert mem.used == 4                                    # reuses the L3 and L2 tables
    assert mem.read(0x102000 + 8 * 8) == 0x4000_0081        # L2[8]: addr | PS | R
    assert pt.entries(IOVA_2M) == [0x101003, 0x102003, 0x4000_0081]
    assert pt.entries(IOVA_2M + 0x1F_F000) == [0x101003, 0x102003, 0x4000_0081]
    assert pt.mapped_pages == 1 + 512


def test_1g_superpage_is_a_ps_leaf_at_level_3_with_snoop(pt4):
    mem, pt = pt4
    pt.map(IOVA_1G, 0x1_C000_0000, GB1, R | W, snoop=True)
    assert mem.used == 2                                    # pgd + one L3 table
    assert mem.read(0x100000 + 8 * 3) == 0x101003
    assert mem.read(0x101000 + 8 * 6) == 0x1_C000_0883      # addr | SNP | PS | W | R
    assert 0x1_C000_0883 == 0x1_C000_0000 | SNP | PS | W | R
    assert pt.entries(IOVA_1G + 0x3FFF_F000) == [0x101003, 0x1_C000_0883]
    assert pt.mapped_pages == 1 << 18


def test_1g_without_sllps_1g_becomes_512_2m_leaves():
    mem = PhysMem(base=BASE, pages=8)
    pt = PageTable(mem, 4, superpages=(2,))
    pt.map(IOVA_1G, 0x1_C000_0000, GB1, R)
    assert mem.used == 3                                    # pgd, L3, one L2 table
    assert mem.read(0x101000 + 8 * 6) == 0x102003
    l2 = mem.q[(0x102000 - BASE) >> 3:((0x102000 - BASE) >> 3) + 512]
    assert [int(e) for e in l2[:2]] == [0x1_C000_0081, 0x1_C020_0081]
    assert int(l2[511]) == 0x1_C000_0000 + 511 * MB2 | PS | R
    assert [lv for _, lv, _ in pt.leaves()] == [2] * 512


def test_alignment_decides_the_page_size(pt4):
    mem, pt = pt4
    # a 2 MiB-aligned IOVA but an hpa aligned only to 4 KiB: 512 small pages
    pt.map(IOVA_2M, 0x4000_1000, MB2, R | W)
    assert pt.entries(IOVA_2M)[-1] == 0x4000_1003
    assert len(pt.entries(IOVA_2M)) == 4
    assert pt.entries(IOVA_2M + 0x1F_F000)[-1] == 0x4020_0003
    # 2 MiB + 4 KiB, both aligned: one superpage then one small page
    pt.map(IOVA_1G, 0x8000_0000, MB2 + KB4, R)
    assert [(hex(i), lv) for i, lv, _ in pt.leaves() if i >= IOVA_1G] == \
        [(hex(IOVA_1G), 2), (hex(IOVA_1G + MB2), 1)]
    assert pt.entries(IOVA_1G + MB2)[-1] == 0x8020_0001


def test_bad_maps_are_refused(pt4):
    _, pt = pt4
    for args in [(IOVA_4K + 1, 0, KB4), (IOVA_4K, 0x800, KB4), (IOVA_4K, 0, 100), (IOVA_4K, 0, 0),
                 ((1 << 48) - KB4, 0, 2 * KB4)]:
        with pytest.raises(ValueError):
            pt.map(*args)
    pt.map(IOVA_2M, 0x4000_0000, MB2)
    with pytest.raises(ValueError):
        pt.map(IOVA_2M + KB4, 0x1000, KB4)                  # inside a superpage


def test_unmap_clears_leaves_and_counts_bytes(pt4):
    mem, pt = pt4
    pt.map(IOVA_4K, 0x7654_3000, 3 * KB4)
    pt.map(IOVA_2M, 0x4000_0000, MB2)
    assert pt.unmap(IOVA_4K + KB4, KB4) == KB4
    assert mem.read(0x103000 + 8 * 10) == 0
    assert mem.read(0x103000 + 8 * 9) == 0x7654_3003 and mem.read(0x103000 + 8 * 11) == 0x7654_5003
    assert pt.entries(IOVA_4K + KB4) == [0x101003, 0x102003, 0x103003, 0]
    assert pt.unmap(IOVA_2M, MB2) == MB2
    assert pt.entries(IOVA_2M) == [0x101003, 0x102003, 0]
    assert pt.unmap(IOVA_1G, KB4) == 0                      # nothing there
    assert pt.mapped_pages == 2
    assert [i for i, _, _ in pt.leaves()] == [IOVA_4K, IOVA_4K + 2 * KB4]


def test_three_level_table_by_hand():
    mem = PhysMem(base=BASE, pages=8)
    pt = PageTable(mem, 3, superpages=(2, 3))
    iova = 0x0000_0000_8060_4000                            # L3 2, L2 3, L1 4 in a 39-bit space
    assert iova == 2 << 30 | 3 << 21 | 4 << 12 and pt.width == 39
    pt.map(iova, 0x1234_5000, KB4, R)
    assert pt.entries(iova) == [0x101003, 0x102003, 0x1234_5001]
    assert mem.read(0x100000 + 8 * 2) == 0x101003
    assert mem.read(0x101000 + 8 * 3) == 0x102003
    assert mem.read(0x102000 + 8 * 4) == 0x1234_5001
    with pytest.raises(ValueError):
        pt.map(1 << 39, 0, KB4)


# ================================================================ translate()
@pytest.fixture
def unit():
    u = DmarUnit(0, cap=SEED_CAP)
    dom = u.new_domain("DMA")
    u.set_context(0x0210, dom)                              # 02:02.0
    return u, dom


def test_translate_offsets_4k_2m_1g(unit):
    u, dom = unit
    dom.table.map(IOVA_4K, 0x7654_3000, KB4, R | W)
    dom.table.map(IOVA_2M, 0x4000_0000, MB2, R)
    dom.table.map(IOVA_1G, 0x1_C000_0000, GB1, R | W)
    assert u.translate(0x0210, IOVA_4K + 0x123).hpa == 0x7654_3123
    assert u.translate(0x0210, IOVA_4K + 0xFFF, write=True).hpa == 0x7654_3FFF
    assert u.translate(0x0210, IOVA_2M + 0x12_3456).hpa == 0x4012_3456
    assert u.translate(0x0210, IOVA_1G + 0x2345_6789, write=True).hpa == 0x1_E345_6789
    # a multi-page access answers the first byte's address
    assert u.translate(0x0210, IOVA_2M + 0x1000, size=0x3000).hpa == 0x4000_1000
    assert not any(u.frcd)


def test_translate_fills_and_hits_the_iotlb(unit):
    u, dom = unit
    dom.table.map(IOVA_4K, 0x7654_3000, KB4, R | W)
    did = dom.did
    t1 = u.translate(0x0210, IOVA_4K)
    assert (t1.hpa, t1.iotlb_hit) == (0x7654_3000, False)
    assert u.iotlb.misses[did] == 1 and u.iotlb.hits[did] == 0
    t2 = u.translate(0x0210, IOVA_4K + 8)
    assert (t2.hpa, t2.iotlb_hit) == (0x7654_3008, True)
    assert u.iotlb.misses[did] == 1 and u.iotlb.hits[did] == 1
    assert u.iotlb.lookup(did, IOVA_4K >> 12) == 0x7654_3003     # hpa page | R | W
    # a stale entry IS used until invalidated: that is what an IOTLB does
    dom.table.unmap(IOVA_4K, KB4)
    assert u.translate(0x0210, IOVA_4K).hpa == 0x7654_3000
    u.invalidate_pages(did, IOVA_4K, KB4)
    t3 = u.translate(0x0210, IOVA_4K)
    assert t3.fault is not None and t3.fault.reason == 0x06


def test_superpage_iotlb_entries_are_per_4k_page(unit):
    u, dom = unit
    dom.table.map(IOVA_2M, 0x4000_0000, MB2, R)
    u.translate(0x0210, IOVA_2M + 0x5_6789)
    assert u.iotlb.lookup(dom.did, (IOVA_2M >> 12) + 0x56) == 0x4005_6001
    assert u.iotlb.lookup(dom.did, IOVA_2M >> 12) is None


def test_write_to_read_only_page_walks_despite_cached_read(unit):
    u, dom = unit
    dom.table.map(IOVA_4K, 0x7654_3000, KB4, R)
    assert u.translate(0x0210, IOVA_4K).hpa == 0x7654_3000
    t = u.translate(0x0210, IOVA_4K, write=True)
    assert t.fault == Fault(0x0210, IOVA_4K, 0x05, False)


def test_access_crossing_into_an_unmapped_page_faults_at_that_page(unit):
    u, dom = unit
    dom.table.map(IOVA_4K, 0x7654_3000, KB4, R | W)
    t = u.translate(0x0210, IOVA_4K + 0xF00, size=0x200, write=True)
    assert t.fault == Fault(0x0210, IOVA_4K + KB4, 0x05, False)


# ================================================================ context entries
@pytest.mark.parametrize("preset, aw", [("seed-vtd", 2), ("qemu-ref", 1)])
def test_context_entries_after_load(preset, aw):
    m = topology.load(preset)
    u = m.dmar[0]
    assert u.levels == aw + 2
    for f in m.functions:
        dom = f.group.domain
        lo, hi = u.context(f.bdf.rid)
        tt = 1 if f.name == "0000:0c:00.0" else 0              # Device-TLB for the ATS device
        assert lo == dom.table.pgd | tt << 2 | 1, f.name       # SLPTPTR | TT | P
        assert hi == dom.did << 8 | aw, f.name                 # DID | AW
        assert u.mem.read(u.root + 16 * f.bdf.bus) == u.context_tables[f.bdf.bus] | 1
    # one domain per group, members share it
    assert len({f.group.domain.did for f in m.functions}) == len(m.groups.by_id)
    m.check()


@pytest.mark.parametrize("preset, bdf, aw", [("seed-vtd", "0000:00:1f.4", 2), ("qemu-ref", "0000:00:00.0", 1)])
def test_context_entry_follows_group_type(preset, bdf, aw):
    m = topology.load(preset)
    u = m.dmar[0]
    f = m.lookup(bdf)
    g, rid = f.group, f.bdf.rid
    old = g.domain.did
    iommu.store_type(m, g, "identity\n")
    m.check()
    # TT 2 pass-through; the static identity domain's DID: FLPT_DEFAULT_DID (1) on 6.12, an id
    # of its own on 6.1 (DmarUnit.new_domain)
    did = g.domain.did
    assert g.domain.type == "identity" and (did == 1) == m.profile.identity_flpt_did
    assert u.context(rid) == (2 << 2 | 1, did << 8 | aw)
    assert old not in u.domains
    t = u.translate(rid, 0x1234_5678, write=True)
    assert t.hpa == 0x1234_5678 and t.fault is None
    iommu.store_type(m, g, "DMA\n")
    m.check()
    dom = g.domain
    # a new domain; its id is the lowest free one, the id the old domain gave back
    # (intel/iommu.c: ida_alloc_range on the unit's domain_ida)
    assert dom.did == old and dom.type == "DMA" and dom.table.mapped_pages == 0
    assert u.context(rid) == (dom.table.pgd | 1, dom.did << 8 | aw)
    assert u.translate(rid, 0x1234_5678).fault.reason == 0x06


def test_hot_plugged_vfs_get_context_entries_and_lose_them():
    m = topology.load("seed-vtd")
    u = m.dmar[0]
    pf = m.lookup("0000:03:00.0")
    sriov.configure(m, pf, 4)
    m.check()
    vfs = pf.sriov.vfs
    # offset 128, stride 2: 03:10.0 03:10.2 03:10.4 03:10.6
    assert [vf.bdf.rid for vf in vfs] == [0x0380, 0x0382, 0x0384, 0x0386]
    dids = set()
    for vf in vfs:
        dom = vf.group.domain
        assert u.context(vf.bdf.rid) == (dom.table.pgd | 1, dom.did << 8 | 2)
        dids.add(dom.did)
    assert len(dids) == 4 and pf.group.domain.did not in dids
    # a VF's DMA translates through its own domain
    iova = iommu.dma_map(m, vfs[0], 8192)
    hpa = vfs[0].group.domain.mappings[iova][0]
    assert iommu.dma(m, vfs[0], iova + 0x10, 4, True).hpa == hpa + 0x10
    assert iommu.dma(m, vfs[1], iova, 4, True).fault.reason == 0x05
    sriov.configure(m, pf, 0)
    m.check()
    for rid in (0x0380, 0x0382, 0x0384, 0x0386):
        assert u.context(rid) == (0, 0)
        assert u.translate(rid, iova).fault.reason == 0x02
    assert not dids & set(u.domains)


# ================================================================ every fault reason, with its log line
def fault_and_log(m, rid, iova, write, size=4):
    u = m.dmar[0]
    t = u.translate(rid, iova, size, write)
    assert t.hpa is None and t.fault is not None
    n = len(m.kmsg.records)
    serviced = service(m)
    assert serviced == [t.fault]
    out = [r.text for r in m.kmsg.records[n:]]
    assert [r.level for r in m.kmsg.records[n:]] == [3, 3]     # pr_err
    return t.fault, out


def test_fault_0x01_root_entry_not_present():
    m = topology.load("seed-vtd")
    assert 0x20 not in m.dmar[0].context_tables
    f, out = fault_and_log(m, 0x2000, 0x1234_5678, False)
    assert f == Fault(0x2000, 0x1234_5000, 0x01, True)
    assert out == ["DMAR: DRHD: handling fault status reg 2",
                   "DMAR: [DMA Read NO_PASID] Request device [20:00.0] fault addr 0x12345000 "
                   "[fault reason 0x01] Present bit in root entry is clear"]


def test_fault_0x02_unknown_devfn_on_a_present_bus():
    m = topology.load("seed-vtd")
    f, out = fault_and_log(m, 0x0307, 0x8000, True)               # 03:00.7 does not exist
    assert out[1] == ("DMAR: [DMA Write NO_PASID] Request device [03:00.7] fault addr 0x8000 "
                      "[fault reason 0x02] Present bit in context entry is clear")


def test_fault_0x02_blocked_group():
    m = topology.load("seed-vtd")
    dev = m.lookup("0000:02:00.0")
    iova = iommu.dma_map(m, dev, 4096)
    dev.group.default_domain = "blocked"
    iommu.change_domain(m, dev.group)
    m.check()
    assert m.dmar[0].context(0x0200) == (0, 0)
    f, out = fault_and_log(m, 0x0200, iova, True)
    assert out[1] == ("DMAR: [DMA Write NO_PASID] Request device [02:00.0] fault addr 0xfffff000 "
                      "[fault reason 0x02] Present bit in context entry is clear")


@pytest.mark.parametrize("corrupt", ["tt3", "tt1", "aw"])
def test_fault_0x03_invalid_context_entry(corrupt):
    m = topology.load("seed-vtd")
    u = m.dmar[0]
    slot = u.context_slot(0x0200)
    lo, hi = u.context(0x0200)
    u.ecap &= ~4                                               # no ECAP.DT: TT 1 is reserved
    if corrupt == "aw":
        u.mem.write(slot + 8, hi & ~7 | 1)                     # AW 1 (39-bit) on a 4-level table
    else:
        u.mem.write(slot, lo | (3 if corrupt == "tt3" else 1) << 2)
    f, out = fault_and_log(m, 0x0200, 0xABC000, False)
    assert out[1] == ("DMAR: [DMA Read NO_PASID] Request device [02:00.0] fault addr 0xabc000 "
                      "[fault reason 0x03] Invalid context entry")


@pytest.mark.parametrize("preset, rid, width", [("seed-vtd", 0x0200, 48), ("qemu-ref", 0x0200, 39)])
def test_fault_0x04_beyond_the_address_width(preset, rid, width):
    m = topology.load(preset)
    f, out = fault_and_log(m, rid, 1 << width, True)
    assert out[1] == ("DMAR: [DMA Write NO_PASID] Request device [02:00.0] fault addr 0x%x "
                      "[fault reason 0x04] Access beyond MGAW" % (1 << width))
    # an access whose last byte crosses the top is beyond it too
    u = m.dmar[0]
    assert u.translate(rid, (1 << width) - 0x1000, 0x2000).fault.reason == 0x04


def test_fault_0x05_write_to_read_only_mapping_from_a_vf():
    m = topology.load("seed-vtd")
    pf = m.lookup("0000:03:00.0")
    sriov.configure(m, pf, 1)
    vf = pf.sriov.vfs[0]
    iova = iommu.dma_map(m, vf, 4096, write=False)
    assert iommu.dma(m, vf, iova, 64, False).hpa is not None
    n = len(m.kmsg.records)
    t = iommu.dma(m, vf, iova + 0x40, 64, True)                 # dma() runs the fault handler
    assert t.fault.reason == 0x05
    assert [r.text for r in m.kmsg.records[n:]] == [
        "DMAR: DRHD: handling fault status reg 2",
        "DMAR: [DMA Write NO_PASID] Request device [03:10.0] fault addr 0x%x "
        "[fault reason 0x05] PTE Write access is not set" % iova]


def test_fault_0x06_read_of_unmapped_iova():
    m = topology.load("qemu-ref")
    f, out = fault_and_log(m, 0x0100, 0x7F_FFFF_F123, False)    # 01:00.0, top of the 39-bit space
    assert out[1] == ("DMAR: [DMA Read NO_PASID] Request device [01:00.0] fault addr 0x7ffffff000 "
                      "[fault reason 0x06] PTE Read access is not set")


def test_fault_0x05_0x06_on_non_present_intermediate_levels():
    m = topology.load("seed-vtd")
    u = m.dmar[0]
    for iova in (0, 1 << 39, 0xFFFF_FFFF_F000, 0x7FFF_FFFF_F000):   # absent at L4 and deeper
        assert u.translate(0x0200, iova, 4, False).fault.reason == 0x06
        assert u.translate(0x0200, iova, 4, True).fault.reason == 0x05


def test_fault_0x07_next_table_pointer_invalid():
    m = topology.load("seed-vtd")
    u = m.dmar[0]
    dev = m.lookup("0000:02:00.0")
    iova = iommu.dma_map(m, dev, 4096)
    pgd = dev.group.domain.table.pgd
    u.mem.write(pgd + 8 * ((iova >> 39) & 511), 0x1000 | R | W)      # below PhysMem's base
    u.iotlb.invalidate_global()
    f, out = fault_and_log(m, 0x0200, iova, False)
    assert out[1] == ("DMAR: [DMA Read NO_PASID] Request device [02:00.0] fault addr 0xfffff000 "
                      "[fault reason 0x07] Next page table ptr is invalid")


# ================================================================ fault recording registers
def test_fault_recording_registers_fill_then_overflow_seed():
    m = topology.load("seed-vtd")
    u = m.dmar[0]
    assert u.nfr == 8 and u.fro == 0x400
    for i in range(8):
        u.translate(0x0200, 0x1000 * (i + 1), 4, bool(i & 1))
        assert u.fsts == 0x2                                    # PPF, FRI 0: the first pending one
        assert sum(f is not None for f in u.frcd) == i + 1
    u.translate(0x0200, 0x9000, 4, False)                       # the ninth is lost
    assert u.fsts == 0x3                                        # PFO | PPF
    assert dict((n, v) for n, _, v in u.registers())["FSTS"] == 0x3
    n = len(m.kmsg.records)
    faults = service(m)
    assert [f.addr for f in faults] == [0x1000 * (i + 1) for i in range(8)]
    out = [r.text for r in m.kmsg.records[n:]]
    assert out[0] == "DMAR: DRHD: handling fault status reg 3"
    assert len(out) == 9
    assert out[2] == ("DMAR: [DMA Write NO_PASID] Request device [02:00.0] fault addr 0x2000 "
                      "[fault reason 0x05] PTE Write access is not set")
    assert u.fsts == 0 and not any(u.frcd)
    assert service(m) == [] and len(m.kmsg.records) == n + 9


def test_fault_recording_overflow_qemu_one_register():
    m = topology.load("qemu-ref")
    u = m.dmar[0]
    assert u.nfr == 1
    u.translate(0x0200, 0x5000, 4, True)
    assert u.fsts == 0x2
    u.translate(0x0200, 0x6000, 4, True)
    u.translate(0x0100, 0x7000, 4, False)
    assert u.fsts == 0x3
    n = len(m.kmsg.records)
    assert [f.addr for f in service(m)] == [0x5000]
    assert [r.text for r in m.kmsg.records[n:]] == [
        "DMAR: DRHD: handling fault status reg 3",
        "DMAR: [DMA Write NO_PASID] Request device [02:00.0] fault addr 0x5000 "
        "[fault reason 0x05] PTE Write access is not set"]
    # one register: the next fault is recorded at index 0 again
    u.translate(0x0200, 0x8000, 4, True)
    assert u.fsts == 0x2 and u.frcd[0].addr == 0x8000


def test_fault_record_index_advances_circularly():
    m = topology.load("seed-vtd")
    u = m.dmar[0]
    u.translate(0x0200, 0x1000, 4, False)
    assert u.fsts == 0x2
    service(m)
    u.translate(0x0200, 0x2000, 4, False)
    assert u.fsts == 0x102                                      # FRI 1, PPF
    assert u.frcd[1] is not None and u.frcd[0] is None
    n = len(m.kmsg.records)
    service(m)
    assert m.kmsg.records[n].text == "DMAR: DRHD: handling fault status reg 102"


def test_fault_register_fields():
    u = DmarUnit(0, cap=SEED_CAP)
    assert (u.nfr, u.fro, u.mgaw, u.levels, u.superpage_levels) == (8, 0x400, 48, 4, (2, 3))
    q = DmarUnit(0, cap=QEMU_CAP)
    assert (q.nfr, q.fro, q.mgaw, q.levels, q.superpage_levels) == (1, 0x220, 39, 3, (2, 3))
    assert q.cap & 0x80 and not u.cap & 0x80


def test_a_fault_storm_keeps_only_the_newest_faults():
    """dmar_table_errors' record is bounded: a storm longer than FAULT_LOG_MAX keeps the
    newest faults and counts them all (memory stays flat however long it runs)."""
    m = topology.load("seed-vtd")
    u = m.dmar[0]
    m.fault_threshold = 1 << 30
    dev = m.lookup("0000:02:00.0")
    n = FAULT_LOG_MAX + 100
    for i in range(n):
        assert iommu.dma(m, dev, 0xDEAD_0000 + (i << 12), 4, True).fault is not None
    assert u.faults_serviced == n == dev.dma_faults
    assert len(u.fault_log) == FAULT_LOG_MAX
    assert u.fault_log[-1].addr == 0xDEAD_0000 + ((n - 1) << 12)
    assert u.fault_log[0].addr == 0xDEAD_0000 + (100 << 12)


# ================================================================ the fault threshold
def test_fault_threshold_disables_bus_mastering():
    m = topology.load("seed-vtd")
    u = m.dmar[0]
    m.fault_threshold = 3
    dev = m.lookup("0000:02:00.0")                                # igb
    assert dev.config.r16(0x04) & 0x4
    iova = iommu.dma_map(m, dev, 4096)
    for i in range(2):
        assert iommu.dma(m, dev, 0xDEAD_0000, 4, True).fault.reason == 0x05
        assert dev.config.r16(0x04) & 0x4 and dev.dma_faults == i + 1
    n = len(m.kmsg.records)
    assert iommu.dma(m, dev, 0xDEAD_0000, 4, False).fault.reason == 0x06
    assert dev.dma_faults == 3
    assert not dev.config.r16(0x04) & 0x4
    assert dev.config.r16(0x04) == 0x103                          # only bit 2 cleared
    assert [r.text for r in m.kmsg.records[n:]] == [
        "DMAR: DRHD: handling fault status reg 202",     # FRI 2: the third register in turn
        "DMAR: [DMA Read NO_PASID] Request device [02:00.0] fault addr 0xdead0000 "
        "[fault reason 0x06] PTE Read access is not set",
        "igb 0000:02:00.0: DMAR: 3 DMA faults reached the threshold; bus mastering disabled"]
    assert m.kmsg.records[-1].level == 4
    # no further requests are issued: not even a mapped one translates, nothing is recorded
    served, hits = len(u.fault_log), sum(u.iotlb.hits.values()) + sum(u.iotlb.misses.values())
    n = len(m.kmsg.records)
    for addr, w in ((0xDEAD_0000, True), (iova, False)):
        t = iommu.dma(m, dev, addr, 4, w)
        assert t.hpa is None and t.fault is None
    assert len(u.fault_log) == served and not any(u.frcd) and u.fsts == 0
    assert sum(u.iotlb.hits.values()) + sum(u.iotlb.misses.values()) == hits
    assert len(m.kmsg.records) == n
    # other devices are unaffected
    other = m.lookup("0000:03:00.1")
    assert iommu.dma(m, other, 0xDEAD_0000, 4, True).fault.reason == 0x05
    assert other.config.r16(0x04) & 0x4


def test_faults_lost_to_overflow_do_not_count_toward_the_threshold():
    m = topology.load("qemu-ref")
    u = m.dmar[0]
    m.fault_threshold = 2
    dev = m.lookup("0000:02:00.0")
    u.translate(0x0200, 0x1000, 4, True)
    u.translate(0x0200, 0x2000, 4, True)                           # overflow: lost
    service(m)
    assert dev.dma_faults == 1 and dev.config.r16(0x04) & 0x4


# ================================================================ IOTLB and invalidation
def filled(entries=4096):
    t = Iotlb(entries)
    for did in (5, 6):
        for vpfn in range(16):
            t.fill(did, vpfn, (0x100 + vpfn) << 12 | 3)
    return t


def present(t, did):
    return [v for v in range(16) if t.lookup(did, v) is not None]


def test_iotlb_hit_miss_accounting():
    t = filled()
    assert t.lookup(5, 3) == 0x103003 and t.lookup(5, 99) is None and t.lookup(7, 3) is None
    assert (t.hits[5], t.misses[5], t.misses[7]) == (1, 1, 1)
    hit, vals = t.lookup_many(6, np.array([0, 1, 200, 15], dtype=np.uint64))
    assert hit.tolist() == [True, True, False, True]
    assert [int(v) for v in vals[hit]] == [0x100003, 0x101003, 0x10F003]
    assert (t.hits[6], t.misses[6]) == (3, 1)
    assert t.stats()[5] == (1, 1, 0)


def test_iotlb_direct_mapped_conflict_evicts():
    t = Iotlb(16)
    t.fill(5, 1, 0x1003)
    t.fill(5, 17, 0x2003)                                         # same slot in a 16-entry IOTLB
    assert t.lookup(5, 1) is None and t.lookup(5, 17) == 0x2003
    with pytest.raises(ValueError):
        Iotlb(1000)


def test_iotlb_global_invalidation():
    t = filled()
    t.invalidate_global()
    assert present(t, 5) == [] and present(t, 6) == []
    assert t.invalidations["global"] == 1


def test_iotlb_domain_invalidation():
    t = filled()
    t.invalidate_domain(5)
    assert present(t, 5) == [] and present(t, 6) == list(range(16))
    assert t.invalidations[5] == 1 and t.invalidations[6] == 0


@pytest.mark.parametrize("addr, am, gone", [
    (0x5000, 0, [5]),
    (0x5000, 2, [4, 5, 6, 7]),                    # am=2: exactly 4 pages, aligned down
    (0x4000, 2, [4, 5, 6, 7]),
    (0x7FFF, 1, [6, 7]),
    (0x9000, 3, [8, 9, 10, 11, 12, 13, 14, 15]),
    (0x0000, 4, list(range(16))),
])
def test_iotlb_page_invalidation_with_address_mask(addr, am, gone):
    t = filled()
    t.invalidate_pages(5, addr, am)
    assert present(t, 5) == [v for v in range(16) if v not in gone]
    assert present(t, 6) == list(range(16))


def strict(m, dev):
    """The device's group in a strict DMA domain (seed-vtd's are DMA-FQ, whose unmaps wait
    for the flush queue): what a `type` write of DMA does after its checks."""
    dev.group.default_domain = "DMA"
    iommu.change_domain(m, dev.group)
    return dev


def test_stale_iotlb_entry_not_used_after_dma_unmap():
    m = topology.load("seed-vtd")
    u = m.dmar[0]
    dev = strict(m, m.lookup("0000:02:00.0"))
    did = dev.group.domain.did
    iova = iommu.dma_map(m, dev, 3 * 4096)
    assert iova == 0xFFFF_C000                                    # 4 pages (size_aligned) below 4 GiB
    hpa = dev.group.domain.mappings[iova][0]
    for p in range(3):
        assert u.translate(0x0200, iova + p * 4096).hpa == hpa + p * 4096
    assert u.translate(0x0200, iova + 4096).iotlb_hit
    iommu.dma_unmap(m, dev, iova)
    # the unmap queued a page-selective invalidation, am = 2 for 3 pages, IH (6.12: no
    # page-table page was freed, only leaves changed)
    assert u.iq[(u.iq_tail - 2) % 256][:2] == (0x2 | 3 << 4 | 3 << 6 | did << 16, iova | 1 << 6 | 2)
    for p in range(3):
        t = u.translate(0x0200, iova + p * 4096)
        assert t.fault is not None and t.fault.reason == 0x06 and not t.iotlb_hit
    h, r = u.translate_batch(0x0200, np.array([iova, iova + 0x1FFF], dtype=np.uint64))
    assert r.tolist() == [6, 6]


def test_invalidate_pages_covers_an_unaligned_range():
    u = DmarUnit(0, cap=SEED_CAP)
    dom = u.new_domain("DMA")
    u.set_context(0x0100, dom)
    dom.table.map(0x1000, 0x5000_0000, 2 * KB4, R | W)
    assert u.translate(0x0100, 0x2000).hpa == 0x5000_1000
    dom.table.unmap(0x1000, 2 * KB4)
    u.invalidate_pages(dom.did, 0x1000, 2 * KB4)
    assert u.translate(0x0100, 0x1000).fault.reason == 0x06
    assert u.translate(0x0100, 0x2000).fault.reason == 0x06


def test_superpage_dma_unmap_invalidates_all_512_pages():
    m = topology.load("seed-vtd")
    u = m.dmar[0]
    dev = strict(m, m.lookup("0000:02:00.0"))
    hpa = 0x2_0000_0000                                          # 2 MiB aligned host buffer
    iova = iommu.dma_map(m, dev, MB2, hpa=hpa)
    assert iova % MB2 == 0
    assert len(dev.group.domain.table.entries(iova)) == 3         # a PS leaf at level 2
    probes = np.arange(iova, iova + MB2, 4096, dtype=np.uint64)
    h, r = u.translate_batch(0x0200, probes)
    assert (r == 0).all() and (h == probes - np.uint64(iova) + np.uint64(hpa)).all()
    iommu.dma_unmap(m, dev, iova)
    assert u.iq[(u.iq_tail - 2) % 256][1] == iova | 1 << 6 | 9        # the PS leaf only: IH
    h, r = u.translate_batch(0x0200, probes)
    assert (r == 6).all()


# ================================================================ translate_batch vs translate
def mixed_setup(preset="seed-vtd"):
    m = topology.load(preset)
    u = m.dmar[0]
    dev = m.lookup("0000:02:00.0")
    dom = dev.group.domain
    dom.table.map(0x1000_0000, 0x5000_0000, 8 * KB4, R | W)        # 4 KiB pages
    dom.table.map(0x2000_0000, 0x6000_0000, MB2, R)               # 2 MiB read-only
    dom.table.map(0x4000_0000, 0x8000_0000, GB1, R | W)           # 1 GiB
    width = 12 + 9 * u.levels
    iovas = [0x1000_0000, 0x1000_0123, 0x1000_7FFF, 0x1000_8000, 0x0FFF_FFFF,
             0x2000_0000, 0x2012_3456, 0x201F_FFFF, 0x2020_0000,
             0x4000_0000, 0x5234_5678, 0x7FFF_FFFF, 0x8000_0000,
             0, 0xDEAD_BEEF, (1 << width) - 1, 1 << width, (1 << width) + 0x1234, (1 << 63) | 0x1000]
    return m, u, iovas


@pytest.mark.parametrize("preset", ["seed-vtd", "qemu-ref"])
@pytest.mark.parametrize("write", [False, True])
@pytest.mark.parametrize("warm", [False, True])
def test_translate_batch_agrees_with_translate(preset, write, warm):
    m, u, iovas = mixed_setup(preset)
    arr = np.array(iovas, dtype=np.uint64)
    if warm:
        u.translate_batch(0x0200, arr, write)                      # fill the IOTLB first
    h, r = u.translate_batch(0x0200, arr, write)
    assert h.dtype == np.uint64 and r.dtype == np.uint8 and len(h) == len(r) == len(iovas)
    for i, iova in enumerate(iovas):
        t = u.translate(0x0200, iova, 1, write)
        if t.fault is None:
            assert (int(h[i]), int(r[i])) == (t.hpa, 0), hex(iova)
        else:
            assert (int(h[i]), int(r[i])) == (0, t.fault.reason), hex(iova)
        u.frcd = [None] * u.nfr
        u.fsts = 0
    exp = {0x1000_0123: 0x5000_0123, 0x2012_3456: 0x6012_3456, 0x5234_5678: 0x9234_5678}
    for iova, hpa in exp.items():
        if not (write and 0x2000_0000 <= iova < 0x2020_0000):
            assert int(h[iovas.index(iova)]) == hpa


@pytest.mark.parametrize("rid, reason", [(0x2000, 0x01), (0x0307, 0x02)])
def test_translate_batch_whole_batch_faults(rid, reason):
    m = topology.load("seed-vtd")
    h, r = m.dmar[0].translate_batch(rid, np.array([0, 0x1000, 1 << 60], dtype=np.uint64))
    assert r.tolist() == [reason] * 3 and h.tolist() == [0, 0, 0]


def test_translate_batch_identity_passes_through():
    m = topology.load("seed-vtd")
    f = m.lookup("0000:00:1f.4")
    iommu.store_type(m, f.group, "identity\n")
    arr = np.array([0, 0x1234_5678, 0xFFFF_FFFF_F000], dtype=np.uint64)
    h, r = m.dmar[0].translate_batch(f.bdf.rid, arr, True)
    assert h.tolist() == arr.tolist() and r.tolist() == [0, 0, 0]


def test_translate_batch_fills_the_iotlb():
    m, u, _ = mixed_setup()
    did = m.lookup("0000:02:00.0").group.domain.did
    arr = np.array([0x1000_0000 + i * KB4 for i in range(8)] * 2, dtype=np.uint64)
    u.translate_batch(0x0200, arr)
    assert (u.iotlb.hits[did], u.iotlb.misses[did]) == (0, 16)
    u.translate_batch(0x0200, arr)
    assert (u.iotlb.hits[did], u.iotlb.misses[did]) == (16, 16)
    assert u.translate(0x0200, 0x1000_3000).iotlb_hit


def test_translate_batch_keeps_read_only_pages_read_only():
    m = topology.load("seed-vtd")
    u = m.dmar[0]
    dev = m.lookup("0000:02:00.0")
    iova = iommu.dma_map(m, dev, 4096, write=False)
    h, r = u.translate_batch(0x0200, np.array([iova], dtype=np.uint64), False)
    assert r.tolist() == [0]
    h, r = u.translate_batch(0x0200, np.array([iova], dtype=np.uint64), True)
    assert r.tolist() == [0x05]
    t = u.translate(0x0200, iova, 4, True)
    assert t.fault is not None and t.fault.reason == 0x05


def test_translate_batch_invalid_context_entry():
    m = topology.load("seed-vtd")
    u = m.dmar[0]
    slot = u.context_slot(0x0200)
    u.mem.write(slot, u.mem.read(slot) | 3 << 2)
    assert u.translate(0x0200, 0x1000).fault.reason == 0x03
    h, r = u.translate_batch(0x0200, np.array([0x1000, 0xFFFF_F000], dtype=np.uint64))
    assert r.tolist() == [0x03, 0x03]


# ================================================================ the invalidation queue
def iq_entries(u, start):
    return [u.iq[i % 256] for i in range(start, u.iq_tail if u.iq_tail >= start else u.iq_tail + 256)]


def test_iq_page_selective_descriptor_on_unmap():
    m = topology.load("seed-vtd")
    u = m.dmar[0]
    dev = strict(m, m.lookup("0000:02:00.0"))
    did = dev.group.domain.did
    iova = iommu.dma_map(m, dev, 4096)
    start = u.iq_tail                       # seed-vtd is not caching mode: map queues nothing
    iommu.dma_unmap(m, dev, iova)
    got = iq_entries(u, start)
    assert len(got) == 2
    qw0, qw1, status = got[0]
    # type 2 (IOTLB), granularity 3 (page-selective) bits 5:4, DW bit 6, DR bit 7, DID 31:16
    assert qw0 == 0x00F2 | did << 16
    assert qw1 == iova | 1 << 6             # ADDR 63:12, IH bit 6 (leaves only, 6.12), AM 5:0 = 0
    assert got[1][0] & 0xF == 0x5 and got[1][0] & 1 << 5    # an invalidation wait follows, SW set


def test_iq_caching_mode_invalidates_on_map_like_the_capture():
    """qemu-ref is caching mode: a map queues a PSI flush; the capture's first entry
    is `00000000000c00f2 00000000fffbf000` (capture line 15256)."""
    m = topology.load("qemu-ref")
    u = m.dmar[0]
    dev = m.lookup("0000:02:00.0")
    did = dev.group.domain.did
    start = u.iq_tail
    iova = iommu.dma_map(m, dev, 4096)
    assert iova == 0xFFFF_F000
    got = iq_entries(u, start)
    assert got[0][:2] == (0x00F2 | did << 16, 0xFFFF_F000)
    iova2 = iommu.dma_map(m, dev, 4096)
    assert iova2 == 0xFFFF_E000
    assert iq_entries(u, start)[2][:2] == (0x00F2 | did << 16, 0xFFFF_E000)


def test_iq_domain_selective_descriptor_matches_capture():
    """Capture line 15284: `00000000000500e2`: IOTLB, domain-selective, DR DW, DID 5 (00:04.0's)."""
    m = topology.load("qemu-ref")
    u = m.dmar[0]
    f = m.lookup("0000:00:04.0")
    assert f.group.domain.did == 5
    assert any(qw0 == 0x00000000000500E2 and qw1 == 0 for qw0, qw1, _ in u.iq)


def test_iq_context_descriptor_fields():
    m = topology.load("qemu-ref")
    u = m.dmar[0]
    ccs = [qw0 for qw0, _, _ in u.iq if qw0 & 0xF == 1]
    assert ccs
    assert [qw0 for qw0 in ccs if (qw0 >> 4) & 3 != 3] == [0x11]   # boot's global one (set_root_entry)
    for qw0 in ccs[1:]:
        assert (qw0 >> 4) & 3 == 3           # device-selective
        assert (qw0 >> 48) & 3 == 0          # FM: no function mask
    sids = {(qw0 >> 32) & 0xFFFF for qw0 in ccs}
    assert {f.bdf.rid for f in m.functions} <= sids


def test_iq_context_descriptor_did_0_in_caching_mode_like_the_capture():
    m = topology.load("qemu-ref")
    u = m.dmar[0]
    assert any(qw0 == 0x0000002000000031 for qw0, _, _ in u.iq)
    for qw0, _, _ in u.iq:
        if qw0 & 0xF == 1:
            assert (qw0 >> 16) & 0xFFFF == 0


def test_iq_wait_descriptor_like_the_capture():
    m = topology.load("qemu-ref")
    u = m.dmar[0]
    waits = [qw0 for qw0, _, _ in u.iq[:u.iq_tail] if qw0 & 0xF == 5]
    assert waits and all(w == 0x0000000200000025 for w in waits)


def test_iq_wraps_at_256_entries():
    u = DmarUnit(0, cap=SEED_CAP)
    start = u.iq_tail
    for i in range(200):
        u.invalidate_pages(2, i << 12, 4096)
    assert u.iq_tail == (start + 400) % 256
    last = u.iq[(u.iq_tail - 2) % 256]
    assert last[:2] == (0x00F2 | 2 << 16, 199 << 12)
    regs = {n: v for n, _, v in u.registers()}
    assert regs["IQT"] == u.iq_tail * 16 and regs["IQA"] == u.iq_base


# ================================================================ what removed functions leave behind
def unit_state(m):
    """Every count the remapping unit keeps that a VF could grow."""
    u = m.dmar[0]
    return {"pages in use": u.mem.allocated, "pages ever": u.mem.used, "memory words": len(u.mem.q),
            "domains": sorted(u.domains), "next domain id": u.domain_ids.alloc(),
            "iotlb counters": (len(u.iotlb.hits), len(u.iotlb.misses), len(u.iotlb.invalidations)),
            "context tables": sorted(u.context_tables),
            "present context entries": sum(1 for rid in range(1 << 16) if u.context(rid)[0] & 1)}


def test_sriov_cycles_leave_the_tables_as_the_first_cycle_did():
    """`echo 63 > sriov_numvfs; echo 0 > sriov_numvfs` again and again with the tables
    made: each VF's domain, page tables, IOTLB entries and context entry go with it, so
    after 20 cycles every count is what one cycle left."""
    m = topology.load("seed-vtd")
    u = iommu.unit(m)
    pf = m.lookup("0000:03:00.0")

    def cycle():
        sriov.configure(m, pf, 63)
        for vf in pf.sriov.vfs[:4]:                 # DMA through some VFs: page tables, IOTLB entries
            iova = iommu.dma_map(m, vf, 3 << 21)
            assert iommu.dma(m, vf, iova + 0x1000, 4, True).hpa is not None
        sriov.configure(m, pf, 0)
        m.check()

    cycle()
    first = unit_state(m)
    u.domain_ids.free(first["next domain id"])
    for _ in range(20):
        cycle()
    after = unit_state(m)
    u.domain_ids.free(after["next domain id"])
    assert after == first
    tags = u.iotlb.tags[u.iotlb.tags != np.uint64(2**64 - 1)]
    assert set((tags >> np.uint64(48)).tolist()) <= set(u.domains)             # no VF domain's entry


def test_freeing_a_domain_returns_its_tables():
    m = topology.load("seed-vtd")
    u = iommu.unit(m)
    before = u.mem.allocated
    dom = u.new_domain("DMA")
    dom.table.map(0x4000_0000, 0x8000_0000, 3 << 21, superpages=False)     # pgd, L3, L2, 3 L1 tables
    assert u.mem.allocated == before + 6
    did = dom.did
    u.free_domain(dom)
    assert u.mem.allocated == before and did not in u.domains
    assert u.new_domain("DMA").did == did                                  # the lowest free id again
    assert u.mem.allocated == before + 1                                    # its pgd: a freed, zeroed page
    identity = u.new_domain("identity")
    u.free_domain(identity)                                                 # the static one lives for ever
    assert u.domains[1] is identity and 1 not in u.domain_ids


# ================================================================ the DMA API's IOVA allocator
def test_iova_allocator_skips_reserved_regions_reuses_and_falls_back_above_4g():
    m = topology.load("seed-vtd")
    iommu.unit(m)
    f = m.lookup("0000:03:00.0")
    dom = f.group.domain
    small = iommu.dma_map(m, f, 16384)
    assert small == (1 << 32) - 16384                           # top-down below 4 GiB
    big = iommu.dma_map(m, f, 1 << 30)
    assert big == 1 << 31                                       # not across the MSI window 0xfee00000
    assert not any(0xFEE00000 <= iova <= 0xFEEFFFFF or iova < 0xFEE00000 < iova + size
                   for iova, (_, size, _) in dom.mappings.items())
    rest = [iommu.dma_map(m, f, 1 << 30) for _ in range(2)]     # [1 GiB, 2 GiB), then [0, 1 GiB) minus page 0
    assert rest[0] == 1 << 30 and rest[1] >= 1 << 32            # page 0 is never handed out: above 4 GiB
    iommu.dma_unmap(m, f, big)
    assert dom.fq == [(big, 1 << 30)]                           # DMA-FQ: not free before the flush
    fq_timer(m)                                       # the flush queue's timer: flushed, freed
    assert iommu.dma_map(m, f, 1 << 30) == big                  # the freed range is found again
    # 2 MiB aligned buffers: mapped with superpages, one L2 entry per 2 MiB
    assert dom.table.entries(big)[-1] & PS
