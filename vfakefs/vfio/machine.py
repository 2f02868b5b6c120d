"""A Machine for a Python VFIO test, and the sysfs writes that hand devices to vfio-pci,
as the model functions those stores call (sysfs/bus.py, sysfs/pci_sysfs.py)."""
from __future__ import annotations

import errno

from vfakefs.model import topology
from vfakefs.model.base import binding
from vfakefs.model.iommu import device_dma
from vfakefs.model.vfio import msihandler
from vfakefs.vfio.api import kernel_errors, oserror


def boot(name_or_path: str):
    """A freshly booted Machine from a preset's name or a topology file (topology.load)."""
    return topology.load(name_or_path)


def _device(m, bdf: str):
    dev = m.lookup(bdf)
    if dev is None:
        raise oserror(errno.ENODEV)
    return dev


@kernel_errors()
def driver_unbind(m, bdf: str) -> None:
    """echo BDF > /sys/bus/pci/devices/BDF/driver/unbind (nothing to do when unbound)."""
    dev = _device(m, bdf)
    if dev.driver is not None:
        binding.unbind(m, dev.driver, bdf)


@kernel_errors()
def driver_bind(m, driver: str, bdf: str) -> None:
    """echo BDF > /sys/bus/pci/drivers/<driver>/bind: ENODEV no match, EBUSY bound or the
    group claimed by VFIO (a DMA-API driver), the probe's own errno otherwise."""
    drv = m.drivers.get(driver)
    if drv is None:
        raise oserror(errno.ENOENT)          # no such directory
    binding.bind(m, drv, bdf)


def set_driver_override(m, bdf: str, name: str | None) -> None:
    """echo NAME > /sys/bus/pci/devices/BDF/driver_override (None clears it)."""
    _device(m, bdf).driver_override = name or None


@kernel_errors()
def drivers_probe(m, bdf: str) -> None:
    """echo BDF > /sys/bus/pci/drivers_probe."""
    binding.drivers_probe(m, bdf)


def bind_vfio_pci(m, bdf: str) -> str | None:
    """The three writes that give a device to vfio-pci: unbind, driver_override=vfio-pci,
    drivers_probe. Like them it reports no probe failure: the driver the device has after."""
    driver_unbind(m, bdf)
    set_driver_override(m, bdf, "vfio-pci")
    drivers_probe(m, bdf)
    drv = _device(m, bdf).driver
    return drv.name if drv is not None else None


# --- the device's side: what the `dma` and `msi ... vector` controls do ---------------------------
@kernel_errors()
def dma_write(m, bdf: str, iova: int, data) -> int:
    """Device bdf writes data at bus address iova (model/iommu/device_dma.py): the bytes
    written, fewer when a page faulted, 0 while its bus mastering is off."""
    return device_dma.dma_write(m, _device(m, bdf), iova, data).done


@kernel_errors()
def dma_read(m, bdf: str, iova: int, length: int) -> bytes:
    """Device bdf reads length bytes at bus address iova: those before any fault."""
    return device_dma.dma_read(m, _device(m, bdf), iova, length).data


@kernel_errors()
def raise_vector(m, bdf: str, n: int):
    """Device bdf raises its MSI/MSI-X vector n with the message programmed for it; a
    delivered message signals the eventfd a program registered for it. The MsiResult
    (None when nothing reached remapping); EINVAL when vector n is not enabled."""
    return msihandler.raise_vector(m, _device(m, bdf), n)[1]
