"""/dev as the mount shows it: vfio/ nodes (drivers/vfio) on a tmpfs-like directory."""
from __future__ import annotations

from vfakefs.sysfs.nodes import CharDev, Dir

VFIO_MAJOR, VFIO_MINOR = 10, 196     # misc device "vfio"
VFIO_GROUP_MAJOR = 244               # dynamic in the kernel; the reference machine got 244


def vfio_entries(v) -> dict:
    out = {}
    if v.m.iommu_on:
        out["vfio"] = CharDev(VFIO_MAJOR, VFIO_MINOR, 0o666)
        for gid, minor in v.m.vfio_groups().items():
            out[str(gid)] = CharDev(VFIO_GROUP_MAJOR, minor, 0o600)
    return out


def dev_dir(v) -> Dir:
    return Dir(lambda: {"vfio": Dir(lambda: vfio_entries(v), tmpfs=True)}, tmpfs=True)
