"""The kernel's parsers for sysfs stores (lib/kstrtox.c, lib/kstrtobool), with its errnos."""
from __future__ import annotations

import errno
import re

from vfakefs.model.errors import SysfsError

_NUM = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\n?")   # fullmatch: one newline at most


def kstrtoul(text: str, bits: int = 64) -> int:
    """Base 0: decimal, 0x hex, leading-0 octal; one trailing newline; no sign, no spaces."""
    t = text[1:] if text.startswith("+") else text
    m = _NUM.fullmatch(t)
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
    """lib/kstrtox.c: the first character decides (y/t/1, n/f/0); after 'o' the second
    ('n' on, 'f' off). Everything after that is ignored."""
    c0, c1 = text[:1].lower(), text[1:2].lower()
    if c0 in ("y", "t", "1"):
        return True
    if c0 in ("n", "f", "0"):
        return False
    if c0 == "o" and c1 in ("n", "f"):
        return c1 == "n"
    raise SysfsError(errno.EINVAL)
