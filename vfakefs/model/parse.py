"""The kernel's parsers for sysfs stores (lib/kstrtox.c, lib/string.c), with their errnos.

A store's buffer is a C string: kernfs_fop_write_iter() copies the write and
NUL-terminates it, and every C string function a store calls (kstrto*, sysfs_streq,
strchr) stops at the first NUL. So each parser here reads up to the first NUL:
`printf '0\\0junk' > sriov_numvfs` is kstrtou16("0") for the kernel and for us.
A store that looks at the byte count itself (driver_override, rom) gets the whole text.
"""
from __future__ import annotations

import errno

from vfakefs.model.errors import SysfsError

_DIGITS = "0123456789abcdef"


def cstr(text: str) -> str:
    """What a C string function sees of a store's buffer: up to the first NUL."""
    nul = text.find("\0")
    return text if nul < 0 else text[:nul]


def _kstrtoull(s: str, base: int, bits: int) -> int:
    """_kstrtoull(): the radix prefix (_parse_integer_fixup_radix), the digits, an
    overflow check as it goes (ERANGE, before any trailing junk is looked at), one
    optional newline, then nothing. No sign, no spaces."""
    if base in (0, 16) and s[:2].lower() == "0x" and s[2:3].lower() in _DIGITS and s[2:3]:
        s, base = s[2:], 16
    elif base == 0:
        base = 8 if s[:1] == "0" else 10
    value, n, overflow = 0, 0, False
    for ch in s:
        d = _DIGITS.find(ch.lower())
        if d < 0 or d >= base:
            break
        value = value * base + d
        overflow |= value >= 1 << 64
        n += 1
    if overflow:
        raise SysfsError(errno.ERANGE)
    if n == 0:
        raise SysfsError(errno.EINVAL)
    rest = s[n:]
    if rest not in ("", "\n"):
        raise SysfsError(errno.EINVAL)
    if value >= 1 << bits:
        raise SysfsError(errno.ERANGE)
    return value


def kstrtoul(text: str, bits: int = 64, base: int = 0) -> int:
    """kstrtoull() and its narrower forms (kstrtou16: bits=16): one leading '+'."""
    s = cstr(text)
    if s.startswith("+"):
        s = s[1:]
    return _kstrtoull(s, base, bits)


def kstrtol(text: str, bits: int = 64, base: int = 0) -> int:
    """kstrtoll() and its narrower forms (kstrtoint: bits=32). A '-' goes straight to
    _kstrtoull, so '-+1' is EINVAL; '+' is taken only without '-'."""
    s = cstr(text)
    if s.startswith("-"):
        v = _kstrtoull(s[1:], base, 64)
        if v > 1 << (bits - 1):
            raise SysfsError(errno.ERANGE)
        return -v
    v = kstrtoul(s, 64, base)
    if v >= 1 << (bits - 1):
        raise SysfsError(errno.ERANGE)
    return v


def kstrtoint(text: str, base: int = 0) -> int:
    return kstrtol(text, 32, base)


def kstrtobool(text: str) -> bool:
    """lib/kstrtox.c: the first character decides (y/t/1, n/f/0); after 'o' the second
    ('n' on, 'f' off). Everything after that is ignored."""
    s = cstr(text)
    c0, c1 = s[:1].lower(), s[1:2].lower()
    if c0 in ("y", "t", "1"):
        return True
    if c0 in ("n", "f", "0"):
        return False
    if c0 == "o" and c1 in ("n", "f"):
        return c1 == "n"
    raise SysfsError(errno.EINVAL)


def simple_strtoul10(text: str) -> int:
    """simple_strtoul(buf, NULL, 10): the leading decimal digits, 0 when there are none
    (no sign, no whitespace skipped, never an error: `garbage` is 0)."""
    digits = ""
    for ch in cstr(text):
        if not ("0" <= ch <= "9"):
            break
        digits += ch
    return int(digits) if digits else 0


def sysfs_streq(text: str, word: str) -> bool:
    """sysfs_streq(): equal as C strings, either side may end in one newline."""
    return cstr(text).removesuffix("\n") == word
