"""Per-device DMA counters, and vfakefs's own debugfs file that shows them
(MNT/sys/kernel/debug/vfakefs/dma_stats; no kernel has it: the kernel keeps no
per-device DMA count, and the unit's IOTLB counts per domain id, iotlb_stats).

Counted where a device's DMA goes through the remapping unit: the engine's traffic
streams (engine._issue), a transfer of the `dma` control or of the Python VFIO API
(device_dma._transfer) and a single DMA-API request (iommu.dma). A request that was
not issued (Bus Master Enable clear) is not counted.

- requests: requests the device issued. A transfer is carried as requests of at most
  4 KiB that never cross a page (device_dma.py): one per page up to and including the
  page that faulted; a stream's request is one page address.
- bytes: what the requests that translated carried. A transfer counts the bytes it
  moved; a stream's request stands for the page it addresses, 4 KiB (streams translate
  only, no payload moves: the bytes are what such a request would carry).
- faults: requests that faulted (every one, also those the unit could not record
  because its fault recording registers were full).
- iotlb_hits, iotlb_misses: the unit's IOTLB lookups made for the device's requests
  (a device with ATS on looks up only what its own ATC missed; atc_stats has the ATC).
- serviced: the device's faults the kernel's handler serviced (dmar_fault), the count
  fault_threshold is compared with.

The first line is the engine's simulated clock, in seconds: the time the streams'
rates are in (a stream at rate=N issues N requests per simulated second), so a reader
can turn two readings into rates per simulated second."""
from __future__ import annotations

from dataclasses import dataclass

PAGE = 4096


@dataclass
class DmaStats:
    requests: int = 0
    bytes: int = 0
    faults: int = 0
    iotlb_hits: int = 0
    iotlb_misses: int = 0


def of(dev) -> DmaStats:
    """dev's counters, made on its first DMA."""
    if dev.dma_stats is None:
        dev.dma_stats = DmaStats()
    return dev.dma_stats


def iotlb_mark(u) -> tuple[int, int]:
    """The unit's IOTLB lookups so far (hits, misses over every domain id): taken before
    a device's requests are translated, handed to count() after, the difference is the
    lookups made for that device (the model translates one device's batch at a time)."""
    if u is None:
        return 0, 0
    return sum(u.iotlb.hits.values()), sum(u.iotlb.misses.values())


def count(dev, u, mark: tuple[int, int], requests: int, nbytes: int, faults: int) -> None:
    s = of(dev)
    s.requests += requests
    s.bytes += nbytes
    s.faults += faults
    hits, misses = iotlb_mark(u)
    s.iotlb_hits += hits - mark[0]
    s.iotlb_misses += misses - mark[1]


def show(m) -> str:
    """Every function, in the machine's order, with its counters (zeros before any DMA)."""
    out = ["clock %.6f\n" % m.clock,
           "%-12s %12s %16s %12s %12s %12s %10s\n" % ("device", "requests", "bytes", "faults", "iotlb_hits",
                                                     "iotlb_misses", "serviced")]
    for f in m.functions:
        s = f.dma_stats or DmaStats()
        out.append("%-12s %12d %16d %12d %12d %12d %10d\n" % (f.name, s.requests, s.bytes, s.faults,
                                                              s.iotlb_hits, s.iotlb_misses, f.dma_faults))
    return "".join(out)
