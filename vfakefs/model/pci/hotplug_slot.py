"""A card plugged into, or pulled out of, a slot pciehp drives (drivers/pci/hotplug/).

Plugging (pciehp_handle_presence_or_link_change, slot OFF): `Slot(N): Card present`,
`Slot(N): Link Up`, then pciehp_configure_device(): pci_scan_slot() sets up the card's
functions (their setup lines with the BARs as a fresh card has them, at 0; each added to
an IOMMU group: a new one, or the port's when no ACS isolates it), then
pci_assign_unassigned_bridge_resources() assigns them inside the port's windows and
programs the port, then pci_bus_add_devices() binds drivers (netdevs, uevents).

Pulling, without warning (slot ON): `Slot(N): Link Down`, `Slot(N): Card not present`,
then pciehp_unconfigure_device(): every function on the slot's bus is marked disconnected
(pci_dev_set_disconnected: its config reads return all ones) and removed, last first, each
as pci_stop_and_remove_bus_device (drivers' remove, SR-IOV off, VFs, netdevs, groups).

A function held by a VFIO user (an open device fd) cannot go: vfio-pci's remove waits in
vfio_unregister_group_dev() for the user to close it, asking every 10 seconds
(vfio_pci_core_request: the REQ eventfd signalled, `Relaying device request to user (#N)`
logged every tenth time; without one registered, `No device request channel registered,
blocked until released by user` once). Here the removal waits likewise, on the engine's
clock, and never blocks anyone: the user's program keeps running (its device reads all
ones), the writer of the control returns at once, and the slot shows `removing` until the
last device fd closes (by the program, or at its exit); then the removal goes on. The
functions the kernel reaches first (the slot bus's last ones) are gone by then, and the
held one's whole subtree waits with it (the kernel would have removed the VFs with a
smaller number already: sriov_del_vfs goes up from VF 0, and SR-IOV is disabled as one
step here).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field

from vfakefs.model.base import binding
from vfakefs.model.controls import reject
from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_NOTICE, KERN_WARNING
from vfakefs.model.pci import card, hotplug, pciehp, resource_log
from vfakefs.model.pci.bdf import Bdf

REQUEST_INTERVAL = 10.0     # vfio_unregister_group_dev: wait_for_completion_timeout(HZ * 10)


@dataclass(eq=False)
class Removal:
    """A surprise removal waiting for VFIO users to close their devices."""
    held: list                         # the VfioPciDevice files still open
    count: int = 0                     # the request number (vfio_device_ops.request's count)
    doomed: list = field(default_factory=list)


def slot_of(m, word: str):
    """A slot by its name, its port, or any function on the slot's bus (VFs included)."""
    hp = [s for s in m.slots if s.port is not None]
    for s in hp:
        if s.name == word:
            return s
    try:
        bdf = Bdf.from_str(word)
    except ValueError:
        return None
    for s in hp:
        if s.port.bdf == bdf:
            return s
    f = m.by_bdf.get(bdf)
    while f is not None:
        up = f.physfn if f.is_virtfn else f.parent
        for s in hp:
            if up is s.port:
                return s
        f = up
    return None


def card_functions(m, slot) -> list:
    """What sits in the slot: the functions whose path up passes through its port."""
    return hotplug.below(m, slot.port)


def _say(m, slot, text: str) -> None:
    m.kmsg.dev(slot.port, f"pciehp: Slot({slot.name}): {text}")


# --- plugging ------------------------------------------------------------------------------------------------------
def plug(m, slot, path: str) -> list:
    """Plug the card described in `path` (a TOML file of [[device]] tables) into slot.
    Raises card.CardError (nothing changed) when it cannot be."""
    port = slot.port
    placed = card.place(port, card.specs(m, port, path))
    added = card.build(m, port, placed)
    specs = {s["bdf"]: s for s in placed}
    for f in added:
        hw = {"mac": specs[f.bdf]["mac"].lower()} if specs[f.bdf].get("mac") else {}
        m.hw.pop(f.bdf, None)
        if hw:
            m.hw[f.bdf] = hw
    _say(m, slot, "Card present")
    _say(m, slot, "Link Up")
    pciehp.set_presence(port.config, port.pcie_cap, True)
    pciehp.train_link(port, added[0])
    slot.cur_speed = port.link_speed(True).strip()       # pcie_update_link_speed(): cur_bus_speed
    after = resource_log.bridges_after(m, added)
    with m.batch():
        for f in added:              # pci_scan_slot: set up at the addresses a fresh card holds (0)
            f.machine = m
            m.add_function(f, unset=_all_resources(f))
            for b in after.get(id(f), ()):
                for line in resource_log.bridge_lines(m, b, _all_resources(b)):   # (6.1: after its bus)
                    m.kmsg.dev(b, line, prefix="pci")
        for line in resource_log.rescan_assignment(m, added):
            m.kmsg.log(line)
        for line in resource_log.bridge_lines(m, port):    # pci_setup_bridge() of the port
            m.kmsg.dev(port, line)
        for f in added:              # pci_bus_add_devices(): the drivers
            name = specs[f.bdf]["driver"]
            if name:
                try:
                    binding.probe(m, m.drivers[name], f)
                except SysfsError:              # a refused probe (driver_ops.probe_failed logs it)
                    continue
                m.changed(f, f.driver)
            else:
                binding.device_attach(m, f)
        slot.present = slot.powered = True
        m.changed(*added)
    return added


def _all_resources(f) -> frozenset:
    """Everything a fresh card's function decodes nothing for yet: BARs at 0, windows closed."""
    names = {f"BAR {i}" for i, r in enumerate(f.bars) if r.size} | ({"ROM"} if f.rom.size else set())
    if f.sriov is not None:
        names |= {f"VF BAR {i}" for i in range(6)}
    if f.is_bridge:
        names |= set(resource_log.WINDOW_NAMES)
    return frozenset(names)


# --- pulling -------------------------------------------------------------------------------------------------------
def pull(m, slot) -> Removal | None:
    """The card is pulled out: link and presence go, its functions are disconnected, then
    removed, until one a VFIO user holds (the Removal that waits for it is returned)."""
    port = slot.port
    _say(m, slot, "Link Down")
    _say(m, slot, "Card not present")
    pciehp.set_presence(port.config, port.pcie_cap, False)
    doomed = card_functions(m, slot)
    for f in doomed:
        f.disconnected = True           # pci_walk_bus(parent, pci_dev_set_disconnected)
        f.config.w16(0x04, f.config.r16(0x04) & ~0x4)   # a card out of its slot issues no DMA
    slot.present = False
    return _proceed(m, slot, doomed)


def _proceed(m, slot, doomed: list) -> Removal | None:
    """pciehp_unconfigure_device(): each function on the slot's bus, last first, stopped and
    removed with what is below it (pci_stop_and_remove_bus_device), up to the first whose
    subtree a VFIO user holds: vfio-pci's remove waits there (the functions before it are
    gone, it and the ones after it stay)."""
    with m.batch():
        tops = [f for f in m.functions if f.parent is slot.port and not f.is_virtfn]
        for top in reversed(tops):
            held = _held([top] + hotplug.below(m, top))
            if held:
                slot.removal = r = Removal(held, 0, doomed)
                for fd in held:
                    _request(m, fd, 0)
                m.schedule(REQUEST_INTERVAL, lambda: _again(m, slot, r))
                m.changed(*doomed)
                return r
            hotplug.remove_function(m, top)
        gone = set(map(id, doomed))
        # what `remove` took away before sits in the card too: no rescan brings it back
        m.removed = [f for f in m.removed if id(f) not in gone and not _below(f, slot.port)]
        slot.powered = False
        slot.removal = None
        m.changed(*doomed)
    return None


def _held(doomed: list) -> list:
    out = []
    for f in doomed:
        vg = f.group.vfio if f.group is not None else None
        if vg is not None:
            out += [fd for fd in vg.devices if fd.dev is f and not fd.closed]
    return out


def _request(m, fd, count: int) -> None:
    """vfio_pci_core_request(): the user is asked to let the device go."""
    trigger = fd.irqs.req_trigger
    if trigger is not None:
        if count % 10 == 0:
            m.kmsg.dev(fd.dev, f"Relaying device request to user (#{count})", KERN_NOTICE)
        trigger.signal()
    elif count == 0:
        m.kmsg.dev(fd.dev, "No device request channel registered, blocked until released by user", KERN_WARNING)


def _again(m, slot, r: Removal) -> None:
    if slot.removal is not r:
        return
    r.count += 1
    for fd in [fd for fd in r.held if not fd.closed]:
        _request(m, fd, r.count)
    m.schedule(REQUEST_INTERVAL, lambda: _again(m, slot, r))


def vfio_released(m) -> None:
    """A VFIO device file closed (vfio/group.py): a removal waiting for it goes on."""
    for slot in m.slots:
        r = slot.removal
        if r is not None and all(fd.closed for fd in r.held):
            _proceed(m, slot, r.doomed)


def _below(f, port) -> bool:
    return f.bdf.domain == port.bdf.domain and port.secondary <= f.bdf.bus <= port.subordinate


# --- the `hotplug` control -------------------------------------------------------------------------------------------
USAGE = "expected 'add <port bdf|slot> <absolute path to a card .toml>' or 'remove <bdf|slot>'"


def show(m) -> str:
    """One line per hot-plug slot: name, port, address, then `empty`, `occupied <functions>`
    or `removing <functions> waiting for <device>: vfio user (request #N)`."""
    out = []
    for s in m.slots:
        if s.port is None or s.module != "pciehp":
            continue
        fns = " ".join(f.name for f in card_functions(m, s))
        head = f"{s.name} {s.port.name} {s.address}"
        if s.removal is not None:
            waits = ", ".join(fd.dev.name for fd in s.removal.held if not fd.closed)
            out.append(f"{head} removing {fns} waiting for {waits}: vfio user (request #{s.removal.count})")
        elif s.present:
            out.append(f"{head} occupied {fns}".rstrip())
        else:
            out.append(f"{head} empty")
    return "".join(line + "\n" for line in out)


def command(m, text: str) -> None:
    """`add <port|slot> <card.toml>` plugs a card; `remove <bdf|slot>` pulls one."""
    words = text.split()
    if not words or words[0] not in ("add", "remove") or len(words) != (3 if words[0] == "add" else 2):
        reject(m, "hotplug", USAGE)
    slot = slot_of(m, words[1])
    if slot is None or slot.module != "pciehp":
        reject(m, "hotplug", f"no hot-plug slot {words[1]!r} (a pciehp slot's name, its port, or a "
                             "function in it)", errno.ENODEV)
    drv = slot.port.driver
    if drv is None or not drv.port_services:
        # pciehp is a service of pcieport: a port without it sees no presence or link change
        reject(m, "hotplug", f"slot {slot.name}: {slot.port.name} is not bound to pcieport (no pciehp)",
               errno.ENODEV)
    if slot.removal is not None:
        reject(m, "hotplug", f"slot {slot.name} is being removed (a VFIO user holds it)", errno.EBUSY)
    if words[0] == "remove":
        if not slot.present:
            reject(m, "hotplug", f"slot {slot.name} is empty", errno.ENODEV)
        pull(m, slot)
        return
    if slot.present or card_functions(m, slot):
        reject(m, "hotplug", f"slot {slot.name} is occupied", errno.EBUSY)
    try:
        plug(m, slot, words[2])
    except card.CardError as e:
        reject(m, "hotplug", str(e), e.errno)
