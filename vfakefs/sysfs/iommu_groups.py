"""/sys/kernel/iommu_groups (drivers/iommu/iommu.c)."""
from __future__ import annotations

from vfakefs.model.iommu import iommu
from vfakefs.sysfs.nodes import Attr, AttrGroup, Dir, Link, rel


def reserved_regions_show(group) -> str:
    return "".join("0x%016x 0x%016x %s\n" % r for r in group.reserved_regions())


def type_show(group) -> str:
    return (group.default_domain or "unknown") + "\n"


def type_store(group, text: str) -> None:
    iommu.store_type(group.machine, group, text)


GROUP_ATTRS = AttrGroup((
    Attr("reserved_regions", reserved_regions_show),
    Attr("type", type_show, type_store, 0o644),
))


def group_entries(v, group) -> dict:
    here = f"kernel/iommu_groups/{group.id}/devices"
    out = GROUP_ATTRS.entries(group)
    out["devices"] = Dir(lambda: {d.name: Link(rel(here, v.device_path(d))) for d in group.devices})
    return out


def groups_entries(v) -> dict:
    if not v.m.iommu_on:
        return {}
    return {str(gid): Dir(lambda g=g: group_entries(v, g)) for gid, g in v.m.groups.by_id.items()}
