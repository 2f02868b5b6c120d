"""The invalidation queue (VT-d spec 6.5.2) as the kernel drives it.

Descriptors are encoded as drivers/iommu/intel/dmar.c (qi_flush_context, qi_flush_iotlb,
qi_flush_iec, qi_global_iec) and iommu.h (qi_desc_iotlb) build them, and submitted as
qi_submit_sync does: the descriptors, then one invalidation wait descriptor whose status
write lands in the kernel's desc_status[] slot of the wait. The hardware runs a submission
before qi_submit_sync returns, so IQH catches up with IQT, and the kernel hands the slots
back (reclaim_free_desc: status QI_FREE), which is what debugfs shows. The queue is a ring
of IQ_ENTRIES 128-bit descriptors (legacy mode) that wraps at its end.

Plain Python: no numpy here, the queue is made with the unit's tables (DmarUnit.materialize).
QueuedInvalidation holds DmarUnit's side: what the kernel queues at boot, for context
entries, for unmaps (page-selective with the address mask, or domain-selective) and for
IRTE changes; dev_iotlb_descs is where device-IOTLB descriptors (ATS) join an unmap.
"""
from __future__ import annotations

from vfakefs.model.intel.devtlb import dev_iotlb_desc

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


class QueuedInvalidation:
    """What the kernel queues, as DmarUnit's methods (the unit's iq, iq_tail, iq_status, cap,
    iotlb, mem, machine and timed() are DmarUnit's)."""

    def _flush_context(self, rid: int, cc_did: int, did: int) -> None:
        """A context entry's flushes (set_context): device-selective context cache, then the
        domain's IOTLB, each its own qi_submit_sync."""
        submit(self, [cc_desc(DEVICE, cc_did, rid)])
        submit(self, [iotlb_desc(self.cap, DOMAIN, did)])
        with self.timed(1):
            self.iotlb.invalidate_domain(did)

    def queue_invalidation(self, qw0: int, qw1: int) -> None:
        """Submit one descriptor, followed by a wait descriptor, as qi_submit_sync does."""
        submit(self, [(qw0, qw1)])

    def init_flush(self) -> None:
        """What boot queues before any device is attached: interrupt remapping's setup first
        (iommu_set_irq_remapping: a global IEC flush, then modify_irte's index flush of each
        entry boot programmed), then iommu_set_root_entry's global context-cache and global
        IOTLB invalidations (skipped when CAP.ESRTPS says SRTP flushes them itself)."""
        # the table (made on first use, perhaps just now) is replayed as boot left it: its
        # entries in table order, as one flush each, before the DMA-remapping flushes
        ir = getattr(self.machine, "irq_remap", None) if self.ir_supported else None
        if ir is not None and getattr(ir, "unit", None) is self and ir.enabled:
            submit(self, [iec_desc()])
            for index in ir.present().tolist():
                submit(self, [iec_desc(int(index))])
        if not self.cap >> 63 & 1:
            submit(self, [cc_desc(GLOBAL)])
            submit(self, [iotlb_desc(self.cap, GLOBAL)])
            self.iotlb.invalidate_global()
        self.qi_live = True

    def flush_iec(self, index: int, mask: int = 0) -> None:
        """qi_flush_iec(): an IRTE changed (modify_irte) or a block of 2^mask went (clear_entries).
        Only once the queue exists: before that, init_flush covers what boot programmed."""
        if self.qi_live:
            with self.timed(3):                   # dmar_perf_latency's inv_iec
                submit(self, [iec_desc(index, mask)])

    def dev_iotlb_descs(self, did: int, addr: int, mask: int) -> list[tuple[int, int]]:
        """Device-IOTLB (type 3) descriptors for the ATS-enabled devices of domain did
        (cache tags of type DEVTLB, devtlb.py), submitted after the domain's IOTLB
        descriptor; each device's ATC drops what its descriptor covers."""
        descs = []
        for tag in self.devtlb.get(did, {}).values():
            descs.append(dev_iotlb_desc(tag.sid, tag.pfsid, tag.qdep, addr, mask))
            tag.atc.invalidate(addr, mask)
        return descs

    def invalidate_pages(self, did: int, iova: int, size: int, ih: bool = False) -> None:
        """intel_iommu_tlb_sync() for [iova, iova+size) of domain did: page-selective IOTLB
        invalidation with the address mask of the aligned window covering it, or
        domain-selective when the unit has no PSI (CAP.PSI) or the mask is beyond CAP.MAMV;
        then the device IOTLBs. ih (only leaves changed: no page-table page freed) reaches
        the descriptor only where the kernel keeps it (profile.qi_iotlb_ih; 6.1's
        QI_IOTLB_ADDR masks it away). 6.12 batches the descriptors into one submission
        (cache.c qi_batch); 6.1 submits each on its own."""
        addr, mask = psi_mask(iova, size)
        prof = getattr(self.machine, "profile", None)
        if not self.cap >> 39 & 1 or mask > (self.cap >> 48 & 0x3F):
            descs = [iotlb_desc(self.cap, DOMAIN, did)]
            flush = lambda: self.iotlb.invalidate_domain(did)     # noqa: E731
        else:
            keep_ih = ih and getattr(prof, "qi_iotlb_ih", True)
            descs = [iotlb_desc(self.cap, PAGE, did, addr, mask, int(keep_ih))]
            flush = lambda: self.iotlb.invalidate_pages(did, addr, mask)   # noqa: E731
        self._submit_flush(descs + self.dev_iotlb_descs(did, addr, mask))
        with self.timed(1):
            flush()

    def flush_iotlb_all(self, did: int) -> None:
        """intel_flush_iotlb_all() (cache_tag_flush_all): the domain's IOTLB, domain-selective,
        and its device IOTLBs whole (MAX_AGAW_PFN_WIDTH, 52), batched as invalidate_pages does."""
        self._submit_flush([iotlb_desc(self.cap, DOMAIN, did)] + self.dev_iotlb_descs(did, 0, 52))
        with self.timed(1):
            self.iotlb.invalidate_domain(did)

    def unmap_pages(self, dom, iova: int, size: int, flush: bool = True) -> int:
        """intel_iommu_unmap() + tlb_sync: clear the range (freeing the page-table pages it
        wholly covers, dma_pte_clear_level) and invalidate it. Returns bytes unmapped."""
        before = self.mem.allocated
        done = dom.table.unmap(iova, size)        # (DMA-FQ: iommu_unmap_fast, flush=False)
        if flush:
            self.invalidate_pages(dom.did, iova, size, ih=self.mem.allocated == before)
        return done

    def _submit_flush(self, descs) -> None:
        """An unmap's (or flush-all's) descriptors: one submission on 6.12 (cache.c qi_batch),
        one each on 6.1 (qi_flush_iotlb, qi_flush_dev_iotlb call qi_submit_sync)."""
        if getattr(getattr(self.machine, "profile", None), "qi_batch", True):
            submit(self, descs)
        else:
            for d in descs:
                submit(self, [d])
