"""Simulated physical memory for the remapping structures: 4 KiB pages of
64-bit words in one numpy array, so a page walk is array indexing and a batch
of walks is a gather."""
from __future__ import annotations

import heapq

import numpy as np

PAGE = 4096
QWORDS = PAGE // 8


class PhysMem:
    """Pages handed out upwards from `base`; addresses are host-physical. A freed
    page (a page table of a domain that went away) is zeroed and handed out again,
    lowest first, so the memory stays as large as the most ever in use at once."""

    def __init__(self, base: int = 0x594000, pages: int = 64):
        self.base = base
        self.q = np.zeros(pages * QWORDS, dtype=np.uint64)
        self.used = 0                  # pages ever handed out (the high-water mark)
        self._free: list[int] = []     # a heap of freed page addresses below it

    @property
    def allocated(self) -> int:
        """Pages in use now."""
        return self.used - len(self._free)

    def alloc_page(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        if (self.used + 1) * QWORDS > len(self.q):
            self.q = np.concatenate([self.q, np.zeros(len(self.q), dtype=np.uint64)])
        addr = self.base + self.used * PAGE
        self.used += 1
        return addr

    def free_page(self, addr: int) -> None:
        """free_page(): zeroed now, so whatever still points at it reads not-present."""
        if not self.owns(addr) or addr & (PAGE - 1) != self.base & (PAGE - 1):
            raise ValueError(f"{addr:#x} is not a page of this memory")
        i = self.index(addr)
        self.q[i: i + QWORDS] = 0
        heapq.heappush(self._free, addr)

    def index(self, addr):
        """Word index of a physical address (scalar or array)."""
        return (addr - self.base) >> 3

    def read(self, addr: int) -> int:
        return int(self.q[(addr - self.base) >> 3])

    def write(self, addr: int, value: int) -> None:
        self.q[(addr - self.base) >> 3] = value

    def owns(self, addr: int) -> bool:
        return self.base <= addr < self.base + self.used * PAGE
