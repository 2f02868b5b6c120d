"""The invalidation queue (VT-d spec 6.5.2) as the kernel drives it.

Descriptors are encoded as drivers/iommu/intel/dmar.c (qi_flush_context, qi_flush_iotlb,
qi_flush_iec, qi_global_iec) and iommu.h (qi_desc_iotlb) build them, and submitted as
qi_submit_sync does: the descriptors, then one invalidation wait descriptor whose status
write lands in the kernel's desc_status[] slot of the wait. The hardware runs a submission
before qi_submit_sync returns, so IQH catches up with IQT, and the kernel hands the slots
back (reclaim_free_desc: status QI_FREE), which is what debugfs shows. The queue is a ring
of IQ_ENTRIES 128-bit descriptors (legacy mode) that wraps at its end.

Plain Python: no numpy here, the queue is made with the unit's tables (DmarUnit.materialize).
"""
from __future__ import annotations

IQ_ENTRIES = 256            # QI_LENGTH: one 4 KiB page of 16-byte descriptors

# descriptor types (qw0 bits 3:0)
QI_CC_TYPE, QI_IOTLB_TYPE, QI_DIOTLB_TYPE, QI_IEC_TYPE, QI_IWD_TYPE = 1, 2, 3, 4, 5
# granularities (qw0 bits 5:4): DMA_CCMD_*_INVL >> 57, DMA_TLB_*_FLUSH >> 56
GLOBAL, DOMAIN, DEVICE, PAGE = 1, 2, 3, 3
QI_FREE, QI_IN_USE, QI_DONE, QI_ABORT = 0, 1, 2, 3


def cc_desc(gran: int, did: int = 0, sid: int = 0, fm: int = 0) -> tuple[int, int]:
    """Context-cache invalidation (qi_flush_context): QI_CC_GRAN | DID 31:16 | SID 47:32 | FM 49:48."""
    return QI_CC_TYPE | gran << 4 | did << 16 | sid << 32 | fm << 48, 0


def iotlb_desc(cap: int, gran: int, did: int = 0, addr: int = 0, am: int = 0, ih: int = 0) -> tuple[int, int]:
    """IOTLB invalidation (qi_desc_iotlb): DW bit 6 and DR bit 7 when CAP.DWD / CAP.DRD say the
    unit drains; qw1 is ADDR 63:12 | IH bit 6 | AM 5:0."""
    dw, dr = cap >> 54 & 1, cap >> 55 & 1
    return (QI_IOTLB_TYPE | gran << 4 | dw << 6 | dr << 7 | did << 16,
            (addr & ~0xFFF) | (ih & 1) << 6 | am)


def iec_desc(index: int | None = None, mask: int = 0) -> tuple[int, int]:
    """Interrupt-entry-cache invalidation: global (qi_global_iec) when index is None, else
    index-selective (qi_flush_iec): QI_IEC_SELECTIVE bit 4 | IM 31:27 | IIDX 47:32."""
    if index is None:
        return QI_IEC_TYPE, 0
    return QI_IEC_TYPE | 1 << 4 | mask << 27 | index << 32, 0


def wait_desc(status_addr: int) -> tuple[int, int]:
    """qi_submit_sync's wait: status write (SW bit 5) of QI_DONE (data 63:32) to status_addr."""
    return QI_IWD_TYPE | 1 << 5 | QI_DONE << 32, status_addr


def psi_mask(iova: int, size: int) -> tuple[int, int]:
    """(address, mask) of the smallest naturally aligned window of 2^mask pages covering
    [iova, iova+size): calculate_psi_aligned_address() (cache.c; iommu_flush_iotlb_psi on
    6.1), whose shared-bits rule for an unaligned start gives the same window."""
    first, last = iova >> 12, (iova + max(size, 1) - 1) >> 12
    mask = 0
    while first >> mask != last >> mask:
        mask += 1
    return (first >> mask) << (12 + mask), mask


def submit(u, descs) -> None:
    """qi_submit_sync(): the descriptors at the tail, then the wait; the ring wraps."""
    tail = u.iq_tail
    for qw0, qw1 in descs:
        u.iq[tail] = (qw0, qw1, QI_FREE)
        tail = (tail + 1) % IQ_ENTRIES
    u.iq[tail] = (*wait_desc(u.iq_status + 4 * tail), QI_FREE)
    u.iq_tail = (tail + 1) % IQ_ENTRIES
    u.qi_submissions += 1
