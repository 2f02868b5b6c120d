"""What kernfs answers at the edges of open: a file created in a directory that was
just removed, and attributes whose mode root changed with chmod.

- A removed device's directory is gone: a name looked up in it (also from a shell
  whose cwd is still there) is ENOENT, not the EACCES of creating a file in a live
  sysfs directory (which has no ->create).
- kernfs_fop_open checks the file's current mode (KERNFS_ROOT_EXTRA_OPEN_PERM_CHECK),
  and every device attribute has the kobject's show and store (dev_attr_show,
  dev_attr_store), which answer -EIO for a half the attribute lacks. So after root's
  chmod u+w of a read-only attribute the open succeeds and the write is EIO; after
  chmod u+r of a write-only one the read is EIO. Nothing changes.
- A file still open when its device goes: kernfs_get_active() fails on the removed
  node, so each read and write of the open fd is ENODEV (never the value it had), while
  fstat still answers what the file was.
"""
from __future__ import annotations

import pytest

from tests.conftest import run, sh

NVME = "sys/bus/pci/devices/0000:06:00.0"
NVME_REAL = "sys/devices/pci0000:00/0000:00:1d.0/0000:04:00.0/0000:05:00.0/0000:06:00.0"
X540 = "sys/bus/pci/devices/0000:03:00.0"


def test_writing_into_a_just_removed_directory_is_enoent(mount_preset):
    m = mount_preset("seed-vtd")
    r = sh(f"echo 1 > {NVME}/remove; echo 1 > {NVME_REAL}/enable", cwd=m.path)
    assert r.returncode == 1 and "No such file or directory" in r.stderr, r.stderr
    r = sh(f"echo 1 > {m.pci}/rescan; cd {NVME_REAL} && echo 1 > remove && echo 1 > enable",
           cwd=m.path)
    assert r.returncode == 1 and "No such file or directory" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    # a live directory still refuses new files as sysfs does
    r = sh(f"echo 1 > {m.pci}/rescan && echo 1 > {NVME}/newfile", cwd=m.path)
    assert r.returncode == 1 and "Permission denied" in r.stderr, r.stderr
    assert run(["cat", f"{NVME}/enable"], cwd=m.path).stdout == "1\n"


def test_chmod_writable_read_only_attr_opens_and_the_write_is_eio(mount_preset):
    m = mount_preset("seed-vtd")
    assert sh(f"chmod 0644 {X540}/vendor", cwd=m.path).returncode == 0
    r = sh(f"echo 0x1234 > {X540}/vendor", cwd=m.path)
    assert r.returncode == 1 and "write error: Input/output error" in r.stderr, r.stderr
    assert run(["cat", f"{X540}/vendor"], cwd=m.path).stdout == "0x8086\n"
    # without chmod: refused at open, as before
    r = sh(f"echo 0x1234 > {X540}/device", cwd=m.path)
    assert r.returncode == 1 and "Permission denied" in r.stderr, r.stderr


def test_chmod_readable_write_only_attr_opens_and_the_read_is_eio(mount_preset):
    m = mount_preset("seed-vtd")
    r = run(["cat", f"{NVME}/rescan"], cwd=m.path)
    assert r.returncode == 1 and "Permission denied" in r.stderr, r.stderr
    assert sh(f"chmod 0600 {NVME}/rescan", cwd=m.path).returncode == 0
    r = run(["cat", f"{NVME}/rescan"], cwd=m.path)
    assert r.returncode == 1 and "Input/output error" in r.stderr, r.stderr
    assert run(["cat", f"{NVME}/vendor"], cwd=m.path).stdout == "0x144d\n"


@pytest.mark.parametrize("mode", [(), ("--cache",)], ids=["strict", "cached"])
def test_reads_and_writes_of_a_removed_file_still_open_are_enodev(mount_preset, mode):
    m = mount_preset("seed-vtd", *mode)
    assert sh(f"echo 2 > {X540}/sriov_numvfs", cwd=m.path).returncode == 0
    vf = "sys/bus/pci/devices/0000:03:10.0"
    r = sh(f"exec 3<{vf}/vendor 4<{vf}/config 5>{vf}/driver_override; "
           f"od -An -tx1 -N2 <&4; echo 0 > {X540}/sriov_numvfs; "
           "stat -L -c '%a' /proc/self/fd/3; "
           "cat <&3; od -An -N2 <&4; echo vfio-pci >&5; cat /proc/self/fd/3", cwd=m.path)
    assert r.stdout.split() == ["ff", "ff", "444"], r.stdout   # (a VF's vendor ID reads 0xffff)
    assert r.stderr.splitlines() == [
        "cat: -: No such device", "od: 'standard input': No such device",
        "bash: line 1: echo: write error: No such device", "cat: /proc/self/fd/3: No such device"], r.stderr
    assert run(["cat", f"{X540}/sriov_numvfs"], cwd=m.path).stdout == "0\n"
    assert not (m.path / vf).exists()


@pytest.mark.parametrize("mode", [(), ("--cache",)], ids=["strict", "cached"])
def test_a_removed_file_whose_directory_changed_while_open_is_enodev(mount_preset, mode):
    """The unbind between the open and the removal makes the daemon drop what it had
    cached of the VF's directory: the open file's own node still tells fstat and the
    reopen what it was."""
    m = mount_preset("seed-vtd", *mode)
    vf = "sys/bus/pci/devices/0000:03:10.2"
    r = sh(f"echo 2 > {X540}/sriov_numvfs; exec 6<{vf}/vendor; echo 0000:03:10.2 > {vf}/driver/unbind; "
           f"echo 0 > {X540}/sriov_numvfs; stat -L -c '%a' /proc/self/fd/6; cat /proc/self/fd/6", cwd=m.path)
    assert r.stdout == "444\n" and r.stderr == "cat: /proc/self/fd/6: No such device\n", (r.stdout, r.stderr)
