"""The invalidation queue as the kernel drives it (model/intel/qi.py, DmarUnit's flushes),
and the address space a DMA-API stream takes and gives back (IOVA, page-table pages,
host memory) over thousands of start/stop cycles. No mount."""
from __future__ import annotations

import pytest

from vfakefs.model import controls, topology, traffic
from vfakefs.model.intel import qi
from vfakefs.model.intel.dmar import DmarUnit
from vfakefs.model.intel.pagetable import R, W
from vfakefs.model.iommu import iommu
from tests.model.clock import fq_timer


SEED_CAP = 0xD2078C406F0462          # DRD DWD, MAMV 18, PSI; not caching mode, no ESRTPS
E1000E, IXGBE = "0000:02:00.0", "0000:03:00.0"
WAIT = 0x5 | 1 << 5 | qi.QI_DONE << 32
IH = 1 << 6


def strict(m, dev):
    """The device's group in a strict DMA domain (seed-vtd's are DMA-FQ, whose unmaps wait
    for the flush queue): what a `type` write of DMA does after its checks."""
    dev.group.default_domain = "DMA"
    iommu.change_domain(m, dev.group)
    return dev


def entries(u, start):
    """(qw0, qw1) of the slots from start up to the tail, the ring unwrapped."""
    end = u.iq_tail if u.iq_tail >= start else u.iq_tail + qi.IQ_ENTRIES
    return [u.iq[i % qi.IQ_ENTRIES][:2] for i in range(start, end)]


def descriptors(u, start):
    """The non-wait descriptors from start, checking each submission ends with a wait whose
    status write goes to its own slot of desc_status."""
    out = []
    for k, (qw0, qw1) in enumerate(entries(u, start)):
        if qw0 == WAIT:
            assert qw1 == u.iq_status + 4 * ((start + k) % qi.IQ_ENTRIES)
        else:
            out.append((qw0, qw1))
    return out


# --- boot ---------------------------------------------------------------------------------------
def test_boot_queues_ir_then_global_context_and_iotlb():
    """iommu_set_irq_remapping's global IEC flush and modify_irte's flush of each entry boot
    programmed, then iommu_set_root_entry's global context-cache and IOTLB invalidations,
    each followed by its wait; then nothing for the context entries (not caching mode)."""
    m = topology.load("seed-vtd")
    u = iommu.unit(m)
    irtes = m.irq_remap.present().tolist()
    assert irtes
    want = [(0x4, 0)] + [(0x14 | i << 32, 0) for i in irtes] + [(0x11, 0), (0xD2, 0)]
    got = entries(u, 0)
    assert got[0::2] == want
    assert got[1::2] == [(WAIT, u.iq_status + 4 * (2 * k + 1)) for k in range(len(want))]
    assert u.iq_tail == 2 * len(want) and all(st == qi.QI_FREE for _, _, st in u.iq)
    assert u.iotlb.invalidations["global"] == 1


def test_boot_flush_follows_the_capability_register():
    plain = DmarUnit(0, cap=SEED_CAP & ~(3 << 54))          # no read/write draining
    plain.materialize()
    assert entries(plain, 0) == [(0x11, 0), (WAIT, plain.iq_status + 4), (0x12, 0), (WAIT, plain.iq_status + 12)]
    esrtps = DmarUnit(0, cap=SEED_CAP | 1 << 63)             # SRTP flushes everything itself
    esrtps.materialize()
    assert esrtps.iq_tail == 0


# --- unmap: page-selective with the address mask, or domain-selective -----------------------------
@pytest.mark.parametrize("iova, size, want", [
    (0x1000, 0x1000, (0x1000, 0)), (0xFFFF_C000, 0x3000, (0xFFFF_C000, 2)),
    (0x3000, 0x2000, (0x0, 3)),            # pfn 3..4: the window that holds both is 8 pages at 0
    (0x2000, 0x3000, (0x0, 3)), (0x20_0000, 0x20_0000, (0x20_0000, 9)),
])
def test_psi_mask_is_the_kernels(iova, size, want):
    assert qi.psi_mask(iova, size) == want


def unit_with_domain(cap):
    u = DmarUnit(0, cap=cap)
    u.materialize()
    dom = u.new_domain("DMA")
    u.set_context(0x0100, dom)
    return u, dom


def test_unmap_past_mamv_or_without_psi_is_domain_selective():
    u, dom = unit_with_domain((SEED_CAP & ~(0x3F << 48)) | 2 << 48)      # MAMV 2: 4 pages at most
    dom.table.map(0x10000, 0x5000_0000, 4 * 4096, R | W)
    start = u.iq_tail
    u.unmap_pages(dom, 0x10000, 4 * 4096)
    assert descriptors(u, start) == [(0xF2 | dom.did << 16, 0x10000 | IH | 2)]
    dom.table.map(0x10000, 0x5000_0000, 5 * 4096, R | W)
    assert u.translate(0x0100, 0x10000).hpa == 0x5000_0000
    start = u.iq_tail
    u.unmap_pages(dom, 0x10000, 5 * 4096)                              # mask 3 > MAMV
    assert descriptors(u, start) == [(0xE2 | dom.did << 16, 0)]
    assert u.translate(0x0100, 0x10000).fault.reason == 0x06

    u, dom = unit_with_domain(SEED_CAP & ~(1 << 39))                   # no page-selective invalidation
    dom.table.map(0x10000, 0x5000_0000, 4096, R | W)
    start = u.iq_tail
    u.unmap_pages(dom, 0x10000, 4096)
    assert descriptors(u, start) == [(0xE2 | dom.did << 16, 0)]


def test_unmap_that_frees_page_tables_drops_the_leaf_hint():
    """dma_pte_clear_level frees a table the range wholly covers; then the flush is not
    leaf-only (IH clear); a partial unmap frees nothing and sets IH."""
    u, dom = unit_with_domain(SEED_CAP)
    dom.table.map(0x20_0000, 0x5000_0000, 0x20_0000, R | W, superpages=False)    # one full leaf table
    pages = u.mem.allocated
    start = u.iq_tail
    u.unmap_pages(dom, 0x20_0000, 0x1000)
    assert u.mem.allocated == pages
    assert descriptors(u, start) == [(0xF2 | dom.did << 16, 0x20_0000 | IH)]
    start = u.iq_tail
    u.unmap_pages(dom, 0x20_0000, 0x20_0000)
    assert u.mem.allocated == pages - 1
    assert descriptors(u, start) == [(0xF2 | dom.did << 16, 0x20_0000 | 9)]
    assert len(dom.table.entries(0x20_0000)) == 3                       # the PDE is not present now
    assert dom.table.entries(0x20_0000)[-1] == 0


def test_6_1_drops_ih_and_submits_each_descriptor():
    """6.1's QI_IOTLB_ADDR masks the hint away and iommu_flush_iotlb_psi submits the IOTLB
    and each device-IOTLB descriptor with a wait of its own; 6.12 keeps IH and batches."""
    for preset, ih, batched in (("qemu-ref", 0, False), ("seed-vtd", IH, True)):
        m = topology.load(preset)
        assert m.profile.qi_batch is batched
        u = iommu.unit(m)
        dev = strict(m, m.lookup(E1000E))
        did = dev.group.domain.did
        iova = iommu.dma_map(m, dev, 4096)
        u.dev_iotlb_descs = lambda did, addr, mask: [(0x3 | 0x0200 << 32, addr)]   # h31's hook: one ATS device
        start = u.iq_tail
        iommu.dma_unmap(m, dev, iova)
        psi, devtlb = (0xF2 | did << 16, iova | ih), (0x3 | 0x0200 << 32, iova)
        got = entries(u, start)
        if batched:
            assert got == [psi, devtlb, (WAIT, u.iq_status + 4 * ((start + 2) % 256))]
        else:
            assert [got[0], got[2]] == [psi, devtlb] and got[1][0] == got[3][0] == WAIT


def test_the_ring_wraps_and_head_follows_tail():
    m = topology.load("seed-vtd")
    u = iommu.unit(m)
    dev = strict(m, m.lookup(E1000E))
    before, tail = u.qi_submissions, u.iq_tail
    for _ in range(200):
        iommu.dma_unmap(m, dev, iommu.dma_map(m, dev, 4096))
    assert u.qi_submissions == before + 200
    assert u.iq_tail == (tail + 400) % 256
    regs = {name: value for name, _, value in u.registers()}
    assert regs["IQH"] == regs["IQT"] == u.iq_tail * 16
    descriptors(u, u.iq_tail)                           # the whole ring: every wait in its own slot


# --- interrupt entry cache ---------------------------------------------------------------------------
def test_irte_changes_queue_interrupt_entry_cache_flushes():
    m = topology.load("seed-vtd")
    u = iommu.unit(m)
    ir, dev = m.irq_remap, m.lookup(E1000E)
    ir.free_msi(dev)                                    # the vectors its driver took at probe
    start = u.iq_tail
    indices = ir.alloc_msi(dev, 2, "msi")
    assert descriptors(u, start) == [(0x14 | i << 32, 0) for i in indices]        # modify_irte
    start = u.iq_tail
    ir.free_msi(dev)
    assert descriptors(u, start) == [(0x14 | 1 << 27 | indices[0] << 32, 0)]      # clear_entries: IM 1


def test_irtes_written_before_the_queue_exists_are_flushed_at_boot():
    m = topology.load("seed-vtd")
    dev = m.lookup(E1000E)
    (index,) = m.irq_remap.alloc_msi(dev, 1, "msix")
    u = iommu.unit(m)
    assert (0x14 | index << 32, 0) in descriptors(u, 0)


# --- the address space of a stream, start/stop for ever -------------------------------------------------
def state(m, dev):
    u = iommu.unit(m)
    hm = m.host_memory
    return (hm.allocated, hm.top, list(hm.holes), u.mem.allocated, dict(dev.group.domain.mappings),
            dev.group.domain.table.mapped_pages, len(m.ram.pages))


def test_traffic_start_stop_for_ever_leaks_nothing():
    """Thousands of start/stop cycles of different sizes (a partial leaf table, a
    superpage-mapped buffer, several leaf tables) with DMA in between: each start gets the
    same IOVA and host buffer as the first start of its size, each stop queues the
    page-selective invalidation of its buffer, and IOVA space, page-table pages and host
    memory come back to where the first cycle left them."""
    m = topology.load("seed-vtd")
    u = iommu.unit(m)
    dev = strict(m, m.lookup(E1000E))
    did = dev.group.domain.did
    sizes = [12345, 1 << 20, (4 << 20) + 4096]
    seen = {}
    for i in range(3000):
        ws = sizes[i % 3]
        traffic.traffic_command(m, f"start {dev.name} rate=100000 ws={ws} pattern=random")
        t = m.traffic[dev.name]
        if i % 100 < 3:
            u.translate(dev.bdf.rid, t.iovas[0][0] + 4096)   # a translation in the IOTLB
            controls.dma_request(m, f"{dev.name} write {t.iovas[0][0]:#x} 64 data=ab")
        assert seen.setdefault(ws, (t.iovas, t.hpa)) == (t.iovas, t.hpa)
        iova = t.iovas[0][0]
        size = dev.group.domain.mappings[iova][1]            # whole pages
        start = u.iq_tail
        traffic.traffic_command(m, f"stop {dev.name}")
        (qw0, qw1), = descriptors(u, start)
        addr, mask = qi.psi_mask(iova, size)
        assert qw0 == 0xF2 | did << 16 and qw1 & ~IH == addr | mask
        if i == 2:
            first = state(m, dev)
    assert state(m, dev) == first
    assert m.host_memory.allocated == 0 and m.host_memory.in_use == {} and m.ram.pages == {}
    assert dev.group.domain.mappings == {} and not m.traffic


def test_dma_fq_stop_waits_for_the_flush_queue():
    """seed-vtd's groups are DMA-FQ: stop clears the page-table entries at once but the IOTLB
    keeps the translation (and the IOVA stays taken) until the flush queue's timer, 10 ms
    later, queues one domain-selective flush; then the IOVA is reused. Without the timer
    (no engine steps), the queue flushes itself every 255 unmaps: nothing runs out."""
    m = topology.load("seed-vtd")
    u = iommu.unit(m)
    dev = m.lookup(E1000E)
    dom = dev.group.domain
    assert dom.type == "DMA-FQ"
    traffic.traffic_command(m, f"start {dev.name} ws=16384")
    iova = m.traffic[dev.name].iovas[0][0]
    assert u.translate(dev.bdf.rid, iova).hpa is not None          # now in the IOTLB
    start = u.iq_tail
    traffic.traffic_command(m, f"stop {dev.name}")
    assert entries(u, start) == [] and dom.fq == [(iova, 16384)]
    assert u.translate(dev.bdf.rid, iova).iotlb_hit                 # stale, until the flush
    assert dom.alloc_iova(16384) != iova
    fq_timer(m)
    assert descriptors(u, start) == [(0xE2 | dom.did << 16, 0)] and dom.fq == []
    assert u.translate(dev.bdf.rid, iova).fault.reason == 0x06
    assert dom.alloc_iova(16384) == iova
    assert m.host_memory.allocated == 0
    rounds = []
    for i in range(3000):                                           # no engine: the ring fills
        traffic.traffic_command(m, f"start {dev.name} ws=16384")
        traffic.traffic_command(m, f"stop {dev.name}")
        assert len(dom.fq) <= 255
        if len(dom.fq) == 1:                                        # just flushed itself
            rounds.append(state(m, dev))
    # the first round made the page tables one ring's worth of IOVA spans; then nothing grows
    assert len(rounds) >= 10 and all(r == rounds[1] for r in rounds[1:])
    fq_timer(m)
    assert dom.fq == [] and dom.mappings == {} and m.host_memory.allocated == 0
    assert dom.alloc_iova(16384) == iova


def test_restart_and_stop_all_give_back_every_buffer():
    m = topology.load("seed-vtd")
    u = iommu.unit(m)
    a, b = m.lookup(E1000E), m.lookup(IXGBE)
    assert m.host_memory.allocated == 0
    tables = []
    for _ in range(3):
        for i in range(300):
            traffic.traffic_command(m, f"start {a.name} ws=65536")
            traffic.traffic_command(m, f"start {a.name} ws=8192")      # a restart unmaps the old buffer
            traffic.traffic_command(m, f"start {b.name} ws=1048576")
            traffic.traffic_command(m, "stop all")
            if i % 7 == 0:
                fq_timer(m)                                   # the flush queues' timers
        fq_timer(m)
        assert m.host_memory.allocated == 0 and m.host_memory.in_use == {}
        assert a.group.domain.mappings == {} == b.group.domain.mappings
        assert a.group.domain.fq == [] == b.group.domain.fq
        tables.append(u.mem.allocated)
    assert tables[0] == tables[1] == tables[2]                           # page-table pages: no growth


def test_a_stream_whose_domain_went_frees_its_host_buffer():
    """A `type` write frees the stream's domain, mappings and all: stop gives back the buffer."""
    m = topology.load("seed-vtd")
    dev = m.lookup(E1000E)
    traffic.traffic_command(m, f"start {dev.name} ws=65536")
    assert m.host_memory.allocated == 65536
    iommu.change_domain(m, dev.group)                # what a `type` write does after its checks
    traffic.traffic_command(m, f"stop {dev.name}")
    assert m.host_memory.allocated == 0


def test_identity_stream_frees_its_buffer():
    m = topology.load("seed-vtd")
    dev = m.lookup(E1000E)
    dev.group.default_domain = "identity"
    iommu.change_domain(m, dev.group)
    for _ in range(100):
        traffic.traffic_command(m, f"start {dev.name} ws=65536")
        assert m.traffic[dev.name].iovas[0][0] == m.traffic[dev.name].hpa == m.host_memory.base
        traffic.traffic_command(m, f"stop {dev.name}")
    assert m.host_memory.allocated == 0


# --- domain changes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["seed-vtd", "qemu-ref"])
def test_domain_change_clears_then_programs_the_context_entry(preset):
    """A `type` write: domain_context_clear_one's device-selective context-cache and
    domain-selective IOTLB flushes for the old domain; under caching mode (qemu-ref) then
    domain_context_mapping_one's pair for the non-present entry: context cache of DID 0,
    IOTLB of the new domain."""
    m = topology.load(preset)
    u = iommu.unit(m)
    dev = m.lookup(E1000E)
    old = dev.group.domain.did
    start = u.iq_tail
    dev.group.default_domain = "identity"
    iommu.change_domain(m, dev.group)
    new = dev.group.domain.did
    sid = dev.bdf.rid
    want = [(0x31 | old << 16 | sid << 32, 0), (0x2 | 2 << 4 | 3 << 6 | old << 16, 0)]
    if u.cap & 0x80:
        want += [(0x31 | sid << 32, 0), (0x2 | 2 << 4 | 3 << 6 | new << 16, 0)]
    assert descriptors(u, start) == want


def test_iec_flushes_count_in_dmar_perf_latency_inv_iec():
    m = topology.load("seed-vtd")
    u = iommu.unit(m)
    u.perf[3] = [0] * 10                          # `echo 3 > dmar_perf_latency`
    m.irq_remap.alloc_msi(m.lookup(E1000E), 4, "msix")
    assert sum(u.perf[3][:7]) == 4
