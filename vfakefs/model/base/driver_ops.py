"""The drivers' own callbacks (struct pci_driver's .probe checks, .sriov_configure, work
a probe queues), referenced from drivers.catalogue(): the driver core and the PCI core
call them, never asking which driver they hold."""
from __future__ import annotations

import errno

from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_ERR, KERN_WARNING

# e1000_set_mac_type() (drivers/net/ethernet/intel/e1000/e1000_hw.c): the device ids it
# knows (82542 to 82547, and the CE4100's); anything else is E1000_ERR_MAC_TYPE
E1000_MAC_TYPES = frozenset((
    0x1000, 0x1001, 0x1004, 0x1008, 0x1009, 0x100C, 0x100D, 0x100E, 0x100F, 0x1010, 0x1011, 0x1012,
    0x1013, 0x1014, 0x1015, 0x1016, 0x1017, 0x1018, 0x1019, 0x101A, 0x101D, 0x101E, 0x1026, 0x1027,
    0x1028, 0x1075, 0x1076, 0x1077, 0x1078, 0x1079, 0x107A, 0x107B, 0x107C, 0x108A, 0x1099, 0x10B5,
    0x2E6E))


def probe_failed(m, drv, dev, err: int):
    """really_probe() reports failures other than ENODEV/ENXIO; the bind fails with err.
    The driver is the device's while its probe runs, so the line carries its name."""
    if m.profile.probe_failure_dev_err:
        m.kmsg.dev(dev, f"probe with driver {drv.name} failed with error -{err}", KERN_ERR, prefix=drv.name)
    else:
        m.kmsg.log(f"{drv.name}: probe of {dev.name} failed with error -{err}", KERN_WARNING)
    raise SysfsError(err)


def enabling_line(drv, dev, old: int, new: int) -> str | None:
    """pci_enable_resources()'s line when enabling changes the decode bits."""
    if old == new:
        return None
    return f"{drv.name} {dev.name}: enabling device ({old:04x} -> {new:04x})"


def vfio_pci_probe(m, drv, dev) -> None:
    """vfio_pci_probe(): normal headers only, no IOMMU group no VFIO, PF without VFs."""
    if dev.header_type != 0 or dev.group is None:
        probe_failed(m, drv, dev, errno.EINVAL)
    if dev.sriov is not None and dev.sriov.num_vfs:
        m.kmsg.dev(dev, "Cannot bind to PF with SR-IOV enabled", KERN_WARNING, prefix=drv.name)
        probe_failed(m, drv, dev, errno.EBUSY)


def vfio_pci_sriov_configure(m, pf, n: int) -> None:
    """vfio_pci_sriov_configure(): without the enable_sriov module parameter, ENOENT."""
    if not m.vfio_enable_sriov:
        raise SysfsError(errno.ENOENT)


def e1000_probe(m, drv, dev) -> None:
    """e1000_probe() up to e1000_init_hw_struct(): the device is enabled (memory decode,
    bus mastering), the netdev allocated but not named, then e1000_set_mac_type() fails for
    a device it has no MAC type for: "Unknown MAC Type", -EIO, and the error path's
    pci_disable_device() (bus mastering off again; decode stays)."""
    if dev.device in E1000_MAC_TYPES:
        return
    old = dev.config.r16(0x04)
    new = old | _decode(dev)
    line = enabling_line(drv, dev, old & 0x3, new & 0x3)
    if line:
        m.kmsg.log(line)
    dev.config.w16(0x04, new & ~0x4)
    # netdev_err() on a netdev not yet registered: "(unnamed net_device) (uninitialized)"
    m.kmsg.log(f"{drv.name} {dev.name} (unnamed net_device) (uninitialized): Unknown MAC Type", KERN_ERR)
    probe_failed(m, drv, dev, errno.EIO)


def _decode(dev) -> int:
    """pci_enable_device_mem(): memory decode for a device with memory BARs."""
    return 0x2 if any(b.size and not b.is_io for b in dev.bars) else 0


def nvme_after_probe(m, drv, dev) -> None:
    """nvme_reset_work on a VF that never becomes ready (the topology's vf_probe_fails_after)."""
    pf_sriov = dev.physfn.sriov if dev.is_virtfn else None
    if pf_sriov is not None and pf_sriov.vf_probe_fails_after is not None:
        m.schedule(pf_sriov.vf_probe_fails_after, lambda: _offline_vf_gives_up(m, dev, drv))


def _offline_vf_gives_up(m, dev, drv) -> None:
    """The controller is removed and the driver lets the device go (the reference capture's `-19`)."""
    if dev.driver is not drv or dev not in m.functions:
        return
    inst = drv.instance(dev)
    m.kmsg.log(f"nvme nvme{inst}: Device not ready; aborting initialisation, CSTS=0x2")
    m.kmsg.log(f"nvme nvme{inst}: Removing after probe failure status: -19")
    m.release_driver(dev)
