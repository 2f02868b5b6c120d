"""The engine's traffic streams in the per-device DMA counters (model/iommu/dma_stats.py),
stepped by hand (engine.step with a time delta: simulated time only, exact counts)."""
from __future__ import annotations

from vfakefs import engine
from vfakefs.model import topology, traffic
from vfakefs.model.iommu import dma_stats
from vfakefs.model.pci.bdf import Bdf

IXGBE, IXGBE1 = "0000:03:00.0", "0000:03:00.1"


def stats(m, bdf):
    return m.by_bdf[Bdf.from_str(bdf)].dma_stats or dma_stats.DmaStats()


def test_stream_requests_and_bytes_follow_rate_and_clock():
    m = topology.load("seed-vtd")
    traffic.traffic_command(m, f"start {IXGBE} rate=1000 ws=16384")
    for _ in range(10):
        engine.step(m, 0.01)
    s = stats(m, IXGBE)
    assert m.traffic[IXGBE].requests == s.requests == 100          # rate x simulated time
    assert s.bytes == 100 * 4096 and s.faults == 0
    assert s.iotlb_hits + s.iotlb_misses == 100 and s.iotlb_hits > 0
    assert stats(m, IXGBE1) == dma_stats.DmaStats()                # the idle port: nothing
    assert dma_stats.show(m).splitlines()[0] == "clock 0.100000"


def test_storm_counts_every_faulted_request():
    m = topology.load("seed-vtd")
    traffic.traffic_command(m, f"start {IXGBE} rate=1000 pattern=storm")
    for _ in range(5):
        engine.step(m, 0.01)
    s, d = stats(m, IXGBE), m.by_bdf[Bdf.from_str(IXGBE)]
    assert s.requests == s.faults == m.traffic[IXGBE].faults == 50 and s.bytes == 0
    # the handler services what the recording registers held: at most that many
    assert 0 < d.dma_faults <= s.faults
    row = next(x for x in dma_stats.show(m).splitlines() if x.startswith(IXGBE)).split()
    assert row[1:4] == ["50", "0", "50"] and row[6] == str(d.dma_faults)
