"""Traffic streams and VFIO (no mount; beside test_engine.py, as it steps the engine):
seed-vtd's group 42 (01:00.0 and 01:00.1 on vfio-pci) in a container. A stream on a claimed device walks the program's mappings
(type1's dma_list) through the VFIO domain and maps nothing of its own; a DMA-API stream
ends when its group is claimed, its buffer unmapped from the default domain. The engine
is stepped with engine.step(), as tests/test_engine.py does."""
from __future__ import annotations

import errno

import pytest

from vfakefs import engine
from vfakefs.model import controls, topology, traffic
from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_INFO, KERN_WARNING
from vfakefs.model.vfio import type1
from vfakefs.model.vfio.container import VfioContainer
from vfakefs.model.vfio.group import VfioGroup
from vfakefs.model.vfio.memory import BytesMemory
from tests.model.vfio_machine import claim_group42, group42_machine, to_vfio

GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"
MiB = 1 << 20
VBASE = 0x7F00_0000_0000
CONFIG = 7 << 40
PTE_NOT_PRESENT = (0x05, 0x06)          # VT-d fault reasons: no read / no write permission


@pytest.fixture
def m():
    return group42_machine()


def claim(m):
    """The essay's sequence to SET_IOMMU, and the GPU's device fd with bus mastering on."""
    return claim_group42(m, BytesMemory(VBASE, 8 * MiB))


@pytest.fixture
def vfio(m):
    return claim(m)


def tables(m, c, g):
    """What a stream must not change: the VFIO domain's and the displaced default domain's
    page tables and DMA-API mappings, and the invalidation queue."""
    u = m.iommu_unit()
    dd = g.default_domain if g.default_domain is not None else m.lookup(GPU).group.domain
    vd = c.iommu.domain if c.iommu is not None and c.iommu.domain is not None else None
    return ((vd.did, vd.table.mapped_pages, dict(vd.mappings)) if vd else None,
            (dd.did, dd.table.mapped_pages, dict(dd.mappings)), u.iq_tail)


def streams(m):
    return {name: (t.iovas, t.requests, t.faults, t.vfio) for name, t in m.traffic.items()}


def err(m, text):
    with pytest.raises(SysfsError) as e:
        traffic.traffic_command(m, text)
    return e.value.errno


# --- a VFIO stream walks the program's mappings ------------------------------------------------------
def test_walks_the_mappings_through_the_vfio_domain_and_maps_nothing(m, vfio):
    c, g, vd = vfio
    c.map_dma(VBASE, 0, 0x2000)
    c.map_dma(VBASE + MiB, 0x10000, 0x4000)
    before = tables(m, c, g)
    traffic.traffic_command(m, f"start {GPU} rate=1000")
    t = m.traffic[GPU]
    assert t.vfio is c.iommu and t.iovas == [(0, 0x2000), (0x10000, 0x4000)]
    assert t.describe().startswith(f"{GPU} rate=1000 mix=0.70 ws={0x6000} pattern=sequential requests=0 ")
    assert tables(m, c, g) == before            # no dma_map into the VFIO (or any) domain
    # the walk: the mappings' pages in IOVA order, round and round
    walk = [int(a) for a in engine._addresses(t, 8)]
    assert walk == [0, 0x1000, 0x10000, 0x11000, 0x12000, 0x13000, 0, 0x1000]
    u = m.iommu_unit()
    hits = u.iotlb.hits[c.iommu.domain.did]
    engine.step(m, 1.0)
    assert (t.requests, t.faults) == (1000, 0)
    assert u.iotlb.hits[c.iommu.domain.did] - hits == t.latency[0] > 500   # 6 pages: mostly IOTLB hits
    assert tables(m, c, g) == before
    m.check()


def test_stop_and_restart_touch_no_domain(m, vfio):
    c, g, vd = vfio
    c.map_dma(VBASE, 0x100000, 0x8000)
    traffic.traffic_command(m, f"start {GPU} rate=500")
    engine.step(m, 0.1)
    before = tables(m, c, g)
    traffic.traffic_command(m, f"start {GPU} rate=700 pattern=random")     # restart
    assert m.traffic[GPU].rate == 700 and tables(m, c, g) == before
    traffic.traffic_command(m, f"stop {GPU}")
    assert GPU not in m.traffic and tables(m, c, g) == before
    traffic.traffic_command(m, f"start {GPU} rate=700")
    traffic.traffic_command(m, "stop all")
    assert m.traffic == {} and tables(m, c, g) == before
    assert [(d.iova, d.size) for d in c.iommu.dma_list] == [(0x100000, 0x8000)]
    m.check()


@pytest.mark.parametrize("ws, runs", [
    (0x3000, [(0, 0x2000), (0x10000, 0x1000)]),        # the first ws bytes of the mapped space
    (0x3FFF, [(0, 0x2000), (0x10000, 0x1000)]),        # whole pages
    (4096, [(0, 0x1000)]),
    (0x6000, [(0, 0x2000), (0x10000, 0x4000)]),        # all of it
    (MiB, [(0, 0x2000), (0x10000, 0x4000)]),           # a limit, not a demand
])
def test_ws_limits_the_walk(m, vfio, ws, runs):
    c, g, vd = vfio
    c.map_dma(VBASE, 0, 0x2000)
    c.map_dma(VBASE + MiB, 0x10000, 0x4000)
    traffic.traffic_command(m, f"start {GPU} rate=1000 ws={ws}")
    t = m.traffic[GPU]
    assert t.iovas == runs and t.working_set == sum(s for _, s in runs)
    assert f" ws={t.working_set} " in t.describe()
    engine.step(m, 1.0)
    assert t.faults == 0
    pages = {a + k for a, s in runs for k in range(0, s, 4096)}
    assert {int(a) for a in engine._addresses(t, 64)} == pages


def test_storm_faults_past_every_mapping(m, vfio):
    """storm aims past the highest mapping (not past the ws cut, which the next mapping
    may cover): every request faults, in the VFIO domain."""
    c, g, vd = vfio
    c.map_dma(VBASE, 0, 0x1000)
    c.map_dma(VBASE + MiB, 0x1000, 0x1000)
    traffic.traffic_command(m, f"start {GPU} rate=100 ws=4096 pattern=storm")
    t = m.traffic[GPU]
    assert t.past == 0x2000
    engine.step(m, 0.5)
    assert t.requests == t.faults == 50
    log = m.iommu_unit().fault_log
    assert log and all(f.sid == vd.dev.bdf.rid and f.addr >= 0x2000 and f.reason in PTE_NOT_PRESENT for f in log)


def test_the_dma_control_and_a_stream_translate_alike(m, vfio):
    """The same path: the page a stream walks translates for the `dma` control to the
    pinned page MAP_DMA gave it."""
    c, g, vd = vfio
    c.map_dma(VBASE, 0x40000, 0x1000)
    traffic.traffic_command(m, f"start {GPU} rate=100 mix=1")
    engine.step(m, 0.1)
    t = m.traffic[GPU]
    assert (t.requests, t.faults) == (10, 0)
    out = controls.dma_request(m, f"{GPU} read 0x40000 4")
    assert out.startswith(f"{GPU} read iova 0x40000 -> hpa {c.iommu.dma_list[0].hpa:#x} (iotlb hit)\n")


# --- the program changes things under a running stream -----------------------------------------------
def test_unmapped_while_running_faults(m, vfio):
    c, g, vd = vfio
    c.map_dma(VBASE, 0, 0x4000)
    c.map_dma(VBASE + MiB, 0x100000, 0x4000)
    traffic.traffic_command(m, f"start {GPU} rate=800")
    t = m.traffic[GPU]
    engine.step(m, 0.1)
    assert (t.requests, t.faults) == (80, 0)
    c.unmap_dma(0x100000, 0x4000)                  # half the walk goes away
    engine.step(m, 0.1)
    assert (t.requests, t.faults) == (160, 40)
    gone = [f for f in m.iommu_unit().fault_log]
    assert gone and all(0x100000 <= f.addr < 0x104000 and f.reason in PTE_NOT_PRESENT for f in gone)
    c.map_dma(VBASE, 0x200000, 0x1000)             # a new mapping is not the device's target
    assert t.iovas == [(0, 0x4000), (0x100000, 0x4000)]
    m.check()


def test_program_exit_stops_the_device_and_leaves_the_default_domain_alone(m, vfio):
    """The program exits: vfio-pci's close clears bus mastering (nothing more is issued),
    the group's release brings the default domain back; the stream's stop touches it not."""
    c, g, vd = vfio
    c.map_dma(VBASE, 0, 0x4000)
    traffic.traffic_command(m, f"start {GPU} rate=1000")
    t = m.traffic[GPU]
    engine.step(m, 0.1)
    dd = g.default_domain
    vd.close()
    g.close()
    assert m.lookup(GPU).group.domain is dd and m.lookup(GPU).group.owner is None
    engine.step(m, 0.1)
    assert (t.requests, t.faults) == (100, 0)      # bus mastering is off: not issued
    before = (dd.table.mapped_pages, dict(dd.mappings), m.iommu_unit().iq_tail)
    # bus mastering set again by hand (setpci): the IOVAs now translate through the
    # default domain, which does not map them
    dev = m.lookup(GPU)
    dev.config.w16(0x04, dev.config.r16(0x04) | 0x4)
    engine.step(m, 0.01)
    assert (t.requests, t.faults) == (110, 10)
    assert all(f.addr < 0x4000 and f.reason in PTE_NOT_PRESENT for f in m.iommu_unit().fault_log)
    traffic.traffic_command(m, f"stop {GPU}")
    assert (dd.table.mapped_pages, dict(dd.mappings), m.iommu_unit().iq_tail) == before
    m.check()


def test_release_with_a_dma_api_buffer_in_the_default_domain_keeps_it(m):
    """A stream on a device of another, kernel-owned group keeps its buffer; a VFIO
    stream's stop after the release does not unmap the default domain's mapping at the
    same IOVA that a DMA-API stream on the released group made later."""
    c, g, vd = claim(m)
    c.map_dma(VBASE, 0xFFFFE000, 0x2000)            # where the DMA API would put a buffer
    traffic.traffic_command(m, f"start {GPU} rate=10")
    vd.close()
    g.close()
    traffic.traffic_command(m, f"start {AUDIO} rate=10 ws=8192")   # DMA API, default domain
    dd = m.lookup(AUDIO).group.domain
    iova = m.traffic[AUDIO].iovas[0][0]
    assert iova in dd.mappings
    traffic.traffic_command(m, f"stop {GPU}")
    assert iova in dd.mappings and dd.table.mapped_pages
    traffic.traffic_command(m, f"stop {AUDIO}")
    assert iova not in dd.mappings
    m.check()


# --- bad input: errno and nothing changed ---------------------------------------------------------------
def test_claimed_group_without_mappings_is_einval(m):
    c = VfioContainer(m, memory=BytesMemory(VBASE, MiB))
    g = VfioGroup.open(m, 42)
    g.set_container(c)                              # claimed, no backend yet
    log = len(m.kmsg.records)
    assert err(m, f"start {GPU}") == errno.EINVAL
    assert m.kmsg.records[-1].text == "vfakefs: traffic: 0000:01:00.0: group 42 is claimed by VFIO " \
                                      "and its container maps nothing"
    assert m.kmsg.records[-1].level == KERN_WARNING and len(m.kmsg.records) == log + 1
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)           # a backend, no MAP_DMA
    before = tables(m, c, g)
    assert err(m, f"start {AUDIO} ws=8192") == errno.EINVAL
    assert m.traffic == {} and tables(m, c, g) == before
    c.map_dma(VBASE, 0, 0x1000)
    traffic.traffic_command(m, f"start {GPU}")
    c.unmap_dma(0, 0, type1.VFIO_DMA_UNMAP_FLAG_ALL)
    kept = streams(m)
    assert err(m, f"start {GPU} rate=5") == errno.EINVAL    # the old stream stays as it was
    assert streams(m) == kept and m.traffic[GPU].rate == 100_000
    m.check()


@pytest.mark.parametrize("text", [
    f"start {GPU} rate=0", f"start {GPU} ws=4095", f"start {GPU} ws={(1 << 30) + 1}",
    f"start {GPU} mix=2", f"start {GPU} pattern=zigzag", f"start {GPU} rate={traffic.MAX_RATE + 1}",
    f"start {GPU} ws=x", f"stop {AUDIO}",
])
def test_bad_input_on_a_claimed_device_changes_nothing(m, vfio, text):
    c, g, vd = vfio
    c.map_dma(VBASE, 0, 0x4000)
    traffic.traffic_command(m, f"start {GPU} rate=10")
    before, kept = tables(m, c, g), streams(m)
    assert err(m, text) == errno.EINVAL
    assert tables(m, c, g) == before and streams(m) == kept
    assert m.kmsg.records[-1].text.startswith("vfakefs: traffic: ")


# --- a DMA-API stream when VFIO claims its group ---------------------------------------------------------
def test_claim_ends_the_members_dma_api_streams(m):
    """A stream started while the group is the kernel's maps its buffer with dma_map in the
    default domain. SET_CONTAINER claims the group, which only succeeds with no DMA-API
    user on any member: the stream ends and its buffer is unmapped (a page-selective flush
    of the default domain's DID); the default domain comes back without it."""
    fresh = topology.load("seed-vtd")
    traffic.traffic_command(fresh, f"start {GPU} rate=1000 ws=8192")      # nouveau bound
    traffic.traffic_command(fresh, "start 0000:02:00.0 rate=1000 ws=8192")  # igb, another group
    engine.step(fresh, 0.1)
    dd = fresh.lookup(GPU).group.domain
    iova = fresh.traffic[GPU].iovas[0][0]
    assert iova in dd.mappings and dd.table.mapped_pages == 2
    to_vfio(fresh, GPU)                               # nouveau's remove: bus mastering off
    to_vfio(fresh, AUDIO)
    engine.step(fresh, 0.1)
    assert fresh.traffic[GPU].requests == 100         # not issued while unbound
    other = streams(fresh)["0000:02:00.0"]
    iq = fresh.iommu_unit().iq_tail
    c = VfioContainer(fresh)
    g = VfioGroup.open(fresh, 42)
    g.set_container(c)
    assert GPU not in fresh.traffic and "0000:02:00.0" in fresh.traffic
    assert streams(fresh)["0000:02:00.0"] == other
    rec = [r for r in fresh.kmsg.records if "stopped: group 42" in r.text]
    assert [(r.text, r.level) for r in rec] == [
        (f"vfakefs: traffic: {GPU}: stopped: group 42 claimed by VFIO, its DMA API buffer unmapped", KERN_INFO)]
    assert g.default_domain is dd and iova not in dd.mappings and dd.table.mapped_pages == 0
    assert fresh.iommu_unit().iq_tail > iq            # the default domain's IOTLB flushed
    g.close()
    assert fresh.lookup(GPU).group.domain is dd and dd.mappings == {}
    fresh.check()


def test_failed_set_container_keeps_the_stream(m):
    """SET_CONTAINER refused (EPERM: a DMA-API driver on a member) claims nothing: a
    DMA-API stream on the group goes on, its buffer still mapped."""
    fresh = topology.load("seed-vtd")
    to_vfio(fresh, GPU)                               # the audio function stays on snd_hda_intel
    traffic.traffic_command(fresh, f"start {GPU} rate=1000 ws=8192")
    dd = fresh.lookup(GPU).group.domain
    before, kept = (dd.table.mapped_pages, dict(dd.mappings)), streams(fresh)
    g = VfioGroup.open(fresh, 42)
    with pytest.raises(SysfsError) as e:
        g.set_container(VfioContainer(fresh))
    assert e.value.errno == errno.EPERM
    assert streams(fresh) == kept and (dd.table.mapped_pages, dict(dd.mappings)) == before
