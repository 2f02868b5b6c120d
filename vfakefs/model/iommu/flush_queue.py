"""dma-iommu's flush queue for DMA-FQ domains (drivers/iommu/dma-iommu.c queue_iova,
fq_flush_iotlb, fq_flush_timeout).

A DMA-FQ domain's unmap clears the page-table entries at once (iommu_unmap_fast) but
neither flushes the IOTLB nor frees the IOVA: the range waits in the flush queue until
its timer fires (10 ms) or the queue is full, and then one domain-wide flush
(flush_iotlb_all: intel's domain-selective IOTLB invalidation) covers everything queued,
and the IOVA ranges are free again. Until then a translation the IOTLB still holds is
used, as on the real machine: that is the deferred flush's trade.
"""
from __future__ import annotations

FQ_TIMEOUT = 0.010       # IOVA_DEFAULT_FQ_TIMEOUT: 10 ms
FQ_SIZE = 256            # IOVA_DEFAULT_FQ_SIZE: a ring of 256 holds 255 (fq_full)


def queue_iova(m, u, dom, iova: int, size: int) -> None:
    """queue_iova(): flush first when the ring is full, then queue; arm the timer."""
    if len(dom.fq) >= FQ_SIZE - 1:
        flush(u, dom)
    dom.fq.append((iova, size))
    if not dom.fq_timer:
        dom.fq_timer = True
        m.schedule(FQ_TIMEOUT, lambda: _timeout(u, dom))


def _timeout(u, dom) -> None:
    """fq_flush_timeout(): the timer is off again; whatever is queued is flushed and freed."""
    dom.fq_timer = False
    flush(u, dom)


def flush(u, dom) -> None:
    """fq_flush_iotlb() + fq_ring_free(): one domain-wide flush, then the IOVAs are free.
    Nothing to do once the domain is gone (free_domain dropped it, queue and all)."""
    if not dom.fq or u.domains.get(dom.did) is not dom:
        dom.fq.clear()
        return
    u.flush_iotlb_all(dom.did)
    dom.fq.clear()
