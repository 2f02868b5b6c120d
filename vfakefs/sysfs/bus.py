"""/sys/bus/pci: devices/, drivers/ and the bus files (drivers/base/bus.c, drivers/pci/pci-driver.c)."""
from __future__ import annotations

import errno

from vfakefs.model.base import binding
from vfakefs.model.pci import hotplug
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.errors import SysfsError
from vfakefs.sysfs.nodes import Attr, AttrGroup, Dir, Link, rel
from vfakefs.sysfs.parse import simple_strtoul10
from vfakefs.sysfs import module, pci_sysfs
from vfakefs.sysfs.pci_sysfs import uevent_store


# --- bus attributes -------------------------------------------------------------------
def drivers_autoprobe_store(m, text: str) -> None:
    m.drivers_autoprobe = 0 if text[:1] == "0" else 1  # never an error


def drivers_probe_store(m, text: str) -> None:
    binding.drivers_probe(m, text)


def bus_rescan_store(m, text: str) -> None:
    if pci_sysfs._ul(text):          # rescan_store: any parse failure is EINVAL
        m.rescan()


def resource_alignment_store(m, text: str) -> None:
    m.resource_alignment = text.removesuffix("\n")


BUS_GROUP = AttrGroup((
    Attr("drivers_autoprobe", lambda m: "%d\n" % m.drivers_autoprobe, drivers_autoprobe_store, 0o644),
    Attr("drivers_probe", None, drivers_probe_store, 0o200),
    Attr("rescan", None, bus_rescan_store, 0o200),
    Attr("resource_alignment", lambda m: m.resource_alignment + ("\n" if m.resource_alignment else ""),
         resource_alignment_store, 0o644),
    Attr("uevent", None, uevent_store, 0o200),
))


# --- driver attributes ------------------------------------------------------------------
def bind_store(drv, text: str) -> None:
    binding.bind(drv.machine, drv, text)


def unbind_store(drv, text: str) -> None:
    binding.unbind(drv.machine, drv, text)


def new_id_store(drv, text: str) -> None:
    binding.new_id(drv.machine, drv, text)


def remove_id_store(drv, text: str) -> None:
    binding.remove_id(drv.machine, drv, text)


DRIVER_GROUP = AttrGroup((
    Attr("bind", None, bind_store, 0o200),
    Attr("unbind", None, unbind_store, 0o200),
    Attr("new_id", None, new_id_store, 0o200),
    Attr("remove_id", None, remove_id_store, 0o200),
    Attr("uevent", None, uevent_store, 0o200),
))


def driver_entries(v, drv) -> dict:
    here = f"bus/pci/drivers/{drv.name}"
    out = DRIVER_GROUP.entries(drv)
    mod = module.driver_module(v.m, drv)
    if mod is not None:                      # built-in drivers without a module directory have none
        out["module"] = Link(rel(here, f"module/{mod}"))
    for dev in drv.devices:
        out[dev.name] = Link(rel(here, v.device_path(dev)))
    return out


# --- a hotplug slot's files (pci_hotplug_core.c); the slot is bound with its Machine --------
def attention_show(ms):
    raise SysfsError(errno.EINVAL)  # acpiphp: no attention_info registered


def attention_store(ms, text: str) -> None:
    hotplug.set_attention(*ms, simple_strtoul10(text))


def power_show(ms) -> str:
    return f"{int(ms[1].powered)}\n"


def power_store(ms, text: str) -> None:
    hotplug.set_power(*ms, simple_strtoul10(text))


SLOT_GROUP = AttrGroup((
    Attr("adapter", lambda ms: f"{int(ms[1].present)}\n"),      # get_adapter_status: presence detect
    Attr("address", lambda ms: ms[1].address + "\n"),
    Attr("attention", attention_show, attention_store, 0o644),
    Attr("cur_bus_speed", lambda ms: ms[1].cur_speed + "\n"),
    Attr("latch", lambda ms: "0\n"),
    Attr("max_bus_speed", lambda ms: ms[1].max_speed + "\n"),
    Attr("power", power_show, power_store, 0o644),
))


def slot_entries(m, slot) -> dict:
    out = SLOT_GROUP.entries((m, slot))
    out["module"] = Link(f"../../../../module/{slot.module}")
    return out


def pci_bus_entries(v) -> dict:
    m = v.m
    out = BUS_GROUP.entries(m)

    # every device's path is devices/...: the link climbs out of bus/pci/devices whole
    # (rel() would say the same, at a few times the cost for each of 2,065 links)
    def device(name: str):   # the entry of one name: DDDD:BB:DD.F, read without a regex
        try:
            f = m.by_bdf.get(Bdf(int(name[:4], 16), int(name[5:7], 16), int(name[8:10], 16), int(name[11:])))
        except ValueError:
            return None
        return Link("../../../" + v.device_path(f)) if f is not None and f.name == name else None
    out["devices"] = Dir(lambda: {f.name: Link("../../../" + v.device_path(f)) for f in m.functions}, entry=device)
    out["drivers"] = Dir(lambda: {name: Dir(lambda d=drv: driver_entries(v, d)) for name, drv in sorted(m.drivers.items())})
    out["slots"] = Dir(lambda: {s.name: Dir(lambda s=s: slot_entries(m, s)) for s in m.slots})
    return out


# --- the buses that PCI drivers register devices on ------------------------------------------
def pci_express_entries(v) -> dict:
    """bus/pci_express: the port services pcieport registers (portdrv)."""
    from vfakefs.sysfs.devices import PORT_SERVICES
    links = {}
    for f in v.m.functions:
        if f.driver is not None and f.driver.port_services:
            for svc in PORT_SERVICES.get(f.kind, ()):
                name = f"{f.name}:{svc}"
                links[name] = Link(rel("bus/pci_express/devices", f"{v.device_path(f)}/{name}"))
    return {"devices": Dir(links), "drivers": Dir({}), "drivers_autoprobe": BUS_GROUP.attrs[0].bind(v.m),
            "drivers_probe": BUS_GROUP.attrs[1].bind(v.m), "uevent": BUS_GROUP.attrs[4].bind(v.m)}


def virtio_entries(v) -> dict:
    """bus/virtio: virtio-pci's virtio devices and the virtio_net driver."""
    devs = {nd.subdir: Link(rel("bus/virtio/devices", f"{v.device_path(nd.dev)}/{nd.subdir}"))
            for nd in v.m.netdevs.values() if nd.subdir}
    drv = {name: Link(rel("bus/virtio/drivers/virtio_net", f"bus/virtio/devices/{name}")) for name in devs}
    return {"devices": Dir(devs), "drivers": Dir({"virtio_net": Dir(drv)})}
