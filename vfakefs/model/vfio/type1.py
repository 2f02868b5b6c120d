"""The type1 IOMMU backend (drivers/vfio/vfio_iommu_type1.c) on a VT-d unit.

Attaching a group gives it the container's VFIO-owned domain (IOMMU_DOMAIN_UNMANAGED,
a DID of its own); MAP_DMA pins the user's pages (host addresses from the Machine's
allocator, remembered in m.vfio_pins so device DMA can reach the program) and fills the
domain's second-level tables; UNMAP_DMA clears them and queues page-selective IOTLB
invalidations. One unit, so one domain: every group of a container shares it, as
vfio_iommu_type1_attach_group() reuses a compatible domain.
"""
from __future__ import annotations

import bisect
import errno
import struct
from dataclasses import dataclass

from vfakefs.model.errors import SysfsError
from vfakefs.model.intel.dmar import Domain
from vfakefs.model.iommu import iommu
from vfakefs.model.kmsg import KERN_WARNING
from vfakefs.model.vfio.memory import Mm

PAGE = 4096
U64 = (1 << 64) - 1
DMA_ENTRY_LIMIT = 65535                # the dma_entry_limit module parameter (U16_MAX)
# vfio_iommu_type1's module parameters and their defaults (all 0644 in sysfs): the kernel reads
# allow_unsafe_interrupts at each group attach, dma_entry_limit at SET_IOMMU
# (vfio_iommu_type1_open) and disable_hugepages at each MAP_DMA's pinning
MODULE = "vfio_iommu_type1"
PARAMETERS = {"allow_unsafe_interrupts": False, "disable_hugepages": False, "dma_entry_limit": DMA_ENTRY_LIMIT}


def module_param(m, name: str):
    """A vfio_iommu_type1 parameter as it is now (/sys/module/vfio_iommu_type1/parameters/)."""
    return m.module_params.get((MODULE, name), PARAMETERS[name])

# uapi/linux/vfio.h
VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU, VFIO_DMA_CC_IOMMU = 1, 3, 4
VFIO_TYPE1_NESTING_IOMMU, VFIO_UNMAP_ALL, VFIO_UPDATE_VADDR = 6, 9, 10
VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_DMA_MAP_FLAG_VADDR = 1, 2, 4
VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, VFIO_DMA_UNMAP_FLAG_ALL, VFIO_DMA_UNMAP_FLAG_VADDR = 1, 2, 4
VFIO_IOMMU_INFO_PGSIZES, VFIO_IOMMU_INFO_CAPS = 1, 2
VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION = 1, 2
VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3
MAP_MINSZ, UNMAP_MINSZ, INFO_MINSZ, INFO_SIZE = 32, 24, 16, 24
DIRTY_BITMAP_SIZE_MAX = ((0x7FFFFFFF + 63) & ~63) // 8      # DIRTY_BITMAP_BYTES(INT_MAX pages)

IR_WARNING = ('vfio_iommu_type1_attach_group: No interrupt remapping support.  Use the module param '
              '"allow_unsafe_interrupts" to enable VFIO IOMMU support on this platform')


def check_extension(iommu_, ext: int) -> int:
    """vfio_iommu_type1_check_extension(); iommu_ is None before SET_IOMMU."""
    if ext in (VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU, VFIO_TYPE1_NESTING_IOMMU, VFIO_UNMAP_ALL):
        return 1
    if ext == VFIO_UPDATE_VADDR:
        return int(iommu_ is not None)        # no emulated (mdev) devices here
    if ext == VFIO_DMA_CC_IOMMU:
        # vfio_domains_have_enforce_cache_coherency: VT-d can force snooping with ECAP.SC
        return int(iommu_ is not None and iommu_.domain is not None and bool(iommu_.unit.ecap & 0x80))
    return 0


def blocking_domain() -> Domain:
    """intel/iommu.c's blocking_domain: context entries cleared, no domain id of its own."""
    return Domain(0, "blocked", None)


def pinned(m, hpa: int):
    """(ProcessMemory, vaddr) behind a host address VFIO pinned, or None."""
    i = bisect.bisect_right(m.vfio_pins, (hpa, U64)) - 1
    if i >= 0:
        start, size, mem, vaddr = m.vfio_pins[i]
        if start <= hpa < start + size:
            return mem, vaddr + hpa - start
    return None


def fault_in(mem, vaddr: int, size: int, write: bool) -> None:
    """pin_user_pages(FOLL_WRITE when the device writes): EFAULT unless every page of
    [vaddr, vaddr+size) is mapped (and writable). A memory without its own check is asked
    for the first and last byte."""
    check = getattr(mem, "fault_in", None)
    if check is not None:
        check(vaddr, size, write)
    else:
        mem.read(vaddr, 1)
        mem.read(vaddr + size - 1, 1)


def _align(iova: int, size: int) -> int:
    """The alignment pinned pages get: hugepage-backed memory is physically aligned
    like its IOVA, so superpages fit where IOVA and size allow them."""
    for span in (1 << 30, 1 << 21):
        if not iova & (span - 1) and size >= span:
            return span
    return PAGE


@dataclass
class VfioDma:
    iova: int
    vaddr: int
    size: int
    prot: int
    hpa: int
    mm: Mm | None = None              # the process charged for the pages (dma->mm)
    lock_cap: bool = False            # its CAP_IPC_LOCK when it mapped (dma->lock_cap)
    vaddr_invalid: bool = False       # UNMAP_DMA(VADDR) took the vaddr away; MAP_DMA(VADDR) gives one


class VfioIommuType1:
    """struct vfio_iommu: the container's backend once SET_IOMMU chose type1."""

    def __init__(self, container, kind: int):
        self.container, self.m = container, container.m
        self.v2 = kind != VFIO_TYPE1_IOMMU         # vfio_iommu_type1_open: NESTING implies v2
        self.nesting = kind == VFIO_TYPE1_NESTING_IOMMU
        self.unit = iommu.unit(self.m)
        self.domain: Domain | None = None
        self.groups: list = []
        self.dma_list: list[VfioDma] = []          # by iova (the kernel's rb-tree)
        self.dma_avail = container.dma_entry_limit if container.dma_entry_limit is not None else \
            module_param(self.m, "dma_entry_limit")
        self.vaddr_invalid_count = 0

    def check_extension(self, ext: int) -> int:
        return check_extension(self, ext)

    # --- groups ------------------------------------------------------------------------------
    def attach_group(self, vgroup) -> None:
        """vfio_iommu_type1_attach_group(): refused (state unchanged) without interrupt
        remapping; else the group moves from its blocking domain into the VFIO domain.
        EBUSY while a mapping has no vaddr: the attach could have to pin pages."""
        if self.vaddr_invalid_count:
            raise SysfsError(errno.EBUSY)
        if self.unit is None:
            raise SysfsError(errno.ENODEV)
        unsafe = self.container.allow_unsafe_interrupts
        if unsafe is None:
            unsafe = module_param(self.m, "allow_unsafe_interrupts")
        if not unsafe and not self.m.interrupt_remapping:
            self.m.kmsg.log(IR_WARNING, KERN_WARNING)
            raise SysfsError(errno.EPERM)
        if self.domain is None:
            self.domain = self.unit.new_domain("unmanaged")
        iommu.set_group_domain(self.unit, vgroup.group, self.domain)
        self.groups.append(vgroup)

    def detach_group(self, vgroup) -> None:
        """vfio_iommu_type1_detach_group(): back to the blocking domain; with the last
        group the mappings are unpinned and the domain freed (no device left to flush for)."""
        self.groups.remove(vgroup)
        iommu.set_group_domain(self.unit, vgroup.group, blocking_domain())
        if not self.groups:
            for dma in list(self.dma_list):
                self._remove_dma(dma, flush=False)
            self.unit.free_domain(self.domain)
            self.domain = None

    # --- IOVA ranges ---------------------------------------------------------------------------
    def iova_ranges(self) -> list[tuple[int, int]]:
        """iommu->iova_list: the aperture less every group's reserved regions, relaxable
        direct mappings excepted (vfio_iommu_resv_exclude)."""
        width = min(self.unit.mgaw, 12 + 9 * self.unit.levels)
        ranges = [(0, (1 << width) - 1)]
        for vg in self.groups:
            for start, end, kind in vg.group.reserved_regions():
                if kind == "direct-relaxable":
                    continue
                out = []
                for lo, hi in ranges:
                    if end < lo or start > hi:
                        out.append((lo, hi))
                        continue
                    if lo < start:
                        out.append((lo, start - 1))
                    if end < hi:
                        out.append((end + 1, hi))
                ranges = out
        return ranges

    def _iova_valid(self, start: int, end: int) -> bool:
        return any(lo <= start and end <= hi for lo, hi in self.iova_ranges())

    def find_dma(self, start: int, size: int) -> VfioDma | None:
        """vfio_find_dma(): a mapping overlapping [start, start+size)."""
        return next((d for d in self.dma_list if d.iova < start + size and start < d.iova + d.size), None)

    # --- MAP_DMA ---------------------------------------------------------------------------------
    def map_dma(self, vaddr: int, iova: int, size: int,
                flags: int = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE, argsz: int = MAP_MINSZ,
                mm: Mm | None = None) -> None:
        """vfio_iommu_type1_map_dma() + vfio_dma_do_map(), checks in the kernel's order.
        mm is the calling process's (default: the container's opener): it pays for the pages."""
        mm = mm if mm is not None else self.container.mm
        mask = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE | VFIO_DMA_MAP_FLAG_VADDR
        if argsz < MAP_MINSZ or flags & ~mask:
            raise SysfsError(errno.EINVAL)
        prot = flags & (VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE)   # = the PTE's R and W
        set_vaddr = bool(flags & VFIO_DMA_MAP_FLAG_VADDR)
        if bool(prot) == set_vaddr:
            raise SysfsError(errno.EINVAL)
        if not size or (size | iova | vaddr) & (PAGE - 1) or max(size, iova, vaddr) > U64:
            raise SysfsError(errno.EINVAL)
        if iova + size - 1 > U64 or vaddr + size - 1 > U64:          # IOVA or vaddr wrap
            raise SysfsError(errno.EINVAL)
        dma = self.find_dma(iova, size)
        if set_vaddr:
            self._set_vaddr(dma, vaddr, iova, size, mm)
            return
        if dma is not None:
            raise SysfsError(errno.EEXIST)
        if not self.dma_avail:
            raise SysfsError(errno.ENOSPC)
        if not self._iova_valid(iova, iova + size - 1):
            raise SysfsError(errno.EINVAL)
        dma = VfioDma(iova, vaddr, size, prot, 0, mm, mm.cap_ipc_lock)   # capable(CAP_IPC_LOCK) now
        dma.hpa = self._pin_pages(dma)
        # disable_hugepages: vfio_pin_pages_remote pins one page at a time, so each
        # iommu_map is 4 KiB and the domain gets no superpage
        self.domain.table.map(iova, dma.hpa, size, prot, superpages=not module_param(self.m, "disable_hugepages"))
        if self.unit.cap & 0x80:                     # caching mode: non-present entries are cached
            self.unit.invalidate_pages(self.domain.did, iova, size)
        bisect.insort(self.dma_list, dma, key=lambda d: d.iova)
        bisect.insort(self.m.vfio_pins, (dma.hpa, size, mm.memory, vaddr), key=lambda p: p[0])
        self.dma_avail -= 1

    def _pin_pages(self, dma: VfioDma) -> int:
        """vfio_pin_pages_remote(): the pages must exist, and be writable for a mapping the
        device writes (EFAULT), and fit the mm's RLIMIT_MEMLOCK unless CAP_IPC_LOCK (ENOMEM,
        logged); then vfio_lock_acct() charges them. The host addresses the pages have."""
        mm = dma.mm
        if mm.memory is not None:
            fault_in(mm.memory, dma.vaddr, dma.size, bool(dma.prot & VFIO_DMA_MAP_FLAG_WRITE))
        npage = dma.size // PAGE
        limit = mm.limit_pages()
        if not dma.lock_cap and limit is not None and mm.locked_vm + npage > limit:
            self.m.kmsg.log(f"vfio_pin_pages_remote: RLIMIT_MEMLOCK ({limit * PAGE}) exceeded", KERN_WARNING)
            raise SysfsError(errno.ENOMEM)
        mm.account(npage, dma.lock_cap)
        return self.m.alloc_host_memory(dma.size, align=_align(dma.iova, dma.size), owner="vfio")

    def _set_vaddr(self, dma: VfioDma | None, vaddr: int, iova: int, size: int, mm: Mm) -> None:
        """vfio_dma_do_map()'s VFIO_DMA_MAP_FLAG_VADDR: only a mapping whose vaddr was
        invalidated, given exactly (ENOENT for none, EINVAL otherwise), takes the new vaddr;
        from another process, vfio_change_dma_owner() first moves the charge to its mm (its
        ENOMEM changes nothing). The IOMMU mapping and the pinned pages stay as they were:
        the caller promises the new vaddr maps the same memory, so device DMA goes there."""
        if dma is None:
            raise SysfsError(errno.ENOENT)
        if not dma.vaddr_invalid or dma.iova != iova or dma.size != size:
            raise SysfsError(errno.EINVAL)
        if mm is not dma.mm:
            npage = dma.size // PAGE
            mm.account(npage, mm.cap_ipc_lock)
            dma.mm.account(-npage, dma.lock_cap)
            dma.mm, dma.lock_cap = mm, mm.cap_ipc_lock
        dma.vaddr, dma.vaddr_invalid = vaddr, False
        self.vaddr_invalid_count -= 1
        i = next(i for i, p in enumerate(self.m.vfio_pins) if p[0] == dma.hpa)
        self.m.vfio_pins[i] = (dma.hpa, dma.size, mm.memory, vaddr)

    # --- UNMAP_DMA --------------------------------------------------------------------------------
    def unmap_dma(self, iova: int, size: int, flags: int = 0, argsz: int = UNMAP_MINSZ) -> int:
        """vfio_iommu_type1_unmap_dma() + vfio_dma_do_unmap(): the bytes unmapped."""
        mask = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_ALL | VFIO_DMA_UNMAP_FLAG_VADDR
        if argsz < UNMAP_MINSZ or flags & ~mask:
            raise SysfsError(errno.EINVAL)
        if flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP:
            raise SysfsError(errno.EINVAL)           # dirty tracking is never started here
        invalidate_vaddr = bool(flags & VFIO_DMA_UNMAP_FLAG_VADDR)
        unmap_all = bool(flags & VFIO_DMA_UNMAP_FLAG_ALL)
        if unmap_all:
            if iova or size:
                raise SysfsError(errno.EINVAL)
            size = U64
        elif not size or size & (PAGE - 1) or iova + size - 1 > U64:
            raise SysfsError(errno.EINVAL)
        if iova & (PAGE - 1):
            raise SysfsError(errno.EINVAL)
        if self.v2 and not unmap_all:
            # v2: the range may not bisect a mapping
            first = self.find_dma(iova, 1)
            last = self.find_dma(iova + size - 1, 1)
            if (first is not None and first.iova != iova) or \
                    (last is not None and last.iova + last.size != iova + size):
                raise SysfsError(errno.EINVAL)
        unmapped, invalidated = 0, []
        for dma in [d for d in self.dma_list if d.iova < iova + size and iova < d.iova + d.size]:
            if not self.v2 and iova > dma.iova:      # v1: a range starting inside unmaps nothing
                break
            if invalidate_vaddr:
                # the mapping stays (IOMMU entries, pinned pages, charge); only its vaddr goes.
                # One already invalid undoes this call's invalidations: EINVAL, nothing changed
                if dma.vaddr_invalid:
                    for d in invalidated:
                        d.vaddr_invalid = False
                    self.vaddr_invalid_count -= len(invalidated)
                    raise SysfsError(errno.EINVAL)
                dma.vaddr_invalid = True
                self.vaddr_invalid_count += 1
                invalidated.append(dma)
                unmapped += dma.size
                continue
            unmapped += dma.size
            self._remove_dma(dma)
        return unmapped

    def _remove_dma(self, dma: VfioDma, flush: bool = True) -> None:
        """vfio_remove_dma(): clear the tables, flush the IOTLB range (intel_iommu_tlb_sync's
        page-selective invalidation), unpin and un-account the pages."""
        self.unit.unmap_pages(self.domain, dma.iova, dma.size, flush)
        self.dma_list.remove(dma)
        self.m.vfio_pins.remove(next(p for p in self.m.vfio_pins if p[0] == dma.hpa))
        if self.m.host_memory.owner(dma.hpa) == "vfio":
            self.m.host_memory.free(dma.hpa)             # unpinned: the pages are the program's again
        dma.mm.account(-(dma.size // PAGE), dma.lock_cap)    # vfio_lock_acct() to dma->mm
        if dma.vaddr_invalid:
            self.vaddr_invalid_count -= 1
        self.dma_avail += 1

    # --- IOMMU_GET_INFO ----------------------------------------------------------------------------
    @property
    def pgsize_bitmap(self) -> int:
        """The domain's page sizes: 4 KiB plus the superpages CAP.SLLPS has (intel/iommu.c
        domain_super_pgsize_bitmap; 6.1: 4 KiB only)."""
        sizes = PAGE
        if not self.m.profile.vtd_superpage_pgsizes:
            return sizes
        for level in self.unit.superpage_levels:
            sizes |= 1 << (12 + 9 * (level - 1))
        return sizes

    def get_info(self, argsz: int = INFO_SIZE) -> bytes:
        """vfio_iommu_type1_get_info(): the bytes the kernel writes back (min(argsz, 24) of
        the header, and the capability chain when argsz has room for it all)."""
        if argsz < INFO_MINSZ:
            raise SysfsError(errno.EINVAL)
        caps = []
        pg = self.pgsize_bitmap
        caps.append((VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
                     struct.pack("<I4xQQ", 0, pg & -pg, DIRTY_BITMAP_SIZE_MAX)))
        caps.append((VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, struct.pack("<I", self.dma_avail)))
        ranges = self.iova_ranges()
        caps.append((VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
                     struct.pack("<II", len(ranges), 0) + b"".join(struct.pack("<QQ", a, b) for a, b in ranges)))
        chain, offset = b"", INFO_SIZE
        for i, (cap_id, body) in enumerate(caps):
            size = (8 + len(body) + 7) & ~7            # vfio_info_cap_add keeps each cap 8-aligned
            nxt = offset + len(chain) + size if i + 1 < len(caps) else 0
            chain += (struct.pack("<HHI", cap_id, 1, nxt) + body).ljust(size, b"\0")
        flags = VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS
        if argsz < INFO_SIZE + len(chain):
            head = struct.pack("<IIQI4x", INFO_SIZE + len(chain), flags, pg, 0)
            return head[:min(argsz, INFO_SIZE)]
        return struct.pack("<IIQI4x", argsz, flags, pg, INFO_SIZE) + chain
