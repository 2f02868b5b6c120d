"""vfakefs.vfio: the VFIO user API for Python tests, over the model, without a mount or
seccomp. The operations and names are those of <linux/vfio.h>; errors are OSError with
the kernel's errno.

    import mmap
    from vfakefs import vfio
    m = vfio.boot(preset)                          # the essay's machine: the VT-d seed preset
    vfio.bind_vfio_pci(m, "0000:01:00.0"); vfio.bind_vfio_pci(m, "0000:01:00.1")
    with vfio.Container(m) as c, vfio.Group(m, 42) as g:
        c.check_extension(vfio.VFIO_TYPE1_IOMMU)
        g.set_container(c)
        c.set_iommu(vfio.VFIO_TYPE1_IOMMU)
        dev = g.get_device_fd("0000:01:00.0")         # close it (or `with`) before the group
        buf = mmap.mmap(-1, 1 << 20)                # page-aligned, as MAP_DMA wants it
        c.map_dma(buf, iova=0)                      # the vaddr is buf's real address
        efd = vfio.EventFd()
        dev.set_irqs(vfio.VFIO_PCI_MSI_IRQ_INDEX, 0, 1,
                     vfio.VFIO_IRQ_SET_DATA_EVENTFD | vfio.VFIO_IRQ_SET_ACTION_TRIGGER, [efd])
        # the device's side, as the `dma` and `msi` controls: it needs bus mastering
        dev.write_config(4, (int.from_bytes(dev.read_config(4, 2), "little") | 4).to_bytes(2, "little"))
        vfio.dma_write(m, "0000:01:00.0", 0x1000, b"\xab\xcd")   # lands in buf[0x1000:0x1002]
        vfio.raise_vector(m, "0000:01:00.0", 0)                # efd becomes readable
"""
from vfakefs.vfio.api import Container, Device, Group, IommuInfo, kernel_errors, this_process
from vfakefs.vfio.constants import *  # noqa: F401,F403 (the uapi names)
from vfakefs.vfio.constants import __all__ as _CONSTANTS
from vfakefs.vfio.eventfd import EventFd
from vfakefs.vfio.machine import (bind_vfio_pci, boot, dma_read, dma_write, driver_bind, driver_unbind,
                                  drivers_probe, raise_vector, set_driver_override)
from vfakefs.vfio.memory import FROM_PROCESS, Process, SelfMemory

__all__ = ["Container", "Device", "EventFd", "FROM_PROCESS", "Group", "IommuInfo", "Process", "SelfMemory",
           "bind_vfio_pci", "boot", "dma_read", "dma_write", "driver_bind", "driver_unbind", "drivers_probe",
           "kernel_errors", "raise_vector", "set_driver_override", "this_process", *_CONSTANTS]
