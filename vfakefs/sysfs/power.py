"""The power/ directory every device has (drivers/base/power/sysfs.c)."""
from __future__ import annotations

import errno

from vfakefs.model.errors import SysfsError
from vfakefs.sysfs.nodes import Attr, AttrGroup


def autosuspend_delay_ms_show(obj) -> str:
    raise SysfsError(errno.EIO)  # the device does not use autosuspend


def _const(text):
    return lambda obj: text


def _accept(obj, text: str) -> None:
    pass


def control_store(obj, text: str) -> None:
    if text.removesuffix("\n") not in ("on", "auto"):
        raise SysfsError(errno.EINVAL)


RUNTIME = AttrGroup((
    Attr("async", _const("enabled\n"), _accept, 0o644),
    Attr("autosuspend_delay_ms", autosuspend_delay_ms_show, _accept, 0o644),
    Attr("control", _const("on\n"), control_store, 0o644),
    Attr("runtime_active_kids", _const("0\n")),
    Attr("runtime_active_time", lambda obj: "%d\n" % obj.machine.uptime_ms()),
    Attr("runtime_enabled", _const("forbidden\n")),
    Attr("runtime_status", _const("active\n")),
    Attr("runtime_suspended_time", _const("0\n")),
    # pm_runtime_forbid() holds one reference; pci_device_probe() takes another
    Attr("runtime_usage", lambda obj: "2\n" if getattr(obj, "driver", True) else "1\n"),
))
def wakeup_show(obj) -> str:
    return "enabled\n" if obj.wakeup_enabled else "disabled\n"


def wakeup_store(obj, text: str) -> None:
    word = text.removesuffix("\n")
    if word not in ("enabled", "disabled"):
        raise SysfsError(errno.EINVAL)
    obj.wakeup_enabled = word == "enabled"


def wakeup_stat_show(obj) -> str:
    # without a wakeup source the statistics print an empty line (wakeup_count_show)
    return "0\n" if obj.wakeup_enabled else "\n"


WAKEUP = AttrGroup((
    Attr("wakeup", wakeup_show, wakeup_store, 0o644),
    *(Attr(n, wakeup_stat_show) for n in ("wakeup_abort_count", "wakeup_active", "wakeup_active_count",
                                          "wakeup_count", "wakeup_expire_count", "wakeup_last_time_ms",
                                          "wakeup_max_time_ms", "wakeup_total_time_ms")),
), lambda obj: getattr(obj, "wakeup_capable", False))
IOMMU_RUNTIME = RUNTIME


def power_dir_entries(obj, groups=(RUNTIME, WAKEUP)) -> dict:
    out = {}
    for g in groups:
        out.update(g.entries(obj))
    return out
