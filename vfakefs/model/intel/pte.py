"""A VT-d second-level page-table entry's bits and the page sizes (VT-d spec 9.8), apart from
pagetable.py's tables: the context walk and the IOMMU core need these at boot, and the
tables' numpy stays off the mount path."""
from __future__ import annotations

PAGE = 4096

R, W, PS, SNP = 0x1, 0x2, 0x80, 0x800
ADDR = 0x000F_FFFF_FFFF_F000          # bits 12..51
LEVEL_SHIFT = {1: 12, 2: 21, 3: 30, 4: 39, 5: 48}
SUPERPAGE_LEVELS = {2: 1 << 21, 3: 1 << 30}


def idx(iova: int, level: int) -> int:
    return (iova >> LEVEL_SHIFT[level]) & 511
