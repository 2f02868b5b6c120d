"""Module parameters (kernel/params.c): the load-time argument string parse_args()
reads, and each type's param_set_* / param_get_*, which sysfs stores and shows share."""
from __future__ import annotations

import errno

from vfakefs.model.errors import SysfsError
from vfakefs.model.parse import kstrtobool, kstrtol, kstrtoul, sysfs_streq

CHARP_MAX = 1024                   # param_set_charp: "string parameter too long"
STRING_MAX = {"ids": 1024}         # module_param_string(ids, ids, sizeof(ids) = 1024, 0)

_INTS = {"byte": (False, 8), "short": (True, 16), "ushort": (False, 16), "int": (True, 32),
         "uint": (False, 32), "long": (True, 64), "ulong": (False, 64), "ullong": (False, 64)}


def _uint_minmax(lo: int, hi: int):
    """param_set_uint_minmax(): kstrtouint, then EINVAL outside [lo, hi]."""
    def parse(text: str) -> int:
        v = kstrtoul(text, 32)
        if not lo <= v <= hi:
            raise SysfsError(errno.EINVAL)
        return v
    return parse


def _choice(*words: str):
    def parse(text: str) -> str:
        for w in words:
            if sysfs_streq(text, w):
                return w
        raise SysfsError(errno.EINVAL)
    return parse


# module_param_cb()s' own set ops, by (module, parameter): the others take any text
CALLBACKS = {
    ("nvme", "io_queue_depth"): _uint_minmax(2, 4095),          # io_queue_depth_set
    ("nvme_core", "iopolicy"): _choice("numa", "round-robin"),  # nvme_set_iopolicy
}


def parse_value(p, text: str | None, module: str = ""):
    """param_set_<type>(val): the value, or SysfsError (EINVAL, ERANGE, ENOSPC)."""
    cb = CALLBACKS.get((module, p.name))
    if cb is not None:
        if text is None:
            raise SysfsError(errno.EINVAL)
        return cb(text)
    t = p.type
    if t in ("bool", "invbool"):
        v = True if text is None else kstrtobool(text)     # a bare name means set
        return v if t == "bool" else not v
    if text is None:
        raise SysfsError(errno.EINVAL)
    if t in _INTS:
        signed, bits = _INTS[t]
        return kstrtol(text, bits) if signed else kstrtoul(text, bits)
    if t == "array of int":
        return [kstrtol(x, 32) for x in text.split(",")]
    if t == "charp" and len(text) > CHARP_MAX:
        raise SysfsError(errno.ENOSPC)
    if t == "string" and len(text) + 1 > STRING_MAX.get(p.name, CHARP_MAX):
        raise SysfsError(errno.ENOSPC)
    return text                                           # charp, string, module_param_cb's


def show_value(p, value) -> str:
    """param_get_<type>(): Y/N for bools, the number, the string; with the newline."""
    if isinstance(value, bool):
        return ("Y" if value else "N") + "\n"
    if isinstance(value, list):
        return ",".join(map(str, value)) + "\n"
    return f"{value}\n"


def next_arg(args: str, pos: int) -> tuple[str, str | None, int]:
    """next_arg(): name[=value], the value possibly in double quotes; whitespace separates."""
    while pos < len(args) and args[pos].isspace():
        pos += 1
    start, quoted, eq = pos, False, None
    while pos < len(args):
        ch = args[pos]
        if ch == '"':
            quoted = not quoted
        elif ch.isspace() and not quoted:
            break
        elif ch == "=" and eq is None:
            eq = pos
        pos += 1
    word = args[start:pos]
    if eq is None:
        return word.replace('"', ""), None, pos
    name, value = args[start:eq], args[eq + 1:pos]
    if value.startswith('"') and value.endswith('"') and len(value) > 1:
        value = value[1:-1]
    return name, value, pos


def parse_args(info, args: str, log) -> tuple[dict, list[str]]:
    """parse_args() for a module's load: {param: value} for its own parameters (names
    match with - and _ alike, parameq), and the unknown names (unknown_module_param_cb
    warns and ignores them). A bad value: the kernel's line, then EINVAL/ERANGE/ENOSPC."""
    values, unknown, pos = {}, [], 0
    while True:
        name, value, pos = next_arg(args, pos)
        if not name:
            return values, unknown
        p = info.param(name.replace("-", "_"))
        if p is None:
            unknown.append(name)
            continue
        try:
            values[p.name] = parse_value(p, value, info.name)
        except SysfsError as e:
            shown = value if value is not None else ""
            why = "too large for" if e.errno == errno.ENOSPC else "invalid for"
            log(f"{info.name}: `{shown}' {why} parameter `{name}'")
            raise
