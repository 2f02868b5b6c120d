"""The module aliases modpost derives from a driver's PCI id table (scripts/mod/file2alias.c,
do_pci_entry), as MODULE_DEVICE_TABLE(pci, ...) makes them:

    pci:v<vendor>d<device>sv<subvendor>sd<subdevice>bc<class>sc<subclass>i<interface>*

each field in upper-case hex (%08X for the ids, %02X for the class bytes) or "*" where the
entry matches anything: an id equal to PCI_ANY_ID, a class byte its mask leaves out. An
entry flagged PCI_ID_F_VFIO_DRIVER_OVERRIDE (PCI_DRIVER_OVERRIDE_DEVICE_VFIO: vfio-pci's
catch-all) gets the prefix "vfio_pci:" instead, so that no uevent MODALIAS matches it. A
class mask byte that is neither 0 nor 0xFF cannot be written: modpost warns and emits no
alias for the entry. A trailing "*" is added unless the alias already ends in one
(add_wildcard)."""
from __future__ import annotations

from vfakefs.model.base.drivers import ANY, PciDeviceId


def pci_alias(e: PciDeviceId) -> str | None:
    alias = "vfio_pci:" if e.override_only else "pci:"
    for sep, value in (("v", e.vendor), ("d", e.device), ("sv", e.subvendor), ("sd", e.subdevice)):
        alias += sep + ("*" if value == ANY else "%08X" % value)
    for sep, shift in (("bc", 16), ("sc", 8), ("i", 0)):
        mask = (e.class_mask >> shift) & 0xFF
        if mask not in (0, 0xFF):
            return None   # "Can't handle masks"
        alias += sep + ("%02X" % ((e.class_code >> shift) & 0xFF) if mask == 0xFF else "*")
    return alias if alias.endswith("*") else alias + "*"


def pci_aliases(id_table) -> list[str]:
    """The aliases of a driver's id table, in table order."""
    return [a for a in map(pci_alias, id_table) if a is not None]
