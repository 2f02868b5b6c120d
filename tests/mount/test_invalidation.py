"""A structural change made by the Machine (not by a write) is visible to the very
next syscall, although the kernel caches entries and attributes for an hour.

The server runs in this test's own trio loop so the test can change the Machine
directly, as the engine will; the reads go through real programs.
"""
import os
import subprocess

import pyfuse3
import pytest
import trio

from vfakefs.fuse.mount import MOUNT_OPTIONS
from vfakefs.fuse.ops import SysfsOps
from vfakefs.model.base import binding
from vfakefs.model import topology
from vfakefs.sysfs.tree import View


@pytest.fixture
async def live(tmp_path):
    machine = topology.load("seed-vtd")
    ops = SysfsOps(View(machine).root(), lambda: machine.generation)
    machine.subscribe(ops.publish)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pyfuse3.init(ops, str(mnt), set(MOUNT_OPTIONS))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pyfuse3.main)
            try:
                yield machine, mnt
            finally:
                pyfuse3.terminate()
    finally:
        pyfuse3.close(unmount=True)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)])


async def sh(script: str) -> str:
    r = await trio.run_process(["bash", "-c", script], capture_stdout=True, capture_stderr=True, check=False)
    return r.stdout.decode() + r.stderr.decode()


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
    assert "No such file" in await sh(f"readlink -v {d}/driver")
    assert "No such file" in await sh(f"ls {d}/net")
    assert "eth0" not in await sh(f"ls {mnt}/sys/class/net")
    assert int(await sh(f"stat -L -c %h {d}")) == int(nlink_before) - 1


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
