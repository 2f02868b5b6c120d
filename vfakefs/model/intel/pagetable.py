"""VT-d second-level page tables (VT-d spec 9.8): 512 entries a level, 4 KiB
pages, 2 MiB and 1 GiB superpages (PS at levels 2 and 3)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vfakefs.model.intel.pte import ADDR, LEVEL_SHIFT, PAGE, PS, R, SNP, SUPERPAGE_LEVELS, W, idx  # noqa: F401

if TYPE_CHECKING:
    from vfakefs.model.intel.memory import PhysMem


class PageTable:
    """One domain's tables: `levels` deep (3 for a 39-bit, 4 for a 48-bit width)."""

    def __init__(self, mem: PhysMem, levels: int, superpages: tuple[int, ...] = (2,)):
        self.mem, self.levels = mem, levels
        self.superpages = superpages      # levels whose PS bit the hardware supports (CAP.SLLPS)
        self.pgd = mem.alloc_page()
        self.mapped_pages = 0

    @property
    def width(self) -> int:
        return 12 + 9 * self.levels

    def map(self, iova: int, hpa: int, size: int, prot: int = R | W, snoop: bool = False,
            superpages: bool = True) -> None:
        """Map [iova, iova+size) to hpa, with the largest pages alignment allows."""
        if (iova | hpa | size) & (PAGE - 1) or size <= 0 or iova + size > 1 << self.width:
            raise ValueError("unaligned or out-of-range mapping")
        end = iova + size
        while iova < end:
            level = 1
            for lv in (3, 2):
                span = SUPERPAGE_LEVELS[lv]
                if superpages and lv in self.superpages and not (iova | hpa) & (span - 1) and iova + span <= end:
                    level = lv
                    break
            table = self._table_for(iova, level)
            flags = prot | (SNP if snoop else 0)
            if level == 1:
                # 4 KiB pages: the rest of this leaf table in one store (a 1 GiB map of
                # small pages is 512 of these, not 262,144 single writes)
                n = min((end - iova) // PAGE, 512 - idx(iova, 1))
                first = self.mem.index(table + 8 * idx(iova, 1))
                self.mem.q[first: first + n] = (np.arange(n, dtype=np.uint64) * np.uint64(PAGE)
                                                + np.uint64(hpa & ADDR)) | np.uint64(flags)
                span = n * PAGE
            else:
                span = 1 << LEVEL_SHIFT[level]
                self.mem.write(table + 8 * idx(iova, level), (hpa & ADDR) | flags | PS)
            self.mapped_pages += span // PAGE
            iova += span
            hpa += span

    def unmap(self, iova: int, size: int) -> int:
        """Clear the leaves covering [iova, iova+size); returns bytes unmapped."""
        end, done = iova + size, 0
        while iova < end:
            entry_addr, level = self._leaf(iova)
            if entry_addr is not None and level == 1:
                # the run of 4 KiB leaves in this table, cleared at once
                n = min(-(-(end - iova) // PAGE), 512 - idx(iova, 1))
                first = self.mem.index(entry_addr)
                run = self.mem.q[first: first + n]
                present = int(np.count_nonzero(run & np.uint64(R | W)))
                run[:] = 0
                self.mapped_pages -= present
                done += present * PAGE
                iova = (iova & ~(PAGE - 1)) + n * PAGE
                continue
            span = 1 << LEVEL_SHIFT[level]
            if entry_addr is not None:
                self.mem.write(entry_addr, 0)
                self.mapped_pages -= span // PAGE
                done += span
            iova = (iova | (span - 1)) + 1
        self._free_covered(self.pgd, self.levels, 0, end - size, end)
        return done

    def _free_covered(self, table: int, lv: int, base: int, start: int, end: int) -> None:
        """dma_pte_clear_level(): a lower-level table whose whole span lies in [start, end)
        goes back to memory with everything under it, its entry cleared (the top table, pgd,
        stays); a table only partly covered is looked into."""
        shift = LEVEL_SHIFT[lv]
        first = max(start - base, 0) >> shift
        last = min((end - 1 - base) >> shift, 511)
        for i in range(first, last + 1):
            slot = table + 8 * i
            e = self.mem.read(slot)
            if not e & (R | W) or e & PS:
                continue
            lo = base | i << shift
            if start <= lo and lo + (1 << shift) <= end:
                for page in list(self._subtree(e & ADDR, lv - 1)):
                    self.mem.free_page(page)
                self.mem.write(slot, 0)
            elif lv > 2:
                self._free_covered(e & ADDR, lv - 1, lo, start, end)

    def _subtree(self, table: int, lv: int):
        """Every table page under (and including) table, a table of level lv, leaves first."""
        if lv > 1:
            i = self.mem.index(table)
            q = self.mem.q[i: i + 512]
            for e in q[((q & np.uint64(R | W)) != 0) & ((q & np.uint64(PS)) == 0)]:
                yield from self._subtree(int(e) & ADDR, lv - 1)
        yield table

    def _table_for(self, iova: int, level: int) -> int:
        table = self.pgd
        for lv in range(self.levels, level, -1):
            slot = table + 8 * idx(iova, lv)
            e = self.mem.read(slot)
            if not e & (R | W):
                nxt = self.mem.alloc_page()
                self.mem.write(slot, nxt | R | W)      # non-leaf entries: addr | R | W
                e = nxt
            elif e & PS:
                raise ValueError(f"{iova:#x} is inside a superpage")
            table = e & ADDR
        return table

    def _leaf(self, iova: int) -> tuple[int | None, int]:
        table = self.pgd
        for lv in range(self.levels, 0, -1):
            slot = table + 8 * idx(iova, lv)
            e = self.mem.read(slot)
            if not e & (R | W):
                return None, lv
            if lv == 1 or e & PS:
                return slot, lv
            table = e & ADDR
        return None, 1

    def free(self) -> None:
        """domain_exit(): every table page of the domain back to memory, leaves first
        (the pages mapped are the DMA buffers': they are not the tables' to free)."""

        for page in list(self._subtree(self.pgd, self.levels)):
            self.mem.free_page(page)
        self.mapped_pages = 0

    def entries(self, iova: int) -> list[int]:
        """The entries a walk of iova reads, top level first (for debugfs and fault dumps)."""
        out, table = [], self.pgd
        for lv in range(self.levels, 0, -1):
            e = self.mem.read(table + 8 * idx(iova, lv))
            out.append(e)
            if not e & (R | W) or lv == 1 or e & PS:
                break
            table = e & ADDR
        return out

    def leaves(self):
        """(iova, level, entries top-down) of every present leaf, in IOVA order."""

        def walk(table, lv, base, path):
            q = self.mem.q[self.mem.index(table): self.mem.index(table) + 512]
            for i in np.nonzero(q & np.uint64(R | W))[0]:
                e = int(q[i])
                iova = base | int(i) << LEVEL_SHIFT[lv]
                if lv == 1 or e & PS:
                    yield iova, lv, path + [e]
                else:
                    yield from walk(e & ADDR, lv - 1, iova, path + [e])
        yield from walk(self.pgd, self.levels, 0, [])
