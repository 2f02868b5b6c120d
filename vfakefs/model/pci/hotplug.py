"""Hotplug slots (drivers/pci/hotplug): what a write to a slot's `power` and
`attention` files does (pci_hotplug_core.c's power_write_file and
attention_write_file, then the slot driver's callbacks: acpiphp or pciehp)."""
from __future__ import annotations

import errno

from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_ERR


def set_power(m, slot, value: int) -> None:
    """power_write_file() after simple_strtoul: the low byte decides; 0 disables the slot
    (its functions are removed), 1 enables it (they are scanned again), anything else EINVAL."""
    power = value & 0xFF
    if power not in (0, 1):
        m.kmsg.log("pci_hotplug: Illegal value specified for power", KERN_ERR)
        raise SysfsError(errno.EINVAL)
    on = power == 1
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
