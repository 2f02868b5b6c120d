"""A VT-d remapping unit as the kernel's sysfs sees it (intel-iommu/ files)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DmarUnit:
    seq_id: int
    reg_base: int = 0xFED90000
    version: tuple[int, int] = (1, 0)
    cap: int = 0xD2008C40660462
    ecap: int = 0xF050DA
    machine: object = None

    @property
    def name(self) -> str:
        return f"dmar{self.seq_id}"

    @property
    def domains_supported(self) -> int:
        return 2 ** (4 + 2 * (self.cap & 0x7))  # CAP.ND

    @property
    def ir_supported(self) -> bool:
        return bool(self.ecap & 0x8)  # ECAP.IR
