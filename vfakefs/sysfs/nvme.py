"""The nvme class devices nvme-bound functions get (drivers/nvme/host/core.c sysfs)."""
from __future__ import annotations

from vfakefs.model.nvme import NVME_MAJOR, NvmeCtrl, identity
from vfakefs.sysfs.nodes import Attr, AttrGroup, Dir, Link, rel
from vfakefs.sysfs.pci_sysfs import uevent_store


NVME_CTRL = AttrGroup((
    Attr("address", lambda c: c.dev.name + "\n"),
    Attr("cntlid", lambda c: "0\n"),
    Attr("cntrltype", lambda c: "io\n"),
    Attr("dctype", lambda c: "none\n"),
    Attr("dev", lambda c: f"{NVME_MAJOR}:{c.inst}\n"),
    Attr("firmware_rev", lambda c: c.ident.padded("firmware_rev") + "\n"),
    Attr("kato", lambda c: "0\n"),
    Attr("model", lambda c: c.ident.padded("model") + "\n"),
    Attr("numa_node", lambda c: "%d\n" % c.dev.numa_node),
    Attr("queue_count", lambda c: "3\n"),
    Attr("rescan_controller", None, lambda c, t: None, 0o200),
    Attr("reset_controller", None, lambda c, t: None, 0o200),
    Attr("serial", lambda c: c.ident.padded("serial") + "\n"),
    Attr("sqsize", lambda c: "1023\n"),
    Attr("state", lambda c: "live\n"),
    Attr("subsysnqn", lambda c: c.ident.subsysnqn + "\n"),
    Attr("transport", lambda c: "pcie\n"),
    Attr("uevent", lambda c: "".join(f"{k}={v}\n" for k, v in c.uevent_env()), uevent_store, 0o644),
))


class Ctrl(NvmeCtrl):
    """An nvme controller: the function, its instance number, and what its Identify
    Controller data says (model/nvme.py: the topology's `nvme` fields or the defaults)."""
    __slots__ = ()

    @property
    def ident(self):
        m = self.dev.machine
        hw = getattr(m, "hw", {}).get(self.dev.bdf, {}) if m is not None else {}
        return identity(self.dev, hw.get("nvme"))


def ctrl_entries(v, dev, inst: int) -> dict:
    here = f"{v.device_path(dev)}/nvme/nvme{inst}"
    out = NVME_CTRL.entries(Ctrl(dev, inst))
    out["device"] = Link(rel(here, v.device_path(dev)))
    out["subsystem"] = Link(rel(here, "class/nvme"))
    out["power"] = Dir({})
    out[f"hwmon{inst}"] = Dir({"power": Dir({})})
    return out


def class_nvme_entries(v) -> dict:
    return {f"nvme{drv.instance(d)}": Link(rel("class/nvme", f"{v.device_path(d)}/nvme/nvme{drv.instance(d)}"))
            for drv in v.m.drivers.values() if "nvme" in drv.device_dirs for d in drv.devices}
