"""Hotplug slots (drivers/pci/hotplug): what a write to a slot's `power` and
`attention` files does (pci_hotplug_core.c's power_write_file and
attention_write_file, then the slot driver's callbacks: acpiphp or pciehp); and
what `remove` and `rescan` do (pci_stop_and_remove_bus_device, pci_rescan_bus:
a rescan allocates new pci_devs)."""
from __future__ import annotations

import errno

from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_ERR
from vfakefs.model.pci import config as C
from vfakefs.model.pci.iov import Sriov
from vfakefs.model.base import binding
from vfakefs.model.pci import resource_log, sriov
from vfakefs.model.pci.pci import PciFunction


def set_power(m, slot, value: int) -> None:
    """power_write_file() after simple_strtoul: the low byte decides; 0 disables the slot
    (its functions are removed), 1 enables it (they are scanned again), anything else EINVAL."""
    power = value & 0xFF
    if power not in (0, 1):
        m.kmsg.log("pci_hotplug: Illegal value specified for power", KERN_ERR)
        raise SysfsError(errno.EINVAL)
    on = power == 1
    if slot.removal is not None:
        # pciehp_sysfs_{enable,disable}_slot in POWEROFF_STATE: a surprise removal is under way
        m.kmsg.dev(slot.port, f"pciehp: Slot({slot.name}): " + ("Already enabled" if on else
                                                               "Already in powering off state"))
        raise SysfsError(errno.ENODEV)
    if on and not slot.present and slot.module == "pciehp":
        raise SysfsError(errno.ENODEV)    # OFF_STATE, no card: the IST finds none (request_result)
    if slot.powered == on and slot.module == "pciehp":
        # pciehp_sysfs_{enable,disable}_slot in ON_STATE / OFF_STATE
        if slot.port is not None:
            m.kmsg.dev(slot.port, f"pciehp: Slot({slot.name}): Already {'enabled' if on else 'disabled'}")
        raise SysfsError(errno.ENODEV)
    if on:          # acpiphp_enable_slot / pciehp board_added: scan the slot
        m.rescan(only=lambda f: _in_slot(slot, f))
    else:           # acpiphp_disable_and_eject_slot / pciehp remove_board
        for f in [f for f in m.functions if slot.holds(f)]:
            if f in m.functions:
                m.remove_function(f)
    slot.powered = on


def set_attention(m, slot, value: int) -> None:
    """attention_write_file(): the value goes to the driver's set_attention_status;
    acpiphp has none registered (no attention_info): ENODEV."""
    raise SysfsError(errno.ENODEV)


def _in_slot(slot, f) -> bool:
    while f is not None:
        if slot.holds(f):
            return True
        f = f.physfn if f.is_virtfn else f.parent
    return False


def rescanned(old, parent):
    """pci_scan_single_device() on hardware a `remove` left behind: a new struct pci_dev
    (pci_stop_and_remove_bus_device freed the old one). What the device and firmware hold
    carries over: identity; the config space as software left it (remove neither resets
    nor powers the function off: the driver's pci_disable_device cleared Bus Master,
    memory decoding stays on, pci_stop_dev turned PME off); BARs and windows as assigned;
    the INTx line, the ACPI companion, _PXM's numa node; a recorded machine's vectors.
    Everything that lived in struct pci_dev and struct device starts over from the
    defaults: driver_override, enable_cnt, the sysfs knobs, reset_method, the DMA mask
    (32 bits until a driver sets one: pci_setup_device), SR-IOV's drivers_autoprobe and
    driver_max_VFs. Drivers' dynamic ids are the drivers' and stay."""
    f = PciFunction(
        bdf=old.bdf, kind=old.kind, vendor=old.vendor, device=old.device, class_code=old.class_code,
        config=old.config, parent=parent, subsystem_vendor=old.subsystem_vendor,
        subsystem_device=old.subsystem_device, revision=old.revision, multifunction=old.multifunction,
        bars=list(old.bars), rom=old.rom, windows=list(old.windows),
        irq=old.irq if old.intx_irq is None else old.intx_irq,
        numa_node=old.numa_node, pinned_group=old.pinned_group, secondary=old.secondary,
        subordinate=old.subordinate, firmware_node=old.firmware_node, reset_methods=old.reset_supported,
        aspm=old.aspm, slot=old.slot, extra_dirs=old.extra_dirs, rmrrs=old.rmrrs, rom_image=old.rom_image)
    if not old.msi_names:        # vectors a recorded topology declares (base/irqs.py), not allocated ones
        f.msi_irqs = list(old.msi_irqs)
    # pci_msi_init / pci_msix_init: a new pci_dev starts with MSI and MSI-X disabled
    cfg = f.config
    for cap, bit in ((C.CAP_MSI, 0x0001), (C.CAP_MSIX, 0x8000)):     # the Enable bits
        pos = f.caps.get(cap)
        if pos is not None and cfg.r16(pos + 2) & bit:
            cfg.w16(pos + 2, cfg.r16(pos + 2) & ~bit)
    pm = f.caps.get(C.CAP_PM)
    if pm is not None and f.pme_support:
        # pci_stop_dev -> pci_pme_active(dev, false): PME_En off, PME_Status written 1 (cleared)
        cfg.w16(pm + 4, cfg.r16(pm + 4) & ~0x8100)
    if old.sriov is not None:
        s = old.sriov
        f.sriov = Sriov(f, s.pos, s.vf_driver, list(s.vf_bars))
        f.sriov.vf_config, f.sriov.vf_probe_fails_after = s.vf_config, s.vf_probe_fails_after
    return f


def remove_function(m, dev: PciFunction) -> None:
    """`remove`: the function and everything below it go away, drivers first."""
    with m.batch():
        for f in [dev] + below(m, dev):
            if f.sriov is not None:
                f.sriov.settle()        # an enable in progress ends first (device_lock)
        doomed = [dev] + below(m, dev)
        for f in reversed(doomed):
            if f.sriov is not None and f.sriov.vfs:
                sriov.disable(m, f)
        for f in reversed(doomed):
            if f in m.functions:
                binding.release(m, f)
                m.remove_one(f)
                if not f.is_virtfn:
                    m.removed.append(f)
        m.changed(*doomed)


def rescan(m, only=None) -> None:
    """pci_rescan_bus(): removed functions come back in bus order, as new devices, and probe
    (pci_bus_add_device calls device_attach whatever drivers_autoprobe says).
    only(f) picks what a narrower scan finds (a slot's functions and what is below)."""
    back = [f for f in m.removed if only is None or only(f)]
    if not back:
        return
    m.removed = [f for f in m.removed if f not in back]
    new = {}                # old pci_dev -> the one the scan allocates (rescanned)
    for f in sorted(back, key=lambda f: f.bdf):     # bus numbers follow the depth-first scan: bus by bus
        new[f] = rescanned(f, new.get(f.parent, f.parent))
    added = list(new.values())
    after = resource_log.bridges_after(m, added)
    with m.batch():
        for f in added:
            m.add_function(f)
            for b in after.get(id(f), ()):
                for line in resource_log.bridge_lines(m, b):
                    m.kmsg.dev(b, line, prefix="pci")
        for slot in m.slots:
            slot.port = new.get(slot.port, slot.port)
        for line in resource_log.rescan_assignment(m, added):   # pci_assign_unassigned_bus_resources
            m.kmsg.log(line)
        for f in added:
            binding.device_attach(m, f)
        m.changed(*new.values())


def below(m, dev: PciFunction) -> list[PciFunction]:
    """Every function under dev: its bus's, their VFs, and so on down."""
    out = []
    for f in m.functions:
        if f is dev:
            continue
        up = f.physfn if f.is_virtfn else f.parent
        while up is not None and up is not dev:
            up = up.physfn if up.is_virtfn else up.parent
        if up is dev:
            out.append(f)
    return out
