"""Hot-plug on a real mount: a card plugged into a free pciehp slot and pulled out, seen with
lspci, ls and dmesg; the `hotplug` control's errnos through bash; a VFIO program whose card
is pulled under it (tests/vfio_programs/hotplug.c under `vfakefs run`)."""
from __future__ import annotations

import os
import sys
import time

import pytest

from tests.conftest import CMD_TIMEOUT, REPO, run, sh, vfakefs
from tests.mount.test_pytest_plugin import PLUGIN, assert_nothing_left, inner  # noqa: F401 (a fixture)
from tests.mount.test_vfio_programs import GCC, build, program

pytest_plugins = ["pytester"]

TOPOS = REPO / "tests/mount/topologies"
MACHINE, X540 = str(TOPOS / "hotplug.toml"), str(TOPOS / "card-x540.toml")


def groups(mnt) -> list[str]:
    return sorted(os.listdir(mnt.sys / "kernel/iommu_groups"), key=int)


def dmesg(mnt) -> list[str]:
    return [line.split("] ", 1)[1] for line in (mnt.sys / "kernel/debug/vfakefs/dmesg").read_text().splitlines()]


def test_plug_and_pull_a_nic_with_the_cli(mount_preset):
    mnt = mount_preset(MACHINE)
    tree_before, nn_before, groups_before = mnt.lspci("-tv").stdout, mnt.lspci("-nn").stdout, groups(mnt)
    r = vfakefs("hotplug", str(mnt.path))
    assert (r.returncode, r.stdout) == (0, "6 0000:00:1c.0 0000:03:00 empty\n7 0000:00:1d.0 0000:04:00 empty\n")
    assert mnt.read(mnt.pci / "slots/6/adapter") == "0\n" and mnt.read(mnt.pci / "slots/6/address") == "0000:03:00\n"

    r = vfakefs("hotplug", str(mnt.path), "add", "6", X540)
    assert r.returncode == 0, r.stderr
    tree = mnt.lspci("-tv").stdout
    assert tree != tree_before
    assert "+-1c.0-[03]--+-00.0  Intel Corporation Ethernet Controller 10-Gigabit X540-AT2" in tree
    assert "|            \\-00.1  Intel Corporation Ethernet Controller 10-Gigabit X540-AT2" in tree
    nn = mnt.lspci("-nn").stdout
    assert "03:00.1 Ethernet controller [0200]: Intel Corporation Ethernet Controller 10-Gigabit X540-AT2 " \
           "[8086:1528] (rev 01)" in nn
    assert groups(mnt) == groups_before + ["5", "6"]
    assert os.listdir(mnt.sys / "kernel/iommu_groups/6/devices") == ["0000:03:00.1"]
    assert os.readlink(mnt.devdir("0000:03:00.0") / "driver").endswith("/ixgbe")
    assert sorted(os.listdir(mnt.devdir("0000:03:00.0") / "net")) == ["eth1"]
    assert mnt.read(mnt.pci / "slots/6/adapter") == "1\n"
    log = dmesg(mnt)
    assert "pcieport 0000:00:1c.0: pciehp: Slot(6): Card present" in log
    assert "pci 0000:03:00.0: Adding to iommu group 5" in log
    assert "ixgbe 0000:03:00.1: Intel(R) 10 Gigabit Network Connection" in log
    sh(f"echo 2 > {mnt.devdir('0000:03:00.0')}/sriov_numvfs")
    assert "\\-10.2  Intel Corporation X540 Ethernet Controller Virtual Function" in mnt.lspci("-tv").stdout

    r = vfakefs("hotplug", str(mnt.path), "add", "0000:00:1c.0", X540)
    assert r.returncode == 1 and "Device or resource busy (slot 6 is occupied)" in r.stderr

    r = vfakefs("hotplug", str(mnt.path), "remove", "6")
    assert r.returncode == 0, r.stderr
    assert (mnt.lspci("-tv").stdout, mnt.lspci("-nn").stdout, groups(mnt)) == (tree_before, nn_before, groups_before)
    log = dmesg(mnt)
    assert log[log.index("pcieport 0000:00:1c.0: pciehp: Slot(6): Link Down") + 1] == \
        "pcieport 0000:00:1c.0: pciehp: Slot(6): Card not present"
    assert "pci 0000:03:10.2: Removing from iommu group 8" in log
    assert not (mnt.pci / "devices/0000:03:00.0").exists()
    assert sorted(os.listdir(mnt.sys / "class/net")) == ["eth0", "lo"]


@pytest.mark.parametrize("request_text, err", [
    ("add 9 {X540}", "No such device"),
    ("remove 6", "No such device"),
    ("add 6 relative.toml", "Invalid argument"),
    ("plug 6", "Invalid argument"),
    ("add 6 /dev/zero", "Invalid argument"),      # once: the daemon read it until OOM-killed
])
def test_bad_requests_through_bash(mount_preset, request_text, err):
    mnt = mount_preset(MACHINE)
    ctl = mnt.sys / "kernel/debug/vfakefs/hotplug"
    before = ctl.read_text(), mnt.lspci("-tv").stdout
    r = sh(f"echo '{request_text.format(X540=X540)}' > {ctl}")
    assert r.returncode == 1 and err in r.stderr
    assert (ctl.read_text(), mnt.lspci("-tv").stdout) == before
    assert dmesg(mnt)[-1].startswith("vfakefs: hotplug: ")


@pytest.mark.skipif(GCC is None, reason="gcc is not installed")
def test_a_vfio_user_holds_a_pulled_card_until_it_closes_its_device(mount_preset, tmp_path):
    prog = build("hotplug.c", tmp_path / "hotplug")
    mnt = mount_preset(MACHINE)
    ctl = mnt.sys / "kernel/debug/vfakefs/hotplug"
    assert sh(f"echo 'add 6 {X540}' > {ctl}").returncode == 0
    vf = mnt.devdir("0000:03:10.2")
    r = sh(f"echo 2 > {mnt.devdir('0000:03:00.0')}/sriov_numvfs && echo 0000:03:10.2 > {vf}/driver/unbind && "
           f"echo vfio-pci > {vf}/driver_override && echo 0000:03:10.2 > {mnt.pci}/drivers/vfio-pci/bind")
    assert r.returncode == 0, r.stderr
    group = os.path.basename(os.readlink(vf / "iommu_group"))
    with program(mnt.path, prog, f"/dev/vfio/{group}", "0000:03:10.2") as p:
        first = p.until("ready")
        assert first[:2] == ["VFIO_DEVICE_SET_IRQS REQ: 0", "pread status: 2"] and first[2] != "status: ffff"
        r = sh(f"echo 'remove 6' > {ctl}")               # returns at once, whoever holds the card
        assert r.returncode == 0, r.stderr
        assert " removing " in ctl.read_text() and "waiting for 0000:03:10.2" in ctl.read_text()
        assert vf.exists() and mnt.read(vf / "vendor") == "0x8086\n"
        assert run(["od", "-An", "-tx1", "-N4", str(vf / "config")]).stdout.split() == ["ff"] * 4
        assert "vfio-pci 0000:03:10.2: Relaying device request to user (#0)" in dmesg(mnt)
        p.send()
        assert p.until("closing") == ["device request: yes", "pread status: 2", "status: ffff"]
        p.send()
        assert p.until("closed") == []
        deadline = time.monotonic() + CMD_TIMEOUT     # the daemon sees the close (inotify) and goes on
        while " removing " in ctl.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ctl.read_text().splitlines()[0] == "6 0000:00:1c.0 0000:03:00 empty"
        assert not vf.exists() and group not in groups(mnt)
        assert "ixgbe 0000:03:00.0: complete" in dmesg(mnt)
        p.send()
        assert p.finish() == []


def test_the_pytest_plugin_and_the_client_plug_and_pull(inner):
    """VFakeFS.hotplug() in a user's test (the client's hotplug_add/remove/slots beneath it);
    the next test's reset takes the card away again."""
    (inner.path / "hotplug.toml").write_text(open(MACHINE).read())
    (inner.path / "nic.toml").write_text(open(X540).read())
    inner.makepyfile(test_inner='''
import errno
import pytest

pytestmark = pytest.mark.vfakefs_topology("hotplug.toml")


def test_plug(vfakefs):
    vfakefs.hotplug("add", "6", "nic.toml")                 # relative to the test's cwd
    assert vfakefs.controls.hotplug_slots()["6"] == "0000:00:1c.0 0000:03:00 occupied 0000:03:00.0 0000:03:00.1"
    assert "X540-AT2" in vfakefs.run("lspci -s 03:00.0").stdout
    with pytest.raises(OSError) as e:
        vfakefs.hotplug("add", "6", "nic.toml")
    assert e.value.errno == errno.EBUSY
    vfakefs.hotplug("remove", "0000:03:00.1")
    assert "pcieport 0000:00:1c.0: pciehp: Slot(6): Card not present" in vfakefs.dmesg_since_start()


def test_reset_between_tests(vfakefs):
    vfakefs.hotplug("add", "7", "nic.toml")
    assert vfakefs.controls.hotplug_slots()["6"].endswith(" empty")
    assert vfakefs.read("/sys/bus/pci/devices/0000:04:00.0/iommu_group/devices/0000:00:1d.0/vendor") == "0x8086\\n"


def test_after_reset(vfakefs):
    assert vfakefs.controls.hotplug_slots() == {"6": "0000:00:1c.0 0000:03:00 empty",
                                               "7": "0000:00:1d.0 0000:04:00 empty"}
''')
    r = inner.runpytest_subprocess(*PLUGIN)
    r.assert_outcomes(passed=3, failed=0, errors=0)
    assert_nothing_left(inner, 1)


@pytest.mark.skipif(GCC is None, reason="gcc is not installed")
def test_a_killed_vfio_user_lets_the_pulled_card_go(mount_preset, tmp_path):
    """The way out when the user never answers the device request: its process ends (kill -9
    here), the kernel closes its files, and the removal completes."""
    prog = build("hotplug.c", tmp_path / "hotplug")
    mnt = mount_preset(MACHINE)
    ctl = mnt.sys / "kernel/debug/vfakefs/hotplug"
    assert sh(f"echo 'add 7 {X540}' > {ctl}").returncode == 0
    pf = mnt.devdir("0000:04:00.1")                  # slot 7: no ACS, the card shares its port's group
    r = sh(f"echo 0000:04:00.1 > {pf}/driver/unbind && echo vfio-pci > {pf}/driver_override && "
           f"echo 0000:04:00.1 > {mnt.pci}/drivers/vfio-pci/bind")
    assert r.returncode == 0, r.stderr
    group = os.path.basename(os.readlink(pf / "iommu_group"))
    assert sh(f"echo 0000:04:00.0 > {mnt.devdir('0000:04:00.0')}/driver/unbind && "
              f"echo vfio-pci > {mnt.devdir('0000:04:00.0')}/driver_override && "
              f"echo 0000:04:00.0 > {mnt.pci}/drivers/vfio-pci/bind").returncode == 0
    with program(mnt.path, prog, f"/dev/vfio/{group}", "0000:04:00.1") as p:
        p.until("ready")
        assert sh(f"echo 'remove 7' > {ctl}").returncode == 0
        assert "waiting for 0000:04:00.1" in ctl.read_text()
        p.p.kill()                                   # `vfakefs run` and, with it, the program
        p.p.wait()
        deadline = time.monotonic() + CMD_TIMEOUT
        while " removing " in ctl.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ctl.read_text().splitlines()[1] == "7 0000:00:1d.0 0000:04:00 empty"
        assert not pf.exists() and os.listdir(mnt.sys / f"kernel/iommu_groups/{group}/devices") == ["0000:00:1d.0"]


LISTENER = r"""
import socket, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 15)   # NETLINK_KOBJECT_UEVENT
s.bind((0, 1))
s.settimeout(30)
print("ready", flush=True)
while True:
    msg = s.recv(65536).split(b"\0")
    env = dict(kv.decode().split("=", 1) for kv in msg[1:] if b"=" in kv)
    print(msg[0].decode(), env.get("SUBSYSTEM"), env.get("DRIVER", "-"), flush=True)
    if msg[0].decode().startswith("remove@") and msg[0].decode().endswith("/0000:03:00.0"):
        break
"""


def test_a_programs_uevent_socket_sees_the_card_come_and_go(mount_preset):
    """What udev hears inside `vfakefs run`: each function added, bound, its netdev; on the
    pull, unbound and removed, netdevs first."""
    mnt = mount_preset(MACHINE)
    ctl = mnt.sys / "kernel/debug/vfakefs/hotplug"
    with program(mnt.path, sys.executable, "-c", LISTENER) as p:
        p.until("ready")
        assert sh(f"echo 'add 6 {X540}' > {ctl} && echo 'remove 6' > {ctl}").returncode == 0
        events = [line.replace("/devices/pci0000:00/0000:00:1c.0/", "") for line in p.finish()]
    assert events == [
        "add@0000:03:00.0 pci -", "add@0000:03:00.1 pci -",
        "add@0000:03:00.0/net/eth1 net -", "bind@0000:03:00.0 pci ixgbe",
        "add@0000:03:00.1/net/eth2 net -", "bind@0000:03:00.1 pci ixgbe",
        "remove@0000:03:00.1/net/eth2 net -", "unbind@0000:03:00.1 pci -", "remove@0000:03:00.1 pci -",
        "remove@0000:03:00.0/net/eth1 net -", "unbind@0000:03:00.0 pci -", "remove@0000:03:00.0 pci -"]


def test_a_timeline_plugs_a_card_whose_netdev_comes_late_and_pulls_it(mount_preset, tmp_path):
    """The three parts of misbehaving hardware in one scenario (vfakefs scenario --wait):
    a faults rule for a device not plugged yet, the hotplug control's add and remove;
    every step through its control, as a user's echo would."""
    mnt = mount_preset(MACHINE)
    tree_before = mnt.lspci("-tv").stdout
    sc = tmp_path / "plug.toml"
    sc.write_text(f'''name = "plug"
[[step]]
at = "100ms"
control = "faults"
value = "0000:03:00.0 netdev delay=0.5"
[[step]]
at = "200ms"
control = "hotplug"
value = "add 6 {X540}"
[[step]]
at = "1s"
control = "hotplug"
value = "remove 6"
''')
    r = vfakefs("scenario", "--wait", str(mnt.path), str(sc))
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("scenario plug: 3/3 100% done, 0 failed in "), r.stderr
    assert mnt.lspci("-tv").stdout == tree_before
    log = dmesg(mnt)
    plugged, pulled = log.index("pcieport 0000:00:1c.0: pciehp: Slot(6): Card present"), \
        log.index("pcieport 0000:00:1c.0: pciehp: Slot(6): Link Down")
    # the PF's probe ran between plug and pull; the rule deferred its netdev (hits=1)
    probe = log.index("ixgbe 0000:03:00.0: Intel(R) 10 Gigabit Network Connection")
    assert plugged < probe < pulled
    assert (mnt.sys / "kernel/debug/vfakefs/faults").read_text() == \
        "0000:03:00.0 netdev delay=0.5 times=1 hits=1\n"
    assert sorted(os.listdir(mnt.sys / "class/net")) == ["eth0", "lo"]
