"""Attributes of a PCI device directory (drivers/pci/pci-sysfs.c, drivers/pci/pcie/aer.c)."""
from __future__ import annotations

import errno

from vfakefs.model.errors import SysfsError
from vfakefs.model import uevent as uevent_model
from vfakefs.model.locality import override_numa_node
from vfakefs.sysfs.cpumask import cpulist, cpumap
from vfakefs.sysfs.nodes import Attr, AttrGroup, BinAttr
from vfakefs.sysfs.parse import cstr, kstrtobool, kstrtoint, kstrtoul, sysfs_streq


def _hex4(field):
    return lambda dev: "0x%04x\n" % getattr(dev, field)


def _dec(field):
    return lambda dev: "%d\n" % getattr(dev, field)


# --- identity -------------------------------------------------------------------
vendor = Attr("vendor", _hex4("vendor"))
device = Attr("device", _hex4("device"))
subsystem_vendor = Attr("subsystem_vendor", _hex4("subsystem_vendor"))
subsystem_device = Attr("subsystem_device", _hex4("subsystem_device"))
revision = Attr("revision", lambda dev: "0x%02x\n" % dev.revision)
class_ = Attr("class", lambda dev: "0x%06x\n" % dev.class_code)
modalias = Attr("modalias", lambda dev: dev.modalias() + "\n")


def irq_show(dev) -> str:
    return "%u\n" % dev.irq


irq = Attr("irq", irq_show)


def resource_show(dev) -> str:
    return dev.resource_lines(dev.sriov.iov_resources() if dev.sriov else [])


resource = Attr("resource", resource_show)


# --- NUMA and CPUs ----------------------------------------------------------------
def _local_cpus(dev) -> list[int]:
    """pci_dev_show_local_cpu(): the device's node's CPUs; NUMA_NO_NODE: every online CPU."""
    return dev.machine.locality.node_cpus(dev.numa_node)


local_cpus = Attr("local_cpus", lambda dev: cpumap(_local_cpus(dev), dev.machine.locality.nr_cpus))
local_cpulist = Attr("local_cpulist", lambda dev: cpulist(_local_cpus(dev)))


def _ul(text: str) -> int:
    """kstrtoul() as the PCI stores call it: every failure, ERANGE included, is EINVAL
    (pci-sysfs.c since 5.16: "Return -EINVAL consistently from store functions")."""
    try:
        return kstrtoul(text)
    except SysfsError:
        raise SysfsError(errno.EINVAL) from None


def numa_node_store(dev, text: str) -> None:
    try:
        node = kstrtoint(text)
    except SysfsError:
        raise SysfsError(errno.EINVAL) from None
    override_numa_node(dev.machine, dev, node)


numa_node = Attr("numa_node", _dec("numa_node"), numa_node_store, 0o644)
dma_mask_bits = Attr("dma_mask_bits", _dec("dma_mask_bits"))
consistent_dma_mask_bits = Attr("consistent_dma_mask_bits", _dec("consistent_dma_mask_bits"))


# --- simple switches ----------------------------------------------------------------
def broken_parity_status_store(dev, text: str) -> None:
    dev.broken_parity = 1 if _ul(text) else 0


def msi_bus_store(dev, text: str) -> None:
    dev.msi_bus = 1 if _ul(text) else 0


def d3cold_allowed_store(dev, text: str) -> None:
    dev.d3cold_allowed = 1 if _ul(text) else 0


broken_parity_status = Attr("broken_parity_status", _dec("broken_parity"), broken_parity_status_store, 0o644)
msi_bus = Attr("msi_bus", _dec("msi_bus"), msi_bus_store, 0o644)
d3cold_allowed = Attr("d3cold_allowed", _dec("d3cold_allowed"), d3cold_allowed_store, 0o644)
power_state = Attr("power_state", lambda dev: dev.power_state + "\n")
ari_enabled = Attr("ari_enabled", lambda dev: "%d\n" % dev.ari_enabled)


def enable_store(dev, text: str) -> None:
    dev.machine.pci_enable(dev, _ul(text))


enable = Attr("enable", lambda dev: "%u\n" % dev.enable_cnt, enable_store, 0o644)


def driver_override_show(dev) -> str:
    return (dev.driver_override if dev.driver_override is not None else "(null)") + "\n"


def driver_override_store(dev, text: str) -> None:
    # driver_set_override(): >= PAGE_SIZE-1 is EINVAL; up to the first newline;
    # an empty result (a lone "\n" or a leading NUL) clears it
    if len(text) >= 4095:
        raise SysfsError(errno.EINVAL)
    name = text.split("\0", 1)[0].split("\n", 1)[0]
    dev.driver_override = name or None


driver_override = Attr("driver_override", driver_override_show, driver_override_store, 0o644)


def uevent_show(dev) -> str:
    # dev_uevent + pci_uevent, the very keys its events carry (model/uevent.py)
    return "".join(f"{k}={v}\n" for k, v in uevent_model.pci_env(dev))


def uevent_store(obj, text: str) -> None:
    # kobject_synth_uevent: the action word, optionally followed by a UUID and vars;
    # the event goes out for the objects the model announces (functions, netdevs,
    # drivers, the bus), the others only parse the write
    uevent_model.synth(obj, text)


uevent = Attr("uevent", uevent_show, uevent_store, 0o644)


def kobj_uevent(m, path: str, subsystem: str, env: tuple = ()):
    """The uevent file of another announcing kobject at path (under /sys): shows env,
    a write announces it (model/uevent.Kobj)."""
    return Attr("uevent", lambda k: k.show(), uevent_store, 0o644).bind(
        uevent_model.Kobj(m, "/" + path, subsystem, env))


def remove_store(dev, text: str) -> None:
    if _ul(text):
        dev.machine.remove_function(dev)


def rescan_store(dev, text: str) -> None:
    if _ul(text):
        dev.machine.rescan()


remove = Attr("remove", None, remove_store, 0o220)
rescan = Attr("rescan", None, rescan_store, 0o200)


def reset_store(dev, text: str) -> None:
    if _ul(text) != 1:
        raise SysfsError(errno.EINVAL)
    dev.machine.reset_function(dev)


reset = Attr("reset", None, reset_store, 0o200)

# pci_reset_fn_methods[] (drivers/pci/pci.c), index 0 unused: at most 7 methods in a list
RESET_METHOD_NAMES = ("device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus")


def reset_method_show(dev) -> str:
    # nothing at all, not even a newline, once every method is disabled
    return " ".join(dev.reset_methods) + "\n" if dev.reset_methods else ""


def reset_method_store(dev, text: str) -> None:
    """reset_method_store(): "" disables every method, "default" restores what probing
    found, else names separated by spaces, in priority order. An unknown name, one
    this device does not support, or too many: EINVAL and the old list stays."""
    log = dev.machine.kmsg
    if sysfs_streq(text, ""):
        dev.reset_methods = ()
        log.dev(dev, "All device reset methods disabled by user", 4)
        return
    if sysfs_streq(text, "default"):
        dev.reset_methods = dev.reset_supported
        return
    chosen = []
    for name in cstr(text).split(" "):                  # strsep(&options, " ")
        if sysfs_streq(name, ""):
            continue
        name = name.strip(" \t\n\v\f\r")                   # strim()
        if name not in RESET_METHOD_NAMES:
            log.dev(dev, f"Invalid reset method '{name}'", 3)
            raise SysfsError(errno.EINVAL)
        if name not in dev.reset_supported:             # its probe fails on this device
            log.dev(dev, f"Unsupported reset method '{name}'", 3)
            raise SysfsError(errno.EINVAL)
        if len(chosen) == len(RESET_METHOD_NAMES):
            log.dev(dev, "Too many reset methods", 3)
            raise SysfsError(errno.EINVAL)
        chosen.append(name)
    if "device_specific" in dev.reset_supported and chosen[:1] != ["device_specific"]:
        log.dev(dev, "Device-specific reset disabled/de-prioritized by user", 4)
    dev.reset_methods = tuple(chosen)


reset_method = Attr("reset_method", reset_method_show, reset_method_store, 0o644)


# --- PCIe link ------------------------------------------------------------------------
current_link_speed = Attr("current_link_speed", lambda dev: dev.link_speed(True))
current_link_width = Attr("current_link_width", lambda dev: "%u\n" % dev.link_width(True))
max_link_speed = Attr("max_link_speed", lambda dev: dev.link_speed(False))
max_link_width = Attr("max_link_width", lambda dev: "%u\n" % dev.link_width(False))
# secondary_bus_number_show: a live pci_read_config_byte(), not the cached bus number
secondary_bus_number = Attr("secondary_bus_number", lambda dev: "%u\n" % dev.config.r8(0x19))
subordinate_bus_number = Attr("subordinate_bus_number", lambda dev: "%u\n" % dev.config.r8(0x1A))


def reset_subordinate_store(dev, text: str) -> None:
    # reset_subordinate_store: nonzero resets the bus below; 0 does nothing. A simulated
    # secondary bus reset leaves the functions as they were.
    _ul(text)


reset_subordinate = Attr("reset_subordinate", None, reset_subordinate_store, 0o200)


# --- AER statistics (drivers/pci/pcie/aer.c) --------------------------------------------
AER_COR = ("RxErr", "BadTLP", "BadDLLP", "Rollover", "Timeout", "NonFatalErr", "CorrIntErr", "HeaderOF")
AER_UNCOR = ("Undefined", "DLP", "SDES", "TLP", "FCP", "CmpltTO", "CmpltAbrt", "UnxCmplt", "RxOF", "MalfTLP",
             "ECRC", "UnsupReq", "ACSViol", "UncorrIntErr", "BlockedTLP", "AtomicOpBlocked", "TLPBlockedErr",
             "PoisonTLPBlocked", "DMWrReqBlocked", "IDECheck", "MisIDETLP", "PCRC_CHECK", "TLPXlatBlocked")


def _aer(names, total):
    return lambda dev: "".join(f"{n} 0\n" for n in names) + f"{total} 0\n"


aer_dev_correctable = Attr("aer_dev_correctable", _aer(AER_COR, "TOTAL_ERR_COR"))
aer_dev_fatal = Attr("aer_dev_fatal", _aer(AER_UNCOR, "TOTAL_ERR_FATAL"))
aer_dev_nonfatal = Attr("aer_dev_nonfatal", _aer(AER_UNCOR, "TOTAL_ERR_NONFATAL"))
aer_rootport_total_err_cor = Attr("aer_rootport_total_err_cor", lambda dev: "0\n")
aer_rootport_total_err_fatal = Attr("aer_rootport_total_err_fatal", lambda dev: "0\n")
aer_rootport_total_err_nonfatal = Attr("aer_rootport_total_err_nonfatal", lambda dev: "0\n")


# --- config space (pci_read_config / pci_write_config) --------------------------------
def config_read(dev, off: int, n: int, privileged: bool) -> bytes:
    # without CAP_SYS_ADMIN only the standard header's first 64 bytes
    limit = dev.config.size if privileged else 64
    if off >= limit:
        return b""
    return dev.config_read(off, min(n, limit - off))


def config_write(dev, off: int, data: bytes) -> int:
    if off >= dev.config.size:
        raise SysfsError(errno.EFBIG)   # sysfs_kf_bin_write: at or past the file's size
    data = data[: dev.config.size - off]
    dev.machine.config_write(dev, off, data)
    return len(data)


config = BinAttr("config", config_read, config_write, 0o644, lambda dev: dev.config.size, cacheable=True)


def resource_read(dev, off: int, n: int, privileged: bool) -> bytes:
    raise SysfsError(errno.EIO)  # memory BARs are mmap-only: read() is EIO


def resource_n(i: int) -> BinAttr:
    return BinAttr(f"resource{i}", resource_read, None, 0o600, lambda dev, i=i: dev.bars[i].size)


RESOURCE_FILES = tuple(resource_n(i) for i in range(6))


def rom_read(dev, off: int, n: int, privileged: bool) -> bytes:
    """pci_read_rom(): EINVAL until `echo 1 > rom`; EIO when the ROM holds no valid image;
    else the images' bytes (pci_get_rom_size(), which may be shorter than the BAR)."""
    if off >= dev.rom.size:
        return b""                      # sysfs_kf_bin_read, before the attribute is asked
    if not dev.rom_attr_enabled:
        raise SysfsError(errno.EINVAL)
    image = dev.map_rom()
    if image is None:
        raise SysfsError(errno.EIO)
    return image[off:off + min(n, dev.rom.size - off)]


def rom_write(dev, off: int, data: bytes) -> int:
    """pci_write_rom(): exactly "0" and one more byte at offset 0 disables reading;
    anything else enables it. Never an error (past the end: EFBIG, from sysfs)."""
    if off >= dev.rom.size:
        raise SysfsError(errno.EFBIG)
    data = data[: dev.rom.size - off]
    dev.rom_attr_enabled = not (off == 0 and data[:1] == b"0" and len(data) == 2)
    return len(data)


rom = BinAttr("rom", rom_read, rom_write, 0o600, lambda dev: dev.rom.size)


# --- groups, with the visibility rules of pci_dev_attr_groups -----------------------------
def _is_pcie(dev) -> bool:
    return dev.pcie_cap is not None


PCI_DEV_GROUP = AttrGroup((
    vendor, device, subsystem_vendor, subsystem_device, revision, class_, irq, local_cpus, local_cpulist,
    modalias, dma_mask_bits, consistent_dma_mask_bits, enable, broken_parity_status, msi_bus, numa_node,
    d3cold_allowed, driver_override, power_state, ari_enabled, resource, uevent))
PCI_DEV_REMOVABLE = AttrGroup((remove, rescan), lambda dev: not dev.is_virtfn)
# is_visible runs once, when the device is added: disabling every method later keeps the files
PCI_DEV_RESET = AttrGroup((reset, reset_method), lambda dev: bool(dev.reset_supported))
PCIE_DEV_GROUP = AttrGroup((current_link_speed, current_link_width, max_link_speed, max_link_width), _is_pcie)
PCI_BRIDGE_GROUP = AttrGroup((secondary_bus_number, subordinate_bus_number), lambda dev: dev.is_bridge)
PCI_BRIDGE_RESET = AttrGroup((reset_subordinate,), lambda dev: dev.is_bridge and dev.kind != "host_bridge")
AER_STATS_GROUP = AttrGroup((aer_dev_correctable, aer_dev_fatal, aer_dev_nonfatal), lambda dev: dev.has_aer)
AER_ROOTPORT_GROUP = AttrGroup((aer_rootport_total_err_cor, aer_rootport_total_err_fatal,
                                aer_rootport_total_err_nonfatal), lambda dev: dev.has_aer and dev.kind == "root_port")

GROUPS = (PCI_DEV_GROUP, PCI_DEV_REMOVABLE, PCI_DEV_RESET, PCIE_DEV_GROUP, PCI_BRIDGE_GROUP, PCI_BRIDGE_RESET,
          AER_STATS_GROUP, AER_ROOTPORT_GROUP)


def bin_files(dev) -> dict:
    out = {"config": config.bind(dev)}
    for i, r in enumerate(dev.bars):
        if r.size:
            out[f"resource{i}"] = RESOURCE_FILES[i].bind(dev)
    if dev.rom.size:
        out["rom"] = rom.bind(dev)
    return out
