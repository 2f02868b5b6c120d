"""The PCI tree of a topology: parents checked and resolved, root buses, each bridge's bus
range (VF buses included, as pci_iov_bus_range reserves them), the enumeration order, and
VF routing ids that collide with nothing. err(where, msg) makes the TopologyError."""
from __future__ import annotations

from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.pci.pci import KINDS
from vfakefs.model.topology_fields import BUS_MAX


def vf_bus(pf_bus: int, pf_devfn: int, offset: int, stride: int, vf_id: int) -> int:
    """pci_iov_virtfn_bus(): not truncated to 8 bits, so a VF past bus 0xff is seen as such."""
    return pf_bus + ((pf_devfn + offset + stride * vf_id) >> 8)


def root_buses(err, declared: list, specs: list[dict]) -> set[tuple[int, int]]:
    """(domain, bus) of each root bus: bus 00 of every domain, and the `root_buses` a
    machine with several host bridges declares ("0000:17": pci0000:17, its own host bridge)."""
    roots = {(s["bdf"].domain, 0) for s in specs}
    for text in declared:
        try:
            domain, bus = (int(x, 16) for x in text.split(":"))
        except ValueError:
            domain = bus = -1
        if not (0 <= domain <= 0xFFFF and 0 < bus <= BUS_MAX) or len(text) != 7:
            raise err("root_buses", f"{text!r} is not a root bus DDDD:BB (bus 01..ff)")
        roots.add((domain, bus))
    return roots

def tree(err, declared_roots: list, specs: list[dict]) -> list[dict]:
    """Parents checked and resolved, each bridge's bus range worked out (bus_range), and the
    specs in device_add order: a bus's devices by devfn, then each bridge's bus."""
    by_bdf = {s["bdf"]: s for s in specs}
    roots = root_buses(err, declared_roots, specs)
    children: dict = {}
    for s in specs:
        if "parent" in s:
            try:
                p = Bdf.from_str(s["parent"])
            except ValueError as ex:
                raise err(f"{s['where']}.parent", str(ex)) from None
            if p not in by_bdf:
                raise err(f"{s['where']}.parent", f"parent {p} is not a device of this topology")
            if KINDS[by_bdf[p]["kind"]][1] != 1:
                raise err(f"{s['where']}.parent", f"parent {p} is a {by_bdf[p]['kind']}, not a bridge")
            if p.domain != s["bdf"].domain or s["bdf"].bus <= p.bus:
                # a bridge's secondary bus is above its own (so parents can never form a cycle)
                raise err(f"{s['where']}.parent", f"{s['bdf']} cannot sit below {p}: its bus must be "
                                                        f"above bus {p.bus:02x}, in domain {p.domain:04x}")
            s["parent"] = p
        elif (s["bdf"].domain, s["bdf"].bus) not in roots:
            raise err(s["where"], f"parent missing: {s['bdf']} is not on a root bus "
                                       "(bus 00, or one of `root_buses`)")
        children.setdefault(s.get("parent"), []).append(s)
    owner: dict[tuple[int, int], dict] = {r: {"where": f"root bus {r[0]:04x}:{r[1]:02x}"} for r in roots}
    for s in specs:
        kids = children.get(s["bdf"], [])
        buses = {k["bdf"].bus for k in kids}
        if len(buses) > 1:
            raise err(f"{s['where']}", "its children sit on different buses "
                                            f"({', '.join('%02x' % b for b in sorted(buses))})")
        sec = s.get("secondary_bus", min(buses) if buses else None)
        if sec is not None and buses and sec not in buses:
            raise err(f"{s['where']}.secondary_bus", f"{sec:#04x} is not its children's bus {min(buses):02x}")
        if sec is not None and sec <= s["bdf"].bus and KINDS[s["kind"]][1] == 1:
            raise err(f"{s['where']}.secondary_bus", f"{sec:#04x} is not above its own bus")
        if sec is not None:
            other = owner.setdefault((s["bdf"].domain, sec), s)
            if other is not s:
                raise err(f"{s['where']}.secondary_bus", f"bus {sec:02x} is also {other['where']}'s")
    next_bus = [max(s["bdf"].bus for s in specs) + 1]

    def bus_range(s) -> tuple[int, int]:
        """A bridge's secondary bus and the deepest bus below it, VFs' buses included
        (pci_iov_bus_range); bus numbers end at 0xff, and VFs beyond cannot be enabled."""
        kids = children.get(s["bdf"], [])
        sec = s.get("secondary_bus", kids[0]["bdf"].bus if kids else None)
        if sec is None:
            sec = next_bus[0]
            next_bus[0] += 1
            if sec > BUS_MAX:
                raise err(s["where"], "no bus number left for its secondary bus (buses end at ff)")
        need = sec
        for k in kids:
            need = max(need, k["bdf"].bus, min(vf_last_bus(k), BUS_MAX))
            if KINDS[k["kind"]][1] == 1:
                need = max(need, bus_range(k)[1])
        sub = s.get("subordinate_bus", need)
        if sub < sec or any(sub < k["bdf"].bus or (KINDS[k["kind"]][1] == 1 and sub < k["bus_range"][1])
                            for k in kids):
            raise err(f"{s['where']}.subordinate_bus",
                           f"{sub:#04x} does not cover the buses below it (up to {need:02x})")
        s["bus_range"] = (sec, sub)
        return sec, sub

    order: list[dict] = []

    def walk(parent):
        kids = sorted(children.get(parent, []), key=lambda s: s["bdf"])
        order.extend(kids)
        for k in kids:
            if KINDS[k["kind"]][1] == 1:
                walk(k["bdf"])
    walk(None)
    for s in order:
        if KINDS[s["kind"]][1] == 1 and "bus_range" not in s:
            bus_range(s)
    return order

def vf_last_bus(s: dict) -> int:
    sr = s.get("sriov")
    if not sr:
        return 0
    return vf_bus(s["bdf"].bus, s["bdf"].devfn, sr["offset"], sr["stride"], sr["total_vfs"] - 1)

def vf_routing_ids(err, specs: list[dict]) -> None:
    """No VF may take a routing ID another function of the topology has, or another
    PF's VF (the kernel reserves VF buses at enumeration, so they never meet)."""
    by_bdf = {s["bdf"]: s for s in specs}
    taken = {(s["bdf"].domain, s["bdf"].rid): s["where"] for s in specs}
    for s in specs:
        sr = s.get("sriov")
        if not sr:
            continue
        bdf = s["bdf"]
        parent = by_bdf.get(s.get("parent"))
        limit = parent["bus_range"][1] if parent is not None else BUS_MAX
        for vf_id in range(sr["total_vfs"]):
            bus = vf_bus(bdf.bus, bdf.devfn, sr["offset"], sr["stride"], vf_id)
            if bus > limit:
                break          # sriov_enable() refuses these: ENOMEM when asked
            key = (bdf.domain, bus << 8 | (bdf.devfn + sr["offset"] + sr["stride"] * vf_id) & 0xFF)
            if key in taken:
                raise err(f"{s['where']}.sriov", f"VF {vf_id} would be {Bdf.from_rid(*key)}, "
                                                      f"which is {taken[key]}")
            taken[key] = f"{s['where']}'s VF {vf_id}"
