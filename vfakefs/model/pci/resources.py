"""Address space: BAR allocation and the windows bridges decode (drivers/pci/setup-bus.c, probe.c)."""
from __future__ import annotations

from vfakefs.model.pci import config as C
from vfakefs.model.pci.pci import EMPTY, IORESOURCE_IO, IORESOURCE_MEM, IORESOURCE_MEM_64, IORESOURCE_PREFETCH, Resource


class Allocator:
    """Gives BARs addresses the way firmware would: naturally aligned, bumping up."""

    def __init__(self):
        self.next = {"io": 0xC000, "mem32": 0xF0000000, "mem64": 0x380000000000}

    def take(self, kind: str, size: int) -> int:
        base = self.next[kind]
        align = max(size, 16 if kind == "io" else 4096)
        start = (base + align - 1) // align * align
        self.next[kind] = start + size
        return start


def bridge_windows(cfg: C.ConfigSpace) -> list[Resource]:
    """The windows a type 1 header decodes, read as pci_read_bridge_windows() does:
    I/O, memory and prefetchable memory, each only where base <= limit."""
    out = []
    io_lo, io_hi = cfg.r8(0x1C), cfg.r8(0x1D)
    base, limit = (io_lo & 0xF0) << 8, (io_hi & 0xF0) << 8 | 0xFFF
    if io_lo & 0xF == 1:
        base, limit = base | cfg.r16(0x30) << 16, limit | cfg.r16(0x32) << 16
    out.append(Resource(base, limit - base + 1, IORESOURCE_IO | (io_lo & 0xF)) if base <= limit else EMPTY)
    base, limit = (cfg.r16(0x20) & 0xFFF0) << 16, (cfg.r16(0x22) & 0xFFF0) << 16 | 0xFFFFF
    out.append(Resource(base, limit - base + 1, IORESOURCE_MEM) if base <= limit else EMPTY)
    lo, hi = cfg.r16(0x24), cfg.r16(0x26)
    base, limit = (lo & 0xFFF0) << 16, (hi & 0xFFF0) << 16 | 0xFFFFF
    flags = IORESOURCE_MEM | IORESOURCE_PREFETCH
    if lo & 0xF == 1:
        base, limit = base | cfg.r32(0x28) << 32, limit | cfg.r32(0x2C) << 32
        flags |= IORESOURCE_MEM_64 | 0x1
    out.append(Resource(base, limit - base + 1, flags) if base <= limit else EMPTY)
    return out



def covering_windows(bdf, made, children) -> list[Resource]:
    """Bridge windows (io, mem, prefetchable mem) spanning everything below."""
    below = []

    def collect(b):
        for k in children.get(b, []):
            f = made[k["bdf"]]
            below.extend(r for r in f.bars + [f.rom] + (f.sriov.iov_resources() if f.sriov else []) if r.size)
            below.extend(w for w in f.windows if w.size)
    collect(bdf)
    out = []
    for pick, align, flags in (
            (lambda r: r.is_io, 0x1000, IORESOURCE_IO),
            (lambda r: not r.is_io and not r.flags & IORESOURCE_PREFETCH, 0x100000, IORESOURCE_MEM),
            (lambda r: not r.is_io and r.flags & IORESOURCE_PREFETCH, 0x100000,
             IORESOURCE_MEM | IORESOURCE_PREFETCH | IORESOURCE_MEM_64 | 0x1)):
        rs = [r for r in below if pick(r)]
        if not rs:
            out.append(EMPTY)
            continue
        lo = min(r.start for r in rs) // align * align
        hi = (max(r.end for r in rs) // align + 1) * align
        out.append(Resource(lo, hi - lo, flags))
    return out
