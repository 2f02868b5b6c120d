"""The uevents the simulated kernel announces (model/uevent.py): which, in what order,
with which keys, for SR-IOV enable and disable, bind and unbind, remove and rescan,
driver_override + drivers_probe, and writes to a uevent file (kobject_synth_uevent)."""
from __future__ import annotations

import errno

import pytest

from vfakefs.model import topology, uevent
from vfakefs.model.base import binding
from vfakefs.model.errors import SysfsError
from vfakefs.model.pci import sriov

PF = "0000:03:00.0"                       # seed-vtd's X540 port, ixgbe, eth0; VFs at 03:10.0 + 2n
ROOT = "/devices/pci0000:00/0000:00:1c.0"
UUID = "2d6f3ccb-1c2b-4a9f-9c4e-0b6a2c1d7e10"


@pytest.fixture
def m():
    return topology.load("seed-vtd")


def since(m, seq):
    return [e for e in m.uevents.events if e.seqnum > seq]


def brief(events):
    return [(e.action, e.devpath.removeprefix(ROOT), e.subsystem) for e in events]


def test_boot_leaves_seqnum_past_what_it_announced_and_the_log_empty(m):
    assert m.uevents.seqnum > len(m.functions)
    assert not m.uevents.events


def test_enabling_four_vfs_announces_each_vf_as_the_kernel_does(m):
    """pci_iov_add_virtfn per VF: device_add's add, pci_iov_sysfs_link's change, then the
    probe: ixgbevf's netdev add, driver_bound's bind; after all VFs the PF's change."""
    pf, seq = m.lookup(PF), m.uevents.seqnum
    sriov.configure(m, pf, 4)
    got = since(m, seq)
    expect = []
    for i, vf in enumerate(pf.sriov.vfs):
        name = f"0000:03:10.{2 * i}"
        assert vf.name == name
        expect += [("add", f"/{name}", "pci"), ("change", f"/{name}", "pci"),
                   ("add", f"/{name}/net/{vf.netdevs[0].name}", "net"), ("bind", f"/{name}", "pci")]
    expect.append(("change", f"/{PF}", "pci"))
    assert brief(got) == expect
    assert [e.seqnum for e in got] == list(range(seq + 1, seq + 18)) == [int(e.get("SEQNUM")) for e in got]
    assert m.uevents.seqnum == seq + 17
    add, bind = got[0], got[3]
    # kobject_uevent_env's order: ACTION DEVPATH SUBSYSTEM, dev_uevent (DRIVER), pci_uevent, SEQNUM
    assert [k for k, _ in add.env] == ["ACTION", "DEVPATH", "SUBSYSTEM", "PCI_CLASS", "PCI_ID", "PCI_SUBSYS_ID",
                                       "PCI_SLOT_NAME", "MODALIAS", "SEQNUM"]
    assert dict(add.env) == {"ACTION": "add", "DEVPATH": f"{ROOT}/0000:03:10.0", "SUBSYSTEM": "pci",
                             "PCI_CLASS": "20000", "PCI_ID": "8086:1515", "PCI_SUBSYS_ID": "8086:0001",
                             "PCI_SLOT_NAME": "0000:03:10.0",
                             "MODALIAS": "pci:v00008086d00001515sv00008086sd00000001bc02sc00i00",
                             "SEQNUM": str(seq + 1)}
    assert [k for k, _ in bind.env][:4] == ["ACTION", "DEVPATH", "SUBSYSTEM", "DRIVER"]
    assert bind.get("DRIVER") == "ixgbevf" and got[-1].get("DRIVER") == "ixgbe"
    net = got[2]
    assert [(k, v) for k, v in net.env if k in ("SUBSYSTEM", "INTERFACE", "IFINDEX")] == [
        ("SUBSYSTEM", "net"), ("INTERFACE", pf.sriov.vfs[0].netdevs[0].name),
        ("IFINDEX", str(pf.sriov.vfs[0].netdevs[0].ifindex))]
    assert add.wire() == (f"add@{ROOT}/0000:03:10.0\0".encode()
                          + b"".join(f"{k}={v}\0".encode() for k, v in add.env))
    m.check()


def test_disabling_removes_each_vf_after_its_netdev_and_unbind_and_no_pf_change(m):
    pf = m.lookup(PF)
    sriov.configure(m, pf, 2)
    nets = [vf.netdevs[0].name for vf in pf.sriov.vfs]
    seq = m.uevents.seqnum
    sriov.configure(m, pf, 0)
    got = since(m, seq)
    assert brief(got) == [("remove", f"/0000:03:10.0/net/{nets[0]}", "net"), ("unbind", "/0000:03:10.0", "pci"),
                          ("remove", "/0000:03:10.0", "pci"),
                          ("remove", f"/0000:03:10.2/net/{nets[1]}", "net"), ("unbind", "/0000:03:10.2", "pci"),
                          ("remove", "/0000:03:10.2", "pci")]
    unbind, remove = got[1], got[2]
    # dev->driver is gone before KOBJ_UNBIND, and zap_modalias_env drops MODALIAS
    assert unbind.get("DRIVER") is None and unbind.get("MODALIAS") is None
    assert remove.get("DRIVER") is None and remove.get("MODALIAS") is not None


def test_a_failed_sriov_write_announces_nothing(m):
    pf, seq = m.lookup(PF), m.uevents.seqnum
    with pytest.raises(SysfsError):
        sriov.configure(m, pf, 64)
    sriov.configure(m, pf, 2)
    seq2 = m.uevents.seqnum
    with pytest.raises(SysfsError) as e:
        sriov.configure(m, pf, 3)                   # EBUSY: already enabled
    assert e.value.errno == errno.EBUSY
    assert m.uevents.seqnum == seq2 and seq2 > seq


def test_unbind_then_bind(m):
    pf = m.lookup(PF)
    drv = pf.driver
    seq = m.uevents.seqnum
    binding.unbind(m, drv, PF)
    assert brief(since(m, seq)) == [("remove", f"/{PF}/net/eth0", "net"), ("unbind", f"/{PF}", "pci")]
    seq = m.uevents.seqnum
    binding.bind(m, drv, PF + "\n")
    got = since(m, seq)
    assert brief(got) == [("add", f"/{PF}/net/eth0", "net"), ("bind", f"/{PF}", "pci")]
    assert got[1].get("DRIVER") == "ixgbe" and got[1].get("MODALIAS")
    seq = m.uevents.seqnum
    with pytest.raises(SysfsError):
        binding.bind(m, drv, PF)                    # EBUSY: nothing announced
    assert m.uevents.seqnum == seq


def test_driver_override_and_drivers_probe_announce_the_new_binding(m):
    pf = m.lookup(PF)
    binding.unbind(m, pf.driver, PF)
    pf.driver_override = "vfio-pci"
    seq = m.uevents.seqnum
    binding.drivers_probe(m, PF)
    got = since(m, seq)
    assert brief(got) == [("bind", f"/{PF}", "pci")]          # vfio-pci registers no netdev
    assert got[0].get("DRIVER") == "vfio-pci"


def test_remove_and_rescan(m):
    seq = m.uevents.seqnum
    dev = m.lookup("0000:02:00.0")              # igb, eth2, below 00:1b.0
    m.remove_function(dev)
    assert [(e.action, e.devpath, e.subsystem) for e in since(m, seq)] == [
        ("remove", "/devices/pci0000:00/0000:00:1b.0/0000:02:00.0/net/eth2", "net"),
        ("unbind", "/devices/pci0000:00/0000:00:1b.0/0000:02:00.0", "pci"),
        ("remove", "/devices/pci0000:00/0000:00:1b.0/0000:02:00.0", "pci")]
    seq = m.uevents.seqnum
    m.rescan()
    got = since(m, seq)
    assert [(e.action, e.devpath, e.subsystem) for e in got] == [
        ("add", "/devices/pci0000:00/0000:00:1b.0/0000:02:00.0", "pci"),
        ("add", "/devices/pci0000:00/0000:00:1b.0/0000:02:00.0/net/eth2", "net"),
        ("bind", "/devices/pci0000:00/0000:00:1b.0/0000:02:00.0", "pci")]
    assert got[0].get("DRIVER") is None and got[2].get("DRIVER") == "igb"
    m.check()


def test_an_nvme_controller_comes_and_goes_with_its_driver(m):
    nvme = "/devices/pci0000:00/0000:00:1d.0/0000:04:00.0/0000:05:00.0/0000:06:00.0"
    dev = m.lookup("0000:06:00.0")
    drv, seq = dev.driver, m.uevents.seqnum
    binding.unbind(m, drv, dev.name)
    binding.bind(m, drv, dev.name)
    got = since(m, seq)
    assert [(e.action, e.devpath, e.subsystem) for e in got] == [
        ("remove", f"{nvme}/nvme/nvme0", "nvme"), ("unbind", nvme, "pci"),
        ("add", f"{nvme}/nvme/nvme0", "nvme"), ("bind", nvme, "pci")]
    # dev_uevent's device node keys, then nvme_class_uevent's
    assert got[2].env[3:-1] == (("MAJOR", "250"), ("MINOR", "0"), ("DEVNAME", "nvme0"), ("NVME_TRTYPE", "pcie"))


# --- writes to uevent files ---------------------------------------------------------------------
def test_a_write_announces_its_action_with_synth_uuid_0(m):
    pf, seq = m.lookup(PF), m.uevents.seqnum
    uevent.synth(pf, "change\n")
    (ev,) = since(m, seq)
    assert [k for k, _ in ev.env] == ["ACTION", "DEVPATH", "SUBSYSTEM", "SYNTH_UUID", "DRIVER", "PCI_CLASS",
                                      "PCI_ID", "PCI_SUBSYS_ID", "PCI_SLOT_NAME", "MODALIAS", "SEQNUM"]
    assert (ev.action, ev.get("SYNTH_UUID"), ev.get("DRIVER")) == ("change", "0", "ixgbe")


def test_a_write_with_uuid_and_arguments(m):
    pf, seq = m.lookup(PF), m.uevents.seqnum
    uevent.synth(pf, f"add {UUID} A=1 bB2=x7\n")
    (ev,) = since(m, seq)
    assert ev.action == "add"
    assert [(k, v) for k, v in ev.env if k.startswith("SYNTH")] == [
        ("SYNTH_UUID", UUID), ("SYNTH_ARG_A", "1"), ("SYNTH_ARG_bB2", "x7")]


def test_writes_to_a_netdev_a_driver_and_the_bus(m):
    seq = m.uevents.seqnum
    uevent.synth(m.netdevs["eth0"], "online")
    uevent.synth(m.drivers["ixgbe"], "add")
    uevent.synth(m, "change")
    assert [(e.action, e.devpath, e.subsystem) for e in since(m, seq)] == [
        ("online", f"{ROOT}/{PF}/net/eth0", "net"), ("add", "/bus/pci/drivers/ixgbe", "drivers"),
        ("change", "/bus/pci", "bus")]


@pytest.mark.parametrize("text, message", [
    ("", "unknown uevent action string"), ("\n", "unknown uevent action string"),
    ("chang", "unknown uevent action string"), ("change\n\n", "unknown uevent action string"),
    ("Change", "unknown uevent action string"), ("bogus", "unknown uevent action string"),
    ("change ", "incorrect uevent action arguments"), ("add 1234", "incorrect uevent action arguments"),
    (f"add {UUID}x", "incorrect uevent action arguments"), (f"add {UUID} ", "incorrect uevent action arguments"),
    (f"add {UUID} A", "incorrect uevent action arguments"), (f"add {UUID} A=", "incorrect uevent action arguments"),
    (f"add {UUID} =1", "incorrect uevent action arguments"), (f"add {UUID} A-b=1", "incorrect uevent action arguments"),
    (f"add {UUID} A=1 ", "incorrect uevent action arguments"), (f"add {UUID}\n\n", "incorrect uevent action arguments"),
])
def test_a_bad_write_is_einval_announces_nothing_and_logs_the_kernel_lines(m, text, message):
    pf, seq = m.lookup(PF), m.uevents.seqnum
    before = len(m.kmsg.records)
    with pytest.raises(SysfsError) as e:
        uevent.synth(pf, text)
    assert e.value.errno == errno.EINVAL
    assert m.uevents.seqnum == seq and not since(m, seq)
    assert [r.text for r in m.kmsg.records[before:]] == [
        f"synth uevent: {ROOT}/{PF}: {message}", f"ixgbe {PF}: uevent: failed to send synthetic uevent"]


@pytest.mark.parametrize("text", ["add", "remove", "change", "move", "online", "offline", "bind", "unbind",
                                  "change\0", f"change {UUID}\n", f"move {UUID} K=v"])
def test_every_action_word_is_accepted(m, text):
    seq = m.uevents.seqnum
    uevent.synth(m.lookup(PF), text)
    assert m.uevents.seqnum == seq + 1


def test_listeners_hear_every_event_in_order(m):
    heard = []
    stop = m.uevents.subscribe(heard.append)
    sriov.configure(m, m.lookup(PF), 1)
    stop()
    uevent.synth(m.lookup(PF), "change")
    assert [e.seqnum for e in heard] == [e.seqnum for e in m.uevents.events][:-1]
    assert len(heard) == 5
