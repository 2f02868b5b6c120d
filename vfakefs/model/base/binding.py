"""The driver core for PCI: matching, probe, bind and unbind, dynamic ids.

Follows drivers/base/bus.c and dd.c (bind_store, unbind_store, device_attach,
driver_attach) and drivers/pci/pci-driver.c (pci_match_device, new_id_store,
remove_id_store, pci_device_probe). Every function either changes the Machine
completely or raises SysfsError before changing anything.
"""
from __future__ import annotations

import errno
import re

from vfakefs.model import faults, uevent
from vfakefs.model.base import irqs, probe_log
from vfakefs.model.base.driver_ops import probe_failed
from vfakefs.model.base.drivers import ANY, Driver, PciDeviceId
from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_WARNING
from vfakefs.model.pci.pci import IORESOURCE_IO
from vfakefs.model.vfio import vf_token

_HEX = re.compile(r"\s*(?:0[xX])?([0-9a-fA-F]+)")


# --- matching -------------------------------------------------------------------------
def match(drv: Driver, dev) -> bool:
    """pci_match_device(): override, then dynamic ids, then the static table."""
    override = dev.driver_override
    if override is not None and override != drv.name:
        return False
    if drv.dynids and any(i.matches(dev) for i in drv.dynids):
        return True
    device = dev.device
    for i in drv.id_table:
        if i.device != device and i.device != ANY:
            continue                    # (what matches() would refuse first: thousands of VFs try each driver)
        if i.override_only and override != drv.name:
            continue
        if i.matches(dev):
            return True
    return override == drv.name   # a dummy ANY id when driver_override names us


def can_probe(dev) -> bool:
    """pci_device_can_probe(): a VF probes only if its PF allows it or it has an override."""
    return not dev.is_virtfn or bool(dev.physfn.sriov.drivers_autoprobe) or dev.driver_override is not None


# --- probe and release ------------------------------------------------------------------
def probe(m, drv: Driver, dev) -> None:
    """pci_device_probe() and the driver's own probe; raises the probe's errno."""
    if not can_probe(dev):
        raise SysfsError(errno.ENODEV)
    if not drv.driver_managed_dma and dev.group is not None and dev.group.owner is not None:
        # pci_dma_configure -> iommu_device_use_default_domain(): the group is claimed
        probe_failed(m, drv, dev, errno.EBUSY)
    if m.faults:                                         # (no rules: nothing to ask, thousands of VFs)
        faults.probe(m, drv, dev, probe_failed)          # a probe rule's fail= (model/faults.py)
    if drv.probe is not None:
        drv.probe(m, drv, dev)                           # the driver's own checks (driver_ops.py)
    attach(m, dev, drv)


def attach(m, dev, drv: Driver) -> None:
    """The state a successful probe leaves: driver link, enabled device, bus
    mastering, a netdev for net drivers, power/wakeup for WoL drivers."""
    dev.driver = drv
    drv.devices.append(dev)
    old_cmd = enable_cmd = dev.config.r16(0x04)
    if drv.enables_device:
        dev.enable_cnt = 1
        decode = 0x2 if dev.is_virtfn else 0            # a VF's memory space: its PF's VF MSE
        for b in dev.bars:
            if b.size:
                decode |= 0x1 if b.flags & IORESOURCE_IO else 0x2
        enable_cmd = old_cmd | decode
        dev.config.w16(0x04, enable_cmd | 0x4)           # pci_enable_device + pci_set_master
    dev.power_state = "D0"
    if drv.dma_bits:
        dev.dma_mask_bits = dev.consistent_dma_mask_bits = drv.dma_bits   # dma_set_mask_and_coherent
    dev.wakeup_enabled = drv.wakeup
    if drv.registers_netdev(dev) and not (m.faults and faults.defer_netdev(m, dev, drv,
                                                                          lambda: _late_netdev(m, dev, drv))):
        m.add_netdev(dev, drv)
    # vectors are a probing driver's: vfio-pci and pci-stub take none (vfio's SET_IRQS does, later)
    if dev.msi_irqs and drv.enables_device and m.irq_remap is not None:   # (asking builds the table)
        m.irq_remap.alloc_msi(dev, len(dev.msi_irqs), dev.msi_irqs[0][1])
    else:
        irqs.probe(m, dev, drv)                          # the vectors the driver asks for (base/irqs.py)
    if drv.vfio:
        vf_token.vf_init(m, dev)                         # vfio_pci_core_register_device
    log_probe(m, drv, dev, (old_cmd & 0x3, enable_cmd & 0x3))
    if drv.after_probe is not None:
        drv.after_probe(m, drv, dev)
    for cd in uevent.class_devices(dev, drv):           # nvme_init_ctrl's device_add, in probe
        m.uevent("add", cd)
    m.uevent("bind", dev)                                # driver_bound(): KOBJ_BIND, DRIVER set


def _late_netdev(m, dev, drv: Driver) -> None:
    """register_netdev() after a netdev rule's delay: the interface appears now."""
    m.add_netdev(dev, drv)
    m.changed(dev, drv)


def log_probe(m, drv: Driver, dev, enabling: tuple[int, int] = (0, 0)) -> None:
    """The lines the real driver's probe prints (base/probe_log.py), with pci_enable_resources()'s
    `enabling device` where the command register changed."""
    for line in probe_log.probe_lines(m, drv, dev, enabling):
        m.kmsg.log(line)


def release(m, dev) -> None:
    """device_release_driver(): the driver's remove, then pci_device_remove's tidying."""
    drv = dev.driver
    if drv is None:
        return
    if dev.sriov is not None:
        dev.sriov.settle()              # an enable in progress holds device_lock(): it ends first
    if dev.sriov is not None and dev.sriov.num_vfs:
        if drv.disables_sriov_on_remove:
            m.disable_sriov(dev)        # the driver's remove calls pci_disable_sriov
        else:
            m.kmsg.dev(dev, "driver left SR-IOV enabled after remove", KERN_WARNING, prefix=drv.name)
    for line in probe_log.remove_lines(m, drv, dev):     # the driver's remove, its netdev still there
        m.kmsg.log(line)
    for nd in list(dev.netdevs):
        m.remove_netdev(nd)
    for cd in uevent.class_devices(dev, drv):           # nvme_uninit_ctrl's device_destroy
        m.uevent("remove", cd)
    vf_token.vf_uninit(dev)                              # vfio_pci_core_unregister_device
    if dev.msi_irqs and m.irq_remap is not None:
        m.irq_remap.free_msi(dev)
    irqs.remove(m, dev)
    drv.devices.remove(dev)
    drv.drop_instance(dev)
    dev.driver = None
    dev.enable_cnt = 0
    dev.config.w16(0x04, dev.config.r16(0x04) & ~0x4)   # pci_clear_master
    dev.wakeup_enabled = False
    if dev.sriov is not None:
        dev.sriov.driver_max_vfs = None                  # pci_iov_remove
    m.uevent("unbind", dev)                              # __device_release_driver: after dev->driver = NULL
    m.changed(dev, drv)


def device_attach(m, dev) -> bool:
    """device_attach(): already bound counts as success; otherwise the first
    registered driver that matches and probes. Probe errors are not reported."""
    if dev.driver is not None:
        return True
    if m.faults and faults.defer_probe(m, dev, lambda: device_attach(m, dev)):
        return False                                     # a probe rule's delay: it binds later
    for drv in m.drivers.values():
        if match(drv, dev):
            try:
                probe(m, drv, dev)
            except SysfsError:
                continue
            m.changed(dev, drv)
            return True
    return False


def driver_attach(m, drv: Driver) -> None:
    """driver_attach(): try every unbound device (after new_id)."""
    with m.batch():
        for dev in list(m.functions):
            if dev.driver is None and match(drv, dev):
                if not faults.defer_probe(m, dev, lambda dev=dev: _attach_one(m, drv, dev)):
                    _attach_one(m, drv, dev)


def _attach_one(m, drv: Driver, dev) -> None:
    """__driver_attach() of one device: probe errors are not reported."""
    if dev.driver is not None or not match(drv, dev):
        return
    try:
        probe(m, drv, dev)
        m.changed(dev, drv)
    except SysfsError:
        pass


# --- the sysfs stores -----------------------------------------------------------------------
def _find(m, text: str):
    return m.lookup(text[:-1] if text.endswith("\n") else text)   # sysfs_streq


def bind(m, drv: Driver, text: str) -> None:
    """bind_store(): ENODEV for no such device or no match; EBUSY when already bound."""
    dev = _find(m, text)
    if dev is None or not match(drv, dev):
        raise SysfsError(errno.ENODEV)
    if dev.driver is not None:
        raise SysfsError(errno.EBUSY)
    probe(m, drv, dev)
    m.changed(dev, drv)


def unbind(m, drv: Driver, text: str) -> None:
    """unbind_store(): ENODEV unless the device is bound to this very driver."""
    dev = _find(m, text)
    if dev is None or dev.driver is not drv:
        raise SysfsError(errno.ENODEV)
    release(m, dev)


def drivers_probe(m, text: str) -> None:
    dev = _find(m, text)
    if dev is None:
        raise SysfsError(errno.ENODEV)
    device_attach(m, dev)


def scan_hex(text: str, most: int, sep: str = "") -> list[int]:
    """The kernel's sscanf("%x %x ...") (or "%x:%x:..." with sep=":"): hex fields, 0x
    allowed, up to the first that does not match."""
    out, pos = [], 0
    while len(out) < most:
        if out and sep:
            if text[pos:pos + len(sep)] != sep:
                break
            pos += len(sep)
        mt = _HEX.match(text, pos)
        if not mt:
            break
        out.append(int(mt.group(1), 16) & 0xFFFFFFFF)
        pos = mt.end()
    return out


def new_id(m, drv: Driver, text: str) -> None:
    """new_id_store(): vendor device [subvendor subdevice class class_mask driver_data]."""
    f = scan_hex(text, 7)
    if len(f) < 2:
        raise SysfsError(errno.EINVAL)
    ids = f + [ANY, ANY, 0, 0, 0][len(f) - 2:]
    new = PciDeviceId(ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6])
    if len(f) != 7 and match(drv, _FakeDev(new.vendor, new.device, new.subvendor, new.subdevice, new.class_code)):
        # without driver_data the kernel refuses ids the driver already matches,
        # static or dynamic (pci_match_device on a made-up device)
        raise SysfsError(errno.EEXIST)
    if drv.id_table and not any(i.driver_data == new.driver_data for i in drv.id_table):
        raise SysfsError(errno.EINVAL)
    drv.dynids.append(new)
    driver_attach(m, drv)


def remove_id(m, drv: Driver, text: str) -> None:
    """remove_id_store(): deletes the first matching dynamic id; never unbinds."""
    f = scan_hex(text, 6)
    if len(f) < 2:
        raise SysfsError(errno.EINVAL)
    vendor, device, subvendor, subdevice, class_code, class_mask = f + [ANY, ANY, 0, 0][len(f) - 2:]
    for i in drv.dynids:
        if (i.vendor == vendor and i.device == device
                and (subvendor == ANY or i.subvendor == subvendor)
                and (subdevice == ANY or i.subdevice == subdevice)
                and not ((i.class_code ^ class_code) & class_mask)):
            drv.dynids.remove(i)
            return
    raise SysfsError(errno.ENODEV)


class _FakeDev:
    """The ids new_id_store() checks with pci_match_device(), as a device."""
    driver_override = None

    def __init__(self, vendor, device, subsystem_vendor, subsystem_device, class_code):
        self.vendor, self.device = vendor, device
        self.subsystem_vendor, self.subsystem_device, self.class_code = subsystem_vendor, subsystem_device, class_code
