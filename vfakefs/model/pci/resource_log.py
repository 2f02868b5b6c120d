"""The PCI core's resource lines in the kernel log.

What drivers/pci/probe.c prints while it enumerates (the root bus's resources; per
function its setup line, BARs, ROM, header quirks, PM support and SR-IOV's VF BARs; per
bridge its bus range and windows), and what setup-bus.c prints while it assigns what the
firmware left unassigned (`...: assigned`), programs each bridge (`PCI bridge to`) and
lists every bus's resources. Each function returns the lines; boot.py puts them on the
boot clock, machine.py (rescan) on the running one.

The addresses are the model's (each BAR as its config space holds it). What the firmware
left unassigned is the topology's `[firmware] unassigned` (model/firmware.py): printed as
the firmware left it while enumerating (a BAR at 0, a window not at all), then `assigned`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from vfakefs.model.pci import quirks
from vfakefs.model.pci.pci import IORESOURCE_IO, IORESOURCE_MEM_64, IORESOURCE_PREFETCH, IORESOURCE_WINDOW, Resource

if TYPE_CHECKING:
    from vfakefs.model.machine import Machine
    from vfakefs.model.pci.pci import PciFunction

WINDOW_NAMES = ("io window", "mem window", "pref window")   # [firmware] unassigned's names for the three


def pR(start: int, end: int, flags: int) -> str:
    """lib/vsprintf.c resource_string() for an io or mem resource: `[io  0x0000-0x0cf7 window]`,
    `[mem 0xfe000000-0xfe003fff 64bit pref]` (io at least 4 hex digits, mem 8)."""
    if flags & IORESOURCE_IO:
        text = "[io  0x%04x-0x%04x" % (start, end)
    else:
        text = "[mem 0x%08x-0x%08x" % (start, end)
    for bit, word in ((IORESOURCE_MEM_64, " 64bit"), (IORESOURCE_PREFETCH, " pref"), (IORESOURCE_WINDOW, " window")):
        if flags & bit:
            text += word
    return text + "]"


def res(r: Resource, start: int | None = None) -> str:
    start = r.start if start is None else start
    return pR(start, start + r.size - 1, r.flags)


def bus_range(first: int, last: int) -> str:
    return "[bus %02x]" % first if first == last else "[bus %02x-%02x]" % (first, last)


def _unset(m: Machine, f: PciFunction) -> frozenset:
    return m.firmware.unassigned.get(f.bdf, frozenset())


def _resources(f: PciFunction):
    """(name, resource, alignment) of each of the function's resources in the kernel's order:
    BARs, ROM, the IOV BARs (one VF's BAR for its alignment), the bridge windows."""
    for i, r in enumerate(f.bars):
        if r.size:
            yield f"BAR {i}", r, r.size
    if f.rom.size:
        yield "ROM", f.rom, f.rom.size
    if f.sriov is not None:
        for i, (one, all_) in enumerate(zip(f.sriov.vf_bars, f.sriov.iov_resources())):
            if all_.size:
                yield f"VF BAR {i}", all_, one.size
    for name, w in zip(WINDOW_NAMES, f.windows):
        if w.size:
            yield name, w, 0x1000 if w.is_io else 0x100000


def _label(name: str) -> str:
    return "bridge window" if name in WINDOW_NAMES else name


# --- enumeration (probe.c) ----------------------------------------------------------------
def bridge_lines(m: Machine, f: PciFunction, unset=frozenset()) -> list[str]:
    """pci_read_bridge_bases() / pci_read_bridge_windows(): the bus range, then each window
    the bridge decodes (one the firmware left closed is not printed)."""
    out = [f"PCI bridge to {bus_range(f.secondary, f.subordinate)}"]
    for name, w in zip(WINDOW_NAMES, f.windows):
        if w.size and name not in unset:
            out.append("  bridge window " + res(w))
    return out


def device_lines(m: Machine, f: PciFunction, unset=frozenset()) -> list[str]:
    """What pci_setup_device() and pci_device_add() print for one function (without the
    `pci <bdf>: ` prefix): the setup line; for a function the bus scan found (not a VF, which
    pci_iov_add_virtfn sets up from its PF) its BARs and ROM as the firmware left them, the
    header quirks, (6.8+) a bridge's windows, PM support, and SR-IOV's VF BARs. `unset`: what
    the firmware left unassigned (at boot; a rescan finds what the kernel assigned)."""
    out = [f.setup_line(m.profile.pci_setup_type_str)]
    if f.is_virtfn:
        return out
    for i, r in enumerate(f.bars):
        if r.size:
            out.append(f"BAR {i} " + res(r, 0 if f"BAR {i}" in unset else None))
    if f.rom.size:
        out.append("ROM " + res(f.rom, 0 if "ROM" in unset else None))
    out += quirks.header(f)
    if f.is_bridge and m.profile.bridge_windows_at_setup:
        out += bridge_lines(m, f, unset)
    out += _pm_lines(f)
    if f.sriov is not None:
        total = f.sriov.hw_total_vfs
        for i, one in enumerate(f.sriov.vf_bars):
            if one.size:
                start = 0 if f"VF BAR {i}" in unset else one.start
                out.append(f"VF BAR {i} " + res(one, start))
                out.append(f"VF BAR {i} " + pR(start, start + one.size * total - 1, one.flags)
                           + f": contains BAR {i} for {total} VFs")
    return out


def _pm_lines(f: PciFunction) -> list[str]:
    """pci_pm_init(): D1/D2 support and the states PME# can be signalled from (PMC)."""
    pos = f.caps.get(0x01)
    if pos is None:
        return []
    pmc = f.config.r16(pos + 2)
    out = []
    if pmc & 0x600:
        out.append("supports%s%s" % (" D1" if pmc & 0x200 else "", " D2" if pmc & 0x400 else ""))
    pme = pmc >> 11
    if pme:
        out.append("PME# supported from" + "".join(s for bit, s in enumerate((" D0", " D1", " D2", " D3hot", " D3cold"))
                                                  if pme >> bit & 1))
    return out


def _bus_devices(m: Machine, bridge) -> list:
    """The functions on bridge's secondary bus (the root bus for None), from the function
    list itself: a rescan asks while it adds them, before m.children()'s index sees them."""
    return [f for f in m.functions if f.parent is bridge and not f.is_virtfn]


def enumeration(m: Machine) -> list[tuple[str, str | None]]:
    """The boot's bus scan, as (line, boot stage starting there): the host bridge and its
    windows, then depth first: a bus's functions, (6.1) the bridge above it, and for each
    bridge on it the hotplug slots of its secondary bus (acpiphp registers them as the
    bus is added) before that bus is scanned."""
    fw = m.firmware
    out: list[tuple[str, str | None]] = [("PCI host bridge to bus 0000:00", "pci_host")]
    out += [(f"pci_bus 0000:00: root bus resource {pR(s, e, fl)}", None) for s, e, fl in fw.pci_windows]
    out.append(("pci_bus 0000:00: root bus resource [bus 00-ff]", None))
    first = [True]

    def scan(bridge) -> None:
        devs = _bus_devices(m, bridge)
        for f in devs:
            for line in device_lines(m, f, _unset(m, f)):
                out.append((f"pci {f.name}: {line}", "pci" if first[0] else None))
                first[0] = False
        if bridge is not None and not m.profile.bridge_windows_at_setup:
            out.extend((f"pci {bridge.name}: {line}", None) for line in bridge_lines(m, bridge, _unset(m, bridge)))
        for f in devs:
            if f.is_bridge:
                for slot in m.slots:
                    if slot.module == "acpiphp" and int(slot.address.split(":")[1], 16) == f.secondary:
                        out.append((f"acpiphp: Slot [{slot.name}] registered", None))
                scan(f)
    scan(None)
    return out


def bridges_after(m: Machine, added: list) -> dict[int, list]:
    """A rescan's new bridges by the function (id) after whose lines each is named: 6.1 reads
    a new bridge's bus range and windows once the bus below it was scanned (pcibios_fixup_bus
    -> pci_read_bridge_bases): after its last new child, else after itself. 6.8+: none here
    (device_lines names it at its setup)."""
    after: dict[int, list] = {}
    if not m.profile.bridge_windows_at_setup:
        for b in added:
            if b.is_bridge:
                kids = [f for f in added if f.parent is b]
                after.setdefault(id(kids[-1] if kids else b), []).append(b)
    return after


# --- assignment (setup-bus.c) --------------------------------------------------------------
def _assign_bus(m: Machine, devs: list, wanted, setup_bridge, out: list[str]) -> None:
    """__pci_bus_assign_resources(): the bus's unassigned resources, largest alignment first
    (pbus_assign_resources_sorted), then each bridge's bus below it and the bridge itself
    (pci_setup_bridge, for a bridge not yet enabled)."""
    todo = [(align, f, name, r) for f in devs for name, r, align in _resources(f) if wanted(f, name)]
    todo.sort(key=lambda t: -t[0])        # stable: ties keep device and resource order
    out += [f"pci {f.name}: {_label(name)} {res(r)}: assigned" for _, f, name, r in todo]
    for f in devs:
        if f.is_bridge:
            _assign_bus(m, _bus_devices(m, f), wanted, setup_bridge, out)
            if setup_bridge(f):
                out += [f"pci {f.name}: {line}" for line in bridge_lines(m, f)]


def _depth(m: Machine, bridge) -> int:
    below = [_depth(m, f) + 1 for f in _bus_devices(m, bridge) if f.is_bridge]
    return max(below, default=0)


def boot_assignment(m: Machine) -> list[str]:
    """pci_assign_unassigned_resources() at fs_initcall: the `max bus depth` line when
    reallocation is on (pci=realloc, or an IOV BAR the firmware left unassigned:
    pci_realloc_detect), what the firmware left unassigned, every bridge programmed, then
    pci_bus_dump_resources() of every bus, and pci_apply_final_quirks()'s cache line size."""
    out: list[str] = []
    args = m.cmdline.split()
    unset = m.firmware.unassigned
    realloc = "pci=realloc" in args or ("pci=realloc=off" not in args and "pci=norealloc" not in args and any(
        n.startswith("VF BAR") for names in unset.values() for n in names))
    if realloc:
        depth = _depth(m, None)
        out.append(f"pci_bus 0000:00: max bus depth: {depth} pci_try_num: {depth + 1}")
    _assign_bus(m, _bus_devices(m, None), lambda f, name: name in unset.get(f.bdf, ()), lambda f: True, out)
    out += dump_buses(m)
    out.append(cache_line_size(m))
    return out


def rescan_assignment(m: Machine, added: list) -> list[str]:
    """pci_assign_unassigned_bus_resources() after a rescan: the new functions' resources
    (nothing claims them yet), and the bridges among them (not enabled yet)."""
    new = set(map(id, added))
    out: list[str] = []
    _assign_bus(m, _bus_devices(m, None), lambda f, name: id(f) in new,
                lambda f: id(f) in new and f.enable_cnt == 0, out)
    return out


def dump_buses(m: Machine) -> list[str]:
    """pci_bus_dump_resources(): the root bus's windows (numbered from 4, after the four
    bridge slots), then each bus below in depth-first order with its bridge's windows 0-2."""
    out = [f"pci_bus 0000:00: resource {4 + i} {pR(s, e, fl)}" for i, (s, e, fl) in enumerate(m.firmware.pci_windows)]

    def walk(bridge) -> None:
        for f in _bus_devices(m, bridge):
            if f.is_bridge:
                out.extend(f"pci_bus 0000:{f.secondary:02x}: resource {i} {res(w)}"
                           for i, w in enumerate(f.windows) if w.size)
                walk(f)
    walk(None)
    return out


def cache_line_size(m: Machine) -> str:
    """pci_apply_final_quirks(): the first nonzero Cache Line Size register (in dwords) of any
    function, against the default (64 bytes on x86); a mismatch would fall back to it."""
    cls = next((f.config.r8(0x0C) for f in m.functions if f.config.r8(0x0C)), 0)
    return "PCI: CLS %d bytes, default 64" % (cls << 2)
