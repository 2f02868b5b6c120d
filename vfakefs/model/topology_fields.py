"""What each field of a topology file may hold: type and range, checked before
anything is built, so a mistake is one TopologyError naming file, device and
field (never a traceback, never a value that breaks the machine later)."""
from __future__ import annotations

import re

from vfakefs.model.pci.builder import SPEED_CODES

BUS_MAX = 0xFF                     # bus numbers are 8 bits (a bridge's bus number registers)
RESET_METHODS = {"device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus"}   # pci_reset_fn_methods
ASPM_ATTRS = {"clkpm", "l0s_aspm", "l1_aspm", "l1_1_aspm", "l1_2_aspm", "l1_1_pcipm", "l1_2_pcipm"}
BAR_KEYS = {"index", "type", "size", "prefetch", "address"}
LINK_KEYS = {"speed", "width", "max_speed", "max_width", "port"}
# the largest BAR of each kind: I/O BARs decode at most 256 ports; a 32-bit BAR half the
# 4 GiB space; a 64-bit BAR (or a VF BAR times TotalVFs) what our 48-bit allocator holds
BAR_MAX = {"io": 256, "mem32": 1 << 31, "mem64": 1 << 44}
ADDR_END = {"io": 1 << 16, "mem32": 1 << 32, "mem64": 1 << 64}


def _u(lo: int, hi: int):
    def check(v):
        if not isinstance(v, int) or isinstance(v, bool):
            return f"{v!r} is not an integer"
        if not lo <= v <= hi:
            return f"{v!r} is out of range {lo}..{hi:#x}"
    return check


def _is(kind, what: str):
    return lambda v: None if isinstance(v, kind) and not (kind is int and isinstance(v, bool)) else \
        f"{v!r} is not {what}"


def _name(maxlen: int = 255):
    """A file name the view shows: no '/', no NUL, not '.' or '..'."""
    def check(v):
        if not isinstance(v, str) or not v or len(v) > maxlen or "/" in v or "\0" in v or v in (".", ".."):
            return f"{v!r} is not a name (1-{maxlen} characters, no '/')"
    return check


def _relpath(v):
    if not isinstance(v, str) or not v or v.startswith("/") or "\0" in v or \
            any(p in ("", ".", "..") for p in v.split("/")):
        return f"{v!r} is not a relative path without '..'"


def _list(item):
    def check(v):
        if not isinstance(v, list):
            return f"{v!r} is not a list"
        for x in v:
            why = item(x)
            if why:
                return why
    return check


def _either(*checks):
    def check(v):
        whys = [c(v) for c in checks]
        return None if None in whys else whys[0]
    return check


def _among(names):
    return lambda v: None if v in names else f"{v!r} is not one of {', '.join(sorted(names))}"


def _rmrr(v):
    if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            and 0 <= v[0] <= v[1] < 1 << 64):
        return f"{v!r} is not [start, end] with start <= end"


_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_SIZE = re.compile(r"(\d+)\s*([KMGT]?)i?B?", re.I)
ANY = lambda v: None   # noqa: E731 - checked on its own (bars, rom, sriov, link, msi_irqs)
TEXT = _is(str, "a string")
BOOL = _is(bool, "true or false")
U8, U16, U64 = _u(0, 0xFF), _u(0, 0xFFFF), _u(0, (1 << 64) - 1)
TABLE = _is(dict, "a table")

TOP_TYPES = {"name": TEXT, "description": TEXT, "kernel": _is((str, int, float), "a kernel version"),
             "cmdline": TEXT, "iommu": TABLE, "drivers": _list(_name(64)), "device": _list(ANY),
             "cpus": _u(1, 512), "slot_module": _name(64), "root_dirs": _list(_name()), "acpi": TABLE, "recorded": TABLE,
             "cpu": TABLE, "numa_node": ANY, "memory": ANY,   # the locality: checked in locality_fields.py
             "net": TABLE, "firmware": TABLE, "root_buses": _list(TEXT)}
IOMMU_TYPES = {"type": TEXT, "interrupt_remapping": BOOL, "x2apic": BOOL, "cap": U64, "ecap": U64,
               "reg_base": _u(0, (1 << 52) - 1), "version": _list(_u(0, 15)), "iotlb_entries": _u(1, 1 << 16)}
DEVICE_TYPES = {
    "bdf": TEXT, "kind": TEXT, "parent": TEXT, "vendor": U16, "device": U16, "subsystem_vendor": U16,
    "subsystem_device": U16, "class": _u(0, 0xFFFFFF), "revision": U8, "multifunction": BOOL,
    "acs": _either(BOOL, U16), "bars": ANY, "rom": ANY, "irq": U16, "msi": _u(0, 32), "msix": _u(0, 2048),
    "msi_irqs": ANY, "numa_node": _u(-1, 1023), "driver": TEXT, "netdev": _either(_name(15), _list(_name(15))),
    "sriov": TABLE, "iommu_group": _u(0, 0xFFFFFF), "link": TABLE, "config": TEXT, "firmware_node": _relpath,
    "reset_methods": _list(_among(RESET_METHODS)), "aspm": _list(_among(ASPM_ATTRS)),
    "slot": _either(_name(), _u(0, 0xFFFF)), "hotplug_slot": _either(_name(), _u(0, 0x1FFF)), "dma_mask_bits": _u(12, 64), "secondary_bus": U8,
    "subordinate_bus": U8, "aer": BOOL, "ari": BOOL, "extra_dirs": _list(_relpath), "rmrr": _list(_rmrr),
    "comment": TEXT, "command": U16, "ats": BOOL, "nvme": ANY, "mac": lambda v: None if isinstance(v, str) and _MAC.fullmatch(v) else
    f"{v!r} is not a MAC address (xx:xx:xx:xx:xx:xx)"}
DEVICE_KEYS = set(DEVICE_TYPES)
SRIOV_TYPES = {"total_vfs": _u(1, 0xFFFF), "offset": _u(1, 0xFFFF), "stride": _u(1, 0xFFFF), "vf_device": U16,
               "vf_driver": TEXT, "vf_bars": ANY, "vf_config": TEXT,
               "vf_probe_fails_after": lambda v: None if isinstance(v, (int, float)) and not isinstance(v, bool)
               and 0 <= v <= 3600 else f"{v!r} is not a number of seconds 0..3600"}


def check_fields(err, where: str, table, types: dict) -> None:
    """Every key known, every value of its type and range."""
    if not isinstance(table, dict):
        raise err(where, f"{table!r} is not a table")
    bad = set(table) - set(types)
    if bad:
        raise err(where, f"unknown key {sorted(bad)[0]!r} (known: {', '.join(sorted(types))})")
    for key, value in table.items():
        why = types[key](value)
        if why:
            raise err(f"{where}.{key}" if where else key, why)


def parse_size(value) -> int | None:
    """A number of bytes, or "16K", "1M", "2G" (KiB, MiB, ...: "2GiB", "2GB" too); None if not one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    return None if m is None else int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2).upper()]


def size_of(err, where: str, value) -> int:
    """A size: a number of bytes, or "16K", "1M", "2G"."""
    n = parse_size(value)
    if n is None:
        raise err(where, f"size {value!r} is not a number (e.g. 16384, \"16K\", \"1M\")")
    if n <= 0 or n & (n - 1):
        raise err(where, f"size {n:#x} is not a power of two")
    return n


def check_bars(err, where: str, bars, count: int, copies: int = 1) -> list[dict]:
    """BAR tables, normalized ({index, type, size, prefetch[, address]}); `copies`: a VF BAR
    whose IOV resource holds TotalVFs of it."""
    if not isinstance(bars, list):
        raise err(where, f"{bars!r} is not a list of BAR tables")
    out, used = [], set()
    for j, b in enumerate(bars):
        w = f"{where}[{j}]"
        check_fields(err, w, b, {"index": _u(0, count - 1), "type": _among(set(BAR_MAX)), "size": ANY,
                                 "prefetch": BOOL, "address": U64})
        if "size" not in b:
            raise err(w, "missing required key 'size'")
        idx, kind = b.get("index", j), b.get("type", "mem32")
        if idx >= count:
            raise err(f"{w}.index", f"BAR index {idx} out of range 0..{count - 1}")
        if idx in used:
            raise err(f"{w}.index", f"BAR {idx} given twice")
        used.add(idx)
        size = size_of(err, f"{w}.size", b["size"])
        if size * copies > BAR_MAX[kind]:
            raise err(f"{w}.size", f"{size:#x}{f' x {copies} VFs' if copies > 1 else ''} is larger than a "
                                   f"{kind} BAR can be ({BAR_MAX[kind]:#x})")
        nb = {"index": idx, "type": kind, "size": size, "prefetch": b.get("prefetch", False)}
        if "address" in b:
            a = b["address"]
            if a % size or a + size * copies > ADDR_END[kind]:
                raise err(f"{w}.address", f"{a:#x} is not aligned to its size or past the {kind} space")
            nb["address"] = a
        out.append(nb)
    return out


def check_rom(err, where: str, rom) -> dict:
    spec = rom if isinstance(rom, dict) else {"size": rom}
    check_fields(err, where, spec, {"size": ANY, "address": _u(0, (1 << 32) - 1)})
    size = size_of(err, f"{where}.size", spec.get("size"))
    if size > 1 << 24:
        raise err(f"{where}.size", f"{size:#x} is larger than an expansion ROM can be (16 MiB)")
    if "address" in spec and (spec["address"] % max(size, 2048) or spec["address"] + size > 1 << 32):
        raise err(f"{where}.address", f"{spec['address']:#x} is not aligned to the ROM's size")
    return dict(spec, size=size)


def check_link(err, where: str, link) -> None:
    width = _u(1, 32)
    speed = lambda v: None if str(v) in SPEED_CODES else \
        f"{v!r} is not a PCIe speed in GT/s ({', '.join(k for k in SPEED_CODES if '.' in k or k == '8')})"
    check_fields(err, where, link, {"speed": speed, "max_speed": speed, "width": width, "max_width": width,
                                    "port": U8})


def check_msi_irqs(err, where: str, spec) -> None:
    """[first, count, kind], {irqs = [...], kind = ...} or {first, count, kind}."""
    if spec is None:
        return
    kind = _among({"msi", "msix"})
    if isinstance(spec, list):
        if len(spec) != 3:
            raise err(where, "expected [first irq, count, \"msi\"|\"msix\"]")
        spec = dict(zip(("first", "count", "kind"), spec))
    if not isinstance(spec, dict):
        raise err(where, f"{spec!r} is not a list or table")
    if "irqs" in spec:
        check_fields(err, where, spec, {"irqs": _list(_u(0, 0xFFFF)), "kind": kind})
    else:
        check_fields(err, where, spec, {"first": _u(0, 0xFFFF), "count": _u(1, 2048), "kind": kind})
        for key in ("first", "count", "kind"):
            if key not in spec:
                raise err(where, f"missing {key!r}")
