"""SR-IOV attributes of a PF or VF (drivers/pci/iov.c)."""
from __future__ import annotations

import errno

from vfakefs.model.pci import sriov
from vfakefs.model.errors import SysfsError
from vfakefs.sysfs.nodes import Attr, AttrGroup
from vfakefs.sysfs.parse import kstrtobool, kstrtoint, kstrtoul


def sriov_totalvfs_show(dev) -> str:
    return "%u\n" % dev.sriov.total_vfs


def sriov_numvfs_show(dev) -> str:
    return "%u\n" % dev.sriov.num_vfs


def sriov_numvfs_steps(dev, text: str):
    """The store, as the enable or disable left to carry out (sriov.Stepwise) or None."""
    # sriov_numvfs_store: any kstrtou16 failure, 65536 included, is EINVAL (6.1 and 6.12)
    try:
        n = kstrtoul(text, 16)
    except SysfsError:
        raise SysfsError(errno.EINVAL) from None
    return sriov.configure_steps(dev.machine, dev, n)


def sriov_numvfs_store(dev, text: str) -> None:
    steps = sriov_numvfs_steps(dev, text)
    if steps is not None:
        steps.finish()


def sriov_drivers_autoprobe_store(dev, text: str) -> None:
    dev.sriov.drivers_autoprobe = 1 if kstrtobool(text) else 0


sriov_totalvfs = Attr("sriov_totalvfs", sriov_totalvfs_show)
sriov_numvfs = Attr("sriov_numvfs", sriov_numvfs_show, sriov_numvfs_store, 0o644, steps=sriov_numvfs_steps)
sriov_offset = Attr("sriov_offset", lambda dev: "%u\n" % dev.sriov.offset)
sriov_stride = Attr("sriov_stride", lambda dev: "%u\n" % dev.sriov.stride)
sriov_vf_device = Attr("sriov_vf_device", lambda dev: "%x\n" % dev.sriov.vf_device)
sriov_drivers_autoprobe = Attr("sriov_drivers_autoprobe", lambda dev: "%u\n" % dev.sriov.drivers_autoprobe,
                               sriov_drivers_autoprobe_store, 0o644)
sriov_vf_total_msix = Attr("sriov_vf_total_msix", lambda dev: "0\n")


def sriov_vf_msix_count_store(dev, text: str) -> None:
    # sriov_vf_msix_count_store: kstrtoint, any failure (ERANGE included) EINVAL; then < 0 EINVAL
    try:
        n = kstrtoint(text)
    except SysfsError:
        raise SysfsError(errno.EINVAL) from None
    if n < 0:
        raise SysfsError(errno.EINVAL)
    pf = dev.physfn
    if pf.driver is None:
        raise SysfsError(errno.EOPNOTSUPP)
    if dev.driver is not None:
        raise SysfsError(errno.EBUSY)
    raise SysfsError(errno.EOPNOTSUPP)     # no PF driver here has sriov_set_msix_vec_count


sriov_vf_msix_count = Attr("sriov_vf_msix_count", None, sriov_vf_msix_count_store, 0o200)

SRIOV_PF_GROUP = AttrGroup((sriov_totalvfs, sriov_numvfs, sriov_offset, sriov_stride, sriov_vf_device,
                            sriov_drivers_autoprobe, sriov_vf_total_msix), lambda dev: dev.is_physfn)
SRIOV_VF_GROUP = AttrGroup((sriov_vf_msix_count,), lambda dev: dev.is_virtfn)
GROUPS = (SRIOV_PF_GROUP, SRIOV_VF_GROUP)
