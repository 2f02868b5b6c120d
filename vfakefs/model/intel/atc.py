"""A device's address translation cache (PCIe ATS) and the device-IOTLB invalidation
descriptor that empties it (VT-d spec 6.5.2.5).

With ATS enabled, a device's DMA looks in its own ATC first; a miss is a translation
request to the remapping unit (the IOTLB, then a walk, with the walk's fault rules),
whose answer fills the ATC, so later DMAs to that page use the ATC and the unit does
no work for them. The kernel empties an ATC with device-IOTLB invalidation
descriptors, after the IOTLB invalidation for the same range (cache_tag_flush_range:
a domain's device-TLB tags follow its IOTLB tag on the list it flushes in order).

Kept in numpy arrays like the IOTLB (a batch of lookups is one gather), direct mapped
by page number, so a working set of up to `entries` consecutive pages never conflicts.
"""
from __future__ import annotations

import numpy as np

from vfakefs.model.intel.devtlb import MAX_AGAW_PFN_WIDTH, DevTlbTag, dev_iotlb_desc, queue_dev_iotlb  # noqa: F401
from vfakefs.model.intel.dmar import Translation
from vfakefs.model.intel.pagetable import ADDR, R, W

EMPTY = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
ATC_ENTRIES = 512                  # 2 MiB of 4 KiB translations


class Atc:
    def __init__(self, entries: int = ATC_ENTRIES):
        self.size = entries
        self.tags = np.full(entries, EMPTY, dtype=np.uint64)
        self.data = np.zeros(entries, dtype=np.uint64)   # hpa page | R | W, as the completion said
        self.hits = self.misses = self.invalidations = 0

    def entries(self) -> int:
        return int(np.count_nonzero(self.tags != EMPTY))

    def lookup_many(self, vpfns: np.ndarray, need: int):
        """(hit mask, cached values) for page numbers, counting nothing."""
        slots = vpfns & np.uint64(self.size - 1)
        data = self.data[slots]
        hit = (self.tags[slots] == vpfns) & ((data & np.uint64(need)) != 0)
        return hit, data

    def fill_many(self, vpfns: np.ndarray, values: np.ndarray) -> None:
        """Translation completions: the page and the access it grants (a read request's
        completion adds R to a cached W of the same page, and the other way round)."""
        slots = vpfns & np.uint64(self.size - 1)
        same = self.tags[slots] == vpfns
        keep = np.where(same, self.data[slots] & np.uint64(R | W), np.uint64(0))
        self.tags[slots] = vpfns
        self.data[slots] = values | keep

    def invalidate(self, addr: int, mask: int) -> None:
        """An invalidation request for the 2**mask pages aligned around addr."""
        self.invalidations += 1
        if mask >= MAX_AGAW_PFN_WIDTH:
            self.tags[:] = EMPTY
            return
        live = self.tags != EMPTY
        self.tags[live & ((self.tags >> np.uint64(mask)) == np.uint64((addr >> 12) >> mask))] = EMPTY

    def drop(self) -> None:
        """ATS disabled: the device forgets every translation."""
        self.tags[:] = EMPTY


def translate_batch(u, rid: int, iovas, write: bool = False):
    """A device's DMAs through its ATC when it has one (u.atcs), else straight to the
    unit: (hpa array, fault reason array). Each page the ATC misses is one translation
    request (the same page twice in a batch asks once: the first answer is cached
    before the second access), answered by DmarUnit.translate_batch."""
    atc = u.atcs.get(rid) if u.atcs else None
    if atc is None:
        return u.translate_batch(rid, iovas, write)
    iovas = np.asarray(iovas, dtype=np.uint64)
    if len(iovas) <= CHUNK:
        return _batch(u, atc, rid, iovas, write)
    hpa = np.empty(len(iovas), dtype=np.uint64)
    reason = np.empty(len(iovas), dtype=np.uint8)
    for start in range(0, len(iovas), CHUNK):          # in chunks, as walk.py: the temporaries stay in cache
        sl = slice(start, start + CHUNK)
        hpa[sl], reason[sl] = _batch(u, atc, rid, iovas[sl], write)
    return hpa, reason


CHUNK = 16384


def _batch(u, atc: Atc, rid: int, iovas: np.ndarray, write: bool):
    need = W if write else R
    vpfn = iovas >> np.uint64(12)
    hit, cached = atc.lookup_many(vpfn, need)
    reason = np.zeros(len(iovas), dtype=np.uint8)
    if hit.all():
        atc.hits += len(iovas)
        return (cached & np.uint64(ADDR)) | (iovas & np.uint64(0xFFF)), reason
    hpa = np.zeros(len(iovas), dtype=np.uint64)
    hpa[hit] = (cached[hit] & np.uint64(ADDR)) | (iovas[hit] & np.uint64(0xFFF))
    miss = np.flatnonzero(~hit)
    pages, first, back = np.unique(vpfn[miss], return_index=True, return_inverse=True)
    got, why = u.translate_batch(rid, pages << np.uint64(12), write)
    atc.misses += len(pages)
    atc.hits += len(iovas) - len(pages)
    ok = why == 0
    atc.fill_many(pages[ok], (got[ok] & ~np.uint64(0xFFF)) | _granted(u, rid, pages[ok], need))
    hpa[miss] = (got[back] & ~np.uint64(0xFFF)) | (iovas[miss] & np.uint64(0xFFF))
    reason[miss] = why[back]
    hpa[reason != 0] = 0
    return hpa, reason


def _granted(u, rid: int, pages: np.ndarray, need: int):
    """The R and W a translation completion carries: the mapping's, as the walk just left
    them in the IOTLB (a read's completion also grants W where the page is writable)."""
    did = (u.context(rid)[1] >> 8) & 0xFFFF
    it = u.iotlb
    slots = (pages ^ np.uint64(did * 0x9E37)) & np.uint64(it.size - 1)
    cached = it.tags[slots] == (np.uint64(did << 48) | pages)
    return np.where(cached, it.data[slots] & np.uint64(R | W), np.uint64(need)) | np.uint64(need)


def translate(u, rid: int, iova: int, size: int = 1, write: bool = False) -> Translation:
    """One DMA request through the ATC (a control's request, page by page): on a miss the
    unit's translate() answers (recording its fault as an untranslated request would)."""
    atc = u.atcs.get(rid) if u.atcs else None
    if atc is None:
        return u.translate(rid, iova, size, write)
    need = W if write else R
    first, hit_all = None, True
    for page in range(iova >> 12, ((iova + max(size, 1) - 1) >> 12) + 1):
        slot = page & (atc.size - 1)
        if int(atc.tags[slot]) == page and int(atc.data[slot]) & need:
            atc.hits += 1
            hpa = int(atc.data[slot]) & ADDR
        else:
            atc.misses += 1
            hit_all = False
            t = u.translate(rid, page << 12, 1, write)
            if t.fault is not None:
                return t
            hpa = t.hpa & ~0xFFF
            vp = np.array([page], dtype=np.uint64)
            atc.fill_many(vp, np.uint64(hpa) | _granted(u, rid, vp, need))
        if first is None:
            first = hpa | (iova & 0xFFF)
    return Translation(hpa=first, atc_hit=hit_all)
