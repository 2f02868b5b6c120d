"""vfio-pci interrupts (drivers/vfio/pci/vfio_pci_intrs.c, vfio_pci_core.c, and
vfio_set_irqs_validate_and_prepare() in drivers/vfio/vfio_main.c): GET_IRQ_INFO,
SET_IRQS, and a device raising an MSI/MSI-X vector through interrupt remapping.

Eventfds are any object with a signal() method: the adapters pass the program's
eventfd, tests a counter. In SET_IRQS(DATA_EVENTFD) data, None or a negative int
stands for the fd -1 (de-assign); a non-negative int is an fd that is no eventfd
this model knows (EBADF).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

from vfakefs.model.base import irqs
from vfakefs.model.errors import SysfsError
from vfakefs.model.pci import config as C

# uapi/linux/vfio.h
VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX = 0, 1, 2
VFIO_PCI_ERR_IRQ_INDEX, VFIO_PCI_REQ_IRQ_INDEX, VFIO_PCI_NUM_IRQS = 3, 4, 5
VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE = 1 << 0, 1 << 1
VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_NORESIZE = 1 << 2, 1 << 3
VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD = 1 << 0, 1 << 1, 1 << 2
VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 3, 1 << 4, 1 << 5
VFIO_IRQ_SET_DATA_TYPE_MASK = 0x7
VFIO_IRQ_SET_ACTION_TYPE_MASK = 0x38
IRQ_INFO_MINSZ = 16             # argsz, flags, index, count
IRQ_SET_MINSZ = 20              # argsz, flags, index, start, count
U32_MAX = 0xFFFFFFFF

PCI_COMMAND_MASTER, PCI_COMMAND_INTX_DISABLE = 0x4, 0x400
PCI_MSI_FLAGS_ENABLE, PCI_MSI_FLAGS_QMASK, PCI_MSI_FLAGS_QSIZE = 0x1, 0x0E, 0x70
PCI_MSI_FLAGS_64BIT = 0x80
PCI_MSIX_FLAGS_QSIZE, PCI_MSIX_FLAGS_MASKALL, PCI_MSIX_FLAGS_ENABLE = 0x7FF, 0x4000, 0x8000


@dataclass
class IrqInfo:
    argsz: int
    flags: int
    index: int
    count: int


def _eventfd(fd):
    """eventfd_ctx_fdget(): None for fd < 0 (the caller de-assigns), the eventfd, or
    EBADF for an fd that is not open, EINVAL for a file that is not an eventfd."""
    if fd is None or isinstance(fd, int) and fd < 0:
        return None
    if isinstance(fd, int):
        raise SysfsError(errno.EBADF)
    if not callable(getattr(fd, "signal", None)):
        raise SysfsError(errno.EINVAL)
    return fd


class VfioIrqs:
    """The interrupt state of one open vfio-pci device (vdev->irq_type, ctx[], num_ctx)."""
    NUM_IRQS = VFIO_PCI_NUM_IRQS

    def __init__(self, vdev):
        self.vdev, self.m, self.dev = vdev, vdev.m, vdev.dev
        self.irq_type = VFIO_PCI_NUM_IRQS        # none
        self.ctx: list = []                      # per vector: the eventfd (trigger) or None
        self.irte: list[int] = []                # per vector: its IRTE index
        self.msix_table: list[tuple[int, int]] = []   # MSI-X table entries (address, data)
        self.intx_masked = False
        self.intx_unmask_fd = None
        self.err_trigger = self.req_trigger = None
        self.msi_qmax = 0                        # log2 of the MSI vectors SET_IRQS allocated

    @property
    def num_ctx(self) -> int:
        return len(self.ctx)

    def is_none(self) -> bool:
        return self.irq_type == VFIO_PCI_NUM_IRQS

    # --- GET_IRQ_INFO (vfio_pci_ioctl_get_irq_info, vfio_pci_get_irq_count) -------------------------
    def irq_count(self, index: int) -> int:
        dev, cfg = self.dev, self.dev.config
        if index == VFIO_PCI_INTX_IRQ_INDEX:
            return 1 if dev.irq and cfg.r8(0x3D) and not dev.is_virtfn else 0   # VFs have no INTx
        if index == VFIO_PCI_MSI_IRQ_INDEX:
            pos = dev.caps.get(C.CAP_MSI)
            return 1 << ((cfg.r16(pos + 2) & PCI_MSI_FLAGS_QMASK) >> 1) if pos is not None else 0
        if index == VFIO_PCI_MSIX_IRQ_INDEX:
            pos = dev.caps.get(C.CAP_MSIX)
            return (cfg.r16(pos + 2) & PCI_MSIX_FLAGS_QSIZE) + 1 if pos is not None else 0
        if index == VFIO_PCI_ERR_IRQ_INDEX:
            return 1 if dev.pcie_cap is not None else 0
        return 1 if index == VFIO_PCI_REQ_IRQ_INDEX else 0

    def get_irq_info(self, index: int, argsz: int = IRQ_INFO_MINSZ) -> IrqInfo:
        if argsz < IRQ_INFO_MINSZ or not 0 <= index < VFIO_PCI_NUM_IRQS:
            raise SysfsError(errno.EINVAL)
        if index == VFIO_PCI_ERR_IRQ_INDEX and self.dev.pcie_cap is None:
            raise SysfsError(errno.EINVAL)           # AER reporting is PCIe only
        flags = VFIO_IRQ_INFO_EVENTFD
        if index == VFIO_PCI_INTX_IRQ_INDEX:
            flags |= VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED
        else:
            flags |= VFIO_IRQ_INFO_NORESIZE
        return IrqInfo(argsz, flags, index, self.irq_count(index))

    # --- SET_IRQS (vfio_set_irqs_validate_and_prepare, vfio_pci_set_irqs_ioctl) -----------------------
    def set_irqs(self, index: int, start: int, count: int, flags: int, data=None, argsz: int | None = None) -> None:
        size = {VFIO_IRQ_SET_DATA_NONE: 0, VFIO_IRQ_SET_DATA_BOOL: 1,
                VFIO_IRQ_SET_DATA_EVENTFD: 4}.get(flags & VFIO_IRQ_SET_DATA_TYPE_MASK)
        if argsz is None:
            argsz = IRQ_SET_MINSZ + count * (size or 0)
        if (argsz < IRQ_SET_MINSZ or not 0 <= index < VFIO_PCI_NUM_IRQS or count >= U32_MAX - start
                or flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK)):
            raise SysfsError(errno.EINVAL)
        num_irqs = self.irq_count(index)
        if start >= num_irqs or start + count > num_irqs:
            raise SysfsError(errno.EINVAL)
        if size is None:                                 # no or more than one data type
            raise SysfsError(errno.EINVAL)
        if size and (argsz - IRQ_SET_MINSZ < count * size or data is None or len(data) < count):
            raise SysfsError(errno.EINVAL)
        data = list(data[:count]) if size else None
        action = flags & VFIO_IRQ_SET_ACTION_TYPE_MASK
        func = None
        if index == VFIO_PCI_INTX_IRQ_INDEX:
            func = {VFIO_IRQ_SET_ACTION_MASK: self._intx_mask, VFIO_IRQ_SET_ACTION_UNMASK: self._intx_unmask,
                    VFIO_IRQ_SET_ACTION_TRIGGER: self._intx_trigger}.get(action)
        elif index in (VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX):
            func = self._msi_trigger if action == VFIO_IRQ_SET_ACTION_TRIGGER else None   # no MSI masking
        elif action == VFIO_IRQ_SET_ACTION_TRIGGER:
            if index == VFIO_PCI_REQ_IRQ_INDEX or self.dev.pcie_cap is not None:
                func = self._err_req_trigger
        if func is None:
            raise SysfsError(errno.ENOTTY)
        func(index, start, count, flags, data)

    # --- INTx ----------------------------------------------------------------------------------------
    def _intx_mask(self, index, start, count, flags, data) -> None:
        if self.irq_type != VFIO_PCI_INTX_IRQ_INDEX or start != 0 or count != 1:
            raise SysfsError(errno.EINVAL)
        if flags & VFIO_IRQ_SET_DATA_EVENTFD:
            raise SysfsError(errno.ENOTTY)               # vfio_pci_set_intx_mask: not implemented there
        if flags & VFIO_IRQ_SET_DATA_NONE or data[0]:
            self._set_intx_masked(True)

    def _intx_unmask(self, index, start, count, flags, data) -> None:
        if self.irq_type != VFIO_PCI_INTX_IRQ_INDEX or start != 0 or count != 1:
            raise SysfsError(errno.EINVAL)
        if flags & VFIO_IRQ_SET_DATA_EVENTFD:
            self.intx_unmask_fd = _eventfd(data[0])      # vfio_virqfd_enable / _disable
        elif flags & VFIO_IRQ_SET_DATA_NONE or data[0]:
            self._set_intx_masked(False)

    def _set_intx_masked(self, masked: bool) -> None:
        """vfio_pci_intx_mask/unmask(): with PCI 2.3 masking, through DisINTx."""
        self.intx_masked = masked
        cmd = self.dev.config.r16(0x04)
        self.dev.config.w16(0x04, cmd | PCI_COMMAND_INTX_DISABLE if masked else cmd & ~PCI_COMMAND_INTX_DISABLE)

    def _intx_trigger(self, index, start, count, flags, data) -> None:
        is_intx = self.irq_type == VFIO_PCI_INTX_IRQ_INDEX
        if is_intx and not count and flags & VFIO_IRQ_SET_DATA_NONE:
            self._intx_disable()
            return
        if not (is_intx or self.is_none()) or start != 0 or count != 1:
            raise SysfsError(errno.EINVAL)
        if flags & VFIO_IRQ_SET_DATA_EVENTFD:
            if is_intx:
                self.ctx[0] = _eventfd(data[0])
                return
            trigger = _eventfd(data[0])                  # vfio_intx_enable + vfio_intx_set_signal
            if not self.dev.irq:
                raise SysfsError(errno.ENODEV)
            self.irq_type, self.ctx = VFIO_PCI_INTX_IRQ_INDEX, [trigger]
            return
        if not is_intx:
            raise SysfsError(errno.EINVAL)
        if flags & VFIO_IRQ_SET_DATA_NONE or data[0]:
            self._signal(0)                              # vfio_send_intx_eventfd: loopback

    def _intx_disable(self) -> None:
        self.intx_unmask_fd = None
        self.irq_type, self.ctx = VFIO_PCI_NUM_IRQS, []

    # --- MSI / MSI-X (vfio_pci_set_msi_trigger) ------------------------------------------------------
    def _msi_trigger(self, index, start, count, flags, data) -> None:
        msix = index == VFIO_PCI_MSIX_IRQ_INDEX
        if self.irq_type == index and not count and flags & VFIO_IRQ_SET_DATA_NONE:
            self._msi_disable(msix)
            return
        if not (self.irq_type == index or self.is_none()):
            raise SysfsError(errno.EINVAL)
        if flags & VFIO_IRQ_SET_DATA_EVENTFD:
            if self.irq_type == index:
                self._msi_set_block(start, count, data, msix)
                return
            self._msi_enable(start + count, msix)
            try:
                self._msi_set_block(start, count, data, msix)
            except SysfsError:
                self._msi_disable(msix)
                raise
            return
        if self.irq_type != index or start + count > self.num_ctx:
            raise SysfsError(errno.EINVAL)
        for i in range(start, start + count):           # loopback: DATA_NONE, or the BOOLs set
            if flags & VFIO_IRQ_SET_DATA_NONE or data[i - start]:
                self._signal(i)

    def _msi_enable(self, nvec: int, msix: bool) -> None:
        """vfio_msi_enable(): pci_alloc_irq_vectors() takes remappable IRTEs (parked until
        request_irq) and programs the capability with remappable-format messages."""
        if not self.is_none() or nvec <= 0:
            raise SysfsError(errno.EINVAL)
        t = self.m.irq_remap
        dev, cfg = self.dev, self.dev.config
        if t is not None:
            self.irte = t.alloc_msi(dev, nvec, "msix" if msix else "msi", requested=False)
            msgs = [t.dev_message(dev, n) for n in range(nvec)]
        else:                                            # no remapping: compatibility format to CPU 0
            self.irte = []
            msgs = [(0xFEE00000, 0x21 + n) for n in range(nvec)]
        cfg.w16(0x04, cfg.r16(0x04) | PCI_COMMAND_INTX_DISABLE)   # pci_intx_for_msi()
        if msix:
            pos = dev.caps[C.CAP_MSIX]
            self.msix_table = msgs
            cfg.w16(pos + 2, (cfg.r16(pos + 2) | PCI_MSIX_FLAGS_ENABLE) & ~PCI_MSIX_FLAGS_MASKALL)
        else:
            pos = dev.caps[C.CAP_MSI]
            flags = cfg.r16(pos + 2)
            addr, data = msgs[0]
            cfg.w32(pos + 4, addr & 0xFFFFFFFF)
            if flags & PCI_MSI_FLAGS_64BIT:
                cfg.w32(pos + 8, addr >> 32)
                cfg.w16(pos + 12, data)
            else:
                cfg.w16(pos + 8, data)
            mme = (nvec - 1).bit_length()
            cfg.w16(pos + 2, (flags & ~PCI_MSI_FLAGS_QSIZE) | mme << 4 | PCI_MSI_FLAGS_ENABLE)
            self.msi_qmax = mme
        self.irq_type = VFIO_PCI_MSIX_IRQ_INDEX if msix else VFIO_PCI_MSI_IRQ_INDEX
        self.ctx = [None] * nvec
        irqs.vfio_enable(self.m, dev, nvec, msix)        # msi_irqs/, the `interrupts` lines

    def _msi_set_block(self, start: int, count: int, fds, msix: bool) -> None:
        if start >= self.num_ctx or start + count > self.num_ctx:
            raise SysfsError(errno.EINVAL)
        j = start
        try:
            for i in range(count):
                self._msi_set_vector_signal(j, fds[i] if fds else None)
                j += 1
        except SysfsError:
            for k in range(j, start - 1, -1):            # undo what this call set
                self._msi_set_vector_signal(k, None)
            raise

    def _msi_set_vector_signal(self, vector: int, fd) -> None:
        """free_irq() of the old eventfd, request_irq() with the new one."""
        t = self.m.irq_remap
        if self.ctx[vector] is not None:
            if t is not None and self.irte:
                t.free_irq(self.irte[vector])
            self.ctx[vector] = None
        trigger = _eventfd(fd)
        if trigger is None:
            return
        if t is not None and self.irte:
            t.request_irq(self.irte[vector], trigger.signal)     # vfio_msihandler signals it
        self.ctx[vector] = trigger

    def _msi_disable(self, msix: bool) -> None:
        """vfio_msi_disable(): every vector de-assigned, pci_free_irq_vectors() frees the
        IRTEs, the capability is disabled and INTx allowed again."""
        for v in range(self.num_ctx):
            self._msi_set_vector_signal(v, None)
        t = self.m.irq_remap
        if t is not None:
            t.free_msi(self.dev)
        irqs.vfio_disable(self.m, self.dev)
        cfg = self.dev.config
        if msix:
            pos = self.dev.caps[C.CAP_MSIX]
            cfg.w16(pos + 2, cfg.r16(pos + 2) & ~PCI_MSIX_FLAGS_ENABLE)
        else:
            pos = self.dev.caps[C.CAP_MSI]
            cfg.w16(pos + 2, cfg.r16(pos + 2) & ~(PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE))
        cfg.w16(0x04, cfg.r16(0x04) & ~PCI_COMMAND_INTX_DISABLE)
        self.irq_type, self.ctx, self.irte, self.msix_table = VFIO_PCI_NUM_IRQS, [], [], []

    # --- ERR / REQ (vfio_pci_set_ctx_trigger_single) --------------------------------------------------
    def _err_req_trigger(self, index, start, count, flags, data) -> None:
        if start != 0 or count > 1:
            raise SysfsError(errno.EINVAL)
        name = "err_trigger" if index == VFIO_PCI_ERR_IRQ_INDEX else "req_trigger"
        cur = getattr(self, name)
        if flags & VFIO_IRQ_SET_DATA_NONE:
            if cur is not None:
                if count:
                    cur.signal()
                else:
                    setattr(self, name, None)
            return
        if not count:
            raise SysfsError(errno.EINVAL)
        if flags & VFIO_IRQ_SET_DATA_BOOL:
            if data[0] and cur is not None:
                cur.signal()
            return
        fd = data[0]
        if fd is None or fd == -1:
            setattr(self, name, None)
        elif not (isinstance(fd, int) and fd < 0):       # other negative fds: nothing changes
            setattr(self, name, _eventfd(fd))

    # --- the device raises a vector --------------------------------------------------------------------
    def _signal(self, vector: int) -> None:
        if vector < self.num_ctx and self.ctx[vector] is not None:
            self.ctx[vector].signal()

    def message(self, n: int) -> tuple[int, int] | None:
        """The message the device sends for vector n, from its capability or MSI-X table;
        None when the function cannot send it (disabled, masked, not bus master)."""
        cfg = self.dev.config
        if not cfg.r16(0x04) & PCI_COMMAND_MASTER:
            return None
        if self.irq_type == VFIO_PCI_MSIX_IRQ_INDEX:
            pos = self.dev.caps[C.CAP_MSIX]
            ctrl = cfg.r16(pos + 2)
            if not ctrl & PCI_MSIX_FLAGS_ENABLE or ctrl & PCI_MSIX_FLAGS_MASKALL:
                return None
            return self.msix_table[n]
        pos = self.dev.caps[C.CAP_MSI]
        flags = cfg.r16(pos + 2)
        nvec = 1 << ((flags & PCI_MSI_FLAGS_QSIZE) >> 4)
        if not flags & PCI_MSI_FLAGS_ENABLE or n >= nvec:
            return None
        addr = cfg.r32(pos + 4)
        if flags & PCI_MSI_FLAGS_64BIT:
            addr |= cfg.r32(pos + 8) << 32
            data = cfg.r16(pos + 12)
        else:
            data = cfg.r16(pos + 8)
        return addr, (data & ~(nvec - 1)) | n            # multiple message: low data bits carry n

    def raise_vector(self, n: int, source=None):
        """The device raises MSI/MSI-X vector n (source: another requester id, to model a
        spoofed message). The message goes through interrupt remapping; when it reaches
        the host, vfio_msihandler() signals the eventfd registered for that irq.
        Returns the remapping result (MsiResult), or None when nothing was sent."""
        if self.irq_type not in (VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX) or not 0 <= n < self.num_ctx:
            raise SysfsError(errno.EINVAL)
        msg = self.message(n)
        if msg is None:
            return None
        t = self.m.irq_remap
        if t is None:
            self._signal(n)
            return None
        result = t.deliver_msi(self.dev if source is None else source, *msg)
        t.handle(result)
        return result
