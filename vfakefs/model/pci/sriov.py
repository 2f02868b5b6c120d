"""Enabling and disabling virtual functions (drivers/pci/iov.c).

configure() is sriov_numvfs_store() after parsing; enable() and disable() are
sriov_enable() and sriov_disable(): they write NumVFs and VF Enable into the
PF's SR-IOV capability and add or remove the VFs as full PCI functions.
"""
from __future__ import annotations

import errno

from vfakefs.model.base import binding
from vfakefs.model.pci import config as C
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.pci.builder import build_vf_config
from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_WARNING
from vfakefs.model.pci.pci import EMPTY, PciFunction, Resource


def configure(m, pf: PciFunction, n: int) -> None:
    """sriov_numvfs_store() in the kernel's order of checks."""
    sr = pf.sriov
    if n > sr.total_vfs:
        raise SysfsError(errno.ERANGE)
    if n == sr.num_vfs:
        return
    drv = pf.driver
    if drv is None:
        m.kmsg.dev(pf, "no driver bound to device; cannot configure SR-IOV")
        raise SysfsError(errno.ENOENT)
    if not drv.sriov_configure:
        m.kmsg.dev(pf, "driver does not support SR-IOV configuration via sysfs")
        raise SysfsError(errno.ENOENT)
    if n == 0:
        disable(m, pf)
        return
    if sr.num_vfs:
        m.kmsg.dev(pf, f"{sr.num_vfs} VFs already enabled. Disable before enabling {n} VFs", KERN_WARNING)
        raise SysfsError(errno.EBUSY)
    if callable(drv.sriov_configure):
        drv.sriov_configure(m, pf, n)       # the driver's own refusal (vfio-pci without enable_sriov)
    enable(m, pf, n)


def enable(m, pf: PciFunction, n: int) -> None:
    sr = pf.sriov
    # sriov_enable(): the last VF's bus must lie in the PF's bus range (busn_res:
    # the bus itself up to the bridge's subordinate; the root bus ends at ff)
    last = sr.vf_bus(n - 1)
    limit = pf.parent.subordinate if pf.parent is not None else 0xFF
    if last > limit:
        m.kmsg.dev(pf, "can't enable %d VFs (bus %02x out of range of [bus %02x-%02x])"
                   % (n, last, pf.bdf.bus, limit), 3)
        raise SysfsError(errno.ENOMEM)
    # everything that can fail happens before the first change
    template = sr.vf_config if sr.vf_config is not None else build_vf_config(pf)
    iov = sr.iov_resources()
    vfs = [_new_vf(m, pf, vf_id, template, iov) for vf_id in range(n)]
    cfg = pf.config
    cfg.w16(sr.pos + C.SRIOV_NUM_VF, n)
    cfg.w16(sr.pos + C.SRIOV_CTRL, cfg.r16(sr.pos + C.SRIOV_CTRL) | C.SRIOV_CTRL_VFE | C.SRIOV_CTRL_MSE)
    with m.batch():
        for vf in vfs:      # pci_iov_add_virtfn(): add, link, then probe, one VF after another
            m.add_function(vf)
            sr.vfs.append(vf)
            m.uevent("change", vf)      # pci_iov_sysfs_link(): once virtfnN and physfn exist
            if pf.driver is not None and pf.driver.captures_vfs:
                # vfio_pci_bus_notifier: a vfio-pci PF's VFs go to vfio-pci too
                vf.driver_override = pf.driver.name
                m.kmsg.dev(pf, f"Captured SR-IOV VF {vf.name} driver_override")
            binding.device_attach(m, vf)
        m.uevent("change", pf)          # sriov_enable(), after sriov_add_vfs()
        m.changed(*vfs)   # (their PF's virtfn links with them; add_function notes their groups)


def _new_vf(m, pf: PciFunction, vf_id: int, template: bytes, iov: list[Resource]) -> PciFunction:
    sr = pf.sriov
    bdf: Bdf = sr.vf_bdf(vf_id)
    bars = [Resource(r.start + vf_id * (r.size // sr.hw_total_vfs), r.size // sr.hw_total_vfs, r.flags)
            if r.size else EMPTY for r in iov]
    return PciFunction(
        bdf=bdf, kind="endpoint", vendor=pf.vendor, device=sr.vf_device, class_code=pf.class_code,
        config=C.ConfigSpace(4096, template), parent=pf.parent, subsystem_vendor=pf.subsystem_vendor,
        subsystem_device=pf.subsystem_device, revision=pf.revision, bars=bars, numa_node=m.locality.vf_node(pf),
        physfn=pf, vf_id=vf_id, dma_mask_bits=32, consistent_dma_mask_bits=32,   # until a driver sets them
        reset_methods=("flr",), aspm=pf.aspm, power_state="unknown", machine=m)


def disable(m, pf: PciFunction) -> None:
    """sriov_disable(): VFs go in order 0..N-1, each with its driver and group."""
    sr = pf.sriov
    gone = list(sr.vfs)
    with m.batch():
        for vf in gone:
            binding.release(m, vf)
            m.remove_one(vf)
        sr.vfs.clear()
        cfg = pf.config
        cfg.w16(sr.pos + C.SRIOV_CTRL, cfg.r16(sr.pos + C.SRIOV_CTRL) & ~(C.SRIOV_CTRL_VFE | C.SRIOV_CTRL_MSE))
        cfg.w16(sr.pos + C.SRIOV_NUM_VF, 0)
        m.changed(*gone) if gone else m.changed(pf)   # (remove_one notes their groups)
