"""The vectorised page walk: translate a batch of IOVAs from one requester as
the hardware would one by one, in chunks, each chunk looked up in the IOTLB, the
misses walked with one gather per level, and the IOTLB filled before the next
chunk (so repeated pages in a batch hit, as they would in hardware)."""
from __future__ import annotations

import numpy as np

from vfakefs.model.intel.pagetable import ADDR, PS, R, W, LEVEL_SHIFT

CHUNK = 16384
TT_MULTI_LEVEL, TT_DEV_IOTLB, TT_PASS_THROUGH = 0, 1, 2


def translate_batch(u, rid: int, iovas, write: bool = False):
    """(hpa array, fault reason array with 0 where translated). Faults are
    returned, not recorded one by one: the caller records what it wants."""
    iovas = np.asarray(iovas, dtype=np.uint64)
    hpa = np.zeros(len(iovas), dtype=np.uint64)
    reason = np.zeros(len(iovas), dtype=np.uint8)
    if not u.mem.read(u.root + 16 * (rid >> 8)) & 1:
        reason[:] = 0x01
        return hpa, reason
    lo, hi = u.context(rid)
    if not lo & 1:
        reason[:] = 0x02
        return hpa, reason
    tt = (lo >> 2) & 3
    if tt == TT_PASS_THROUGH:
        return iovas.copy(), reason
    if tt not in (TT_MULTI_LEVEL, TT_DEV_IOTLB if u.ecap & 4 else TT_MULTI_LEVEL) or (hi & 7) != u.levels - 2:
        reason[:] = 0x03
        return hpa, reason
    did, pgd = (hi >> 8) & 0xFFFF, lo & ADDR
    for start in range(0, len(iovas), CHUNK):
        sl = slice(start, start + CHUNK)
        hpa[sl], reason[sl] = _chunk(u, did, pgd, iovas[sl], write)
    return hpa, reason


def _chunk(u, did: int, pgd: int, iovas: np.ndarray, write: bool):
    n = len(iovas)
    hpa = np.zeros(n, dtype=np.uint64)
    reason = np.zeros(n, dtype=np.uint8)
    need = np.uint64(W if write else R)
    vpfn = iovas >> np.uint64(12)
    off = iovas & np.uint64(0xFFF)
    slots, hit, cached = u.iotlb.probe_many(did, vpfn)
    hit &= (cached & need) != 0
    hpa[hit] = (cached[hit] & np.uint64(ADDR)) | off[hit]
    miss = np.nonzero(~hit)[0]
    if not len(miss):
        return hpa, reason
    m_iova = iovas[miss]
    out = np.zeros(len(miss), dtype=np.uint64)
    perm = np.zeros(len(miss), dtype=np.uint64)
    fr = np.where(m_iova >= np.uint64(1 << (12 + 9 * u.levels)), 0x04, 0).astype(np.uint8)
    live = np.nonzero(fr == 0)[0]                                   # lanes still walking
    cur = m_iova[live]                                               # their IOVAs, kept compacted
    mem, base, words = u.mem.q, u.mem.base, u.mem.used * 512
    table = np.full(len(live), (pgd - base) >> 3, dtype=np.int64)      # word index of each lane's table
    for lv in range(u.levels, 0, -1):
        if not len(live):
            break
        shift = np.uint64(LEVEL_SHIFT[lv])
        e = mem[table + ((cur >> shift) & np.uint64(511)).astype(np.int64)]
        absent = (e & need) == 0
        leaf = ~absent & (((e & np.uint64(PS)) != 0) if lv > 1 else True)
        if absent.any():
            fr[live[absent]] = 0x05 if write else 0x06
        if leaf.any():
            span = np.uint64((1 << LEVEL_SHIFT[lv]) - 1)
            lanes = live[leaf]
            out[lanes] = ((e[leaf] & np.uint64(ADDR)) & ~span) | (cur[leaf] & span)
            perm[lanes] = e[leaf] & np.uint64(R | W)
        nxt = ~absent & ~leaf
        if not nxt.all():
            live, cur, e = live[nxt], cur[nxt], e[nxt]
        table = ((e & np.uint64(ADDR)).astype(np.int64) - base) >> 3
        bad = (table < 0) | (table >= words)                          # pointer outside memory: 0x07
        if bad.any():
            fr[live[bad]] = 0x07
            live, cur, table = live[~bad], cur[~bad], table[~bad]
    ok = fr == 0
    good = miss[ok]
    hpa[good] = out[ok]
    reason[miss] = fr
    u.iotlb.fill_slots(did, slots[good], vpfn[good], (out[ok] & ~np.uint64(0xFFF)) | perm[ok])
    return hpa, reason
