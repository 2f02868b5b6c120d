"""The IOTLB: a direct-mapped cache of 4 KiB translations tagged by domain id.

Kept in numpy arrays so a batch of lookups is one gather and a page-range
invalidation (the descriptor's address-mask form) is one vectorised compare.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

EMPTY = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
DID_SHIFT = 48   # tag = did << 48 | vpfn (vpfn of a 57-bit IOVA fits in 45 bits)


class Iotlb:
    def __init__(self, entries: int = 4096):
        if entries & (entries - 1):
            raise ValueError("IOTLB size must be a power of two")
        self.size = entries
        self.tags = np.full(entries, EMPTY, dtype=np.uint64)
        self.data = np.zeros(entries, dtype=np.uint64)   # hpa page | R | W
        self.hits: Counter = Counter()
        self.misses: Counter = Counter()
        self.invalidations: Counter = Counter()          # per did, "global" for all

    def _slot(self, did, vpfn):
        return (vpfn ^ (did * 0x9E37)) & (self.size - 1)

    def lookup(self, did: int, vpfn: int) -> int | None:
        slot = self._slot(did, vpfn)
        if int(self.tags[slot]) == (did << DID_SHIFT | vpfn):
            self.hits[did] += 1
            return int(self.data[slot])
        self.misses[did] += 1
        return None

    def fill(self, did: int, vpfn: int, value: int) -> None:
        slot = self._slot(did, vpfn)
        self.tags[slot] = did << DID_SHIFT | vpfn
        self.data[slot] = value

    def lookup_many(self, did: int, vpfns: np.ndarray):
        """(hit mask, cached values) for an array of page numbers of one domain."""
        slots, hit, _ = self.probe_many(did, vpfns)
        return hit, self.data[slots]

    def probe_many(self, did: int, vpfns: np.ndarray):
        """(slots, hit mask, how many hit), counting hits and misses, for fill_slots; the
        cached values are data[slots] (not gathered here: a cold batch has none)."""
        # (as intp, the index type: each gather and scatter by them would convert a copy)
        slots = ((vpfns ^ np.uint64(did * 0x9E37)) & np.uint64(self.size - 1)).view(np.intp)
        tag = np.uint64(did << DID_SHIFT)
        hit = self.tags[slots] == (tag | vpfns)
        n_hit = int(np.count_nonzero(hit))
        self.hits[did] += n_hit
        self.misses[did] += len(vpfns) - n_hit
        return slots, hit, n_hit

    def fill_slots(self, did: int, slots: np.ndarray, vpfns: np.ndarray, values: np.ndarray) -> None:
        self.tags[slots] = np.uint64(did << DID_SHIFT) | vpfns
        self.data[slots] = values

    # --- invalidation granularities (VT-d spec 6.5.2.3) -----------------------------------
    def invalidate_global(self) -> None:
        self.tags[:] = EMPTY
        self.invalidations["global"] += 1

    def invalidate_domain(self, did: int) -> None:
        self.tags[(self.tags >> np.uint64(DID_SHIFT)) == np.uint64(did)] = EMPTY
        self.invalidations[did] += 1

    def invalidate_pages(self, did: int, addr: int, am: int) -> None:
        """Page-selective: the 2**am pages aligned around addr (address mask form)."""
        base = (addr >> 12) >> am
        tags = self.tags
        sel = ((tags >> np.uint64(DID_SHIFT)) == np.uint64(did)) & \
              (((tags & np.uint64((1 << DID_SHIFT) - 1)) >> np.uint64(am)) == np.uint64(base))
        tags[sel] = EMPTY
        self.invalidations[did] += 1

    def forget_domain(self, did: int) -> None:
        """A freed domain id: no entry and no counter of it is left for the id's next owner."""
        self.tags[(self.tags >> np.uint64(DID_SHIFT)) == np.uint64(did)] = EMPTY
        for counter in (self.hits, self.misses, self.invalidations):
            counter.pop(did, None)

    def stats(self) -> dict:
        dids = sorted(set(self.hits) | set(self.misses) | {d for d in self.invalidations if d != "global"})
        return {d: (self.hits[d], self.misses[d], self.invalidations[d]) for d in dids}
