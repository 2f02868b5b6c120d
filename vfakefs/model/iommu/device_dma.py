"""A device's DMA with its payload: bytes written to or read from host memory through
the remapping unit, of any length.

PCIe splits a device's transfer into requests that never cross a 4 KiB boundary
(PCIe r6 2.2.7), so the unit translates the transfer page by page (the IOTLB first,
then a walk, as translate() does; superpages are still cached per 4 KiB page). The
device stops at the first page that faults: that fault is recorded and serviced like
any other DMA fault (dmar_fault's log line, the device's fault count, the bus-master
threshold), the pages before it have been transferred, nothing at or after it is.

Where the bytes land is model/ram.py's business: in the program's own memory when the
host page is one VFIO pinned (a device in a VFIO container translates through the
container's domain, whose page tables MAP_DMA filled), else in the simulated system
RAM. Physically contiguous pages are moved with one ProcessMemory call, so a 1 MiB
write into a program's buffer is one process_vm_writev.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

from vfakefs.model import ram
from vfakefs.model.errors import SysfsError
from vfakefs.model.intel.dmar import Fault
from vfakefs.model.iommu import dma_stats, iommu

PAGE = 4096
PCI_COMMAND_MASTER = 0x4


@dataclass
class DmaResult:
    """What a device's transfer did."""
    issued: bool                 # False: bus mastering is off, the device sent nothing
    done: int = 0                # bytes transferred: the whole length, or those before the fault
    hpa: int | None = None       # host address of the first byte, when its page translated
    fault: Fault | None = None   # the fault that stopped the transfer
    iotlb_hit: bool = False      # every page's translation came from the IOTLB
    data: bytes = b""            # for a read: the `done` bytes read
    atc_hit: bool = False        # every page's translation came from the device's own ATC (ATS)


def dma_write(m, dev, iova: int, data, at: int = 0) -> DmaResult:
    """Device `dev` (a PciFunction: m.lookup("0000:01:00.0"), or a VFIO device fd's .dev)
    writes `data` (any bytes-like object, any length) at bus address iova, as its DMA
    engine would: nothing when its command register's Bus Master Enable is clear; else
    translated page by page through the domain its context entry points at (the VFIO
    container's, for a device of a claimed group) and written up to the first page that
    faults. Each physically contiguous run is one ProcessMemory.write, so a 1 MiB write
    into a program buffer mapped by one MAP_DMA is one call. EINVAL for a range outside
    the 64-bit bus. at: the requests' address type (entries.AT_TRANSLATED: the device
    claims iova is already a host address, which only a device-TLB context allows)."""
    return _transfer(m, dev, iova, len(data), True, data, at)


def dma_read(m, dev, iova: int, length: int, at: int = 0) -> DmaResult:
    """Device `dev` reads `length` bytes at bus address iova, as dma_write() writes;
    DmaResult.data holds the bytes read (`done` of them: fewer when a page faulted)."""
    return _transfer(m, dev, iova, length, False, None, at)


def _transfer(m, dev, iova: int, length: int, write: bool, data, at: int = 0) -> DmaResult:
    if iova < 0 or length < 0 or iova + length > 1 << 64:
        raise SysfsError(errno.EINVAL, f"iova {iova:#x} + length {length} is outside the 64-bit bus")
    if not dev.config.r16(0x04) & PCI_COMMAND_MASTER:
        return DmaResult(issued=False)
    if not length:
        return DmaResult(issued=True)
    u = iommu.unit(m)
    atc = u.atcs.get(dev.bdf.rid) if u is not None and u.atcs else None
    misses = atc.misses if atc is not None else 0
    mark = dma_stats.iotlb_mark(u)
    runs, fault, hit = _translate(m, dev, iova, length, write, at)
    done, parts = 0, []
    for hpa, n in runs:
        if write:
            ram.write(m, hpa, data if n == length else memoryview(data)[done:done + n])
        else:
            parts.append(ram.read(m, hpa, n))
        done += n
    # one request per page up to the end, or up to and including the page that faulted
    pages = ((iova + (done if fault is not None else length - 1)) >> 12) - (iova >> 12) + 1
    dma_stats.count(dev, u, mark, pages, done, fault is not None)
    if fault is not None:
        iommu.handle_faults(m)
    out = parts[0] if len(parts) == 1 else b"".join(parts)
    return DmaResult(True, done, runs[0][0] if runs else None, fault, hit and fault is None, out,
                     atc is not None and fault is None and atc.misses == misses)


def _translate(m, dev, iova: int, length: int, write: bool, at: int = 0):
    """([(hpa, bytes)] physically contiguous runs up to the first fault, the fault
    recorded in the unit or None, whether every page hit the IOTLB)."""
    u = iommu.unit(m)
    if u is None:
        return [(iova, length)], None, False          # no remapping: bus address = host address
    first = iova & ~(PAGE - 1)
    npages = (iova + length - 1 - first) // PAGE + 1
    if npages <= SMALL or at:
        hp, fault, hit = _walk_pages(u, dev.bdf.rid, first, npages, write, at)
        starts = [0] + [i for i in range(1, len(hp)) if hp[i] != hp[i - 1] + PAGE]
    else:
        hp, fault, hit = _walk_batch(u, dev.bdf.rid, first, npages, write)
        import numpy as np                            # (as translate_batch: off the mount's start-up path)
        starts = [0, *(np.flatnonzero(np.diff(hp) != np.uint64(PAGE)) + 1).tolist()]
    runs, good, off = [], len(hp), iova - first
    if good:
        for a, b in zip(starts, starts[1:] + [good]):
            lo, hi = max(a * PAGE - off, 0), min(b * PAGE - off, length)
            runs.append((int(hp[a]) + (off if a == 0 else 0), hi - lo))
    return runs, fault, hit


SMALL = 16      # pages walked one by one (a control's request); more go through translate_batch


def _walk_pages(u, rid: int, first: int, npages: int, write: bool, at: int = 0):
    """translate() page by page: (host page addresses up to the fault, the fault, all hit)."""
    hp, hit = [], True
    for k in range(npages):
        # a translated request (AT 10b) carries a host address: the unit checks it, no ATC
        t = (u.translate(rid, first + k * PAGE, 1, write, at) if at      # records its fault itself
             else u.device_translate(rid, first + k * PAGE, 1, write))
        if t.fault is not None:
            return hp, t.fault, False
        hp.append(t.hpa)
        hit &= t.iotlb_hit
    return hp, None, hit


def _walk_batch(u, rid: int, first: int, npages: int, write: bool):
    """The same as one vectorised batch (intel/walk.py); the first fault is recorded."""
    import numpy as np
    pages = np.uint64(first) + (np.arange(npages, dtype=np.uint64) << np.uint64(12))
    hits_before = sum(u.iotlb.hits.values())
    hpa, reason = u.device_translate_batch(rid, pages, write)      # through the ATC when ATS is on
    hit = sum(u.iotlb.hits.values()) - hits_before == npages
    bad = np.flatnonzero(reason)
    if not len(bad):
        return hpa, None, hit
    good = int(bad[0])
    fault = Fault(rid, int(pages[good]), int(reason[good]), not write)
    u.record_fault(fault)
    return hpa[:good], fault, False
