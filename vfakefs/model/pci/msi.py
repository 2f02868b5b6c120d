"""The message a function sends for one of its MSI or MSI-X vectors, as its capability
or MSI-X table holds it (PCI Local Bus 3.0 6.8, PCIe r6 7.7.1-7.7.2; drivers/pci/msi/).

MSI lives in config space: the address, the data (a multiple-message function puts
the vector number in the data's low bits) and, with per-vector masking, the mask bits.
The MSI-X table lives in a BAR, which the model does not hold: its entries are what
whoever enabled MSI-X wrote there, i.e. the remappable messages of the IRTEs the kernel
allocated for the function (pci_msi_domain_write_msg), or the table vfio-pci's SET_IRQS
programmed (passed in as msix_table).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

from vfakefs.model.errors import SysfsError
from vfakefs.model.pci import config as C

PCI_COMMAND_MASTER = 0x4
PCI_MSI_FLAGS_ENABLE, PCI_MSI_FLAGS_QSIZE, PCI_MSI_FLAGS_64BIT, PCI_MSI_FLAGS_MASKBIT = 0x1, 0x70, 0x80, 0x100
PCI_MSIX_FLAGS_QSIZE, PCI_MSIX_FLAGS_MASKALL, PCI_MSIX_FLAGS_ENABLE = 0x7FF, 0x4000, 0x8000


@dataclass(frozen=True)
class VectorMessage:
    address: int
    data: int
    held: str | None = None      # why the function does not send it now (then nothing is sent)


def vector_message(dev, n: int, remap=None, msix_table=None) -> VectorMessage:
    """Vector n's message. SysfsError(EINVAL, why) when the function cannot send it at all
    (neither MSI nor MSI-X enabled, n past what is enabled, an MSI-X entry nobody
    programmed). A message the function holds back (bus mastering off, masked) comes
    with `held`: an MSI is a memory write, so without bus mastering it is never sent,
    and a masked vector stays pending."""
    cfg = dev.config
    msix, msi = dev.caps.get(C.CAP_MSIX), dev.caps.get(C.CAP_MSI)
    if msix is not None and cfg.r16(msix + 2) & PCI_MSIX_FLAGS_ENABLE:
        ctrl = cfg.r16(msix + 2)
        size = (ctrl & PCI_MSIX_FLAGS_QSIZE) + 1
        if n >= size:
            raise SysfsError(errno.EINVAL, f"vector {n} is past {dev.name}'s MSI-X table ({size} entries)")
        address, data = _msix_entry(dev, n, remap, msix_table)
        held = "MSI-X function masked" if ctrl & PCI_MSIX_FLAGS_MASKALL else None
    elif msi is not None and cfg.r16(msi + 2) & PCI_MSI_FLAGS_ENABLE:
        flags = cfg.r16(msi + 2)
        nvec = 1 << ((flags & PCI_MSI_FLAGS_QSIZE) >> 4)
        if n >= nvec:
            raise SysfsError(errno.EINVAL, f"vector {n} is not enabled: {dev.name} has {nvec} MSI "
                                           f"vector{'s' if nvec > 1 else ''} enabled")
        address = cfg.r32(msi + 4)
        data_at = msi + 8
        if flags & PCI_MSI_FLAGS_64BIT:
            address |= cfg.r32(msi + 8) << 32
            data_at = msi + 12
        data = (cfg.r16(data_at) & ~(nvec - 1)) | n      # multiple message: the low bits carry n
        masked = flags & PCI_MSI_FLAGS_MASKBIT and cfg.r32(data_at + 4) >> n & 1
        held = f"vector {n} masked" if masked else None
    else:
        raise SysfsError(errno.EINVAL, f"{dev.name} has neither MSI nor MSI-X enabled")
    if not cfg.r16(0x04) & PCI_COMMAND_MASTER:
        held = "bus mastering disabled"
    return VectorMessage(address, data, held)


def _msix_entry(dev, n: int, remap, msix_table) -> tuple[int, int]:
    if msix_table is not None:
        if n < len(msix_table):
            return msix_table[n]
    elif remap is not None and n < len(remap.indices(dev)):
        return remap.dev_message(dev, n)
    raise SysfsError(errno.EINVAL, f"vector {n} is not enabled: {dev.name}'s MSI-X table entry {n} "
                                   "was never programmed")
