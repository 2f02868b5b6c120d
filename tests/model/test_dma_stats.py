"""Per-device DMA counters (model/iommu/dma_stats.py) and the text of the debugfs file
vfakefs/dma_stats, on model Machines (no mount): transfers of the DMA path the `dma`
control uses (device_dma), single DMA-API requests (iommu.dma), attribution of the
IOTLB's lookups to the device whose requests made them, and what is not counted."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from vfakefs.model import topology
from vfakefs.model.iommu import device_dma, dma_stats, iommu
from vfakefs.model.pci.bdf import Bdf

NVME_A, NVME_B = "0000:06:00.0", "0000:07:00.0"      # seed-vtd: one group (4), one domain
IXGBE, CX5 = "0000:03:00.0", "0000:0c:00.0"          # CX5: ATS on
ROW = re.compile(r"(\S+) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+)")


@pytest.fixture
def m():
    return topology.load("seed-vtd")


def dev(m, bdf):
    return m.by_bdf[Bdf.from_str(bdf)]


def rows(m) -> dict[str, tuple[int, ...]]:
    """dma_stats as {device: (requests, bytes, faults, iotlb_hits, iotlb_misses, serviced)}."""
    lines = dma_stats.show(m).splitlines()
    assert re.fullmatch(r"clock \d+\.\d{6}", lines[0])
    assert lines[1].split() == ["device", "requests", "bytes", "faults", "iotlb_hits", "iotlb_misses", "serviced"]
    out = {}
    for line in lines[2:]:
        r = ROW.fullmatch(line)
        assert r, line
        out[r[1]] = tuple(int(x) for x in r.groups()[1:])
    return out


def test_fresh_machine_every_function_zero(m):
    r = rows(m)
    assert list(r) == [f.name for f in m.functions]
    assert set(r.values()) == {(0,) * 6}
    assert dma_stats.show(m).splitlines()[0] == "clock 0.000000"
    m.clock = 12.5
    assert dma_stats.show(m).splitlines()[0] == "clock 12.500000"


def test_transfer_counts_pages_and_bytes(m):
    d = dev(m, IXGBE)
    iova = iommu.dma_map(m, d, 4 * 4096)
    res = device_dma.dma_write(m, d, iova + 0x800, b"\xab" * (2 * 4096))   # pages 0, 1, 2: three requests
    assert res.done == 2 * 4096 and res.fault is None
    req, nbytes, faults, hits, misses, serviced = rows(m)[IXGBE]
    assert (req, nbytes, faults, serviced) == (3, 2 * 4096, 0, 0)
    assert hits + misses == 3                                  # one IOTLB lookup a page (no ATS)
    res = device_dma.dma_read(m, d, iova + 0x800, 2 * 4096)        # the same pages again: cached now
    req2, nbytes2, _, hits2, misses2, _ = rows(m)[IXGBE]
    assert (req2, nbytes2) == (6, 4 * 4096) and hits2 - hits >= 1 and hits2 + misses2 == 6


def test_transfer_cut_by_a_fault(m):
    d = dev(m, IXGBE)
    iova = iommu.dma_map(m, d, 2 * 4096)
    # from the middle of the buffer's last page past its end: page 1 (2 KiB moved), then page 2 faults
    res = device_dma.dma_write(m, d, iova + 4096 + 0x800, bytes(3 * 4096))
    assert res.fault is not None and res.done == 0x800
    req, nbytes, faults, hits, misses, serviced = rows(m)[IXGBE]
    assert (req, nbytes, faults) == (2, 0x800, 1)               # nothing after the faulting page was sent
    assert serviced == d.dma_faults == 1                         # dmar_fault serviced it


def test_not_issued_without_bus_mastering(m):
    d = dev(m, IXGBE)
    iova = iommu.dma_map(m, d, 4096)
    d.config.w16(0x04, d.config.r16(0x04) & ~0x4)
    assert not device_dma.dma_write(m, d, iova, b"x").issued
    assert not iommu.dma(m, d, iova, 8, True).hpa
    assert rows(m)[IXGBE] == (0,) * 6


def test_single_request(m):
    d = dev(m, IXGBE)
    iova = iommu.dma_map(m, d, 4096)
    assert iommu.dma(m, d, iova, 64, False).fault is None
    assert iommu.dma(m, d, iova + 4096, 8, True).fault is not None      # past the buffer
    req, nbytes, faults, hits, misses, _ = rows(m)[IXGBE]
    assert (req, nbytes, faults) == (2, 64, 1) and hits + misses == 2


def test_iotlb_lookups_go_to_the_device_that_made_them(m):
    """Two functions in one domain: iotlb_stats counts the domain's lookups, dma_stats
    gives each function its own."""
    a, b = dev(m, NVME_A), dev(m, NVME_B)
    assert a.group.domain is b.group.domain
    iova = iommu.dma_map(m, a, 8 * 4096)
    device_dma.dma_read(m, a, iova, 8 * 4096)
    device_dma.dma_read(m, a, iova, 8 * 4096)
    device_dma.dma_read(m, b, iova, 4096)
    ra, rb = rows(m)[NVME_A], rows(m)[NVME_B]
    assert ra[3] + ra[4] == 16 and ra[3] >= 8 and rb[3] + rb[4] == 1 and rb[0] == 1
    did = a.group.domain.did
    u = iommu.unit(m)
    assert u.iotlb.hits[did] + u.iotlb.misses[did] == 17


def test_ats_device_looks_up_only_what_its_atc_missed(m):
    d = dev(m, CX5)
    iova = iommu.dma_map(m, d, 4 * 4096)
    for _ in range(3):
        device_dma.dma_read(m, d, iova, 4 * 4096)
    atc = iommu.unit(m).atcs[d.bdf.rid]
    req, _, _, hits, misses, _ = rows(m)[CX5]
    assert req == 12 and atc.hits + atc.misses == 12 and atc.misses == 4
    assert hits + misses == atc.misses                         # the IOTLB saw only the translation requests


def test_no_iommu_machine_counts_requests(tmp_path):
    src = (Path(topology.__file__).parent.parent / "presets/seed-vtd.toml").read_text()
    t = tmp_path / "off.toml"
    t.write_text(re.sub(r'(?m)^cmdline = ".*"$', 'cmdline = "quiet intel_iommu=off"', src))
    m = topology.load(str(t))
    assert not m.iommu_on
    d = dev(m, IXGBE)
    device_dma.dma_write(m, d, 0x1000, b"ab" * 100)            # bus address = host address
    assert iommu.dma(m, d, 0x3000, 64, False).fault is None
    assert rows(m)[IXGBE] == (2, 264, 0, 0, 0, 0)
