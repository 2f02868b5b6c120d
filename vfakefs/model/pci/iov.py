"""SR-IOV state of a physical function (drivers/pci/iov.c).

NumVFs, offset, stride and the VF device ID live in the PF's config space; this
object holds what the kernel keeps beside it (driver_max_VFs, autoprobe, VFs).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vfakefs.model.pci import config as C
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.pci.pci import Resource


@dataclass(eq=False)
class Sriov:
    pf: object                     # PciFunction
    pos: int                       # offset of the SR-IOV extended capability
    vf_driver: str | None = None
    vf_bars: list[Resource] = field(default_factory=list)   # one VF's BARs
    driver_max_vfs: int | None = None                        # pci_sriov_set_totalvfs
    drivers_autoprobe: int = 1
    vfs: list = field(default_factory=list)
    vf_config: bytes | None = None      # a VF's config space as the hardware shows it (else generated)
    # QEMU's NVMe VFs stay offline until virtualization management brings them up:
    # the nvme probe succeeds, then its async reset work gives up this many seconds later
    vf_probe_fails_after: float | None = None
    # an enable or disable carried out in steps (sriov.Stepwise) and the count sysfs shows
    # meanwhile: iov->num_VFs, which sriov_enable/sriov_disable set only once done
    pending: object = field(default=None, repr=False)
    shown: int | None = None

    # sriov_init() reads these once into struct pci_sriov; sysfs shows the copies, so a
    # root write over the capability later does not change them (num_VFs counts the VFs
    # made; offset and stride would be re-read at the next NumVFs write, and stay fixed here)
    hw_total_vfs: int = field(default=0, init=False)
    vf_device: int = field(default=0, init=False)
    offset: int = field(default=0, init=False)
    stride: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.hw_total_vfs = self._r16(C.SRIOV_TOTAL_VF)
        self.vf_device = self._r16(C.SRIOV_VF_DID)
        self.offset = self._r16(C.SRIOV_VF_OFFSET)
        self.stride = self._r16(C.SRIOV_VF_STRIDE)

    def _r16(self, reg: int) -> int:
        return self.pf.config.r16(self.pos + reg)

    @property
    def total_vfs(self) -> int:
        return self.hw_total_vfs if self.driver_max_vfs is None else self.driver_max_vfs

    @property
    def num_vfs(self) -> int:
        """pci_num_vf(): iov->num_VFs, the old count while VFs are being added or removed."""
        return len(self.vfs) if self.shown is None else self.shown

    def settle(self) -> None:
        """An enable or disable still in progress completes now: what would take the PF's
        device_lock (its driver's release, its removal) waits for it in the kernel."""
        if self.pending is not None:
            self.pending.finish()

    def vf_bus(self, vf_id: int) -> int:
        """pci_iov_virtfn_bus(): the PF's bus plus the carry out of devfn, not cut to
        8 bits, so a VF beyond bus 0xff is seen as such (and refused) instead of wrapping."""
        pf = self.pf.bdf
        return pf.bus + ((pf.devfn + self.offset + self.stride * vf_id) >> 8)

    def vf_bdf(self, vf_id: int) -> Bdf:
        pf = self.pf.bdf
        return Bdf.from_rid(pf.domain, pf.vf_rid(self.offset, self.stride, vf_id))

    def iov_resources(self) -> list[Resource]:
        """IOV BARs as `resource` lines 7-12: each VF BAR times TotalVFs."""
        total = self.hw_total_vfs
        out = []
        for r in self.vf_bars + [Resource(0, 0, 0)] * (6 - len(self.vf_bars)):
            out.append(Resource(r.start, r.size * total, r.flags) if r.size else r)
        return out
