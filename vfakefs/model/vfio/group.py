"""An open /dev/vfio/<N> (drivers/vfio/group.c): one opener at a time; joining a
container claims the IOMMU group's DMA ownership (iommu_group_claim_dma_owner), which
parks the members in the blocking domain until the container's backend attaches them;
leaving restores the group's default domain, DID and all."""
from __future__ import annotations

import errno
import re
import uuid

from vfakefs.model import traffic
from vfakefs.model.base.drivers import vfio_bound
from vfakefs.model.errors import SysfsError
from vfakefs.model.iommu import groups as iommu_groups
from vfakefs.model.iommu import iommu
from vfakefs.model.kmsg import KERN_WARNING
from vfakefs.model.pci import hotplug_slot
from vfakefs.model.vfio.container import VfioContainer
from vfakefs.model.vfio.device import VfioPciDevice
from vfakefs.model.vfio import vf_token
from vfakefs.model.vfio.type1 import blocking_domain

VFIO_MODULE = "vfio"                            # the module whose file operations these are

VFIO_GROUP_FLAGS_VIABLE, VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 0, 1 << 1
STATUS_MINSZ = 8
REQUIRE_DIRECT_WARNING = ("Firmware has requested this device have a 1:1 IOMMU mapping, rejecting configuring "
                          "the device without a 1:1 mapping. Contact your platform vendor.")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def require_direct(dev) -> bool:
    """dev->iommu->require_direct: an RMRR that is not relaxable (not a GPU's or USB's)."""
    relax = dev.class_code >> 16 == 0x03 or dev.class_code >> 8 == 0x0C03
    return bool(dev.rmrrs) and not relax


class VfioGroup:
    def __init__(self, m, group):
        self.m, self.group = m, group
        self.container: VfioContainer | None = None
        self.default_domain = None             # the domain the claim displaced
        self.devices: list = []                # device fds handed out (container_users)
        self.closed = False

    @classmethod
    def open(cls, m, gid: int) -> "VfioGroup":
        """vfio_group_fops_open(): the node exists while a member is VFIO-bound (ENODEV
        otherwise); a second opener gets EBUSY."""
        group = m.groups.by_id.get(gid) if m.groups is not None else None
        if group is None or not any(vfio_bound(d) for d in group.devices):
            raise SysfsError(errno.ENODEV)
        if group.vfio is not None:
            raise SysfsError(errno.EBUSY)
        vg = group.vfio = cls(m, group)
        m.modules.get(VFIO_MODULE)             # vfio_group_fops.owner: the open file holds vfio
        return vg

    def close(self) -> None:
        """vfio_group_fops_release(): leaving the container releases the group."""
        if self.closed:
            return
        if self.container is not None:
            self._detach()
        self.group.vfio = None
        self.m.modules.put(VFIO_MODULE)
        self.closed = True

    def unknown_ioctl(self) -> None:
        """vfio_group_fops_unl_ioctl's default."""
        raise SysfsError(errno.ENOTTY)

    # --- VFIO_GROUP_GET_STATUS ------------------------------------------------------------------
    def get_status(self, argsz: int = STATUS_MINSZ) -> int:
        if argsz < STATUS_MINSZ:
            raise SysfsError(errno.EINVAL)
        if self.container is not None:
            return VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET
        return 0 if iommu_groups.owned(self.group) else VFIO_GROUP_FLAGS_VIABLE

    # --- VFIO_GROUP_SET_CONTAINER / UNSET_CONTAINER ------------------------------------------------
    def set_container(self, container) -> None:
        """vfio_group_ioctl_set_container(): EINVAL when set, EBADFD (6.1: EINVAL) for a fd
        that is no container, EPERM when a DMA-API driver owns a member, EINVAL (and the warning) for
        a member that needs its firmware 1:1 mapping; the backend's attach errors undo."""
        if self.container is not None:
            raise SysfsError(errno.EINVAL)
        if not isinstance(container, VfioContainer):
            raise SysfsError(errno.EBADFD if self.m.profile.vfio_set_container_ebadfd else errno.EINVAL)
        if iommu_groups.owned(self.group):
            raise SysfsError(errno.EPERM)
        for dev in self.group.devices:
            if require_direct(dev):
                self.m.kmsg.dev(dev, REQUIRE_DIRECT_WARNING, KERN_WARNING)
                raise SysfsError(errno.EINVAL)
        self._claim()
        try:
            container.attach_group(self)
        except SysfsError:
            self._release()
            raise
        self.container = container
        traffic.dma_owner_claimed(self.m, self.group)    # the members' DMA-API streams end

    def unset_container(self) -> None:
        """vfio_group_ioctl_unset_container(): EINVAL when none, EBUSY while device fds are open."""
        if self.container is None:
            raise SysfsError(errno.EINVAL)
        if self.devices:
            raise SysfsError(errno.EBUSY)
        self._detach()

    def _detach(self) -> None:
        self.container.detach_group(self)
        self.container = None
        self._release()

    def _claim(self) -> None:
        """__iommu_take_dma_ownership(): the owner set, the members blocked."""
        u = iommu.unit(self.m)
        self.default_domain = self.group.domain
        self.group.owner = self
        iommu.set_group_domain(u, self.group, blocking_domain())

    def _release(self) -> None:
        """__iommu_release_dma_ownership(): the default domain back, the same DID."""
        u = iommu.unit(self.m)
        iommu.set_group_domain(u, self.group, self.default_domain)
        self.group.owner = None
        self.default_domain = None

    # --- VFIO_GROUP_GET_DEVICE_FD -----------------------------------------------------------------
    def get_device_fd(self, name: str) -> VfioPciDevice:
        """vfio_group_ioctl_get_device_fd(): the name is matched first (ENODEV, or the
        match's own EINVAL/EACCES), then the group must have a container with a backend."""
        dev = self._match(name)
        if self.container is None or self.container.iommu is None:
            raise SysfsError(errno.EINVAL)
        for fd in self.devices:                 # vfio_df_open: only the first open enables it
            if fd.dev is dev:
                fd.opens += 1
                return fd
        fd = VfioPciDevice(self.m, dev, self)
        self.devices.append(fd)
        fd.owner = self.m.modules.get_driver(dev.driver)   # vfio_device_open: try_module_get(driver->owner)
        self.m.modules.get(VFIO_MODULE)                    # vfio_device_fops.owner
        return fd

    def device_closed(self, fd: VfioPciDevice) -> None:
        """The last close of a device fd: it no longer holds the container (EBUSY above)."""
        if fd in self.devices:
            self.devices.remove(fd)
            self.m.modules.put(fd.owner)
            self.m.modules.put(VFIO_MODULE)
            hotplug_slot.vfio_released(self.m)   # a surprise removal waiting for this user goes on

    def _match(self, name: str):
        for dev in self.group.devices:
            if not vfio_bound(dev) or not name.startswith(dev.name):
                continue
            rest = name[len(dev.name):]
            if rest and rest[0] != " ":
                continue                                    # vfio_pci_core_match: no match
            token = self._parse_options(rest)
            self._validate_vf_token(dev, token)
            return dev
        raise SysfsError(errno.ENODEV)

    @staticmethod
    def _parse_options(rest: str) -> uuid.UUID | None:
        """vfio_pci_core_match's options: spaces and one `vf_token=<uuid>`; anything else EINVAL."""
        token, i = None, 0
        while i < len(rest):
            if rest[i] == " ":
                i += 1
            elif token is None and rest.startswith("vf_token=", i):
                u = UUID.match(rest, i + 9)
                if u is None:
                    raise SysfsError(errno.EINVAL)
                token, i = uuid.UUID(u.group(0)), u.end()          # uuid_parse: either case
            else:
                raise SysfsError(errno.EINVAL)
        return token

    def _validate_vf_token(self, dev, token: uuid.UUID | None) -> None:
        """vfio_pci_validate_vf_token() (vf_token.py)."""
        vf_token.validate(self.m, dev, token)
