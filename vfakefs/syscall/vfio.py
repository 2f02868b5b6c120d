"""VFIO's system calls as a trapped program makes them: the uapi structs in its memory
(include/uapi/linux/vfio.h) read and written back, the rules in the model
(model/vfio/). The files are memfds (files.py); a device's is 10 << 40 bytes, sparse,
so BAR0 at offset 0 (and any BAR at index << 40) mmaps natively as shared memory
with the daemon, while the other regions' pread/pwrite come here.
"""
from __future__ import annotations

import errno
import os
import struct

from vfakefs.model.errors import SysfsError
from vfakefs.model.vfio.container import VfioContainer
from vfakefs.model.vfio.device import (VFIO_PCI_BAR5_REGION_INDEX, VFIO_PCI_NUM_REGIONS, VFIO_PCI_OFFSET_MASK,
                                       VFIO_PCI_OFFSET_SHIFT)
from vfakefs.model.vfio.group import VfioGroup, vfio_bound
from vfakefs.model.vfio.intrs import VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_TYPE_MASK
from vfakefs.model.vfio.memory import Mm
from vfakefs.syscall import process
from vfakefs.syscall.files import File, Files

DEVICE_FILE_SIZE = (VFIO_PCI_NUM_REGIONS + 1) << VFIO_PCI_OFFSET_SHIFT    # 10 << 40: every region's offset fits
MAX_REGION_IO = 1 << 20

# _IO(';', VFIO_BASE + n)
(GET_API_VERSION, CHECK_EXTENSION, SET_IOMMU, GROUP_GET_STATUS, GROUP_SET_CONTAINER, GROUP_UNSET_CONTAINER,
 GROUP_GET_DEVICE_FD, DEVICE_GET_INFO, DEVICE_GET_REGION_INFO, DEVICE_GET_IRQ_INFO, DEVICE_SET_IRQS,
 DEVICE_RESET, IOMMU_GET_INFO, IOMMU_MAP_DMA, IOMMU_UNMAP_DMA) = (0x3B64 + n for n in range(15))
DEVICE_FEATURE = 0x3B64 + 17


class EventFd:
    """The daemon's copy of an eventfd the program registered (pidfd_getfd): signal()
    adds one to its counter, as the kernel's eventfd_signal()."""

    def __init__(self, fd: int):
        self.fd = fd

    def signal(self) -> None:
        os.eventfd_write(self.fd, 1)

    def __del__(self):
        os.close(self.fd)


class NotEventFd:
    """A file that is not an eventfd (the model answers EINVAL: no signal())."""


def _is_eventfd(fd: int) -> bool:
    return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"


class Call:
    """One trapped call: its thread, its process's memory (a thread reaches the same mm),
    and how to hand it a file."""
    __slots__ = ("tid", "_pid", "mem", "give")

    def __init__(self, tid: int, give):
        self.tid, self._pid, self.mem, self.give = tid, None, process.ProcMemory(tid), give

    @property
    def pid(self) -> int:
        """The thread's process (looked up only by the calls that need it)."""
        if self._pid is None:
            self._pid = process.tgid(self.tid)
        return self._pid

    def arg(self, addr: int, fmt: str) -> tuple:
        return struct.unpack(fmt, self.mem.read(addr, struct.calcsize(fmt)))


class Vfio:
    """The daemon's VFIO files: opens of /dev/vfio/*, their ioctls and region I/O."""

    def __init__(self, host, files: Files):
        self.host, self.files = host, files
        self.closing_groups: set = set()      # group files closed while their devices are open
        self.mms: dict[tuple[int, int], Mm] = {}

    @property
    def m(self):
        return self.host.machine

    def mm(self, call: Call) -> Mm:
        """The calling process's mm (one per process, shared by its containers: locked_vm
        is per mm), with RLIMIT_MEMLOCK and CAP_IPC_LOCK as they are now."""
        key = process.identity(call.pid)
        mm = self.mms.get(key)
        if mm is None:
            for k in [k for k, v in self.mms.items() if not v.locked_vm]:
                del self.mms[k]               # processes gone or holding nothing
            mm = self.mms[key] = Mm(call.mem)
        mm.memlock_limit, mm.cap_ipc_lock = process.memlock(call.pid)
        return mm

    # --- open ---------------------------------------------------------------------------------------
    def open(self, call: Call, path: str, cloexec: bool) -> int | None:
        """None for paths that are not ours (the call proceeds natively)."""
        if path == "/dev/vfio/vfio":
            # vfio_iommu_type1's parameters are read by the model when the kernel reads them
            c = VfioContainer(self.m, mm=self.mm(call))
            return File(self.files, "container", c, lambda c: None).hand_out(lambda fd: call.give(fd, cloexec))
        name = path.removeprefix("/dev/vfio/")
        if name == path or not name.isdigit() or name != str(int(name)):
            return None
        groups = self.m.groups
        group = groups.by_id.get(int(name)) if groups is not None else None
        if group is None or not any(vfio_bound(d) for d in group.devices):
            raise SysfsError(errno.ENOENT)        # no such node: it exists while a member is on vfio
        vg = VfioGroup.open(self.m, int(name))
        try:
            f = File(self.files, "group", vg, self._group_closed)
        except OSError:
            vg.close()
            raise
        return f.hand_out(lambda fd: call.give(fd, cloexec))

    def _group_closed(self, vg: VfioGroup) -> None:
        """vfio_group_fops_release() runs only when no device fd holds the group file."""
        if vg.devices:
            self.closing_groups.add(vg)
        else:
            vg.close()

    def _device_closed(self, vdev) -> None:
        vdev.close()
        vg = vdev.group
        if vg in self.closing_groups and not vg.devices:
            self.closing_groups.discard(vg)
            vg.close()

    # --- ioctl --------------------------------------------------------------------------------------
    def ioctl(self, call: Call, f: File, cmd: int, arg: int) -> int:
        return getattr(self, f"_{f.kind}_ioctl")(call, f.obj, cmd, arg)

    def _container_ioctl(self, call: Call, c: VfioContainer, cmd: int, arg: int) -> int:
        if cmd == GET_API_VERSION:
            return c.get_api_version()
        if cmd == CHECK_EXTENSION:
            return c.check_extension(arg)
        if cmd == SET_IOMMU:
            c.set_iommu(arg)
            return 0
        if c.iommu is None:
            c.unknown_ioctl()                  # the backend's ioctls: EINVAL before SET_IOMMU, memory untouched
        if cmd == IOMMU_GET_INFO:
            argsz, = call.arg(arg, "<I")
            call.mem.write(arg, c.get_info(argsz))
            return 0
        if cmd == IOMMU_MAP_DMA:
            argsz, flags, vaddr, iova, size = call.arg(arg, "<IIQQQ")
            c.map_dma(vaddr, iova, size, flags, argsz, mm=self.mm(call))   # charged to current->mm
            return 0
        if cmd == IOMMU_UNMAP_DMA:
            argsz, flags, iova, size = call.arg(arg, "<IIQQ")
            done = c.unmap_dma(iova, size, flags, argsz)
            call.mem.write(arg + 16, struct.pack("<Q", done))
            return 0
        c.unknown_ioctl()
        return 0

    def _group_ioctl(self, call: Call, vg: VfioGroup, cmd: int, arg: int) -> int:
        if cmd == GROUP_GET_STATUS:
            argsz, = call.arg(arg, "<I")
            flags = vg.get_status(argsz)
            call.mem.write(arg + 4, struct.pack("<I", flags))
            return 0
        if cmd == GROUP_SET_CONTAINER:
            fd, = call.arg(arg, "<i")
            try:
                os.lstat(f"/proc/{call.tid}/fd/{fd}")     # the link exists while the fd is open
            except OSError:
                raise SysfsError(errno.EBADF) from None
            other = self.files.of(call.tid, fd)
            if other is None or other.kind != "container":
                raise SysfsError(errno.EBADFD)
            vg.set_container(other.obj)
            return 0
        if cmd == GROUP_UNSET_CONTAINER:
            vg.unset_container()
            return 0
        if cmd == GROUP_GET_DEVICE_FD:
            name = call.mem.read_string(arg).decode(errors="surrogateescape")
            vdev = vg.get_device_fd(name)
            f = self.files.by_obj(vdev)
            if f is None:
                try:
                    f = File(self.files, "device", vdev, self._device_closed, DEVICE_FILE_SIZE)
                except OSError:
                    vdev.close()
                    raise
            return f.hand_out(lambda fd: call.give(fd, True))   # the kernel's O_CLOEXEC
        vg.unknown_ioctl()
        return 0

    def _device_ioctl(self, call: Call, vdev, cmd: int, arg: int) -> int:
        if cmd == DEVICE_GET_INFO:
            argsz, = call.arg(arg, "<I")
            i = vdev.get_info(argsz)
            call.mem.write(arg, struct.pack("<IIII", i.argsz, i.flags, i.num_regions, i.num_irqs))
            return 0
        if cmd == DEVICE_GET_REGION_INFO:
            argsz, _flags, index = call.arg(arg, "<III")
            r = vdev.get_region_info(index, argsz)
            out = struct.pack("<IIIIQQ", r.argsz, r.flags, r.index, r.cap_offset, r.size, r.offset)
            if r.cap_offset:
                for n, (cap_id, version) in enumerate(r.caps):
                    nxt = r.cap_offset + 8 * (n + 1) if n + 1 < len(r.caps) else 0
                    out += struct.pack("<HHI", cap_id, version, nxt)
            call.mem.write(arg, out)
            return 0
        if cmd == DEVICE_GET_IRQ_INFO:
            argsz, _flags, index = call.arg(arg, "<III")
            i = vdev.get_irq_info(index, argsz)
            call.mem.write(arg, struct.pack("<IIII", i.argsz, i.flags, i.index, i.count))
            return 0
        if cmd == DEVICE_SET_IRQS:
            argsz, flags, index, start, count = call.arg(arg, "<IIIII")
            data = self._irq_data(call, arg + 20, argsz, flags, count)
            vdev.set_irqs(index, start, count, flags, data, argsz)
            return 0
        if cmd == DEVICE_RESET:
            vdev.reset()
            return 0
        if cmd == DEVICE_FEATURE:
            argsz, flags = call.arg(arg, "<II")     # data[] read only as far as the feature needs
            vdev.feature(flags, argsz, lambda n: call.mem.read(arg + 8, n), lambda fd: self._eventfd(call, fd))
            return 0
        raise SysfsError(errno.ENOTTY)

    def _irq_data(self, call: Call, addr: int, argsz: int, flags: int, count: int):
        """SET_IRQS's data[]: bools, or the program's eventfds fetched as the daemon's own."""
        kind = flags & VFIO_IRQ_SET_DATA_TYPE_MASK
        size = {VFIO_IRQ_SET_DATA_BOOL: 1, VFIO_IRQ_SET_DATA_EVENTFD: 4}.get(kind)
        if size is None or argsz < 20 or argsz - 20 < count * size or count > 4096:
            return None                        # the model answers EINVAL where the kernel does
        raw = call.mem.read(addr, count * size)
        if kind == VFIO_IRQ_SET_DATA_BOOL:
            return list(raw)
        return [self._eventfd(call, fd) for fd in struct.unpack(f"<{count}i", raw)]

    @staticmethod
    def _eventfd(call: Call, fd: int):
        """The program's fd as the model takes an eventfd: the daemon's copy of it."""
        if fd < 0:
            return fd
        try:
            mine = process.fetch_fd(call.pid, fd)
        except OSError:
            return fd                          # not open there: the model's EBADF
        if _is_eventfd(mine):
            return EventFd(mine)
        os.close(mine)
        return NotEventFd()

    # --- pread64 / pwrite64 of a device's regions -------------------------------------------------------
    def region_io(self, call: Call, f: File, buf: int, count: int, offset: int, write: bool) -> int:
        """vfio_pci_rw(): BARs from the shared memfd (what an mmap of it shows), config and
        ROM through the model. Offsets below 1 TiB never come here (BAR0, native)."""
        if f.kind != "device":
            raise SysfsError(errno.EINVAL)     # a container or group has no read/write
        index = offset >> VFIO_PCI_OFFSET_SHIFT
        if index >= VFIO_PCI_NUM_REGIONS or offset < 0:
            raise SysfsError(errno.EINVAL)
        count = min(count, MAX_REGION_IO)
        vdev = f.obj
        if index <= VFIO_PCI_BAR5_REGION_INDEX:
            size = vdev.get_region_info(index).size
            pos = offset & VFIO_PCI_OFFSET_MASK
            if pos >= size:
                raise SysfsError(errno.EINVAL)
            count = min(count, size - pos)
            if write:
                return os.pwrite(f.held, call.mem.read(buf, count), offset)
            data = os.pread(f.held, count, offset)
            call.mem.write(buf, data)
            return len(data)
        if write:
            return vdev.write(offset, call.mem.read(buf, count))
        data = vdev.read(offset, count)
        call.mem.write(buf, data)
        return len(data)
