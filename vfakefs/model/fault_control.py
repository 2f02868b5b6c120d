"""The `faults` control (MNT/sys/kernel/debug/vfakefs/faults): its one-line rules parsed
and listed (model/faults.py holds what they do).

    <bdf> <point> [delay=<seconds>] [fail=<ERRNO>] [times=<N>|always]     one rule more
    clear                                                                  no rules

Reading it lists the rules in order, each with its hit count. A bad rule is EINVAL with
the reason in the kernel log, as every control's; the rules stay as they were.
"""
from __future__ import annotations

import errno
import math

from vfakefs.model.controls import reject
from vfakefs.model.errors import errno_named
from vfakefs.model.faults import DRIVER_CORE_POINTS, EPROBE_DEFER, NAMING_STORES, Rule
from vfakefs.model.pci.bdf import Bdf

MAX_DELAY = 3600.0           # simulated seconds a rule may hold a store
MAX_TIMES = 1 << 31
MAX_RULES = 1024
USAGE = "expected '<bdf> <point> [delay=<seconds>] [fail=<ERRNO>] [times=<N>|always]' or 'clear'"


def faults_show(m) -> str:
    return "".join(f"{r}\n" for r in m.faults.rules)


def faults_command(m, text: str, points=None) -> None:
    """Add one rule, or `clear` them all. points(dev) -> the store points the device has
    (its writable files, from the view); a device not there yet (a VF to come) may be
    given any point some device could have: points(None)."""
    words = text.split()
    if words == ["clear"]:
        m.faults.rules.clear()
        return
    if len(words) < 3:
        reject(m, "faults", USAGE)
    try:
        bdf = Bdf.from_str(words[0])
    except ValueError:
        reject(m, "faults", f"malformed device {words[0][:32]!r}")
    point = words[1]
    dev = m.by_bdf.get(bdf)
    known = DRIVER_CORE_POINTS + NAMING_STORES + tuple(points(dev) if points is not None else ())
    if point not in known:
        where = f"device {bdf}" if dev is not None else "any device"
        reject(m, "faults", f"{point[:32]!r} is no file or point of {where}")
    rule = Rule(bdf, point)
    seen = set()
    for word in words[2:]:
        key, eq, value = word.partition("=")
        if not eq or key not in ("delay", "fail", "times"):
            reject(m, "faults", f"unknown setting {word[:32]!r}")
        if key in seen:
            reject(m, "faults", f"repeated setting {key}=")
        seen.add(key)
        if key == "delay":
            rule.delay = _seconds(m, value)
        elif key == "fail":
            rule.fail = _errno(m, value, point)
        else:
            rule.times = _times(m, value)
    if not rule.delay and not rule.fail:
        reject(m, "faults", "a rule needs delay= or fail=")
    if point == "netdev" and rule.fail:
        reject(m, "faults", "netdev takes delay= only (its probe fails through a probe rule)")
    if point == "add" and rule.fail:
        reject(m, "faults", "add takes delay= only (a VF's addition does not fail)")
    if len(m.faults.rules) >= MAX_RULES:
        reject(m, "faults", f"at most {MAX_RULES} rules; `clear` first", errno.ENOSPC)
    m.faults.rules.append(rule)


def _seconds(m, value: str) -> float:
    try:
        s = float(value)
    except ValueError:
        reject(m, "faults", f"delay {value[:32]!r} is not a number of seconds")
    if not math.isfinite(s) or not 0 < s <= MAX_DELAY:
        reject(m, "faults", f"delay {value[:32]} is outside (0, {MAX_DELAY:g}] seconds")
    return s


def _errno(m, value: str, point: str) -> int:
    """An errno by name (EIO) or number (5): one the kernel defines for user space,
    or EPROBE_DEFER for a probe."""
    if value == "EPROBE_DEFER" or value == str(EPROBE_DEFER):
        if point != "probe":
            reject(m, "faults", "EPROBE_DEFER is a probe's answer only")
        return EPROBE_DEFER
    n = errno_named(value)
    if n is None:
        try:
            n = int(value, 0)
        except ValueError:
            reject(m, "faults", f"fail={value[:32]!r} is no errno name or number")
    if n not in errno.errorcode:
        reject(m, "faults", f"fail={value[:32]} is no errno")
    return n


def _times(m, value: str) -> int | None:
    if value == "always":
        return None
    try:
        n = int(value, 10)
    except ValueError:
        reject(m, "faults", f"times={value[:32]!r} is not a number or 'always'")
    if not 1 <= n <= MAX_TIMES:
        reject(m, "faults", f"times={n} is outside 1..{MAX_TIMES}")
    return n
