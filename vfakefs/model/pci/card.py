"""A card to hot-plug: [[device]] tables as a topology file has them (model/topology.py),
read, checked, renumbered into the slot's buses, given addresses inside the port's
windows, and built into functions by the code the boot uses (bringup._function).

The card's functions without a `parent` sit in the slot: device 0 of one bus (pciehp
scans devfn 0 of the port's secondary bus: pci_scan_slot(parent, PCI_DEVFN(0, 0))); that
bus is renumbered to the port's secondary bus, the card's other buses (a switch on the
card) by the same offset. Everything is checked before anything changes: the fields by the
topology checker (the machine's own topology with the card below the port), the buses
against the port's bus range, the resources against the port's windows.
"""
from __future__ import annotations

import errno
import re
import tomllib
from pathlib import Path

from vfakefs.model import bringup, topology, userfile
from vfakefs.model.errors import TopologyError
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.pci.pci import KINDS
from vfakefs.model.pci.resources import Allocator

# what a card cannot say: the machine decides these when it is plugged
NOT_ON_A_CARD = {"iommu_group": "its IOMMU group is the one iommu_probe_device() finds",
                 "slot": "the slot is the port's", "hotplug_slot": "a hot-plug slot on a card is not modelled",
                 "config": "a config dump carries the addresses of another machine",
                 "netdev": "the driver names a hot-added card's interfaces (ethN, dev_alloc_name)",
                 "firmware_node": "a hot-added card has no ACPI companion",
                 "secondary_bus": None, "subordinate_bus": None}       # (allowed: renumbered)
CARD_KEYS = {"device", "name", "description"}


class CardError(Exception):
    def __init__(self, err: int, message: str):
        super().__init__(message)
        self.errno = err


class _NoAllocator(Allocator):
    """Every address of a card is placed before it is built (place())."""

    def take(self, kind: str, size: int) -> int:
        raise AssertionError("a card's resource was not placed")


def read(path: str) -> dict:
    if not path.startswith("/"):
        raise CardError(errno.EINVAL, f"{path!r}: the card file's path must be absolute")
    try:
        data = tomllib.loads(userfile.read_bytes(path).decode())
    except OSError as e:
        raise CardError(errno.EINVAL, f"{path}: {e.strerror}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise CardError(errno.EINVAL, f"{path}: not a TOML file ({e})") from None
    if set(data) - CARD_KEYS or not isinstance(data.get("device"), list) or not data["device"]:
        raise CardError(errno.EINVAL, f"{path}: a card file holds [[device]] tables (and a name, a description)")
    return data


def specs(m, port, path: str) -> list[dict]:
    """The card's checked specs, renumbered below port, in enumeration order."""
    data = read(path)
    entries = []
    for i, e in enumerate(data["device"]):
        if not isinstance(e, dict) or not isinstance(e.get("bdf"), str):
            raise CardError(errno.EINVAL, f"{path}: device #{i + 1}: a [[device]] table with a bdf")
        bad = sorted(k for k in e if NOT_ON_A_CARD.get(k))
        if bad:
            raise CardError(errno.EINVAL, f"{path}: device #{i + 1}: {bad[0]}: {NOT_ON_A_CARD[bad[0]]}")
        for table in [e.get("rom")] + list(e.get("bars") or []) + list((e.get("sriov") or {}).get("vf_bars") or []):
            if isinstance(table, dict) and "address" in table:
                raise CardError(errno.EINVAL, f"{path}: device #{i + 1}: the kernel assigns a hot-added card's "
                                              "addresses (no `address`)")
        entries.append(dict(e))
    shift = _renumber(port, entries, path)
    under = _under(m.topology.data.get("device", []), port.bdf)
    own = [_without_dumps(d) for d in m.topology.data.get("device", []) if id(d) not in under]
    combined = dict(m.topology.data, device=own + entries)
    try:
        topo = topology._Checker(combined, path, Path(path).parent).topology()
    except TopologyError as e:          # name the card's own entries as the card file counts them
        msg = re.sub(r"device #(\d+)", lambda g: f"device #{int(g.group(1)) - len(own)}"
                     if int(g.group(1)) > len(own) else f"the machine's device #{g.group(1)}", str(e))
        raise CardError(errno.EINVAL, msg) from None
    mine = {Bdf.from_str(e["bdf"]) for e in entries}
    order = [s for s in topo.order if s["bdf"] in mine]
    last = max([s["bdf"].bus for s in order] + [s["bus_range"][1] for s in order if "bus_range" in s])
    if last > port.subordinate:
        raise CardError(errno.ENOSPC, f"the card needs buses up to {last:02x} (shifted by {shift}); "
                                      f"the port {port.name} has {port.secondary:02x}-{port.subordinate:02x} "
                                      "(No bus number available for hot-added bridge)")
    for s in order:
        if s["driver"] and s["driver"] not in m.drivers:
            raise CardError(errno.EINVAL, f"{s['bdf']}: driver {s['driver']} is not loaded on this machine")
    return order


def _renumber(port, entries: list[dict], path: str) -> int:
    """Move the card's buses so that the slot's bus is the port's secondary bus."""
    try:
        bdfs = [Bdf.from_str(e["bdf"]) for e in entries]
        parents = [Bdf.from_str(e["parent"]) if isinstance(e.get("parent"), str) else None for e in entries]
    except ValueError as ex:
        raise CardError(errno.EINVAL, f"{path}: {ex}") from None
    tops = [b for b, e in zip(bdfs, entries) if "parent" not in e]
    if not tops or len({b.bus for b in tops}) != 1 or any(b.dev for b in tops):
        raise CardError(errno.EINVAL, f"{path}: the functions in the slot (those without a parent) are "
                                      "device 0 of one bus (functions 0-7)")
    shift = port.secondary - tops[0].bus
    for e, b, p in zip(entries, bdfs, parents):
        e["bdf"] = str(Bdf(port.bdf.domain, b.bus + shift, b.dev, b.fn))
        if "parent" not in e:
            e["parent"] = str(port.bdf)
        elif p is not None:
            e["parent"] = str(Bdf(port.bdf.domain, p.bus + shift, p.dev, p.fn))
        for key in ("secondary_bus", "subordinate_bus"):
            if isinstance(e.get(key), int) and not isinstance(e[key], bool):
                e[key] += shift
        if not 0 <= b.bus + shift <= 0xFF:
            raise CardError(errno.ENOSPC, f"{path}: bus {b.bus:02x} moves past ff")
    return shift


def _under(devices: list, port: Bdf) -> set:
    """The topology's own entries below port (a card it declared there at boot)."""
    def bdf(d, key):
        try:
            return Bdf.from_str(d[key]) if isinstance(d.get(key), str) else None
        except ValueError:
            return None
    below, grew = {port}, True
    while grew:
        grew = False
        for d in devices:
            b, p = bdf(d, "bdf"), bdf(d, "parent")
            if p in below and b not in below:
                below.add(b)
                grew = True
    return {id(d) for d in devices if bdf(d, "bdf") in below - {port}}


def _without_dumps(d):
    """An entry of the machine's topology as the card check needs it: its dumps were read at
    boot (relative to the topology's folder) and only decide its config space."""
    if not isinstance(d, dict):
        return d
    out = {k: v for k, v in d.items() if k != "config"}
    if isinstance(out.get("sriov"), dict):
        out["sriov"] = {k: v for k, v in out["sriov"].items() if k != "vf_config"}
    return out


# --- addresses: pci_assign_unassigned_bridge_resources() into the port's windows -------------------------------
def place(port, order: list[dict]) -> list[dict]:
    """Copies of the specs with every BAR, ROM and IOV BAR at an address inside the port's
    windows (I/O; memory; prefetchable 64-bit BARs in the prefetchable window when the port
    has one): a bus's resources largest first, each bridge's bus after them, its windows
    aligned as bridges' are (4K of I/O, 1M of memory). ENOSPC when they do not fit."""
    wins = (list(port.windows) + [None] * 3)[:3]
    cursor = [w.start if w is not None and w.size else None for w in wins]
    out = {s["bdf"]: _copy(s) for s in order}
    kids: dict = {}
    for s in order:
        kids.setdefault(s["parent"], []).append(out[s["bdf"]])

    def window(kind: str, prefetch: bool) -> int:
        if kind == "io":
            return 0
        return 2 if kind == "mem64" and prefetch and cursor[2] is not None else 1

    def take(w: int, size: int, align: int, what: str) -> int:
        if cursor[w] is None:
            raise CardError(errno.ENOSPC, f"{what} needs a window {port.name} does not have")
        start = -(-cursor[w] // align) * align
        if start + size - 1 > wins[w].end:
            raise CardError(errno.ENOSPC, f"{what} (size {size:#x}) does not fit in {port.name}'s window "
                                          f"{wins[w].start:#x}-{wins[w].end:#x} (pci=hpmemsize=, "
                                          "hpmmioprefsize=, hpiosize= size it at boot)")
        cursor[w] = start + size
        return start

    def bus(parent) -> None:
        todo = []
        for s in kids.get(parent, []):
            for b in s["bars"]:
                todo.append((b["size"], b["size"], window(b["type"], b["prefetch"]), b, s, f"BAR {b['index']}"))
            if s.get("rom"):
                todo.append((s["rom"]["size"], s["rom"]["size"], 1, s["rom"], s, "ROM"))
            sr = s.get("sriov")
            for b in (sr or {}).get("vf_bars", []):
                todo.append((b["size"], b["size"] * sr["total_vfs"], window(b["type"], b["prefetch"]), b, s,
                             f"VF BAR {b['index']}"))
        for align, size, w, table, s, what in sorted(todo, key=lambda t: -t[0]):
            table["address"] = take(w, size, max(align, 16 if w == 0 else 4096), f"{s['bdf']} {what}")
        for s in kids.get(parent, []):
            if KINDS[s["kind"]][1] == 1:
                _align_all(cursor)
                bus(s["bdf"])
                _align_all(cursor)
    bus(port.bdf)
    return [out[s["bdf"]] for s in order]


def _align_all(cursor: list) -> None:
    for w, gran in ((0, 0x1000), (1, 0x100000), (2, 0x100000)):
        if cursor[w] is not None:
            cursor[w] = -(-cursor[w] // gran) * gran


def _copy(s: dict) -> dict:
    out = dict(s, bars=[dict(b) for b in s["bars"]])
    if s.get("rom"):
        out["rom"] = dict(s["rom"])
    if s.get("sriov"):
        out["sriov"] = dict(s["sriov"], vf_bars=[dict(b) for b in s["sriov"]["vf_bars"]])
    return out


def build(m, port, placed: list[dict]) -> list:
    """The card's functions (bringup._function, as the boot builds them), parents set."""
    children: dict = {}
    for s in placed:
        children.setdefault(s["parent"], []).append(s)
    slots_used = {(s["bdf"].domain, s["bdf"].bus, s["bdf"].dev) for s in placed if s["bdf"].fn}
    made: dict = {}
    for s in reversed(placed):
        made[s["bdf"]] = bringup._function(s, _NoAllocator(), made, children, slots_used, m.cmdline)
    out = []
    for s in placed:
        f = made[s["bdf"]]
        f.parent = made.get(s["parent"], port)
        out.append(f)
    return out
