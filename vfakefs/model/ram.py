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
