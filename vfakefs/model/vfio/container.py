"""An open /dev/vfio/vfio (drivers/vfio/container.c): groups join it, SET_IOMMU picks
the backend (type1 only: the x86 kernel registers no other), and after that every
other ioctl goes to the backend."""
from __future__ import annotations

import errno

from vfakefs.model.errors import SysfsError
from vfakefs.model.vfio import type1
from vfakefs.model.vfio.memory import Mm, ProcessMemory

VFIO_API_VERSION = 0


class VfioContainer:
    """struct vfio_container, plus what the opening process brings: its mm (memory for
    MAP_DMA, locked_vm, RLIMIT_MEMLOCK in bytes (None: unlimited), CAP_IPC_LOCK), and the
    type1 module parameters allow_unsafe_interrupts and dma_entry_limit (None: the machine's
    /sys/module/vfio_iommu_type1/parameters/ values when the kernel reads them, type1.module_param;
    a value: that value for this container). Give `mm` to share
    one process's accounting between containers; without it the container makes its own
    Mm from memory, memlock_limit and cap_ipc_lock."""

    def __init__(self, m, memory: ProcessMemory | None = None, memlock_limit: int | None = None,
                 cap_ipc_lock: bool = False, allow_unsafe_interrupts: bool | None = None,
                 dma_entry_limit: int | None = None, mm: Mm | None = None):
        self.m = m
        self.mm = mm if mm is not None else Mm(memory, memlock_limit, cap_ipc_lock)
        self.allow_unsafe_interrupts, self.dma_entry_limit = allow_unsafe_interrupts, dma_entry_limit
        self.groups: list = []                 # VfioGroups, in the order they joined
        self.iommu: type1.VfioIommuType1 | None = None

    # the opener's mm, as the attributes they were before Mm existed
    @property
    def memory(self) -> ProcessMemory | None:
        return self.mm.memory

    @property
    def memlock_limit(self) -> int | None:
        return self.mm.memlock_limit

    @property
    def cap_ipc_lock(self) -> bool:
        return self.mm.cap_ipc_lock

    @property
    def locked_vm(self) -> int:
        """mm->locked_vm of the opening process, in pages."""
        return self.mm.locked_vm

    # --- VFIO_GET_API_VERSION, VFIO_CHECK_EXTENSION, VFIO_SET_IOMMU ---------------------------
    def get_api_version(self) -> int:
        return VFIO_API_VERSION

    def check_extension(self, ext: int) -> int:
        """vfio_container_ioctl_check_extension(): before SET_IOMMU every registered
        backend is asked (type1 here; NOIOMMU only in unsafe noiommu mode), after it the
        chosen one."""
        if self.iommu is None:
            return type1.check_extension(None, ext)
        return self.iommu.check_extension(ext)

    def set_iommu(self, kind: int) -> None:
        """vfio_ioctl_set_iommu(): EINVAL without a group or when already set, ENODEV
        when no backend supports the type, EINVAL when type1 supports it as an extension
        but not as a model (UNMAP_ALL); attach errors pass through and undo."""
        if not self.groups or self.iommu is not None:
            raise SysfsError(errno.EINVAL)
        if type1.check_extension(None, kind) <= 0:
            raise SysfsError(errno.ENODEV)
        if kind not in (type1.VFIO_TYPE1_IOMMU, type1.VFIO_TYPE1v2_IOMMU, type1.VFIO_TYPE1_NESTING_IOMMU):
            raise SysfsError(errno.EINVAL)           # vfio_iommu_type1_open
        backend = type1.VfioIommuType1(self, kind)
        done = []
        try:
            for g in self.groups:                    # __vfio_container_attach_groups
                backend.attach_group(g)
                done.append(g)
        except SysfsError:
            for g in reversed(done):
                backend.detach_group(g)
            raise
        self.iommu = backend
        self.m.modules.get(type1.MODULE)             # try_module_get(driver->ops->owner)

    def unknown_ioctl(self) -> None:
        """vfio_fops_unl_ioctl's default: EINVAL without a backend, else the backend's ENOTTY."""
        raise SysfsError(errno.EINVAL if self.iommu is None else errno.ENOTTY)

    # --- the backend's ioctls ------------------------------------------------------------------
    def _backend(self) -> type1.VfioIommuType1:
        if self.iommu is None:
            raise SysfsError(errno.EINVAL)
        return self.iommu

    def get_info(self, argsz: int = type1.INFO_SIZE) -> bytes:
        return self._backend().get_info(argsz)

    def map_dma(self, vaddr: int, iova: int, size: int, flags: int = 3, argsz: int = type1.MAP_MINSZ,
                mm: Mm | None = None) -> None:
        """mm: the calling process's, when it is not the opener (a forked child, an exec'd
        successor giving a new vaddr); the mapping is charged to it."""
        self._backend().map_dma(vaddr, iova, size, flags, argsz, mm=mm)

    def unmap_dma(self, iova: int, size: int, flags: int = 0, argsz: int = type1.UNMAP_MINSZ) -> int:
        return self._backend().unmap_dma(iova, size, flags, argsz)

    # --- groups joining and leaving (vfio_container_attach_group / detach_group) -------------------
    def attach_group(self, vgroup) -> None:
        if self.iommu is not None:
            self.iommu.attach_group(vgroup)
        self.groups.append(vgroup)

    def detach_group(self, vgroup) -> None:
        if self.iommu is not None:
            self.iommu.detach_group(vgroup)
        self.groups.remove(vgroup)
        if not self.groups:
            if self.iommu is not None:
                self.m.modules.put(type1.MODULE)     # __vfio_container_release: module_put
            self.iommu = None      # the last group deprivileges the container: the backend goes
