"""Container, Group and Device: /dev/vfio/vfio, /dev/vfio/<N> and a device fd as a
Python program holds them, one method per ioctl, over the model's VfioContainer,
VfioGroup and VfioPciDevice. Errors are OSError with the kernel's errno.

Closing follows the kernel's references: a device fd holds its group's file, so closing
a Group with devices open releases it when the last Device closes; a group holds its
container, so closing a Container that groups still use changes nothing until they
leave. Calls on a closed object are EBADF, as on a closed fd.
"""
from __future__ import annotations

import errno
import os
import struct
import uuid
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field

from vfakefs.model.errors import SysfsError
from vfakefs.model.vfio import type1
from vfakefs.model.vfio.container import VfioContainer
from vfakefs.model.vfio.device import VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_INDEX_TO_OFFSET
from vfakefs.model.vfio.feature import VFIO_DEVICE_FEATURE_PCI_VF_TOKEN, VFIO_DEVICE_FEATURE_SET
from vfakefs.model.vfio.group import VfioGroup
from vfakefs.model.vfio.intrs import VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_TYPE_MASK
from vfakefs.vfio.eventfd import eventfd_arg
from vfakefs.vfio.memory import Process

READ_WRITE = type1.VFIO_DMA_MAP_FLAG_READ | type1.VFIO_DMA_MAP_FLAG_WRITE
_processes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def oserror(err: int) -> OSError:
    return OSError(err, os.strerror(err))


@contextmanager
def kernel_errors():
    """The model's SysfsError as the OSError the system call would raise."""
    try:
        yield
    except SysfsError as e:
        raise oserror(e.errno) from None


def this_process(machine) -> Process:
    """This process's mm on that machine: what a Container uses unless given another."""
    p = _processes.get(machine)
    if p is None:
        p = _processes[machine] = Process()
    return p


class _Fd:
    """Something opened: closing twice is harmless, using it closed is EBADF."""
    closed = False

    def _check(self) -> None:
        if self.closed:
            raise oserror(errno.EBADF)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- IOMMU_GET_INFO, parsed ------------------------------------------------------------------------
@dataclass
class IommuInfo:
    argsz: int
    flags: int
    iova_pgsizes: int
    cap_offset: int
    iova_ranges: list[tuple[int, int]] | None = None      # (start, end), end inclusive
    dma_avail: int | None = None
    migration: tuple[int, int, int] | None = None           # flags, pgsize_bitmap, max_dirty_bitmap_size
    raw: bytes = field(default=b"", repr=False)

    @classmethod
    def parse(cls, raw: bytes) -> "IommuInfo":
        """struct vfio_iommu_type1_info and its capability chain (offsets from the start)."""
        head = raw.ljust(type1.INFO_SIZE, b"\0")
        info = cls(*struct.unpack_from("<IIQI", head), raw=raw)
        at = info.cap_offset
        while at:
            cap_id, _version, nxt = struct.unpack_from("<HHI", raw, at)
            body = at + 8
            if cap_id == type1.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
                n = struct.unpack_from("<I", raw, body)[0]
                info.iova_ranges = [struct.unpack_from("<QQ", raw, body + 8 + 16 * i) for i in range(n)]
            elif cap_id == type1.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
                info.dma_avail = struct.unpack_from("<I", raw, body)[0]
            elif cap_id == type1.VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION:
                info.migration = struct.unpack_from("<I4xQQ", raw, body)
            at = nxt
        return info


# --- /dev/vfio/vfio ----------------------------------------------------------------------------------
class Container(_Fd):
    """open("/dev/vfio/vfio"). process: whose memory and memlock the mappings use
    (default: this process, one Process per machine, shared by its containers).
    allow_unsafe_interrupts, dma_entry_limit: None follows the machine's vfio_iommu_type1
    module parameters (/sys/module/vfio_iommu_type1/parameters/), a value overrides them."""

    def __init__(self, machine, process: Process | None = None, *, allow_unsafe_interrupts: bool | None = None,
                 dma_entry_limit: int | None = None):
        self.machine = machine
        self.process = process if process is not None else this_process(machine)
        self.model = VfioContainer(machine, mm=self.process, allow_unsafe_interrupts=allow_unsafe_interrupts,
                                   dma_entry_limit=dma_entry_limit)

    def close(self) -> None:
        """vfio_fops_release(): the groups still in it keep it (and its mappings) alive."""
        self.closed = True

    def get_api_version(self) -> int:
        self._check()
        return self.model.get_api_version()

    @kernel_errors()
    def check_extension(self, ext: int) -> int:
        self._check()
        return self.model.check_extension(ext)

    @kernel_errors()
    def set_iommu(self, kind: int) -> None:
        self._check()
        self.model.set_iommu(kind)

    @kernel_errors()
    def get_info(self, argsz: int | None = None) -> IommuInfo:
        """With argsz, one call as C makes it (a short argsz gets the header, whose argsz
        says how much the capabilities need); without, the usual two calls, all parsed."""
        self._check()
        if argsz is not None:
            return IommuInfo.parse(self.model.get_info(argsz))
        first = IommuInfo.parse(self.model.get_info(type1.INFO_SIZE))
        return IommuInfo.parse(self.model.get_info(max(first.argsz, type1.INFO_SIZE)))

    @kernel_errors()
    def map_dma(self, buffer, iova: int, size: int | None = None, flags: int = READ_WRITE) -> int:
        """IOMMU_MAP_DMA of a buffer (registered with the process, its address the vaddr;
        size defaults to its length) or of a vaddr given as an int. Returns the vaddr."""
        self._check()
        if isinstance(buffer, int):
            vaddr = buffer
        else:
            vaddr = self.process.register(buffer)
            if size is None:
                size = memoryview(buffer).nbytes
        if size is None:
            raise TypeError("map_dma of a vaddr needs its size")
        self.model.map_dma(vaddr, iova, size, flags, mm=self.process)
        return vaddr

    @kernel_errors()
    def unmap_dma(self, iova: int, size: int, flags: int = 0) -> int:
        """IOMMU_UNMAP_DMA: the bytes unmapped (or invalidated, with VADDR)."""
        self._check()
        return self.model.unmap_dma(iova, size, flags)


# --- /dev/vfio/<N> -----------------------------------------------------------------------------------
class Group(_Fd):
    """open("/dev/vfio/<group_id>"): ENODEV without a VFIO-bound member, EBUSY while open."""

    def __init__(self, machine, group_id: int):
        self.machine, self.id = machine, group_id
        with kernel_errors():
            self.model = VfioGroup.open(machine, group_id)
        self.devices: list[Device] = []

    def close(self) -> None:
        """The group file goes when the last device fd holding it closes too
        (vfio_group_fops_release(): leaving the container releases the group)."""
        self.closed = True
        if not self.devices:
            self.model.close()

    def _device_closed(self, dev: "Device") -> None:
        self.devices.remove(dev)
        if self.closed and not self.devices:
            self.model.close()

    @kernel_errors()
    def get_status(self) -> int:
        self._check()
        return self.model.get_status()

    @kernel_errors()
    def set_container(self, container: Container) -> None:
        """GROUP_SET_CONTAINER; anything but a Container is a file that is none (EBADFD)."""
        self._check()
        if isinstance(container, Container):
            container._check()
            container = container.model
        self.model.set_container(container)

    @kernel_errors()
    def unset_container(self) -> None:
        self._check()
        self.model.unset_container()

    @kernel_errors()
    def get_device_fd(self, name: str | bytes) -> "Device":
        """GROUP_GET_DEVICE_FD(name): the name exactly, optionally ` vf_token=<uuid>`
        (a VF of a vfio-pci PF needs it; so does the PF while its VFs are open)."""
        self._check()
        if isinstance(name, bytes):
            name = name.split(b"\0", 1)[0].decode()
        dev = Device(self, self.model.get_device_fd(name))
        self.devices.append(dev)
        return dev

    get_device = get_device_fd


# --- a device fd ---------------------------------------------------------------------------------------
class Device(_Fd):
    """A vfio-pci device fd. model is the VfioPciDevice, where a test drives the device side."""

    def __init__(self, group: Group, model):
        self.group, self.model = group, model
        self.name = model.dev.name

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.model.close()
        self.group._device_closed(self)

    @kernel_errors()
    def get_info(self):
        self._check()
        return self.model.get_info()

    @kernel_errors()
    def get_region_info(self, index: int):
        self._check()
        return self.model.get_region_info(index)

    @kernel_errors()
    def read(self, offset: int, count: int) -> bytes:
        """pread(fd, count, offset) at a region's offset (VFIO_PCI_INDEX_TO_OFFSET(index) + pos)."""
        self._check()
        return self.model.read(offset, count)

    @kernel_errors()
    def write(self, offset: int, data: bytes) -> int:
        self._check()
        return self.model.write(offset, bytes(data))

    def read_config(self, pos: int, count: int) -> bytes:
        return self.read(VFIO_PCI_INDEX_TO_OFFSET(VFIO_PCI_CONFIG_REGION_INDEX) + pos, count)

    def write_config(self, pos: int, data: bytes) -> int:
        return self.write(VFIO_PCI_INDEX_TO_OFFSET(VFIO_PCI_CONFIG_REGION_INDEX) + pos, data)

    @kernel_errors()
    def reset(self) -> None:
        self._check()
        self.model.reset()

    @kernel_errors()
    def get_irq_info(self, index: int):
        self._check()
        return self.model.get_irq_info(index)

    @kernel_errors()
    def feature(self, flags: int, data: bytes = b"", argsz: int | None = None) -> None:
        """VFIO_DEVICE_FEATURE: flags is the feature | GET/SET/PROBE, data its data[]
        (argsz defaults to 8 + len(data)). An fd in data[] (LOW_POWER_ENTRY_WITH_WAKEUP)
        is one of this process's."""
        self._check()
        self.model.feature(flags, argsz, bytes(data), fdget=eventfd_arg)

    def set_vf_token(self, token) -> None:
        """VFIO_DEVICE_FEATURE(SET | PCI_VF_TOKEN) on a PF: the UUID (a uuid.UUID or its
        string) its VFs' users must then give as ` vf_token=<uuid>`."""
        token = token if isinstance(token, uuid.UUID) else uuid.UUID(str(token))
        self.feature(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN, token.bytes)

    @kernel_errors()
    def set_irqs(self, index: int, start: int, count: int, flags: int, data=None) -> None:
        """DEVICE_SET_IRQS. data: for DATA_EVENTFD a list of EventFds, fd numbers or -1;
        for DATA_BOOL a list of bools; nothing for DATA_NONE."""
        self._check()
        if data is not None and flags & VFIO_IRQ_SET_DATA_TYPE_MASK == VFIO_IRQ_SET_DATA_EVENTFD:
            data = [eventfd_arg(x) for x in data]
        self.model.set_irqs(index, start, count, flags, data)
