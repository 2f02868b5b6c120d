"""The power/ directory every device has (drivers/base/power/sysfs.c)."""
from __future__ import annotations

import errno

from vfakefs.model.errors import SysfsError
from vfakefs.sysfs.nodes import Attr, AttrGroup
from vfakefs.sysfs.parse import sysfs_streq


def autosuspend_delay_ms_show(obj) -> str:
    raise SysfsError(errno.EIO)  # the device does not use autosuspend


def autosuspend_delay_ms_store(obj, text: str) -> None:
    # autosuspend_delay_ms_store: !dev->power.use_autosuspend is EIO before any parsing
    raise SysfsError(errno.EIO)


def _const(text):
    return lambda obj: text


def async_show(obj) -> str:
    return "enabled\n" if getattr(obj, "async_suspend", True) else "disabled\n"


def _one_of(obj, field: str, text: str, words: dict[str, bool]) -> None:
    """Exactly one of words (sysfs_streq: one trailing newline allowed), else EINVAL."""
    for word, value in words.items():
        if sysfs_streq(text, word):
            setattr(obj, field, value)
            return
    raise SysfsError(errno.EINVAL)


def async_store(obj, text: str) -> None:
    """async_store: exactly "enabled" or "disabled", else EINVAL."""
    _one_of(obj, "async_suspend", text, {"enabled": True, "disabled": False})


def _auto(obj) -> bool:
    return getattr(obj, "runtime_auto", False)


def control_show(obj) -> str:
    return "auto\n" if _auto(obj) else "on\n"


def control_store(obj, text: str) -> None:
    """control_store: "auto" is pm_runtime_allow(), "on" pm_runtime_forbid(), else EINVAL."""
    _one_of(obj, "runtime_auto", text, {"auto": True, "on": False})


def runtime_usage_show(obj) -> str:
    # pm_runtime_forbid() holds one reference (pm_runtime_allow() drops it); pci_device_probe()
    # takes another while a driver is bound
    bound = getattr(obj, "driver", True) is not None
    return "%d\n" % ((0 if _auto(obj) else 1) + (1 if bound else 0))


RUNTIME = AttrGroup((
    Attr("async", async_show, async_store, 0o644),
    Attr("autosuspend_delay_ms", autosuspend_delay_ms_show, autosuspend_delay_ms_store, 0o644),
    Attr("control", control_show, control_store, 0o644),
    Attr("runtime_active_kids", _const("0\n")),
    Attr("runtime_active_time", lambda obj: "%d\n" % obj.machine.uptime_ms(), volatile=True),
    Attr("runtime_enabled", lambda obj: "enabled\n" if _auto(obj) else "forbidden\n"),
    Attr("runtime_status", _const("active\n")),
    Attr("runtime_suspended_time", _const("0\n")),
    Attr("runtime_usage", runtime_usage_show),
))


def wakeup_show(obj) -> str:
    return "enabled\n" if obj.wakeup_enabled else "disabled\n"


def wakeup_store(obj, text: str) -> None:
    # wakeup_store: sysfs_streq against "enabled" / "disabled", else EINVAL
    if sysfs_streq(text, "enabled"):
        obj.wakeup_enabled = True
    elif sysfs_streq(text, "disabled"):
        obj.wakeup_enabled = False
    else:
        raise SysfsError(errno.EINVAL)


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
