"""What a module's init and exit do to the driver core: register its PCI drivers
(pci_register_driver -> bus_add_driver -> driver_attach) and unregister them
(driver_detach: each bound device's remove, newest first), plus the few inits that do
more: pci-stub's and vfio-pci's `ids=` (dynamic ids added after registering, each
with its log line, as pci_stub_init and vfio_pci_fill_ids do)."""
from __future__ import annotations

from vfakefs.model.base import binding
from vfakefs.model.base.drivers import ANY, Driver, PciDeviceId, catalogue
from vfakefs.model.kmsg import KERN_WARNING


def register_driver(m, name: str) -> Driver:
    """pci_register_driver(): a fresh driver (no dynamic ids, no devices) at the end of the
    bus's list; driver_attach when the bus autoprobes."""
    drv = catalogue().get(name) or Driver(name)
    drv.machine = m
    m.drivers[name] = drv
    if m.drivers_autoprobe:
        binding.driver_attach(m, drv)
    m.uevent("add", drv)            # bus_add_driver: after driver_attach has bound its devices
    return drv


def unregister_driver(m, drv: Driver) -> None:
    """pci_unregister_driver(): driver_detach (the last bound device first), then the
    driver leaves the bus; its dynamic ids go with it."""
    with m.batch():
        for dev in reversed(list(drv.devices)):
            binding.release(m, dev)
        m.drivers.pop(drv.name, None)
        drv.dynids.clear()
        m.uevent("remove", drv)     # the driver kobject's last put, after driver_detach


def init(m, mod, values: dict) -> None:
    with m.batch():
        drivers = [register_driver(m, name) for name in mod.info.drivers]
        if mod.name in IDS_LINES and values.get("ids"):     # module_init() does more than register
            _ids(m, drivers[0], values["ids"], *IDS_LINES[mod.name])


def exit(m, mod) -> None:
    for name in reversed(mod.info.drivers):
        drv = m.drivers.get(name)
        if drv is not None:
            unregister_driver(m, drv)


def _ids(m, drv: Driver, text: str, added, invalid) -> None:
    """The `ids=` loop both inits share: comma-separated, empty entries skipped, fewer than
    two fields warned about; each id is a dynamic id (pci_add_dynid: driver_attach)."""
    for entry in text.split(","):
        if not entry:
            continue
        f = binding.scan_hex(entry, 6, ":")     # sscanf(id, "%x:%x:%x:%x:%x:%x")
        if len(f) < 2:
            m.kmsg.log(invalid(entry), KERN_WARNING)
            continue
        vendor, device, sub_v, sub_d, cls, mask = f + [ANY, ANY, 0, 0][len(f) - 2:]
        m.kmsg.log(added(vendor, device, sub_v, sub_d, cls, mask))
        drv.dynids.append(PciDeviceId(vendor, device, sub_v, sub_d, cls, mask))
        binding.driver_attach(m, drv)


# The `ids=` parameter of pci-stub and vfio-pci: what each init prints for an id it adds
# (pci_stub_init's pr_info, vfio_pci_fill_ids's pr_info) and for one it cannot parse
IDS_LINES = {
    "pci_stub": (lambda v, d, sv, sd, c, cm: f"pci-stub: add {v:04X}:{d:04X} sub={sv:04X}:{sd:04X} cls={c:08X}/{cm:08X}",
                 lambda e: f'pci-stub: invalid id string "{e}"'),
    "vfio_pci": (lambda v, d, sv, sd, c, cm: f"vfio_pci: add [{v:04x}:{d:04x}[{sv:04x}:{sd:04x}]] class {c:#08x}/{cm:08x}",
                 lambda e: f'vfio_pci: invalid id string "{e}"'),
}


