"""What the hardware checks in each structure it fetches before the page walk (VT-d spec
3.4-3.6, 9.1-9.3, 9.8; the legacy-mode fault table of 7.1.3), shared by translate() and
the vectorised walk: the first check that fails names the fault reason.

  0x08  the root table (RTADDR) cannot be read
  0x01  root entry P clear                0x0a  root entry reserved bits set
  0x09  the context table (CTP) cannot be read
  0x02  context entry P clear             0x0b  context entry reserved bits set
  0x03  context entry AW not in CAP.SAGAW, TT reserved or not supported (1 needs ECAP.DT,
        2 ECAP.PT), or the table SLPTPTR names cannot be read
  0x0d  a translated or translation request (AT 10b/01b) and TT is not 01b (device-TLB)
  0x04  the address is beyond min(MGAW, the context's AGAW)
then in the walk 0x0c (reserved bits in a present entry), 0x05/0x06 (permission) and 0x07
(a next-level table that cannot be read).
"""
from __future__ import annotations

from vfakefs.model.intel.pte import ADDR, PS, SNP, LEVEL_SHIFT

AT_UNTRANSLATED, AT_TRANSLATION, AT_TRANSLATED = 0, 1, 2
TT_MULTI_LEVEL, TT_DEV_IOTLB, TT_PASS_THROUGH = 0, 1, 2

ROOT_LO_RSVD = 0xFFE                      # bits 11:1 (the high qword is all reserved)
CTX_LO_RSVD = 0xFF0                       # bits 11:4
CTX_HI_RSVD = 0xFFFF_FFFF_FF00_0080       # bit 7 and bits 63:24
ECAP_DT, ECAP_PT, ECAP_SC = 0x4, 0x40, 0x80


class Masks:
    """What the checks need from CAP and ECAP, computed once per (cap, ecap): the walk
    runs them for every request."""

    def __init__(self, u):
        self.above_haw = ~((1 << u.haw) - 1) & ((1 << 64) - 1)     # bits 63:HAW of a pointer
        self.sagaw = (u.cap >> 8) & 0x1F
        self.superpage_levels = frozenset(u.superpage_levels)
        self.pte = {(lv, sp): _pte_reserved(u, lv, sp) for lv in range(1, 6) for sp in (False, True)}


_MASKS: dict = {}


def masks(u) -> Masks:
    key = (u.cap, u.ecap)
    got = _MASKS.get(key)
    if got is None:
        got = _MASKS[key] = Masks(u)
    return got


def context_walk(u, rid: int, at: int = AT_UNTRANSLATED):
    """(fault reason, None) or (0, (tt, did, pgd, levels)) for a request from rid."""
    mem, mk = u.mem, masks(u)
    if not mem.owns(u.rtaddr):
        return 0x08, None
    root = u.rtaddr + 16 * (rid >> 8)
    lo, hi = mem.read(root), mem.read(root + 8)
    if not lo & 1:
        return 0x01, None
    if lo & (ROOT_LO_RSVD | mk.above_haw) or hi:
        return 0x0a, None
    ctp = lo & ~0xFFF
    if not mem.owns(ctp):
        return 0x09, None
    slot = ctp + 16 * (rid & 0xFF)
    lo, hi = mem.read(slot), mem.read(slot + 8)
    if not lo & 1:
        return 0x02, None
    if lo & (CTX_LO_RSVD | mk.above_haw) or hi & CTX_HI_RSVD:
        return 0x0b, None
    tt, aw = (lo >> 2) & 3, hi & 7
    if tt == 3 or (tt == TT_DEV_IOTLB and not u.ecap & ECAP_DT) or \
            (tt == TT_PASS_THROUGH and not u.ecap & ECAP_PT):
        return 0x03, None
    if tt != TT_PASS_THROUGH and not mk.sagaw & (1 << aw):
        return 0x03, None
    if at != AT_UNTRANSLATED and tt != TT_DEV_IOTLB:
        return 0x0d, None
    return 0, (tt, (hi >> 8) & 0xFFFF, lo & ADDR, aw + 2)


def width(u, levels: int) -> int:
    """Input addresses above 2^X - 1 fault (0x04), X the lesser of MGAW and the AGAW."""
    return min(u.mgaw, 12 + 9 * levels)


def pte_reserved(u, lv: int, superpage: bool) -> int:
    return masks(u).pte[lv, superpage]


def _pte_reserved(u, lv: int, superpage: bool) -> int:
    """Reserved bits of a present second-level entry at level lv (VT-d 9.8): address bits
    51:HAW everywhere; PS at levels 4 and 5, and at 2 or 3 where CAP.SLLPS lacks that size;
    a superpage's address bits below its size; SNP in a leaf without ECAP.SC."""
    rsvd = ((1 << 52) - 1) & ~((1 << u.haw) - 1)
    if lv >= 4 or (lv in (2, 3) and lv not in u.superpage_levels):
        rsvd |= PS
    leaf = lv == 1 or superpage
    if superpage:
        rsvd |= ((1 << LEVEL_SHIFT[lv]) - 1) & ~0xFFF
    if leaf and not u.ecap & ECAP_SC:
        rsvd |= SNP
    return rsvd
