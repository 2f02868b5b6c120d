"""/sys/bus/pci: devices/, drivers/ and the bus files (drivers/base/bus.c, drivers/pci/pci-driver.c)."""
from __future__ import annotations

import errno

from vfakefs.model.base import binding
from vfakefs.model.pci import hotplug
from vfakefs.model.errors import SysfsError
from vfakefs.sysfs.nodes import Attr, AttrGroup, Dir, Link, rel
from vfakefs.model.vfio import type1
from vfakefs.sysfs.parse import kstrtobool, kstrtoint, kstrtoul, simple_strtoul10
from vfakefs.sysfs import pci_sysfs
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
    out["module"] = Link(rel(here, f"module/{drv.module_name}"))
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
    Attr("adapter", lambda ms: "1\n"),
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
    out["devices"] = Dir(lambda: {f.name: Link(rel("bus/pci/devices", v.device_path(f))) for f in m.functions})
    out["drivers"] = Dir(lambda: {name: Dir(lambda d=drv: driver_entries(v, d)) for name, drv in sorted(m.drivers.items())})
    out["slots"] = Dir(lambda: {s.name: Dir(lambda s=s: slot_entries(m, s)) for s in m.slots})
    return out


def enable_sriov_store(m, text: str) -> None:
    m.vfio_enable_sriov = kstrtobool(text)


def _param(mod: str, name: str, default, parse, mode: int) -> Attr:
    """A module's module_param(): param_get_bool prints Y/N, param_get_int/uint the
    number; param_set_bool/int/uint parse with kstrtobool/kstrtoint/kstrtouint (EINVAL,
    ERANGE past the type)."""
    def show(m):
        v = m.module_params.get((mod, name), default)
        return ("Y" if v else "N") + "\n" if isinstance(v, bool) else f"{v}\n"

    def store(m, text):
        m.module_params[(mod, name)] = parse(text)
    return Attr(name, show, store if mode & 0o200 else None, mode)


def kstrtouint(text: str) -> int:
    """param_set_uint: kstrtouint(val, 0)."""
    return kstrtoul(text, 32)


# vfio_iommu_type1.c: module_param_named(allow_unsafe_interrupts, ..., bool, S_IRUGO | S_IWUSR),
# the same for disable_hugepages, and dma_entry_limit as uint 0644 (U16_MAX); type1.py reads them
TYPE1_PARAMETERS = {"allow_unsafe_interrupts": kstrtobool, "disable_hugepages": kstrtobool,
                    "dma_entry_limit": kstrtouint}

# module parameters (/sys/module/<mod>/parameters/): vfio-pci's, vfio_iommu_type1's, and the
# hotplug drivers' that register slots (built in: their module directory exists for the
# parameters alone)
MODULE_PARAMETERS = {
    "vfio_pci": AttrGroup((Attr("enable_sriov", lambda m: "Y\n" if m.vfio_enable_sriov else "N\n",
                                enable_sriov_store, 0o644),), name="parameters"),
    type1.MODULE: AttrGroup(tuple(_param(type1.MODULE, name, type1.PARAMETERS[name], parse, 0o644)
                                  for name, parse in TYPE1_PARAMETERS.items()), name="parameters"),
    "acpiphp": AttrGroup((_param("acpiphp", "disable", False, kstrtobool, 0o444),), name="parameters"),
    "pciehp": AttrGroup((_param("pciehp", "pciehp_poll_mode", False, kstrtobool, 0o644),
                         _param("pciehp", "pciehp_poll_time", 0, kstrtoint, 0o644)), name="parameters"),
}


BUILTIN_MODULES = ("acpiphp", "pciehp")   # CONFIG_HOTPLUG_PCI_ACPI=y, CONFIG_HOTPLUG_PCI_PCIE=y (Debian)


def module_entries(v) -> dict:
    # built-in drivers with parameters have a directory (param_sysfs_builtin), and each
    # slot's `module` link names its hotplug driver's
    mods: dict[str, list] = {mod: [] for mod in BUILTIN_MODULES + tuple(s.module for s in v.m.slots)}
    if "vfio-pci" in v.m.drivers:
        # vfio's MODULE_SOFTDEP("post: vfio_iommu_type1 ...") loads type1 beside it: the
        # reference captures' /proc/modules list it (`vfio 3 vfio_pci,vfio_pci_core,vfio_iommu_type1`)
        mods[type1.MODULE] = []
    for drv in v.m.drivers.values():
        mods.setdefault(drv.module_name, []).append(drv)

    def module_dir(mod, ds):
        out = {}
        if ds:
            out["drivers"] = Dir({f"pci:{d.name}": Link(rel(f"module/{mod}/drivers", f"bus/pci/drivers/{d.name}"))
                                  for d in ds})
        if mod in MODULE_PARAMETERS:
            out.update(MODULE_PARAMETERS[mod].entries(v.m))
        return out
    return {mod: Dir(lambda ds=ds, mod=mod: module_dir(mod, ds)) for mod, ds in sorted(mods.items())}


# --- the buses that PCI drivers register devices on ------------------------------------------
def pci_express_entries(v) -> dict:
    """bus/pci_express: the port services pcieport registers (portdrv)."""
    from vfakefs.sysfs.devices import PORT_SERVICES
    links = {}
    for f in v.m.functions:
        if f.driver is not None and f.driver.name == "pcieport":
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
