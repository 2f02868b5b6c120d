"""The vectorised page walk: translate a batch of IOVAs from one requester as
the hardware would one by one, in chunks, each chunk looked up in the IOTLB, the
misses walked with one gather per level, and the IOTLB filled before the next
chunk (so repeated pages in a batch hit, as they would in hardware)."""
from __future__ import annotations

import numpy as np

from vfakefs.model.intel.entries import TT_PASS_THROUGH, context_walk, pte_reserved, width
from vfakefs.model.intel.memory import PAGE
from vfakefs.model.intel.pagetable import ADDR, PS, R, W, LEVEL_SHIFT

CHUNK = 16384


def translate_batch(u, rid: int, iovas, write: bool = False):
    """(hpa array, fault reason array with 0 where translated). Faults are
    returned, not recorded one by one: the caller records what it wants."""
    iovas = np.asarray(iovas, dtype=np.uint64)
    hpa = np.zeros(len(iovas), dtype=np.uint64)
    reason = np.zeros(len(iovas), dtype=np.uint8)
    fr, ctx = context_walk(u, rid)
    if fr:
        reason[:] = fr
        return hpa, reason
    tt, did, pgd, levels = ctx
    if tt == TT_PASS_THROUGH:
        return iovas.copy(), reason
    for start in range(0, len(iovas), CHUNK):
        sl = slice(start, start + CHUNK)
        hpa[sl], reason[sl] = _chunk(u, did, pgd, levels, iovas[sl], write)
    return hpa, reason


def _chunk(u, did: int, pgd: int, levels: int, iovas: np.ndarray, write: bool):
    need = np.uint64(W if write else R)
    vpfn = iovas >> np.uint64(12)
    slots, hit, n_hit = u.iotlb.probe_many(did, vpfn)
    if n_hit:
        cached = u.iotlb.data[slots]
        hit &= (cached & need) != 0
        n_hit = int(np.count_nonzero(hit))
    if n_hit == 0:            # every one walks (a cold batch): no lanes to pick out
        hpa, value, reason = _walk(u, pgd, levels, iovas, write)
        ok = reason == 0
        if ok.all():
            u.iotlb.fill_slots(did, slots, vpfn, value)
        else:
            u.iotlb.fill_slots(did, slots[ok], vpfn[ok], value[ok])
        return hpa, reason
    if n_hit == len(iovas):
        return (cached & np.uint64(ADDR)) | (iovas & np.uint64(0xFFF)), np.zeros(len(iovas), dtype=np.uint8)
    hpa = np.zeros(len(iovas), dtype=np.uint64)
    reason = np.zeros(len(iovas), dtype=np.uint8)
    hpa[hit] = (cached[hit] & np.uint64(ADDR)) | (iovas[hit] & np.uint64(0xFFF))
    miss = np.nonzero(~hit)[0]
    out, value, fr = _walk(u, pgd, levels, iovas[miss], write)
    ok = fr == 0
    good = miss[ok]
    hpa[good] = out[ok]
    reason[miss] = fr
    u.iotlb.fill_slots(did, slots[good], vpfn[good], value[ok])
    return hpa, reason


def _walk(u, pgd: int, levels: int, iovas: np.ndarray, write: bool):
    """(hpa, the IOTLB's value: the page | the leaf's R|W, fault reason) of each IOVA,
    walked from pgd: one gather per level. A level where every lane's entry is present
    for the access, with no reserved bit and no superpage (the common case) takes the
    short way: one mask and compare; any other goes through _level's general checks."""
    n = len(iovas)
    need = np.uint64(W if write else R)
    out = np.zeros(n, dtype=np.uint64)
    value = np.zeros(n, dtype=np.uint64)
    fr = np.zeros(n, dtype=np.uint8)
    top = np.uint64(1 << width(u, levels))
    if n and iovas.max() >= top:
        fr[iovas >= top] = 0x04
    if not u.mem.owns(pgd):
        fr[fr == 0] = 0x03                                           # SLPTPTR cannot be read
    live = None                                                      # lanes still walking (None: all)
    cur = iovas                                                      # their IOVAs, kept compacted
    if fr.any():
        live = np.nonzero(fr == 0)[0]
        cur = iovas[live]
        if not len(cur):
            return out, value, fr
    mem, base, limit = u.mem.q, np.uint64(u.mem.base), np.uint64(u.mem.used * PAGE)
    table = np.uint64((pgd - u.mem.base) >> 3)                       # word index of each lane's table
    sp_levels = u.superpage_levels
    for lv in range(levels, 0, -1):
        if not len(cur):
            break
        e = mem[(table + ((cur >> np.uint64(LEVEL_SHIFT[lv])) & np.uint64(511))).view(np.int64)]
        sp_here = lv in sp_levels
        plain = need | np.uint64(pte_reserved(u, lv, False) | (PS if sp_here else 0))
        if ((e & plain) == need).all():
            if lv == 1:                                              # every lane a 4 KiB leaf
                hpa, leaf = (e & np.uint64(ADDR)) | (cur & np.uint64(0xFFF)), e & np.uint64(ADDR | R | W)
                if live is None:
                    out, value = hpa, leaf
                else:
                    out[live], value[live] = hpa, leaf
                break
        else:
            live, cur, e = _level(u, lv, e, cur, np.arange(n) if live is None else live, write, out, value, fr)
            if lv == 1 or not len(cur):
                break
        at = (e & np.uint64(ADDR)) - base                            # (below base wraps: outside too)
        if len(at) and at.max() >= limit:                            # pointer outside memory: 0x07
            if live is None:
                live = np.arange(n)
            bad = at >= limit
            fr[live[bad]] = 0x07
            live, cur, at = live[~bad], cur[~bad], at[~bad]
        table = at >> np.uint64(3)
    return out, value, fr


def _level(u, lv: int, e: np.ndarray, cur: np.ndarray, live: np.ndarray, write: bool, out, value, fr):
    """The general checks of one level's entries e (of the lanes live, at IOVAs cur): the
    faults go to fr, the leaves (a superpage, or level 1) to out and value; returns the
    lanes that walk on, their IOVAs and entries."""
    need = np.uint64(W if write else R)
    sp = ((e & np.uint64(PS)) != 0) if lv in u.superpage_levels else np.zeros(len(e), dtype=bool)
    present = (e & np.uint64(R | W)) != 0
    rsvd = present & (((e & np.uint64(pte_reserved(u, lv, True))) != 0) & sp |
                      ((e & np.uint64(pte_reserved(u, lv, False))) != 0) & ~sp)
    absent = rsvd | ((e & need) == 0)
    leaf = ~absent & (sp if lv > 1 else True)
    if absent.any():
        fr[live[absent]] = np.where(rsvd[absent], 0x0c, 0x05 if write else 0x06)
    if leaf.any():
        span = np.uint64((1 << LEVEL_SHIFT[lv]) - 1)
        lanes = live[leaf]
        out[lanes] = hpa = ((e[leaf] & np.uint64(ADDR)) & ~span) | (cur[leaf] & span)
        value[lanes] = (hpa & ~np.uint64(0xFFF)) | (e[leaf] & np.uint64(R | W))
    nxt = ~absent & ~leaf
    if nxt.all():
        return live, cur, e
    return live[nxt], cur[nxt], e[nxt]
