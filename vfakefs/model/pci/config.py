"""PCI configuration space: a numpy byte array with real capability lists.

The layout follows the PCI Local Bus spec (type 0 / type 1 headers) and the PCIe
base spec (capability structures, extended capabilities from 0x100). Registers
that the model changes at run time (SR-IOV NumVFs and VF Enable, the command
register) live here, so lspci's decoding and the sysfs files read one truth.

A plain bytearray, not numpy: config space is read a register at a time, where
bytearray indexing is several times faster, and keeping numpy off the mount path
keeps `vfakefs mount` under 0.3 s. numpy is for the VT-d tables.
"""
from __future__ import annotations

import re
from pathlib import Path

# Capability IDs (pci_regs.h)
CAP_PM, CAP_MSI, CAP_PCIE, CAP_MSIX, CAP_SSVID = 0x01, 0x05, 0x10, 0x11, 0x0D
EXT_AER, EXT_ACS, EXT_ARI, EXT_ATS, EXT_SRIOV = 0x01, 0x0D, 0x0E, 0x0F, 0x10

# PCIe device/port types (PCIe cap register bits 7:4)
PCIE_ENDPOINT, PCIE_LEGACY_ENDPOINT, PCIE_ROOT_PORT = 0x0, 0x1, 0x4
PCIE_UPSTREAM, PCIE_DOWNSTREAM, PCIE_PCI_BRIDGE, PCIE_RCIEP = 0x5, 0x6, 0x7, 0x9

# SR-IOV capability register offsets
SRIOV_CTRL, SRIOV_INITIAL_VF, SRIOV_TOTAL_VF, SRIOV_NUM_VF = 0x08, 0x0C, 0x0E, 0x10
SRIOV_VF_OFFSET, SRIOV_VF_STRIDE, SRIOV_VF_DID, SRIOV_SUP_PGSIZE = 0x14, 0x16, 0x1A, 0x1C
SRIOV_SYS_PGSIZE, SRIOV_BAR = 0x20, 0x24
SRIOV_CTRL_VFE, SRIOV_CTRL_MSE, SRIOV_CTRL_ARI = 0x1, 0x8, 0x10

# ACS capability bits (SV TB RR CR UF EC DT)
ACS_SV, ACS_TB, ACS_RR, ACS_CR, ACS_UF, ACS_EC, ACS_DT = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40
ACS_REQUIRED = ACS_SV | ACS_RR | ACS_CR | ACS_UF  # REQ_ACS_FLAGS of drivers/pci/pci.c


class ConfigSpace:
    """256 bytes for conventional PCI, 4096 for PCIe."""

    def __init__(self, size: int = 256, data: bytes | None = None):
        self.size = size
        if data is not None and len(data) == size:
            self.bytes = bytearray(data)        # (one copy: thousands of VFs from one template)
            return
        self.bytes = bytearray(size)
        if data is not None:
            self.bytes[: min(size, len(data))] = data[:size]

    def r8(self, off: int) -> int:
        return self.bytes[off]

    # little-endian registers, each a few byte operations (no calls to the narrower ones:
    # every VF added and bound reads and writes a dozen)
    def r16(self, off: int) -> int:
        b = self.bytes
        return b[off] | b[off + 1] << 8

    def r32(self, off: int) -> int:
        b = self.bytes
        return b[off] | b[off + 1] << 8 | b[off + 2] << 16 | b[off + 3] << 24

    def w8(self, off: int, v: int) -> None:
        self.bytes[off] = v & 0xFF

    def w16(self, off: int, v: int) -> None:
        b = self.bytes
        b[off] = v & 0xFF
        b[off + 1] = v >> 8 & 0xFF

    def w32(self, off: int, v: int) -> None:
        b = self.bytes
        b[off] = v & 0xFF
        b[off + 1] = v >> 8 & 0xFF
        b[off + 2] = v >> 16 & 0xFF
        b[off + 3] = v >> 24 & 0xFF

    def read(self, off: int, n: int) -> bytes:
        return bytes(self.bytes[off : off + n])

    def caps(self):
        """(id, offset) of the classic capability list, as pci_find_capability walks it."""
        if not self.r16(0x06) & 0x10:
            return
        pos, seen = self.r8(0x34) & ~3, 0
        while pos >= 0x40 and seen < 48:
            yield self.r8(pos), pos
            pos, seen = self.r8(pos + 1) & ~3, seen + 1

    def ext_caps(self):
        if self.size <= 0x100:
            return
        pos, seen = 0x100, 0
        while pos and seen < 480:
            hdr = self.r32(pos)
            if hdr in (0, 0xFFFFFFFF):
                return
            yield hdr & 0xFFFF, pos
            pos, seen = (hdr >> 20) & 0xFFC, seen + 1

    def find_cap(self, cap_id: int) -> int | None:
        return next((pos for cid, pos in self.caps() if cid == cap_id), None)

    def find_ext_cap(self, cap_id: int) -> int | None:
        """The first extended capability cap_id, as ext_caps() walks them (without its
        generator: every VF added looks for ATS)."""
        if self.size <= 0x100:
            return None
        b, pos, seen = self.bytes, 0x100, 0
        while pos and seen < 480:
            hdr = b[pos] | b[pos + 1] << 8 | b[pos + 2] << 16 | b[pos + 3] << 24
            if hdr in (0, 0xFFFFFFFF):
                return None
            if hdr & 0xFFFF == cap_id:
                return pos
            pos, seen = (hdr >> 20) & 0xFFC, seen + 1
        return None

    @classmethod
    def from_dump(cls, text: str, size: int) -> ConfigSpace:
        """Parse `hexdump -C` or `lspci -xxxx` output back into bytes."""
        out = bytearray(size)
        last, last_off, fill = None, 0, False
        for line in text.splitlines():
            line = line.strip()
            if line == "*":
                fill = True
                continue
            m = re.match(r"^([0-9a-f]+):?(?:\s+((?:[0-9a-f]{2}\s+){0,16}[0-9a-f]{2}))?", line)
            if not m:
                continue
            off = int(m.group(1), 16)
            if fill and last is not None:   # "*": the line above repeats up to this offset
                for o in range(last_off + 16, min(off, size), 16):
                    out[o : o + 16] = last
                fill = False
            if m.group(2) is None:          # hexdump's closing offset line
                continue
            vals = bytes(int(x, 16) for x in m.group(2).split()[:16])
            if off < size:
                out[off : off + len(vals)] = vals[: size - off]
            last, last_off = vals, off
        return cls(size, bytes(out))


def load_dump(path: Path, size: int) -> ConfigSpace:
    return ConfigSpace.from_dump(path.read_text(), size)


class CapWriter:
    """Lays out capabilities one after another, linking the lists as it goes."""

    def __init__(self, cfg: ConfigSpace):
        self.cfg = cfg
        self.pos, self.prev_next = 0x40, 0x34
        self.ext_pos, self.ext_prev = 0x100, None

    def cap(self, cap_id: int, length: int) -> int:
        pos = self.pos
        self.cfg.w8(self.prev_next, pos)
        self.cfg.w8(pos, cap_id)
        self.cfg.w16(0x06, self.cfg.r16(0x06) | 0x10)  # Status: capabilities list
        self.prev_next, self.pos = pos + 1, (pos + length + 3) & ~3
        return pos

    def ext_cap(self, cap_id: int, version: int, length: int) -> int:
        pos = self.ext_pos
        if self.ext_prev is not None:
            self.cfg.w32(self.ext_prev, self.cfg.r32(self.ext_prev) | pos << 20)
        self.cfg.w32(pos, cap_id | version << 16)
        self.ext_prev, self.ext_pos = pos, (pos + length + 7) & ~7
        return pos
