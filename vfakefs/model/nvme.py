"""What an NVMe controller reports in Identify Controller (NVMe base spec 5.15.2), which
drivers/nvme/host/core.c copies into its sysfs files: model (40 bytes), serial (20),
firmware revision (8), all space-padded ASCII, and the subsystem NQN."""
from __future__ import annotations

from dataclasses import dataclass

QEMU_NVME = (0x1B36, 0x0010)   # QEMU's emulated controller (hw/nvme)
NVME_MAJOR = 250   # "nvme" char major: dynamic, first free from 254 down after the others
NVME_KEYS = frozenset(("model", "serial", "firmware_rev", "subsysnqn"))
FIELD_LEN = {"model": 40, "serial": 20, "firmware_rev": 8}


@dataclass(frozen=True)
class NvmeIdentity:
    model: str
    serial: str
    firmware_rev: str
    subsysnqn: str

    def padded(self, field: str) -> str:
        """The field as the kernel shows it: the whole space-padded Identify field."""
        return getattr(self, field)[:FIELD_LEN[field]].ljust(FIELD_LEN[field])


def kernel_subnqn(vid: int, ssvid: int, serial: str, model: str) -> str:
    """nvme_init_subnqn(): a controller that reports no SUBNQN gets one made from its ids,
    serial and model (both space-padded), nqn.2014.08.org.nvmexpress:VVVVSSSS<serial><model>."""
    return "nqn.2014.08.org.nvmexpress:%04x%04x%s%s" % (vid, ssvid, serial[:20].ljust(20), model[:40].ljust(40))


def identity(dev, declared: dict | None = None) -> NvmeIdentity:
    """The topology's `nvme = {...}` fields over defaults that fit the device: QEMU's
    controller says "QEMU NVMe Ctrl" and takes its NQN from the serial
    (nqn.2019-08.org.qemu:<serial>, a controller outside an nvme-subsys); its firmware
    revision is the QEMU version, which a topology declares ("1.0" if not); any other
    controller a generic model from its ids, and the NQN the kernel makes for a controller
    without one. A VF reports its PF's model and firmware. The default serial is derived
    from the function's address."""
    declared = dict(declared or {})
    pf = getattr(dev, "physfn", None)
    b = dev.bdf
    serial = declared.get("serial") or "%04X%02X%02X%X" % (b.domain, b.bus, b.dev, b.fn)
    if (dev.vendor, dev.device) == QEMU_NVME or (pf is not None and (pf.vendor, pf.device) == QEMU_NVME):
        model, fw, nqn = "QEMU NVMe Ctrl", "1.0", f"nqn.2019-08.org.qemu:{serial}"
    else:
        model, fw = "NVMe Ctrl %04x:%04x" % (dev.vendor, dev.device), "1.0"
        nqn = None
    model = declared.get("model", model)
    fw = declared.get("firmware_rev", fw)
    nqn = declared.get("subsysnqn") or nqn or kernel_subnqn(dev.vendor, dev.subsystem_vendor, serial, model)
    return NvmeIdentity(model, serial, fw, nqn)


class NvmeCtrl:
    """The nvme class device nvme_init_ctrl() adds below a bound function (nvme/nvme<inst>)."""
    __slots__ = ("dev", "inst")

    def __init__(self, dev, inst: int):
        self.dev, self.inst = dev, inst

    def uevent_env(self) -> list:
        """dev_uevent's device node keys, then nvme_class_uevent's transport (PCIe: no address)."""
        return [("MAJOR", str(NVME_MAJOR)), ("MINOR", str(self.inst)), ("DEVNAME", f"nvme{self.inst}"),
                ("NVME_TRTYPE", "pcie")]
