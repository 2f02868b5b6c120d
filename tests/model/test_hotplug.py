"""Hot-plug through pciehp (model/pci/hotplug_slot.py, card.py): a card described by [[device]]
tables plugged into a free slot, and pulled out without warning, with the kernel's log
lines, groups, uevents and errnos; a card held by a VFIO user waits for it."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tests.model.clock import fq_timer
from vfakefs.model import controls, topology
from vfakefs.model.base import binding
from vfakefs.model.errors import SysfsError, TopologyError
from vfakefs.model.pci import hotplug, hotplug_slot, pciehp, sriov
from vfakefs.model.vfio import type1
from vfakefs.model.vfio.container import VfioContainer
from vfakefs.model.vfio.group import VfioGroup

TOPOS = Path(__file__).resolve().parents[1] / "mount" / "topologies"
MACHINE, X540 = str(TOPOS / "hotplug.toml"), str(TOPOS / "card-x540.toml")
CONFIG = 7 << 40                 # the config region's offset in a device fd
REQ = 4                          # VFIO_PCI_REQ_IRQ_INDEX
TRIGGER_EVENTFD = (1 << 5) | (1 << 2)


class Counter:
    """An eventfd as the model sees one: signal() adds one."""
    def __init__(self):
        self.count = 0

    def signal(self):
        self.count += 1


def lines_since(m, n: int) -> list[str]:
    return [line.split("] ", 1)[1] for line in m.kmsg.text().splitlines()[n:]]


def mark(m) -> int:
    return len(m.kmsg.text().splitlines())


def state(m):
    """What a failed command must leave as it was."""
    return ([f.name for f in m.functions], sorted(m.groups.by_id), sorted(m.netdevs), len(m.uevents.events),
            hotplug_slot.show(m), bytes(m.lookup("0000:00:1c.0").config.bytes))


@pytest.fixture
def m():
    return topology.load(MACHINE)


def test_free_slots_at_boot(m):
    assert hotplug_slot.show(m) == "6 0000:00:1c.0 0000:03:00 empty\n7 0000:00:1d.0 0000:04:00 empty\n"
    port = m.lookup("0000:00:1c.0")
    pos = port.pcie_cap
    assert port.config.r32(pos + 0x14) >> 19 == 6                     # Physical Slot Number
    assert not port.config.r16(pos + 0x1A) & pciehp.SLTSTA_PDS         # nobody home
    assert not port.config.r16(pos + 0x12) & pciehp.LNKSTA_DLLLA
    io, mem, pref = port.windows                                       # pci=hpmmioprefsize=64M, else defaults
    assert (io.size, mem.size, pref.size) == (0x1000, 2 << 20, 64 << 20)
    assert [s.present for s in m.slots] == [False, False]
    m.check()


def test_hotplug_sizes_follow_the_command_line():
    assert pciehp.hotplug_sizes("ro pci=hpmemsize=8M,hpiosize=4K") == {"io": 4096, "mem": 8 << 20, "pref": 8 << 20}
    assert pciehp.hotplug_sizes("pci=hpmmiosize=1M pci=hpmmioprefsize=0x400000") == \
        {"io": 256, "mem": 1 << 20, "pref": 4 << 20}


def test_topology_rejects_a_hotplug_slot_off_a_port():
    text = Path(MACHINE).read_text().replace('driver = "igb"', 'driver = "igb"\nhotplug_slot = 9')
    with pytest.raises(TopologyError, match="hotplug_slot"):
        topology.parse_text(text)
    twice = Path(MACHINE).read_text().replace("hotplug_slot = 7", "hotplug_slot = 6")
    with pytest.raises(TopologyError, match="slot 6 is also"):
        topology.parse_text(twice)


def test_plug_a_nic_behind_a_port_with_acs(m):
    n, ev = mark(m), len(m.uevents.events)
    hotplug_slot.command(m, f"add 6 {X540}")
    m.check()
    log = lines_since(m, n)
    assert log[:4] == ["pcieport 0000:00:1c.0: pciehp: Slot(6): Card present",
                       "pcieport 0000:00:1c.0: pciehp: Slot(6): Link Up",
                       "pci 0000:03:00.0: [8086:1528] type 00 class 0x020000 PCIe Endpoint",
                       "pci 0000:03:00.0: BAR 0 [mem 0x00000000-0x001fffff 64bit pref]"]
    assert "pci 0000:03:00.0: Adding to iommu group 5" in log and "pci 0000:03:00.1: Adding to iommu group 6" in log
    assert "pcieport 0000:00:1c.0: PCI bridge to [bus 03]" in log
    assert log[-1] == "ixgbe 0000:03:00.1: Intel(R) 10 Gigabit Network Connection"
    assert log.index("pci 0000:03:00.1: Adding to iommu group 6") < \
        next(i for i, line in enumerate(log) if line.endswith(": assigned")) < \
        log.index("pcieport 0000:00:1c.0: PCI bridge to [bus 03]") < \
        next(i for i, line in enumerate(log) if line.startswith("ixgbe "))
    port = m.lookup("0000:00:1c.0")
    pf0, pf1 = m.lookup("0000:03:00.0"), m.lookup("0000:03:00.1")
    for f in (pf0, pf1):
        assert f.driver.name == "ixgbe" and f.parent is port
        for r in [r for r in f.bars if r.size] + [r for r in f.sriov.iov_resources() if r.size]:
            assert any(w.start <= r.start and r.end <= w.end for w in port.windows), hex(r.start)
    assert pf0.group.id != pf1.group.id and pf0.group is not port.group           # ACS: groups of their own
    assert [nd.name for nd in pf0.netdevs + pf1.netdevs] == ["eth1", "eth2"]
    assert pf0.netdevs[0].mac == "a0:36:9f:51:0e:d0"
    events = [(e.action, e.devpath.rsplit("/", 1)[-1]) for e in list(m.uevents.events)[ev:]]
    assert events[:2] == [("add", "0000:03:00.0"), ("add", "0000:03:00.1")]
    assert ("bind", "0000:03:00.0") in events and ("add", "eth1") in events
    assert hotplug_slot.show(m).splitlines()[0] == "6 0000:00:1c.0 0000:03:00 occupied 0000:03:00.0 0000:03:00.1"
    pos = port.pcie_cap
    assert port.config.r16(pos + 0x1A) & pciehp.SLTSTA_PDS and port.config.r16(pos + 0x12) & pciehp.LNKSTA_DLLLA
    assert port.config.r16(pos + 0x12) & 0xF == 2                              # trained to the card's 5 GT/s
    assert hotplug_slot.slot_of(m, "6").cur_speed == "5.0 GT/s PCIe"           # slots/6/cur_bus_speed
    assert [s.present for s in m.slots] == [True, False]


def test_a_card_behind_a_port_without_acs_joins_the_ports_group(m):
    hotplug_slot.command(m, f"add 0000:00:1d.0 {X540}")
    port = m.lookup("0000:00:1d.0")
    assert m.lookup("0000:04:00.0").group is port.group is m.lookup("0000:04:00.1").group
    sriov.configure(m, m.lookup("0000:04:00.0"), 2)
    assert [f.name for f in port.group.devices][-2:] == ["0000:04:10.0", "0000:04:10.2"]
    m.check()


def test_pull_a_card_with_vfs(m):
    hotplug_slot.command(m, f"add 6 {X540}")
    sriov.configure(m, m.lookup("0000:03:00.0"), 2)
    groups_before = set(m.groups.by_id)
    n, ev = mark(m), len(m.uevents.events)
    hotplug_slot.command(m, "remove 0000:03:10.2")           # any function in the slot names it
    m.check()
    log = lines_since(m, n)
    assert log[:2] == ["pcieport 0000:00:1c.0: pciehp: Slot(6): Link Down",
                       "pcieport 0000:00:1c.0: pciehp: Slot(6): Card not present"]
    assert log.index("ixgbe 0000:03:00.1: complete") < log.index("ixgbe 0000:03:00.0: complete")   # last first
    assert "pci 0000:03:10.2: Removing from iommu group 8" in log
    assert not [f for f in m.functions if f.bdf.bus == 3] and sorted(m.netdevs) == ["eth0"]
    assert set(m.groups.by_id) == groups_before - {5, 6, 7, 8}
    events = [(e.action, e.devpath.rsplit("/", 1)[-1]) for e in list(m.uevents.events)[ev:]]
    assert ("remove", "0000:03:10.0") in events and ("remove", "eth1") in events and \
        events[-1] == ("remove", "0000:03:00.0")
    assert hotplug_slot.show(m).splitlines()[0] == "6 0000:00:1c.0 0000:03:00 empty"
    m.rescan()                                               # a rescan finds nothing: the card is gone
    assert not [f for f in m.functions if f.bdf.bus == 3]
    hotplug_slot.command(m, f"add 6 {X540}")                 # and the slot takes a card again
    assert m.lookup("0000:03:00.0").driver.name == "ixgbe"
    m.check()


@pytest.mark.parametrize("command, err, why", [
    ("add", errno.EINVAL, "expected"),
    ("plug 6 /x.toml", errno.EINVAL, "expected"),
    ("remove", errno.EINVAL, "expected"),
    ("add 6", errno.EINVAL, "expected"),
    ("add 9 {X540}", errno.ENODEV, "no hot-plug slot '9'"),
    ("add 0000:00:1b.0 {X540}", errno.ENODEV, "no hot-plug slot"),
    ("remove 6", errno.ENODEV, "slot 6 is empty"),
    ("add 6 card.toml", errno.EINVAL, "must be absolute"),
    ("add 6 /nonexistent/card.toml", errno.EINVAL, "No such file"),
])
def test_bad_commands_change_nothing(m, command, err, why):
    before, n = state(m), mark(m)
    with pytest.raises(SysfsError) as e:
        hotplug_slot.command(m, command.format(X540=X540))
    assert e.value.errno == err
    assert state(m) == before
    log = lines_since(m, n)
    assert len(log) == 1 and log[0].startswith("vfakefs: hotplug: ") and why in log[0]


@pytest.mark.parametrize("edit, err, why", [
    (lambda t: t.replace("[[device]]", "[[devices]]", 1), errno.EINVAL, "holds [[device]] tables"),
    (lambda t: t.replace("acs = true", "acs = true\niommu_group = 3", 1), errno.EINVAL, "iommu_group"),
    (lambda t: t.replace('size = "2M"', 'size = "2M", address = 0x380004000000', 1), errno.EINVAL, "no `address`"),
    (lambda t: t.replace("0000:01:00.1", "0000:01:01.0"), errno.EINVAL, "device 0 of one bus"),
    (lambda t: t.replace("vendor = 0x8086", "vendor = 0x18086", 1), errno.EINVAL, "device #1 (0000:03:00.0).vendor"),
    (lambda t: t.replace('driver = "ixgbe"', 'driver = "mlx4_core"', 1), errno.EINVAL, "unknown driver"),
    (lambda t: t.replace('size = "2M"', 'size = "64M"', 1), errno.ENOSPC, "does not fit"),
    (lambda t: t + "[[device]]\nbdf = \"0000:02:00.0\"\nparent = \"0000:01:00.0\"\nkind = \"endpoint\"\n"
               "vendor = 1\ndevice = 1\nclass = 0\n", errno.EINVAL, "not a bridge"),
])
def test_bad_cards_change_nothing(m, tmp_path, edit, err, why):
    card = tmp_path / "card.toml"
    card.write_text(edit(Path(X540).read_text()))
    before, n = state(m), mark(m)
    with pytest.raises(SysfsError) as e:
        hotplug_slot.command(m, f"add 6 {card}")
    assert e.value.errno == err, lines_since(m, n)
    assert state(m) == before
    log = lines_since(m, n)
    assert len(log) == 1 and why in log[0], log


def test_an_occupied_slot_is_busy(m):
    hotplug_slot.command(m, f"add 6 {X540}")
    before = state(m)
    with pytest.raises(SysfsError) as e:
        hotplug_slot.command(m, f"add 0000:00:1c.0 {X540}")
    assert e.value.errno == errno.EBUSY and state(m) == before


def test_a_card_whose_driver_is_not_loaded_is_refused(tmp_path):
    text = Path(MACHINE).read_text().replace('name = "hotplug"', 'name = "hotplug"\ndrivers = ["igb"]')
    m = topology.parse_text(text)
    from vfakefs.model import bringup
    m = bringup.boot(m)
    before = state(m)
    with pytest.raises(SysfsError) as e:
        hotplug_slot.command(m, f"add 6 {X540}")
    assert e.value.errno == errno.EINVAL and state(m) == before
    assert "driver ixgbe is not loaded" in m.kmsg.text().splitlines()[-1]


# --- VFIO users ---------------------------------------------------------------------------------------------------
def vfio_vf(m, trigger=True):
    """The card plugged, two VFs, VF 0000:03:10.2 on vfio-pci opened as a program would:
    group, container (TYPE1v2), device fd, its REQ eventfd set (trigger)."""
    hotplug_slot.command(m, f"add 6 {X540}")
    sriov.configure(m, m.lookup("0000:03:00.0"), 2)
    vf = m.lookup("0000:03:10.2")
    binding.unbind(m, vf.driver, vf.name)
    vf.driver_override = "vfio-pci"
    binding.bind(m, m.drivers["vfio-pci"], vf.name)
    c = VfioContainer(m)
    g = VfioGroup.open(m, vf.group.id)
    g.set_container(c)
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    fd = g.get_device_fd(vf.name)
    counter = Counter()
    if trigger:
        fd.set_irqs(REQ, 0, 1, TRIGGER_EVENTFD, [counter])
    return vf, c, g, fd, counter


def test_pulling_a_card_a_vfio_user_holds_waits_for_it(m):
    vf, c, g, fd, counter = vfio_vf(m)
    status = fd.read(CONFIG | 6, 2)              # PCI_STATUS: the device's own (not virtualized)
    assert status != b"\xff\xff"
    n = mark(m)
    hotplug_slot.command(m, "remove 6")          # returns at once: the removal waits, nobody blocks
    log = lines_since(m, n)
    assert log == ["pcieport 0000:00:1c.0: pciehp: Slot(6): Link Down",
                   "pcieport 0000:00:1c.0: pciehp: Slot(6): Card not present",
                   "ixgbe 0000:03:00.1: complete",                        # the last function first: gone
                   "pci 0000:03:00.1: Removing from iommu group 6",
                   "vfio-pci 0000:03:10.2: Relaying device request to user (#0)"]   # then vfio-pci waits
    assert counter.count == 1
    assert m.lookup(vf.name) is vf and vf.disconnected and m.lookup("0000:03:00.1") is None
    assert m.lookup("0000:03:00.0").netdevs and m.lookup("0000:03:00.0").disconnected
    assert vf.config_read(0, 4) == b"\xff" * 4                    # sysfs config: the card is gone
    assert fd.read(CONFIG | 6, 2) == b"\xff\xff"                  # so is the device under the user
    assert fd.write(CONFIG | 4, b"\x06\x00") == 2 and not vf.config.r16(4) & 0x4   # writes go nowhere
    before = state(m)
    assert "not issued" in controls.dma_request(m, f"{vf.name} read 0x1000 8")          # nor DMA
    assert state(m) == before
    assert hotplug_slot.show(m).splitlines()[0] == (
        "6 0000:00:1c.0 0000:03:00 removing 0000:03:00.0 0000:03:10.0 0000:03:10.2 "
        "waiting for 0000:03:10.2: vfio user (request #0)")
    before = state(m)
    for command in ("remove 6", f"add 6 {X540}"):
        with pytest.raises(SysfsError) as e:
            hotplug_slot.command(m, command)
        assert e.value.errno == errno.EBUSY and state(m) == before
    n = mark(m)
    fq_timer(m, 10.0)                            # every 10 s another request; the log every tenth
    assert counter.count == 2 and not [x for x in lines_since(m, n) if "Relaying" in x]
    for _ in range(9):
        fq_timer(m, 10.0)
    assert counter.count == 11
    assert [x for x in lines_since(m, n) if "Relaying" in x] == \
        ["vfio-pci 0000:03:10.2: Relaying device request to user (#10)"]
    assert {r.level for r in m.kmsg.records if "Relaying" in r.text} == {5}          # pci_notice_ratelimited
    m.check()
    n = mark(m)
    fd.close()                                   # the user lets go: the removal completes
    m.check()
    log = lines_since(m, n)
    assert "pci 0000:03:10.2: Removing from iommu group 8" in log and "ixgbe 0000:03:00.0: complete" in log
    assert not [f for f in m.functions if f.bdf.bus == 3]
    assert hotplug_slot.show(m).splitlines()[0] == "6 0000:00:1c.0 0000:03:00 empty"
    fq_timer(m, 10.0)
    assert counter.count == 11                   # no more requests
    with pytest.raises(SysfsError) as e:
        g.get_device_fd(vf.name)                 # the group is empty now
    assert e.value.errno == errno.ENODEV
    g.close()
    m.check()


def test_without_a_request_eventfd_the_kernel_says_so_once(m):
    vf, c, g, fd, _ = vfio_vf(m, trigger=False)
    n = mark(m)
    hotplug_slot.command(m, "remove 6")
    fq_timer(m, 10.0)
    fq_timer(m, 10.0)
    assert lines_since(m, n)[4:] == ["vfio-pci 0000:03:10.2: No device request channel registered, "
                                     "blocked until released by user"]
    assert [r.level for r in m.kmsg.records if "No device request" in r.text] == [4]     # pci_warn
    assert [r.level for r in m.kmsg.records if "Link Down" in r.text] == [6]
    fd.close()
    assert m.lookup(vf.name) is None
    g.close()
    m.check()


def test_a_claimed_group_without_an_open_device_does_not_hold_the_card(m):
    vf, c, g, fd, _ = vfio_vf(m)
    fd.close()                                   # the group stays open, in its container
    hotplug_slot.command(m, "remove 6")
    assert m.lookup(vf.name) is None and hotplug_slot.show(m).splitlines()[0].endswith("empty")
    m.check()
    g.close()                                    # the user closes what is left, later
    m.check()


# --- pciehp at boot, and the slot's power file -------------------------------------------------------------------
def test_pciehp_announces_each_slot_at_boot(m):
    lines = [line.split("] ", 1)[1] for line in m.kmsg.text().splitlines() if "0000:00:1c.0" in line]
    assert lines[-3:] == ["pcieport 0000:00:1c.0: PME: Signaling with IRQ 122",
                          "pcieport 0000:00:1c.0: AER: enabled with IRQ 122",
                          "pcieport 0000:00:1c.0: pciehp: Slot #6 AttnBtn- PwrCtrl- MRL- AttnInd- PwrInd- HotPlug+ "
                          "Surprise+ Interlock- NoCompl+ IbPresDis- LLActRep+"]


def test_power_on_an_empty_slot_finds_no_card(m):
    slot = hotplug_slot.slot_of(m, "6")
    before, n = state(m), mark(m)
    with pytest.raises(SysfsError) as e:
        hotplug.set_power(m, slot, 1)
    assert e.value.errno == errno.ENODEV and state(m) == before and lines_since(m, n) == []
    assert not slot.powered


def test_power_during_a_waiting_removal(m):
    vf, c, g, fd, _ = vfio_vf(m)
    hotplug_slot.command(m, "remove 6")
    slot = hotplug_slot.slot_of(m, "6")
    for value, said in ((0, "Already in powering off state"), (1, "Already enabled")):
        before, n = state(m), mark(m)
        with pytest.raises(SysfsError) as e:
            hotplug.set_power(m, slot, value)
        assert e.value.errno == errno.ENODEV and state(m) == before
        assert lines_since(m, n) == [f"pcieport 0000:00:1c.0: pciehp: Slot(6): {said}"]
    fd.close()
    g.close()
    m.check()


def test_a_card_powered_off_then_pulled_does_not_come_back(m):
    hotplug_slot.command(m, f"add 6 {X540}")
    slot = hotplug_slot.slot_of(m, "6")
    hotplug.set_power(m, slot, 0)                          # the functions go; the card stays in
    assert m.lookup("0000:03:00.0") is None and slot.present
    hotplug_slot.command(m, "remove 6")
    m.rescan()
    assert m.lookup("0000:03:00.0") is None and not slot.present
    m.check()


# --- a card with a switch on it ------------------------------------------------------------------------------------
SWITCH_CARD = """
# a switch (no ACS) with two NVMe drives, as a card: buses 01-03 here
[[device]]
bdf = "0000:01:00.0"
kind = "upstream_port"
vendor = 0x10b5
device = 0x8747
class = 0x060400

[[device]]
bdf = "0000:02:00.0"
parent = "0000:01:00.0"
kind = "downstream_port"
vendor = 0x10b5
device = 0x8747
class = 0x060400

[[device]]
bdf = "0000:02:01.0"
parent = "0000:01:00.0"
kind = "downstream_port"
vendor = 0x10b5
device = 0x8747
class = 0x060400

[[device]]
bdf = "0000:03:00.0"
parent = "0000:02:00.0"
kind = "endpoint"
vendor = 0x144d
device = 0xa808
class = 0x010802
driver = "nvme"
msix = 33
bars = [{ index = 0, type = "mem64", size = "16K" }]

[[device]]
bdf = "0000:04:00.0"
parent = "0000:02:01.0"
kind = "endpoint"
vendor = 0x144d
device = 0xa808
class = 0x010802
driver = "nvme"
msix = 33
bars = [{ index = 0, type = "mem64", size = "16K" }]
"""


def test_a_switch_needs_the_buses_the_port_reserved(m, tmp_path):
    card = tmp_path / "switch.toml"
    card.write_text(SWITCH_CARD)
    before = state(m)
    with pytest.raises(SysfsError) as e:                    # slot 6's port has bus 03 only
        hotplug_slot.command(m, f"add 6 {card}")
    assert e.value.errno == errno.ENOSPC and state(m) == before
    assert "No bus number available for hot-added bridge" in m.kmsg.text().splitlines()[-1]
    text = Path(MACHINE).read_text().replace("hotplug_slot = 7\n", "hotplug_slot = 7\nsubordinate_bus = 0x0a\n")
    m = topology.from_text(text)
    n = mark(m)
    hotplug_slot.command(m, f"add 7 {card}")                # buses 04-07 of 04-0a
    m.check()
    up, d0, d1, nv0, nv1 = (m.lookup(b) for b in ("0000:04:00.0", "0000:05:00.0", "0000:05:01.0", "0000:06:00.0",
                                                  "0000:07:00.0"))
    port = m.lookup("0000:00:1d.0")
    assert (up.parent, d0.parent, nv0.parent, nv1.parent) == (port, up, d0, d1)
    assert (up.secondary, up.subordinate, d0.secondary, d1.secondary) == (5, 7, 6, 7)
    assert nv0.driver.name == nv1.driver.name == "nvme" and up.driver.name == "pcieport"
    for dev, bridge in ((nv0, d0), (nv1, d1), (d0, up), (up, port)):   # each inside the bridge above it
        inner = [r for r in dev.bars + dev.windows if r.size]
        assert inner and all(any(w.start <= r.start and r.end <= w.end for w in bridge.windows) for r in inner)
    assert len({nv0.group.id, nv1.group.id, port.group.id}) == 1    # no ACS on the way up: one group
    log = lines_since(m, n)
    assert "pci 0000:05:01.0: PCI bridge to [bus 07]" in log and "pci 0000:04:00.0: PCI bridge to [bus 05-07]" in log
    setup = log[:log.index("pci 0000:04:00.0: Adding to iommu group 3")]
    assert not [line for line in setup if "bridge window" in line]      # a fresh switch decodes nothing yet
    assert [line for line in log if line.startswith("pci 0000:04:00.0:   bridge window")]   # then assigned
    hotplug_slot.command(m, "remove 0000:07:00.0")
    assert [f.name for f in m.functions if f.bdf.bus >= 4] == []
    m.check()


def test_a_port_without_pcieport_has_no_pciehp(m):
    binding.unbind(m, m.drivers["pcieport"], "0000:00:1c.0")
    before = state(m)
    with pytest.raises(SysfsError) as e:
        hotplug_slot.command(m, f"add 6 {X540}")
    assert e.value.errno == errno.ENODEV and state(m) == before
    assert m.kmsg.text().splitlines()[-1].endswith("0000:00:1c.0 is not bound to pcieport (no pciehp)")


def test_a_free_downstream_port_of_a_switch(tmp_path):
    """hotplug_slot on a switch's downstream port: its reservation sits inside the upstream
    port's windows, and a card there gets addresses inside both."""
    text = Path(MACHINE).read_text() + """
[[device]]
bdf = "0000:05:00.0"
parent = "0000:00:1b.0"
kind = "upstream_port"
vendor = 0x10b5
device = 0x8747
class = 0x060400
"""
    text = text.replace('bdf = "0000:02:00.0"\nparent = "0000:00:1b.0"', 'bdf = "0000:05:00.0"\nparent = "0000:00:1b.0"')
    # the I210 moves below the switch's first downstream port; the second is free
    text = text.replace('bdf = "0000:05:00.0"\nparent = "0000:00:1b.0"\nkind = "endpoint"',
                        'bdf = "0000:07:00.0"\nparent = "0000:06:00.0"\nkind = "endpoint"')
    text += """
[[device]]
bdf = "0000:06:00.0"
parent = "0000:05:00.0"
kind = "downstream_port"
vendor = 0x10b5
device = 0x8747
class = 0x060400
acs = true

[[device]]
bdf = "0000:06:01.0"
parent = "0000:05:00.0"
kind = "downstream_port"
vendor = 0x10b5
device = 0x8747
class = 0x060400
acs = true
hotplug_slot = 8
"""
    m = topology.from_text(text)
    down, up = m.lookup("0000:06:01.0"), m.lookup("0000:05:00.0")
    slot = hotplug_slot.slot_of(m, "8")
    assert slot.port is down and not slot.present
    for w in (w for w in down.windows if w.size):
        assert any(u.start <= w.start and w.end <= u.end for u in up.windows), hex(w.start)
    card = tmp_path / "card.toml"
    card.write_text(Path(X540).read_text().replace('size = "2M", prefetch = true', 'size = "256K", prefetch = true')
                    .replace("total_vfs = 63", "total_vfs = 4"))
    hotplug_slot.command(m, f"add 8 {card}")
    m.check()
    pf = m.lookup(f"0000:{down.secondary:02x}:00.0")
    assert pf.parent is down and pf.driver.name == "ixgbe"
    for r in (r for r in pf.bars if r.size):
        assert any(w.start <= r.start and r.end <= w.end for w in down.windows)
    assert pf.group is not down.group                    # ACS on the way up
    hotplug_slot.command(m, "remove 8")
    assert m.lookup(pf.name) is None
    m.check()


def test_plug_and_pull_on_a_6_1_kernel(tmp_path):
    m = topology.from_text(Path(MACHINE).read_text().replace('kernel = "6.12"', 'kernel = "6.1"'))
    n = mark(m)
    hotplug_slot.command(m, f"add 6 {X540}")
    m.check()
    log = lines_since(m, n)
    assert "pci 0000:03:00.0: [8086:1528] type 00 class 0x020000" in log        # 6.1: no type string
    hotplug_slot.command(m, "remove 6")
    m.check()
    assert m.lookup("0000:03:00.0") is None
