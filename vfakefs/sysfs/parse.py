"""The kernel's parsers for sysfs stores (lib/kstrtox.c, lib/kstrtobool), with its errnos."""
from __future__ import annotations

import errno
import re

from vfakefs.model.errors import SysfsError

_NUM = re.compile(r"^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\n?$")


def kstrtoul(text: str, bits: int = 64) -> int:
    """Base 0: decimal, 0x hex, leading-0 octal; one trailing newline; no sign, no spaces."""
    t = text[1:] if text.startswith("+") else text
    m = _NUM.match(t)
    if not m:
        raise SysfsError(errno.EINVAL)
    s = m.group(1)
    v = int(s, 16) if s[:2].lower() == "0x" else int(s, 8) if s.startswith("0") and len(s) > 1 else int(s)
    if v >= 1 << bits:
        raise SysfsError(errno.ERANGE)
    return v


def kstrtol(text: str) -> int:
    neg = text.startswith("-")
    v = kstrtoul(text[1:] if neg else text, 63)
    return -v if neg else v


def kstrtobool(text: str) -> bool:
    t = text.rstrip("\n") if text.endswith("\n") else text
    if t[:1] in ("y", "Y", "t", "T", "1"):
        return True
    if t[:1] in ("n", "N", "f", "F", "0"):
        return False
    if t[:2].lower() == "on":
        return True
    if t[:3].lower() == "off":
        return False
    raise SysfsError(errno.EINVAL)


def sysfs_streq(a: str, b: str) -> bool:
    """Equal, allowing one trailing newline on either side."""
    return a.removesuffix("\n") == b.removesuffix("\n")
