"""/sys/class/iommu and /sys/devices/virtual/iommu/dmarN (iommu-sysfs.c, intel/iommu.c)."""
from __future__ import annotations

from vfakefs.sysfs import power
from vfakefs.sysfs.nodes import Attr, AttrGroup, Dir, Link, rel
from vfakefs.sysfs.pci_sysfs import kobj_uevent

INTEL_IOMMU = AttrGroup((
    Attr("address", lambda u: "%x\n" % u.reg_base),
    Attr("cap", lambda u: "%x\n" % u.cap),
    Attr("domains_supported", lambda u: "%d\n" % u.domains_supported),
    Attr("domains_used", lambda u: "%d\n" % u.machine.domains_used()),
    Attr("ecap", lambda u: "%x\n" % u.ecap),
    Attr("version", lambda u: "%d:%d\n" % u.version),
), name="intel-iommu")


def dmar_entries(v, unit) -> dict:
    here = f"devices/virtual/iommu/{unit.name}"
    out = INTEL_IOMMU.entries(unit)
    out["devices"] = Dir(lambda: {f.name: Link(rel(f"{here}/devices", v.device_path(f))) for f in v.m.functions})
    out["power"] = Dir(lambda: power.power_dir_entries(unit, (power.RUNTIME,)))
    out["subsystem"] = Link(rel(here, "class/iommu"))
    out["uevent"] = kobj_uevent(v.m, here, "iommu")
    return out


def class_iommu_entries(v) -> dict:
    if not v.m.iommu_on:
        return {}
    return {u.name: Link(rel("class/iommu", f"devices/virtual/iommu/{u.name}")) for u in v.m.dmar}
