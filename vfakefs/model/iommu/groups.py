"""IOMMU groups: formed by the rules of drivers/iommu/iommu.c pci_device_group().

A group is the smallest set of functions the IOMMU can tell apart; it follows
from DMA aliasing (PCIe-to-PCI bridges) and ACS isolation on the path to the root.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field

from vfakefs.model.pci import config as C
from vfakefs.model.errors import SysfsError
from vfakefs.model.ida import Ida

MSI_REGION = (0xFEE00000, 0xFEEFFFFF, "msi")


@dataclass(eq=False)
class IommuGroup:
    id: int
    default_domain: str = "DMA"       # DMA, DMA-FQ, identity, blocked, unmanaged
    devices: list = field(default_factory=list)
    machine: object = None
    domain_: object = None            # the remapping unit's Domain: see `domain`
    owner: object = None              # iommu_group_claim_dma_owner(): the VFIO group holding it
    vfio: object = None               # the open /dev/vfio/<N> (vfio_group_fops_open: one opener)

    @property
    def domain(self):
        """The group's default domain in the remapping unit, whose tables are made
        (and every group programmed) on first use."""
        if self.domain_ is None and self.machine is not None:
            self.machine.iommu_unit()   # iommu.unit(): groups sit below the IOMMU core
        return self.domain_

    @domain.setter
    def domain(self, dom) -> None:
        self.domain_ = dom

    def reserved_regions(self) -> list[tuple[int, int, str]]:
        regions = set()
        for dev in self.devices:
            if dev.class_code >> 8 == 0x0601:   # ISA bridge: CONFIG_INTEL_IOMMU_FLOPPY_WA's 16 MiB
                regions.add((0, 0xFFFFFF, "direct-relaxable"))
            relax = dev.class_code >> 16 == 0x03 or dev.class_code >> 8 == 0x0C03
            for start, end in dev.rmrrs:
                regions.add((start, end, "direct-relaxable" if relax else "direct"))
        regions.add(MSI_REGION)
        return sorted(regions)


def acs_enabled(dev) -> bool:
    """pci_acs_enabled(dev, REQ_ACS_FLAGS) for the device kinds we model."""
    if dev.pcie_cap is None or dev.kind == "pcie_pci_bridge":
        return False  # conventional PCI and PCIe-to-PCI bridges never isolate
    if dev.kind in ("root_port", "downstream_port") or dev.multifunction:
        acs = dev.acs_ctrl
        if acs is None:
            return False
        cap, ctrl = acs
        # a flag the capability does not implement counts as hard-wired on
        need = C.ACS_REQUIRED & cap
        return ctrl & need == need
    return True


def acs_path_enabled(dev) -> bool:
    while dev is not None:
        if not acs_enabled(dev):
            return False
        dev = dev.parent
    return True


def dma_alias_root(dev):
    """pci_for_each_dma_alias: the last device the walk reaches; behind a
    PCIe-to-PCI bridge every request carries the bridge's alias."""
    last, up = dev, dev.parent
    while up is not None:
        if up.kind == "pcie_pci_bridge" or (up.pcie_cap is None and up.is_bridge):
            last = up
        up = up.parent
    return last


class Groups:
    """Allocation (the kernel's ida: lowest free number) plus membership."""

    def __init__(self, default_domain: str | None, machine=None, pinned=()):
        self.machine = machine
        self.by_id: dict[int, IommuGroup] = {}
        self.default_domain = default_domain
        self.ids = Ida(reserved=pinned)   # iommu_group_alloc's ida; pinned numbers are never handed out

    def _alloc(self, pinned: int | None) -> IommuGroup:
        if pinned is not None:
            gid = pinned
            self.ids.take(gid)
        else:
            gid = self.ids.alloc()
        group = IommuGroup(gid, self.default_domain, machine=self.machine)
        self.by_id[gid] = group
        return group

    def find_group(self, dev, functions) -> IommuGroup:
        """pci_device_group(): reuse an existing group where isolation fails."""
        start = dma_alias_root(dev)
        if start is not dev and start.group is not None:
            return start.group
        # walk up to the first bridge whose path to the root is ACS-isolated
        cur = start
        while cur.parent is not None:
            if acs_path_enabled(cur.parent):
                break
            cur = cur.parent
            if cur.group is not None:
                return cur.group
        # multifunction devices without ACS share with their slot siblings
        if cur.multifunction and not acs_enabled(cur):
            for other in functions:
                if (other is not cur and other.group is not None and other.bdf.bus == cur.bdf.bus
                        and other.bdf.dev == cur.bdf.dev and other.bdf.domain == cur.bdf.domain
                        and other.multifunction and not acs_enabled(other)):
                    return other.group
        return self._alloc(dev.pinned_group)

    def add_device(self, dev, functions) -> IommuGroup:
        group = self.find_group(dev, functions)
        group.devices.append(dev)
        dev.group = group
        return group

    def remove_device(self, dev) -> None:
        group = dev.group
        group.devices.remove(dev)
        dev.group = None
        if not group.devices:
            del self.by_id[group.id]  # ida_free: the lowest free number is reused first
            self.ids.free(group.id)


# --- the `type` attribute ---------------------------------------------------------------------
TYPE_NAMES = {"identity": "identity", "DMA": "DMA", "DMA-FQ": "DMA-FQ", "auto": None}


def owned(group: IommuGroup) -> bool:
    """owner_cnt != 0: a member bound to a driver that uses the kernel DMA API
    (anything but driver_managed_dma drivers such as vfio-pci, pci-stub, pcieport),
    or an explicit owner (VFIO) claimed it."""
    return group.owner is not None or \
        any(d.driver is not None and not d.driver.driver_managed_dma for d in group.devices)


def set_type(m, group: IommuGroup, text: str) -> bool:
    """iommu_group_store_type()'s checks, with each kernel version's rules from the
    profile: the group's new default domain type. True when the domain itself must be
    re-made (the caller, iommu.store_type, hands that to the IOMMU core)."""
    word = text[:-1] if text.endswith("\n") else text
    if group.default_domain is None or word not in TYPE_NAMES:
        raise SysfsError(errno.EINVAL)
    want = TYPE_NAMES[word] or m.groups.default_domain
    cur = group.default_domain
    if want == "DMA-FQ" and cur == "DMA":
        group.default_domain = want    # a flush queue comes up in place, even while bound
        return False
    if m.profile.group_type_owner_eperm:           # 6.12
        if not group.devices or owned(group):
            raise SysfsError(errno.EPERM)
    else:                                          # 6.1
        if len(group.devices) != 1:
            m.kmsg.log("iommu: Cannot change default domain: Group has more than one device", 3)
            raise SysfsError(errno.EINVAL)
        if group.devices[0].driver is not None:
            m.kmsg.log("iommu: Device is still bound to driver", 3)
            raise SysfsError(errno.EBUSY)
    group.default_domain = want
    return True
