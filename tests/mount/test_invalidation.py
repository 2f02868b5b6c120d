"""A structural change made by the Machine (not by a write) is visible to the next
syscall once its invalidation has reached the kernel, although the kernel caches
entries and attributes for an hour, and symlink targets and listings. A write waits
for that before it is answered; a change the engine makes is told from a thread while
the loop serves on, so the tests wait for it (ops.deliver()) where a cached link could
otherwise still answer without asking. A listing opened meanwhile is current already
(opendir drops the kernel's copy while its invalidation is on its way).

The server runs in this test's own trio loop so the test can change the Machine
directly, as the engine will, and compare what the mount shows with the view
itself; the reads go through real programs.
"""
import os
import sys
from dataclasses import dataclass

import pytest
import trio

from tests.mount.inprocess import served, sh
from vfakefs.fuse.ops import SysfsOps
from vfakefs.model.base import binding
from vfakefs.model import topology
from vfakefs.sysfs.nodes import CharDev, Dir, Link
from vfakefs.sysfs.tree import View


@dataclass
class Live:
    machine: object
    mnt: object
    view: View
    specs: list

    ops: SysfsOps

    def __iter__(self):
        return iter((self.machine, self.mnt))


@pytest.fixture
async def live(tmp_path):
    machine = topology.load("seed-vtd")
    view = View(machine)
    specs = []   # what each published change re-listed (None: everything)

    def dirty():
        specs.append(view.dirty())
        return specs[-1]
    ops = SysfsOps(view.root(), lambda: machine.generation, dirty)
    machine.subscribe(ops.publish)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    async with served(ops, mnt):
        yield Live(machine, mnt, view, specs, ops)


async def test_removed_device_disappears_at_once(live):
    machine, mnt = live
    devs = f"{mnt}/sys/bus/pci/devices"
    assert "0000:06:00.0" in await sh(f"ls {devs}")
    assert (await sh(f"cat {devs}/0000:06:00.0/vendor")) == "0x144d\n"   # cached entry and attrs
    port = next(f for f in machine.functions if f.name == "0000:00:1d.0")
    machine.remove_function(port)                                      # a change from inside
    assert "0000:06:00.0" not in await sh(f"ls {devs}")
    assert "No such file" in await sh(f"cat {devs}/0000:06:00.0/vendor")
    assert "No such file" in await sh(f"stat {mnt}/sys/devices/pci0000:00/0000:00:1d.0")
    machine.rescan()
    assert (await sh(f"cat {devs}/0000:06:00.0/vendor")) == "0x144d\n"


async def test_link_and_netdev_changes_are_seen(live):
    machine, mnt = live
    dev = next(f for f in machine.functions if f.name == "0000:03:00.0")
    d = f"{mnt}/sys/bus/pci/devices/0000:03:00.0"
    assert (await sh(f"readlink {d}/driver")) == "../../../../bus/pci/drivers/ixgbe\n"
    assert (await sh(f"ls {d}/net")) == "eth0\n"
    nlink_before = (await sh(f"stat -L -c %h {d}"))
    binding.release(machine, dev)   # the driver goes away with its netdev
    await live.ops.deliver()        # (its driver link's cached target: dropped once told)
    assert "No such file" in await sh(f"readlink -v {d}/driver")
    assert "No such file" in await sh(f"ls {d}/net")
    assert "eth0" not in await sh(f"ls {mnt}/sys/class/net")
    assert "No such file" in await sh(f"ls {d}/msi_irqs")                # its vectors went with it
    assert int(await sh(f"stat -L -c %h {d}")) == int(nlink_before) - 2   # net/ and msi_irqs/


# --- after a full walk, a change re-lists only what it can alter: nothing stale survives ---------
def view_tree(view: View) -> dict[str, tuple]:
    """What the mount must show, drawn from the view itself (no cache in between):
    path -> (find's type letter, mode, link target)."""
    out, stack = {}, [("", view.root())]
    while stack:
        path, d = stack.pop()
        for name, node in d.entries().items():
            p = f"{path}/{name}" if path else name
            kind = "d" if isinstance(node, Dir) else "l" if isinstance(node, Link) else \
                "c" if isinstance(node, CharDev) else "f"
            out[p] = (kind, node.mode & 0o7777, node.target if kind == "l" else "")
            if kind == "d":
                stack.append((p, node))
    return out


async def mount_tree(mnt) -> dict[str, tuple]:
    """What the mount shows through the kernel's caches: find's listing, lstat and readlink."""
    r = await trio.run_process(["find", str(mnt), "-mindepth", "1", "-printf", "%P\\t%y\\t%m\\t%l\\n"],
                               capture_stdout=True, check=True)
    out = {}
    for line in r.stdout.decode().splitlines():
        p, kind, mode, target = line.split("\t")
        out[p] = (kind, int(mode, 8), target)
    return out


async def still_there(mnt, paths) -> list[str]:
    """Those of paths an lstat through the kernel still finds (a stale cached entry)."""
    code = "import os,sys\nfor p in sys.stdin.read().split('\\0'):\n    os.path.lexists(p) and print(p)"
    r = await trio.run_process([sys.executable, "-c", code], stdin=b"\0".join(f"{mnt}/{p}".encode() for p in paths),
                               capture_stdout=True, check=True)
    return r.stdout.decode().splitlines()


async def check_after(live, change) -> dict:
    """Walk everything (the kernel then caches every entry and attribute), make the
    change, and require the mount to show exactly the view: every new entry, no
    vanished one (listed or looked up), every moved link and changed mode."""
    await sh(f"ls -lR {live.mnt}/sys {live.mnt}/dev > /dev/null")
    before = view_tree(live.view)
    del live.specs[:]
    await change()
    assert live.specs and all(s is not None for s in live.specs), "not the precise path"
    want = view_tree(live.view)
    assert want != before
    got = await mount_tree(live.mnt)
    assert {p: v for p, v in got.items() if want.get(p) != v} == {}, "stale or wrong entries"
    assert sorted(want.keys() - got.keys()) == []
    assert await still_there(live.mnt, sorted(before.keys() - want.keys())) == []
    return want


async def test_sriov_after_a_full_walk_shows_the_new_tree_everywhere(live):
    mnt = live.mnt
    pf = f"{mnt}/sys/bus/pci/devices/0000:03:00.0"
    await check_after(live, lambda: sh(f"echo 4 > {pf}/sriov_numvfs"))
    # the new VFs where other directories list them: cached everywhere before the change
    vf = "0000:03:10.0"
    assert vf in (await sh(f"ls {mnt}/sys/bus/pci/drivers/ixgbevf")).split()
    group = (await sh(f"readlink {pf}/virtfn0/iommu_group")).strip().rpartition("/")[2]
    assert (await sh(f"ls {mnt}/sys/kernel/iommu_groups/{group}/devices")) == f"{vf}\n"
    nd = next(n.name for n in live.machine.netdevs.values() if n.dev.name == vf)
    assert (await sh(f"cat {mnt}/sys/class/net/{nd}/device/vendor")) == "0x8086\n"
    assert (await sh(f"readlink {mnt}/sys/class/net/{nd}/device")) == f"../../../{vf}\n"
    groups = f"{mnt}/sys/kernel/iommu_groups"   # its nlink counts the new groups' directories
    assert int(await sh(f"stat -L -c %h {groups}")) == 2 + len(live.machine.groups.by_id)
    await check_after(live, lambda: sh(f"echo 0 > {pf}/sriov_numvfs"))
    assert "No such file" in await sh(f"cat {mnt}/sys/class/net/{nd}/device/vendor")
    assert "No such file" in await sh(f"ls {groups}/{group}/devices")
    assert int(await sh(f"stat -L -c %h {groups}")) == 2 + len(live.machine.groups.by_id)


async def test_rebind_and_remove_after_a_full_walk_show_the_new_tree_everywhere(live):
    mnt = live.mnt
    drivers = f"{mnt}/sys/bus/pci/drivers"
    await check_after(live, lambda: sh(f"echo 0000:03:00.1 > {drivers}/ixgbe/unbind"))
    await check_after(live, lambda: sh(f"echo vfio-pci > {mnt}/sys/bus/pci/devices/0000:03:00.1/driver_override;"
                                       f"echo 0000:03:00.1 > {drivers}/vfio-pci/bind"))
    assert (await sh(f"ls {mnt}/dev/vfio")).split() != ["vfio"]   # the group's node came
    await check_after(live, lambda: sh(f"echo 0000:03:00.1 > {drivers}/vfio-pci/unbind"))
    nvme = "0000:06:00.0"
    await check_after(live, lambda: sh(f"echo {nvme} > {drivers}/nvme/unbind"))
    await check_after(live, lambda: sh(f"echo {nvme} > {drivers}/nvme/bind"))
    # one function of a group that stays (group 42 keeps 01:00.0): its devices/ shrinks, then grows
    audio = f"{mnt}/sys/bus/pci/devices/0000:01:00.1"
    group = (await sh(f"readlink {audio}/iommu_group")).strip().rpartition("/")[2]
    await check_after(live, lambda: sh(f"echo 1 > {audio}/remove"))
    assert (await sh(f"ls {mnt}/sys/kernel/iommu_groups/{group}/devices")) == "0000:01:00.0\n"
    await check_after(live, lambda: sh(f"echo 1 > {mnt}/sys/bus/pci/rescan"))
    port = f"{mnt}/sys/devices/pci0000:00/0000:00:1d.0"
    await check_after(live, lambda: sh(f"echo 1 > {port}/remove"))
    await check_after(live, lambda: sh(f"echo 1 > {mnt}/sys/bus/pci/rescan"))


# --- a write that changes the tree: the writer's next syscall sees the new tree ------------------
# The invalidations are delivered before the write is answered, so none of these may fail
# (before that, 1-40% of the opens found the old, removed directory: ENOENT).
LOOPS = 200


def test_vfs_reenabled_are_there_for_the_next_open(mount_preset):
    from tests.conftest import sh as run_sh
    m = mount_preset("seed-vtd")
    pf = m.devdir("0000:03:00.0")
    r = run_sh(f"""f=0
        for i in $(seq {LOOPS}); do
            echo 0 > {pf}/sriov_numvfs; echo 4 > {pf}/sriov_numvfs
            read x < {pf}/virtfn0/vendor || f=$((f+1))
            cat {pf}/virtfn0/vendor > /dev/null || f=$((f+1))
        done
        echo $f""", timeout=300)
    assert r.stdout == "0\n", r.stderr[:2000]
    assert m.read(pf / "virtfn3/vendor") == "0x8086\n"


def test_a_rescanned_device_is_there_for_the_next_open(mount_preset):
    from tests.conftest import sh as run_sh
    m = mount_preset("seed-vtd")
    dev = m.devdir("0000:06:00.0")
    r = run_sh(f"""f=0
        for i in $(seq {LOOPS}); do
            echo 1 > {dev}/remove || f=$((f+1))
            echo 1 > {m.pci}/rescan
            read x < {dev}/vendor || f=$((f+1))
        done
        echo $f""", timeout=300)
    assert r.stdout == "0\n", r.stderr[:2000]
    assert m.read(dev / "vendor") == "0x144d\n"


def test_walked_vfs_enabled_again_unbound_are_looked_up_afresh(mount_preset):
    """A disable marks the entries the kernel cached stale (FUSE_EXPIRE_ONLY) rather than
    dropping them and the inodes below, so the kernel forgets nothing during the write.
    The next walk through the same paths asks again: VFs enabled anew with autoprobe off
    have no driver and no net/, though their old links and directories were cached."""
    from tests.conftest import sh as run_sh
    from vfakefs.client import Controls
    m = mount_preset("seed-vtd")
    c = Controls(m.path)
    pf = m.devdir("0000:03:00.0")
    walk = "; ".join(f"readlink {pf}/virtfn{i}/driver; cat {pf}/virtfn{i}/vendor {pf}/virtfn{i}/device; "
                     f"ls {pf}/virtfn{i}/net {pf}/virtfn{i}/" for i in range(4))
    r = run_sh(f"echo 4 > {pf}/sriov_numvfs; {walk}")
    assert r.returncode == 0 and r.stdout.count("ixgbevf") == 4, r.stderr
    before = c.requests()["forget"]
    run_sh(f"echo 0 > {pf}/sriov_numvfs")
    assert c.requests()["forget"] == before
    r = run_sh(f"echo 0 > {pf}/sriov_drivers_autoprobe; echo 4 > {pf}/sriov_numvfs; {walk}")
    listed = r.stdout.split()
    assert r.stdout.count("0x8086\n0x1515\n") == 4 and "ixgbevf" not in r.stdout, r.stdout
    assert "reset_method" in listed and "driver" not in listed and "net" not in listed, r.stdout
    assert r.stderr.count("No such file or directory") == 4, r.stderr   # net/, each VF (readlink is silent)
