"""Host RAM as a device's DMA reaches it, by host-physical address.

Two kinds of page: the ones VFIO pinned for a program (m.vfio_pins: MAP_DMA's
(hpa, size, ProcessMemory, vaddr)), which *are* the program's own memory, and every
other page (the kernel's dma_map buffers, a 1:1-mapped window, pass-through), kept
here in SystemRam: sparse 4 KiB pages that read as zeros until a device writes them.

A contiguous piece of host memory inside one pin is one ProcessMemory call, however
long, so a device writing 1 MiB into a program's buffer costs one process_vm_writev.
A pinned page whose program no longer maps it (munmap after MAP_DMA, the process
gone) still exists in a real machine; here its bytes are dropped on write and read
as zeros.
"""
from __future__ import annotations

import bisect

from vfakefs.model.errors import SysfsError

PAGE = 4096
U64 = (1 << 64) - 1


class SystemRam:
    """The host's memory outside any program: 4 KiB pages made when first written."""

    def __init__(self):
        self.pages: dict[int, bytearray] = {}       # page frame number -> its bytes

    def read(self, hpa: int, n: int) -> bytes:
        out = bytearray()
        while n:
            off = hpa & (PAGE - 1)
            k = min(n, PAGE - off)
            page = self.pages.get(hpa >> 12)
            out += page[off:off + k] if page is not None else bytes(k)
            hpa, n = hpa + k, n - k
        return bytes(out)

    def write(self, hpa: int, data) -> None:
        pos = 0
        while pos < len(data):
            off = (hpa + pos) & (PAGE - 1)
            k = min(len(data) - pos, PAGE - off)
            page = self.pages.get((hpa + pos) >> 12)
            if page is None:
                page = self.pages[(hpa + pos) >> 12] = bytearray(PAGE)
            page[off:off + k] = data[pos:pos + k]
            pos += k

    def drop(self, hpa: int, size: int) -> None:
        """Pages freed: what devices wrote there is gone with them."""
        if not self.pages:
            return
        first, last = hpa >> 12, (hpa + size - 1) >> 12
        if last - first < len(self.pages):
            for pfn in range(first, last + 1):
                self.pages.pop(pfn, None)
        else:
            for pfn in [p for p in self.pages if first <= p <= last]:
                del self.pages[pfn]


class HostMemory:
    """The host's page allocator as the DMA API and VFIO's pinning take from it: whole pages,
    aligned as asked, the lowest free address first; what is freed is handed out again (a
    stream started and stopped for ever takes the same buffer each time). Addresses only:
    the bytes devices write are SystemRam's, dropped when their pages are freed."""

    def __init__(self, base: int = 0x1_0000_0000):
        self.base = self.top = base          # everything from top up is free
        self.holes: list[tuple[int, int]] = []   # freed (start, end) below top, sorted, merged
        self.in_use: dict[int, tuple[int, str]] = {}   # start -> (size, owner)

    @property
    def allocated(self) -> int:
        """Bytes handed out and not freed."""
        return sum(size for size, _ in self.in_use.values())

    def alloc(self, size: int, align: int = PAGE, owner: str = "") -> int:
        size = (size + PAGE - 1) & ~(PAGE - 1)
        for i, (start, end) in enumerate(self.holes):
            addr = (start + align - 1) & ~(align - 1)
            if addr + size <= end:
                pieces = [(start, addr), (addr + size, end)]
                self.holes[i:i + 1] = [(a, b) for a, b in pieces if a < b]
                break
        else:
            addr = (self.top + align - 1) & ~(align - 1)
            if addr > self.top:
                self._hole(self.top, addr)
            self.top = addr + size
        self.in_use[addr] = (size, owner)
        return addr

    def owner(self, addr: int) -> str | None:
        got = self.in_use.get(addr)
        return got[1] if got is not None else None

    def free(self, addr: int) -> int:
        """Give back the allocation that starts at addr; returns its size."""
        size, _ = self.in_use.pop(addr)
        self._hole(addr, addr + size)
        return size

    def _hole(self, start: int, end: int) -> None:
        i = bisect.bisect_left(self.holes, (start, end))
        if i > 0 and self.holes[i - 1][1] == start:          # merge with the hole below
            i -= 1
            start = self.holes.pop(i)[0]
        if i < len(self.holes) and self.holes[i][0] == end:  # and the one above
            end = self.holes.pop(i)[1]
        if end == self.top:                                  # the top of the heap comes down
            self.top = start
        else:
            self.holes.insert(i, (start, end))


def _piece(m, hpa: int, n: int):
    """The first piece of [hpa, hpa+n) that one backing holds: (length, ProcessMemory or
    None, vaddr). None: SystemRam, up to the next pin."""
    pins = m.vfio_pins
    i = bisect.bisect_right(pins, (hpa, U64)) - 1
    if i >= 0:
        start, size, mem, vaddr = pins[i]
        if start <= hpa < start + size:
            return min(n, start + size - hpa), mem, vaddr + hpa - start
    nxt = pins[i + 1][0] if i + 1 < len(pins) else hpa + n
    return min(n, nxt - hpa), None, 0


def write(m, hpa: int, data) -> None:
    """A device's write of `data` (bytes-like) at host address hpa."""
    pos = 0
    while pos < len(data):
        k, mem, vaddr = _piece(m, hpa + pos, len(data) - pos)
        chunk = data if pos == 0 and k == len(data) else bytes(memoryview(data)[pos:pos + k])
        if mem is None:
            m.ram.write(hpa + pos, chunk)
        else:
            try:
                mem.write(vaddr, chunk if isinstance(chunk, (bytes, bytearray)) else bytes(chunk))
            except (SysfsError, OSError):
                pass                               # pinned, but the program maps it no more
        pos += k


def read(m, hpa: int, n: int) -> bytes:
    """A device's read of n bytes at host address hpa."""
    parts, pos = [], 0
    while pos < n:
        k, mem, vaddr = _piece(m, hpa + pos, n - pos)
        if mem is None:
            parts.append(m.ram.read(hpa + pos, k))
        else:
            try:
                parts.append(mem.read(vaddr, k))
            except (SysfsError, OSError):
                parts.append(bytes(k))
        pos += k
    return parts[0] if len(parts) == 1 else b"".join(parts)
