"""The kernel's caches of symlink targets and directory listings, which the pyfuse3 the
Makefile builds (patches/) lets it keep (FUSE_CAP_CACHE_SYMLINKS, FOPEN_CACHE_DIR): they
save the requests (a READLINK at every walk through a link, a READDIRPLUS at every
listing), and whatever changes is dropped before the next syscall sees it.

A link whose target changes at the same path keeps its inode number; while something
holds that inode (an O_PATH descriptor, as systemd's chase() takes on every component),
the kernel finds it again at the next lookup with its cached target, unless the change
drops the inode's pages too. A machine reset changes the driver link in one step. With
stock pyfuse3 nothing is cached and these hold trivially.
"""
from __future__ import annotations

import os

import pytest

from tests.conftest import run
from tests.mount.inprocess import served, sh
from vfakefs.fuse.ops import CACHE_LISTINGS, SysfsOps
from vfakefs.model import topology
from vfakefs.sysfs.tree import View

NIC = "0000:02:00.0"     # seed-vtd's I210, bound to igb
PF = "0000:03:00.0"      # seed-vtd's X540 PF, 63 VFs
IGB = "../../../../bus/pci/drivers/igb"
VFIO = "../../../../bus/pci/drivers/vfio-pci"


def write(path, text: str) -> None:
    r = run(f"echo {text} > {path}")
    assert r.returncode == 0, r.stderr


def rebind_to_vfio(m) -> None:
    write(m.pci / "drivers/igb/unbind", NIC)
    write(m.devdir(NIC) / "driver_override", "vfio-pci")
    write(m.pci / "drivers_probe", NIC)


def lspci_driver(m, bdf: str) -> str:
    r = m.lspci("-k", "-s", bdf)
    assert r.returncode == 0, r.stderr
    return [ln for ln in r.stdout.splitlines() if "Kernel driver in use" in ln][0].split(": ")[1]


def test_a_held_driver_link_shows_its_new_target_after_a_reset(mount_preset):
    m = mount_preset("seed-vtd")
    link = m.devdir(NIC) / "driver"
    rebind_to_vfio(m)
    assert run(["readlink", link]).stdout == f"{VFIO}\n"
    assert NIC not in run(["ls", m.pci / "drivers/igb"]).stdout.split()   # a cached listing now
    assert lspci_driver(m, "02:00.0") == "vfio-pci"
    fd = os.open(link, os.O_PATH | os.O_NOFOLLOW)   # holds the link's inode across the reset
    try:
        write(m.sys / "kernel/debug/vfakefs/reset", "1")   # the power cycle: igb binds it again
        assert run(["readlink", link]).stdout == f"{IGB}\n"
        assert run(["ls", "-l", link]).stdout.endswith(f"driver -> {IGB}\n")
        assert os.readlink("", dir_fd=fd) == IGB      # the held inode is the link at that path
        assert lspci_driver(m, "02:00.0") == "igb"
        assert NIC in run(["ls", m.pci / "drivers/igb"]).stdout.split()
        assert NIC not in run(["ls", m.pci / "drivers/vfio-pci"]).stdout.split()
    finally:
        os.close(fd)


def test_a_held_iommu_group_link_shows_its_regrouping_after_a_reset(mount_preset):
    m = mount_preset("seed-vtd")
    port, nvme = "0000:00:1d.0", "0000:06:00.0"
    groups = m.sys / "kernel/iommu_groups"
    link = m.devdir(nvme) / "iommu_group"
    first = run(["readlink", link]).stdout
    write(m.devdir(port) / "remove", "1")                # frees the port's group number...
    write(m.devdir(PF) / "sriov_numvfs", "4")            # ...which a VF's new group takes
    assert run(["readlink", m.devdir(PF) / "virtfn0/iommu_group"]).stdout.endswith(first.rpartition("/")[2])
    write(m.pci / "rescan", "1")                         # the port comes back in a new group
    moved = run(["readlink", link]).stdout
    assert moved != first
    assert {port, nvme} <= set(run(["ls", groups / moved.strip().rpartition("/")[2] / "devices"]).stdout.split())
    fd = os.open(link, os.O_PATH | os.O_NOFOLLOW)
    try:
        write(m.sys / "kernel/debug/vfakefs/reset", "1")   # booted again: the first numbering
        assert run(["readlink", link]).stdout == first
        assert os.readlink("", dir_fd=fd) == first.strip()
        assert {port, nvme} <= set(run(["ls", groups / first.strip().rpartition("/")[2] / "devices"]).stdout.split())
        assert moved.strip().rpartition("/")[2] not in run(["ls", groups]).stdout.split()
    finally:
        os.close(fd)


def test_a_listed_pf_shows_its_vfs_come_and_go(mount_preset):
    m = mount_preset("seed-vtd")
    pf = m.devdir(PF)

    def virtfns() -> list[str]:
        return [n for n in run(["ls", pf]).stdout.split() if n.startswith("virtfn")]

    def vfs_in_lspci() -> int:
        r = m.lspci("-nn")
        assert r.returncode == 0, r.stderr
        return r.stdout.count("[8086:1515]")

    groups = run(["ls", m.sys / "kernel/iommu_groups"]).stdout.split()
    assert virtfns() == [] and vfs_in_lspci() == 0          # listed: cached by the kernel
    for _ in range(2):
        write(pf / "sriov_numvfs", "4")
        assert virtfns() == ["virtfn0", "virtfn1", "virtfn2", "virtfn3"]
        assert vfs_in_lspci() == 4
        assert len(run(["ls", m.sys / "kernel/iommu_groups"]).stdout.split()) == len(groups) + 4
        assert run(["readlink", pf / "virtfn0/physfn"]).stdout == f"../{PF}\n"
        write(pf / "sriov_numvfs", "0")
        assert virtfns() == [] and vfs_in_lspci() == 0
        assert run(["ls", m.sys / "kernel/iommu_groups"]).stdout.split() == groups


# --- the requests the caches save: counted in the server itself (ops.requests) ---------------------
@pytest.fixture
async def counted(tmp_path):
    machine = topology.load("seed-vtd")
    view = View(machine)
    ops = SysfsOps(view.root(), lambda: machine.generation, view.dirty)
    machine.subscribe(ops.publish)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    async with served(ops, mnt):
        yield ops, mnt


async def test_an_unchanged_listing_is_asked_for_once(counted):
    ops, mnt = counted
    pf = f"{mnt}/sys/bus/pci/devices/{PF}"
    first = await sh(f"ls {pf}")
    asked = ops.requests["readdir"]
    assert asked >= 1
    for _ in range(3):
        assert await sh(f"ls {pf}") == first
    assert ops.requests["readdir"] == asked
    await sh(f"echo 2 > {pf}/sriov_numvfs")
    assert "virtfn1" in (await sh(f"ls {pf}")).split()
    assert ops.requests["readdir"] > asked                      # the changed listing, asked for again


@pytest.mark.skipif(not SysfsOps.enable_symlink_cache or not CACHE_LISTINGS,
                    reason="stock pyfuse3, or a kernel that cuts cached links at i_size (before 6.14)")
async def test_a_walk_through_a_link_asks_for_it_once(counted):
    ops, mnt = counted
    dev = f"{mnt}/sys/bus/pci/devices/{NIC}"
    assert await sh(f"cat {dev}/vendor") == "0x8086\n"
    asked = ops.requests["readlink"]
    assert asked == 1                                        # devices/NIC, the first time through
    for _ in range(5):
        assert await sh(f"cat {dev}/vendor {dev}/device") == "0x8086\n0x1533\n"
    assert ops.requests["readlink"] == asked
