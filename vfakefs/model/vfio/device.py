"""A vfio-pci device as its device fd sees it (drivers/vfio/pci/vfio_pci_core.c,
vfio_pci_config.c; include/uapi/linux/vfio.h): the info ioctls, the regions, config
space through vfio's virtualization, reset. Interrupts are in intrs.py.

The ioctls take and return plain values mirroring the uapi structs; argsz is checked
as the kernel checks it (smaller than the struct's fixed part: EINVAL). Errors are
SysfsError(errno), which the adapters turn into the caller's errno.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

from vfakefs.model.errors import SysfsError
from vfakefs.model.pci import config as C
from vfakefs.model.pci.pci import IORESOURCE_IO, IORESOURCE_MEM, IORESOURCE_MEM_64, IORESOURCE_PREFETCH
from vfakefs.model.vfio import vf_token
from vfakefs.model.vfio.feature import FEATURE_MINSZ, device_feature
from vfakefs.model.vfio.intrs import VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_NONE, VfioIrqs

# uapi/linux/vfio.h
VFIO_DEVICE_FLAGS_RESET, VFIO_DEVICE_FLAGS_PCI = 1 << 0, 1 << 1
VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE = 1 << 0, 1 << 1
VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_CAPS = 1 << 2, 1 << 3
VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = 3
VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR5_REGION_INDEX = 0, 5
VFIO_PCI_ROM_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_VGA_REGION_INDEX = 6, 7, 8
VFIO_PCI_NUM_REGIONS = 9
VFIO_PCI_OFFSET_SHIFT = 40
VFIO_PCI_OFFSET_MASK = (1 << VFIO_PCI_OFFSET_SHIFT) - 1
PAGE_SIZE = 4096

# sizes of the uapi structs: offsetofend() of the last field the kernel requires
DEVICE_INFO_MINSZ = 16          # argsz, flags, num_regions, num_irqs
REGION_INFO_MINSZ = 32          # argsz, flags, index, cap_offset, size, offset
CAP_HEADER_SIZE = 8             # struct vfio_info_cap_header: id, version, next

# command register bits vfio virtualizes (init_pci_cap_basic_perm)
PCI_COMMAND_IO, PCI_COMMAND_MEMORY, PCI_COMMAND_INTX_DISABLE = 0x1, 0x2, 0x400
PCI_STD_HEADER_SIZEOF = 64
PCI_ROM_ADDRESS_ENABLE = 0x1


def VFIO_PCI_INDEX_TO_OFFSET(index: int) -> int:
    return index << VFIO_PCI_OFFSET_SHIFT


@dataclass
class DeviceInfo:
    argsz: int
    flags: int
    num_regions: int
    num_irqs: int
    cap_offset: int = 0


@dataclass
class RegionInfo:
    argsz: int
    flags: int
    index: int
    cap_offset: int
    size: int
    offset: int
    caps: tuple = ()            # (cap id, version) of the capability chain, if any


class VfioPciDevice:
    """One open vfio-pci device (vfio_pci_core_enable() ran: config virtualization set up)."""

    def __init__(self, m, dev, group):
        self.m, self.dev, self.group = m, dev, group
        # vfio_pci_core_enable(): reset_works is whether a reset method probes
        self.reset_works = bool(dev.reset_methods)
        self.has_vga = dev.class_code >> 8 == 0x0300          # vfio_pci_is_vga()
        self.msix_bar = self._msix_bar()
        self.bar_mmap_supported = [self._mmap_ok(i) for i in range(6)]
        self._init_config()
        self.saved_state = bytes(dev.config.bytes)   # pci_save_state() at open, restored at close
        self.irqs = VfioIrqs(self)
        self.opens = 1                 # device->open_count: GET_DEVICE_FD again shares this state
        self.owner = None              # the driver's module this open holds (group.get_device_fd)
        self.closed = False
        self.pm_runtime_engaged, self.pm_wake_eventfd = False, None     # low power (feature.py)
        # vfio_pci_core_finish_enable(): a VF of a vfio-pci PF is one more user of its token
        self.sriov_pf = vf_token.sriov_pf_core_dev(dev)
        if self.sriov_pf is not None:
            self.sriov_pf.vf_token.users += 1

    def close(self) -> None:
        """vfio_pci_core_close_device() / vfio_pci_core_disable(): bus mastering off, the
        active interrupts disabled (their IRTEs freed), ERR/REQ eventfds dropped, the
        config state saved at open restored, then pci_disable_device() clears the master
        bit again. Idempotent: the last close of the device fd calls it once; with
        several opens, the last of them."""
        if self.closed:
            return
        self.opens -= 1
        if self.opens > 0:
            return
        self.closed = True
        if self.sriov_pf is not None and self.sriov_pf.vf_token is not None:
            self.sriov_pf.vf_token.users -= 1                      # vfio_pci_core_close_device()
        self.runtime_pm_exit()                                     # vfio_pci_core_disable()
        cfg = self.dev.config
        cfg.w16(0x04, cfg.r16(0x04) & ~0x4)                       # pci_clear_master()
        irqs = self.irqs
        if not irqs.is_none():
            irqs.set_irqs(irqs.irq_type, 0, 0, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER)
        irqs.err_trigger = irqs.req_trigger = None
        cfg.bytes[:] = self.saved_state                            # pci_restore_state()
        cfg.w16(0x04, cfg.r16(0x04) & ~0x4)                       # pci_disable_device()
        if self.group is not None:
            self.group.device_closed(self)   # vfio_device_fops_release: the group's user goes

    # --- DEVICE_GET_INFO / GET_REGION_INFO (vfio_pci_ioctl_get_info, _get_region_info) ---------------
    def get_info(self, argsz: int = 24) -> DeviceInfo:
        if argsz < DEVICE_INFO_MINSZ:
            raise SysfsError(errno.EINVAL)
        flags = VFIO_DEVICE_FLAGS_PCI | (VFIO_DEVICE_FLAGS_RESET if self.reset_works else 0)
        return DeviceInfo(argsz, flags, VFIO_PCI_NUM_REGIONS, self.irqs.NUM_IRQS)

    def get_region_info(self, index: int, argsz: int = REGION_INFO_MINSZ) -> RegionInfo:
        if argsz < REGION_INFO_MINSZ:
            raise SysfsError(errno.EINVAL)
        dev, flags, size, caps = self.dev, 0, 0, ()
        rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE
        if index == VFIO_PCI_CONFIG_REGION_INDEX:
            size, flags = dev.config.size, rw
        elif VFIO_PCI_BAR0_REGION_INDEX <= index <= VFIO_PCI_BAR5_REGION_INDEX:
            size = dev.bars[index].size
            if size:
                flags = rw
                if self.bar_mmap_supported[index]:
                    flags |= VFIO_REGION_INFO_FLAG_MMAP
                    if index == self.msix_bar:          # msix_mmappable_cap()
                        caps = ((VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1),)
        elif index == VFIO_PCI_ROM_REGION_INDEX:
            # only a ROM whose image pci_map_rom() accepts; the BAR's size, not the image's
            if dev.rom.start and dev.map_rom() is not None:
                size, flags = dev.rom.size, VFIO_REGION_INFO_FLAG_READ
        elif index == VFIO_PCI_VGA_REGION_INDEX:
            if not self.has_vga:
                raise SysfsError(errno.EINVAL)
            size, flags = 0xC0000, rw
        else:
            raise SysfsError(errno.EINVAL)
        cap_offset = 0
        if caps:
            # vfio_info_add_capability(): the chain follows the struct when argsz has room,
            # else argsz says how much room it needs
            flags |= VFIO_REGION_INFO_FLAG_CAPS
            need = REGION_INFO_MINSZ + CAP_HEADER_SIZE * len(caps)
            if argsz < need:
                argsz = need
            else:
                cap_offset = REGION_INFO_MINSZ
        return RegionInfo(argsz, flags, index, cap_offset, size, VFIO_PCI_INDEX_TO_OFFSET(index), caps)

    def _msix_bar(self) -> int:
        pos = self.dev.caps.get(C.CAP_MSIX)
        return self.dev.config.r32(pos + 4) & 0x7 if pos is not None else 0xFF

    def _mmap_ok(self, i: int) -> bool:
        """vfio_pci_core_enable(): memory BARs of at least a page, or smaller ones starting
        on a page (the rest of the page is reserved with a dummy resource)."""
        res = self.dev.bars[i]
        if not res.flags & IORESOURCE_MEM or not res.size:
            return False
        return res.size >= PAGE_SIZE or not res.start & (PAGE_SIZE - 1)

    # --- DEVICE_RESET (vfio_pci_core_ioctl_reset) -------------------------------------------------------
    def reset(self) -> None:
        if not self.reset_works:
            raise SysfsError(errno.EINVAL)
        # pci_try_reset_function(): saved state restored, so config reads as before
        self.m.reset_function(self.dev)

    # --- interrupts (intrs.py) ----------------------------------------------------------------------------
    def get_irq_info(self, index: int, argsz: int = 16):
        return self.irqs.get_irq_info(index, argsz)

    def set_irqs(self, index: int, start: int, count: int, flags: int, data=None, argsz: int | None = None):
        return self.irqs.set_irqs(index, start, count, flags, data, argsz)

    def raise_vector(self, n: int, source=None):
        return self.irqs.raise_vector(n, source)

    # --- VFIO_DEVICE_FEATURE (feature.py) ---------------------------------------------------------------
    def feature(self, flags: int, argsz: int | None = None, data=b"", fdget=None) -> None:
        """VFIO_DEVICE_FEATURE: flags names the feature and GET/SET/PROBE; data is data[]
        (bytes or a reader); argsz defaults to the header and data."""
        if argsz is None:
            argsz = FEATURE_MINSZ + (0 if callable(data) else len(data))
        device_feature(self, flags, argsz, data, fdget)

    def runtime_resume(self) -> None:
        """vfio_pci_core_runtime_resume(): with a wake-up eventfd, signal it and leave low power."""
        if self.pm_wake_eventfd is not None:
            efd = self.pm_wake_eventfd
            self.runtime_pm_exit()
            efd.signal()

    def runtime_pm_exit(self) -> None:
        """__vfio_pci_runtime_pm_exit(): low power off, the wake-up eventfd dropped."""
        self.pm_runtime_engaged, self.pm_wake_eventfd = False, None

    # --- region read/write (vfio_pci_rw) ------------------------------------------------------------------
    def read(self, offset: int, count: int) -> bytes:
        index, pos = offset >> VFIO_PCI_OFFSET_SHIFT, offset & VFIO_PCI_OFFSET_MASK
        if index == VFIO_PCI_CONFIG_REGION_INDEX:
            return self.config_read(pos, count)
        if index == VFIO_PCI_ROM_REGION_INDEX:
            return self._rom_read(pos, count)
        raise SysfsError(errno.EINVAL)     # BARs and VGA: not modelled through read()

    def write(self, offset: int, data: bytes) -> int:
        index, pos = offset >> VFIO_PCI_OFFSET_SHIFT, offset & VFIO_PCI_OFFSET_MASK
        if index == VFIO_PCI_CONFIG_REGION_INDEX:
            return self.config_write(pos, data)
        raise SysfsError(errno.EINVAL)     # the ROM is read-only; BARs and VGA not modelled here

    def _rom_read(self, pos: int, count: int) -> bytes:
        """vfio_pci_bar_rw() on the ROM: past the end EINVAL, else a short read at the end."""
        info = self.get_region_info(VFIO_PCI_ROM_REGION_INDEX)
        if pos >= info.size:
            raise SysfsError(errno.EINVAL)
        return self.dev.rom_contents()[pos:min(pos + count, info.size)]

    # --- config space (vfio_pci_config.c) -----------------------------------------------------------------
    def _init_config(self) -> None:
        """vfio_config_init(): vconfig starts as a copy of the hardware's; the permission
        tables say per bit whether reads come from vconfig (virt) and whether writes are
        taken (write); virtualized written bits go to vconfig, the others to the device."""
        cfg = self.dev.config
        n = cfg.size
        self.vconfig = bytearray(cfg.bytes)
        self.virt, self.wmask = bytearray(n), bytearray(n)
        self.assigned = bytearray(n)         # 1 inside the header or a capability
        self.assigned[:PCI_STD_HEADER_SIZEOF] = b"\1" * PCI_STD_HEADER_SIZEOF
        self.bardirty = True
        # init_pci_cap_basic_perm()
        self._perm(0x00, 4, 0xFFFFFFFF, 0)                               # vendor, device
        self._perm(0x04, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_IO | PCI_COMMAND_INTX_DISABLE, 0xFFFF)
        for off in (0x0C, 0x0D, 0x0F):                                   # cache line, latency, BIST
            self._perm(off, 1, 0, 0xFF)
        for off in range(0x10, 0x28, 4):                                 # BARs
            self._perm(off, 4, 0xFFFFFFFF, 0xFFFFFFFF)
        self._perm(0x28, 4, 0xFFFFFFFF, 0)                               # CardBus CIS
        self._perm(0x2C, 4, 0xFFFFFFFF, 0)                               # subsystem ids
        self._perm(0x30, 4, 0xFFFFFFFF, 0xFFFFFFFF)                      # ROM
        self._perm(0x34, 1, 0xFF, 0)                                     # capability pointer
        self._perm(0x3C, 1, 0xFF, 0xFF)                                  # interrupt line
        self._perm(0x3D, 1, 0xFF, 0)                                     # interrupt pin
        if not self.dev.irq:
            self.vconfig[0x3D] = 0                                       # no INTx to offer
        for cid, pos in cfg.caps():
            length = self._cap_len(cid, pos)
            self.assigned[pos:pos + length] = b"\1" * length
            self._perm(pos, 2, 0xFFFF, 0)                                # id and next: virtualized
            if cid == C.CAP_MSI:                                         # init_pci_cap_msi_perm()
                flags = cfg.r16(pos + 2)
                self._perm(pos + 2, 1, 0xFF, 0xFF)                       # flags, low byte only
                self._perm(pos + 4, 4, 0xFFFFFFFF, 0xFFFFFFFF)           # address
                data = pos + 8
                if flags & 0x80:
                    self._perm(pos + 8, 4, 0xFFFFFFFF, 0xFFFFFFFF)       # upper address
                    data = pos + 12
                self._perm(data, 2, 0xFFFF, 0xFFFF)
                if flags & 0x100:
                    self._perm(data + 4, 8, 0, 2**64 - 1)                # mask and pending: the device's
            elif cid == C.CAP_PM:                                        # init_pci_cap_pm_perm()
                self._perm(pos + 4, 4, 0, ~0x3 & 0xFFFFFFFF)             # PMCSR, but the power state
            elif cid == C.CAP_PCIE:                                      # init_pci_cap_exp_perm()
                # DevCtl: FLR, max payload and read request virtualized, phantom functions never
                self._perm(pos + 8, 2, 0x8000 | 0x00E0 | 0x7000, ~0x0200 & 0xFFFF)
                self._perm(pos + 0x28, 2, 0, ~0x0020 & 0xFFFF)           # DevCtl2, but ARI forwarding
            elif cid == C.CAP_MSIX:                                      # init_pci_cap_msix_perm()
                self._perm(pos + 2, 2, 0xC000, 0xC000)                   # MASKALL | ENABLE
        for cid, pos in cfg.ext_caps():
            length = self._ext_cap_len(cid, pos)
            self.assigned[pos:pos + length] = b"\1" * length
            self._perm(pos, 4, 0xFFFFFFFF, 0)                            # header: virtualized

    def _perm(self, off: int, n: int, virt: int, write: int) -> None:
        self.virt[off:off + n] = virt.to_bytes(n, "little")
        self.wmask[off:off + n] = write.to_bytes(n, "little")

    def _cap_len(self, cid: int, pos: int) -> int:
        """vfio_cap_len() / pci_cap_length[]: how far a capability's fields reach."""
        if cid == C.CAP_MSI:
            flags = self.dev.config.r16(pos + 2)
            return 10 + (4 if flags & 0x80 else 0) + (10 if flags & 0x100 else 0)
        if cid == 0x09:                                  # vendor specific: its own length byte
            return max(3, self.dev.config.r8(pos + 2))
        return {C.CAP_PM: 8, C.CAP_MSIX: 12, C.CAP_PCIE: 0x3C, C.CAP_SSVID: 8}.get(cid, 4)

    @staticmethod
    def _ext_cap_len(cid: int, pos: int) -> int:
        return {C.EXT_AER: 0x48, C.EXT_ACS: 8, C.EXT_ARI: 8, C.EXT_SRIOV: 0x40}.get(cid, 4)

    def _check(self, pos: int, count: int) -> None:
        # vfio_config_do_rw(): the whole access must lie inside config space
        if pos < 0 or count < 0 or pos >= self.dev.config.size or pos + count > self.dev.config.size:
            raise SysfsError(errno.EFAULT)

    def config_read(self, pos: int, count: int) -> bytes:
        """The config region as the user reads it: virtualized bits from vconfig, the
        rest from the device; unassigned space (between capabilities) raw."""
        self._check(pos, count)
        if self.bardirty and pos < 0x34 and pos + count > 0x10:
            self._bar_fixup()
        # a surprise-removed device answers all ones; virtualized bits are vfio-pci's own
        phys = b"\xff" * len(self.dev.config.bytes) if self.dev.disconnected else self.dev.config.bytes
        out = bytearray(count)
        for i in range(count):
            o = pos + i
            if not self.assigned[o]:
                out[i] = phys[o]                       # unassigned_perms: vfio_raw_config_read
            else:
                v = self.virt[o]
                out[i] = (self.vconfig[o] & v) | (phys[o] & ~v & 0xFF)
        return bytes(out)

    def config_write(self, pos: int, data: bytes) -> int:
        """vfio_default_config_write(): written virtualized bits land in vconfig, written
        hardware bits go to the device (pci_user_write_config); the rest is dropped."""
        self._check(pos, len(data))
        phys_changes = {}
        for i, b in enumerate(data):
            o = pos + i
            if not self.assigned[o]:
                phys_changes[o] = b                    # vfio_raw_config_write
                continue
            v, w = self.virt[o], self.wmask[o]
            if w & v:
                self.vconfig[o] = (self.vconfig[o] & ~(w & v) & 0xFF) | (b & w & v)
            if w & ~v & 0xFF:
                cur = self.dev.config.bytes[o]
                phys_changes[o] = (cur & ~(w & ~v) & 0xFF) | (b & w & ~v)
        for o, b in sorted(phys_changes.items()):
            self.m.config_write(self.dev, o, bytes([b]))
        msi = self.dev.caps.get(C.CAP_MSI)
        if msi is not None and pos <= msi + 2 < pos + len(data):
            self._msi_flags_written(msi)
        exp = self.dev.pcie_cap
        if exp is not None and pos <= exp + 9 < pos + len(data) and self.vconfig[exp + 9] & 0x80:
            # vfio_exp_config_write(): Initiate FLR is virtual; with FLR support it resets
            self.vconfig[exp + 9] &= 0x7F
            if self.dev.config.r32(exp + 4) & 1 << 28:                  # DevCap: FLR capable
                self.m.reset_function(self.dev)
        if pos < 0x34 and pos + len(data) > 0x10:
            self.bardirty = True                       # a BAR was written: size it on next read
        return len(data)

    def _msi_flags_written(self, msi: int) -> None:
        """vfio_msi_config_write(): enable only while MSI is on through SET_IRQS, the queue
        size at most what SET_IRQS allocated; the result goes to vconfig and the device."""
        flags = self.vconfig[msi + 2] | self.vconfig[msi + 3] << 8
        if self.irqs.irq_type != 1:                    # VFIO_PCI_MSI_IRQ_INDEX: MSI is enabled via ioctl
            flags &= ~0x1
        if (flags & 0x70) >> 4 > self.irqs.msi_qmax:
            flags = flags & ~0x70 | self.irqs.msi_qmax << 4
        self.vconfig[msi + 2:msi + 4] = flags.to_bytes(2, "little")
        self.m.config_write(self.dev, msi + 2, flags.to_bytes(2, "little"))

    def _bar_fixup(self) -> None:
        """vfio_bar_fixup(): each BAR reads back as what was written, masked to its size,
        with the type bits: writing all ones then reading gives the size mask."""
        dev, vc = self.dev, self.vconfig
        i = 0
        while i < 6:
            off = 0x10 + 4 * i
            res = dev.bars[i]
            if not res.size:
                vc[off:off + 4] = bytes(4)
                i += 1
                continue
            mask = ~(res.size - 1) & (2**64 - 1)
            if res.flags & IORESOURCE_IO:
                flags = 0x1                                             # PCI_BASE_ADDRESS_SPACE_IO
            else:
                flags = (0x8 if res.flags & IORESOURCE_PREFETCH else 0) | (0x4 if res.flags & IORESOURCE_MEM_64 else 0)
            lo = int.from_bytes(vc[off:off + 4], "little") & mask | flags
            vc[off:off + 4] = (lo & 0xFFFFFFFF).to_bytes(4, "little")
            if res.flags & IORESOURCE_MEM_64 and i < 5:
                hi = int.from_bytes(vc[off + 4:off + 8], "little") & (mask >> 32)
                vc[off + 4:off + 8] = (hi & 0xFFFFFFFF).to_bytes(4, "little")
                i += 1
            i += 1
        if dev.rom.size:
            rmask = (~(dev.rom.size - 1) | PCI_ROM_ADDRESS_ENABLE) & 0xFFFFFFFF
            vc[0x30:0x34] = (int.from_bytes(vc[0x30:0x34], "little") & rmask).to_bytes(4, "little")
        else:
            vc[0x30:0x34] = bytes(4)
        self.bardirty = False
