"""ATS and the device ATC on seed-vtd's ConnectX-5 (0000:0c:00.0, behind root port 00:1d.4,
which the DMAR table's ATSR names): when the kernel enables ATS, what the context entry
says, DMAs through the ATC, device-IOTLB invalidations after the IOTLB's, and disabling."""
from importlib import resources

import numpy as np
import pytest

from vfakefs.model import topology
from vfakefs.model.errors import TopologyError
from vfakefs.model.intel import atc
from vfakefs.model.iommu import ats, iommu
from vfakefs.model.iommu.device_dma import dma_read, dma_write
from tests.model.clock import fq_timer

CX5, X540, I210 = "0000:0c:00.0", "0000:03:00.0", "0000:02:00.0"
PRESET = (resources.files("vfakefs.presets") / "seed-vtd.toml").read_text()
ATSR = 'atsr = [{ flags = 0, ports = ["0000:00:1d.4"] }]'


def boot(text=PRESET):
    m = topology.from_text(text, "seed-vtd variant")
    return m, iommu.unit(m)


def ats_ctl(dev) -> int:
    return dev.config.r16(ats.ats_cap(dev) + ats.ATS_CTRL)


def tt(u, dev) -> int:
    return (u.context(dev.bdf.rid)[0] >> 2) & 3


def test_the_kernel_enables_ats_on_the_cx5_only():
    m, u = boot()
    cx5 = m.lookup(CX5)
    assert u.ecap & ats.ECAP_DT
    assert ats_ctl(cx5) == ats.ATS_CTRL_ENABLE                 # Enable+, STU 0 (4 KiB)
    assert tt(u, cx5) == 1                                     # CONTEXT_TT_DEV_IOTLB
    assert set(u.atcs) == {cx5.bdf.rid} and u.atcs[cx5.bdf.rid] is cx5.atc
    tag = u.devtlb[cx5.group.domain.did][cx5.bdf.rid]
    assert (tag.sid, tag.pfsid, tag.qdep) == (0x0C00, 0, 32)   # no ECAP.DIT: PFSID 0; IQD 0 means 32
    for bdf in (X540, I210):                                   # no ATS capability: multi-level, no ATC
        dev = m.lookup(bdf)
        assert ats.ats_cap(dev) is None and tt(u, dev) == 0 and dev.atc is None


def test_the_enable_bit_is_set_before_the_tables_exist():
    m = topology.from_text(PRESET, "seed-vtd")
    assert not m.dmar[0].materialized                         # the mount path: no numpy yet
    assert ats_ctl(m.lookup(CX5)) == ats.ATS_CTRL_ENABLE


def test_a_miss_asks_the_iommu_once_then_the_atc_answers_without_a_walk():
    m, u = boot()
    cx5 = m.lookup(CX5)
    iova = iommu.dma_map(m, cx5, 0x2000)
    did = cx5.group.domain.did
    first = dma_write(m, cx5, iova, b"\x5a" * 64)
    assert first.fault is None and not first.atc_hit
    walks = u.iotlb.misses[did] + u.iotlb.hits[did]
    again = dma_read(m, cx5, iova, 64)
    assert again.atc_hit and again.data == b"\x5a" * 64 and again.hpa == first.hpa
    assert u.iotlb.misses[did] + u.iotlb.hits[did] == walks   # the unit did nothing for it
    a = cx5.atc
    assert (a.hits, a.misses, a.entries()) == (1, 1, 1)
    # a read's completion carried W too (the page is writable): a write to it hits as well
    assert dma_write(m, cx5, iova + 8, b"\x01").atc_hit


def strict(m, dev):
    """The device's group in a strict DMA domain (seed-vtd's are DMA-FQ, whose unmaps wait
    for the flush queue), as a `type` write of DMA does after its checks."""
    dev.group.default_domain = "DMA"
    iommu.change_domain(m, dev.group)
    return dev


def test_unmap_queues_the_device_iotlb_invalidation_after_the_iotlb_one_and_the_atc_forgets():
    m, u = boot()
    cx5 = strict(m, m.lookup(CX5))
    iova = iommu.dma_map(m, cx5, 0x4000)                       # 4 pages: address mask 2
    assert dma_read(m, cx5, iova, 0x4000).fault is None
    assert cx5.atc.entries() == 4
    start, invalidations = u.iq_tail, cx5.atc.invalidations   # (the domain change flushed it whole once)
    iommu.dma_unmap(m, cx5, iova)
    descs = [u.iq[i][:2] for i in range(start, u.iq_tail)]
    kinds = [qw0 & 0xF for qw0, _ in descs]
    assert kinds == [0x2, 0x3, 0x5]                           # IOTLB, device-IOTLB, one wait (6.12: qi_batch)
    assert descs[0][1] & ~0x40 == iova | 2                     # PSI: address | AM 2 (IH aside)
    qw0, qw1 = descs[1]
    assert qw0 == 0x0C00 << 32 | 0x3                           # SID 0c:00.0, MAX_INVS_PD 0 (32), type 3
    assert qw1 == (iova | 0x1000) | 1                          # S: bit 12 set, bit 13 clear = 16 KiB
    assert cx5.atc.entries() == 0 and cx5.atc.invalidations == invalidations + 1
    late = dma_read(m, cx5, iova, 4)                           # no stale translation is used
    assert late.fault is not None and late.fault.reason == 0x06


def test_under_dma_fq_the_atc_keeps_the_page_until_the_flush_queue_flushes_it_whole():
    m, u = boot()
    cx5 = m.lookup(CX5)                                        # seed-vtd's groups: DMA-FQ
    iova = iommu.dma_map(m, cx5, 0x1000)
    assert dma_read(m, cx5, iova, 4).fault is None
    start = u.iq_tail
    iommu.dma_unmap(m, cx5, iova)
    assert u.iq_tail == start and cx5.atc.entries() == 1      # deferred, as dma-iommu's flush queue does
    fq_timer(m)
    descs = [u.iq[i][:2] for i in range(start, u.iq_tail)]
    assert [qw0 & 0xF for qw0, _ in descs] == [0x2, 0x3, 0x5]  # domain IOTLB, the whole device-IOTLB
    assert descs[1][1] == 0x7FFFFFFFFFFFF001 and cx5.atc.entries() == 0


@pytest.mark.parametrize("addr, mask, qw1", [
    (0x12345000, 0, 0x12345000),                               # one page: S clear
    (0x12344000, 1, 0x12344001),                               # 2 pages: bit 12 clear, S
    (0x12340000, 4, 0x12347001),                               # 16 pages: bits 12-14 set, 15 clear
    (0, atc.MAX_AGAW_PFN_WIDTH, 0x7FFFFFFFFFFFF001),           # everything (cache_tag_flush_all)
])
def test_the_descriptor_encodes_the_size_in_the_address(addr, mask, qw1):
    qw0, got = atc.dev_iotlb_desc(0x0300, 0, 32, addr, mask)
    assert got == qw1 and qw0 == 0x0300 << 32 | 3
    qw0, _ = atc.dev_iotlb_desc(0x0300, 0x0301, 8, addr, mask)  # PFSID split 15:12 and 63:52, depth 8
    assert qw0 == 0x0300 << 32 | 8 << 16 | 3 | 0x1 << 12 | 0x030 << 52


def test_identity_disables_ats_and_translation_requests_stop():
    m, u = boot()
    cx5 = m.lookup(CX5)
    iova = iommu.dma_map(m, cx5, 0x1000)
    assert dma_read(m, cx5, iova, 4).fault is None
    cx5.group.default_domain = "identity"
    iommu.change_domain(m, cx5.group)
    assert ats_ctl(cx5) == 0 and tt(u, cx5) == 2 and cx5.bdf.rid not in u.atcs
    assert cx5.atc.entries() == 0                              # ATS off: the device forgot it all
    before = (cx5.atc.hits, cx5.atc.misses)
    t = dma_read(m, cx5, 0x5000, 4)
    assert t.fault is None and t.hpa == 0x5000 and not t.atc_hit
    assert (cx5.atc.hits, cx5.atc.misses) == before            # no translation request was sent
    cx5.group.default_domain = "DMA"                            # back to translated: ATS again
    iommu.change_domain(m, cx5.group)
    assert ats_ctl(cx5) == ats.ATS_CTRL_ENABLE and tt(u, cx5) == 1 and cx5.bdf.rid in u.atcs


def test_the_domain_change_flushes_the_whole_device_tlb_after_the_domain_iotlb():
    m, u = boot()
    cx5 = m.lookup(CX5)
    start = u.iq_tail
    iommu.change_domain(m, cx5.group)                           # a new DMA domain
    descs = [u.iq[i][:2] for i in range(start, u.iq_tail)]
    assert [q & 0xF for q, _ in descs] == [0x1, 0x5, 0x2, 0x5, 0x3, 0x5]
    assert descs[4] == (0x0C00 << 32 | 3, 0x7FFFFFFFFFFFF001)
    assert tt(u, cx5) == 1 and list(u.devtlb[cx5.group.domain.did]) == [cx5.bdf.rid]


@pytest.mark.parametrize("change", [
    ("ats = true\n", "ats = false\n"),                          # the topology says the part has none
    (ATSR, 'atsr = [{ flags = 0, ports = ["0000:00:1d.0"] }]'),  # the ATSR names another port
    (ATSR, ""),                                                 # no ATSR at all
    ("ecap = 0xF050DE", "ecap = 0xF050DA"),                     # the unit has no Device-TLB support
])
def test_ats_stays_off_where_the_kernel_would_not_enable_it(change):
    m, u = boot(PRESET.replace(*change))
    cx5 = m.lookup(CX5)
    pos = ats.ats_cap(cx5)
    assert pos is None or ats_ctl(cx5) == 0
    assert tt(u, cx5) == 0 and not u.atcs
    iova = iommu.dma_map(m, cx5, 0x1000)
    assert dma_read(m, cx5, iova, 4).fault is None and cx5.atc is None


def test_atsr_all_ports_covers_the_port():
    m, u = boot(PRESET.replace(ATSR, "atsr = [{ flags = 1 }]"))
    assert ats_ctl(m.lookup(CX5)) == ats.ATS_CTRL_ENABLE and tt(u, m.lookup(CX5)) == 1


def test_a_batch_through_the_atc_hits_nearly_always_when_the_working_set_fits():
    m, u = boot()
    cx5 = m.lookup(CX5)
    n = 256
    iova = iommu.dma_map(m, cx5, n * 4096)
    pages = np.uint64(iova) + (np.arange(n, dtype=np.uint64) << np.uint64(12))
    stream = np.tile(pages, 200) + np.uint64(0x10)
    hpa, why = atc.translate_batch(u, cx5.bdf.rid, stream, False)
    assert not why.any()
    ref, _ = u.translate_batch(cx5.bdf.rid, stream, False)     # the walk alone answers the same
    assert (hpa == ref).all()
    a = cx5.atc
    assert a.misses == n and a.hits == len(stream) - n         # one request per page, then hits
    assert a.hits / (a.hits + a.misses) > 0.99


def test_a_batch_fault_is_reported_and_not_cached():
    m, u = boot()
    cx5 = m.lookup(CX5)
    iova = iommu.dma_map(m, cx5, 0x1000)
    hpa, why = atc.translate_batch(u, cx5.bdf.rid, np.array([iova, iova + 0x1000, iova], dtype=np.uint64), True)
    assert list(why) == [0, 5, 0] and hpa[1] == 0
    assert cx5.atc.entries() == 1


def test_bad_ats_field_is_one_topology_error():
    with pytest.raises(TopologyError) as e:
        topology.from_text(PRESET.replace("ats = true\n", 'ats = "yes"\n'), "bad.toml")
    assert "bad.toml" in str(e.value) and "ats" in str(e.value)


def test_stats_text():
    m, u = boot()
    cx5 = m.lookup(CX5)
    iova = iommu.dma_map(m, cx5, 0x1000)
    dma_read(m, cx5, iova, 4)
    dma_read(m, cx5, iova, 4)
    assert ats.stats(m) == ("device       ATS         hits       misses  invalidations  entries\n"
                            "0000:0c:00.0 on             1            1              0        1\n")

