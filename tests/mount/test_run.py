"""`vfakefs run`: programs that need a pty (script, os.openpty) work in the private
mount namespace, also where the host has no /dev/vfio and the namespace gets its
own /dev; the host's /dev is left as it was."""
from __future__ import annotations

import os
import shutil
import sys

import pytest

from tests.conftest import NOBODY, REPO, run

needs_script = pytest.mark.skipif(not shutil.which("script"), reason="script(1) (util-linux/bsdutils) needed")
VENDOR = "/sys/bus/pci/devices/0000:03:00.0/vendor"


def in_run(mnt, *cmd):
    return run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(mnt), "--", *cmd], cwd=REPO)


def test_openpty_in_vfakefs_run(seed_mnt):
    r = in_run(seed_mnt.path, sys.executable, "-c",
               "import os; m, s = os.openpty(); print(os.ttyname(s)); print(open('%s').read(), end='')" % VENDOR)
    assert r.returncode == 0, r.stderr
    name, vendor = r.stdout.splitlines()
    assert name.startswith("/dev/pts/") and vendor == "0x8086"   # a pty, and the simulated /sys


@needs_script
def test_script_in_vfakefs_run(seed_mnt):
    r = in_run(seed_mnt.path, "script", "-qc", "true", "/dev/null")
    assert r.returncode == 0, r.stderr
    # the command inside script runs on a pty its name can be found for, over the simulated /sys
    r = in_run(seed_mnt.path, "script", "-qec", f"tty; cat {VENDOR}", "/dev/null")
    assert r.returncode == 0, r.stderr
    tty, vendor = r.stdout.replace("\r", "").splitlines()
    assert tty.startswith("/dev/pts/") and vendor == "0x8086"


@needs_script
def test_pty_as_an_unprivileged_user_in_vfakefs_run(seed_mnt):
    r = in_run(seed_mnt.path, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
               "script", "-qec", "id -u; tty", "/dev/null")
    assert r.returncode == 0, r.stderr
    uid, tty = r.stdout.replace("\r", "").splitlines()
    assert uid == str(NOBODY) and tty.startswith("/dev/pts/")


def test_vfakefs_run_leaves_the_hosts_dev_alone(seed_mnt):
    before = sorted(os.listdir("/dev"))
    ptmx = os.lstat("/dev/ptmx")
    r = in_run(seed_mnt.path, sys.executable, "-c", "import os; os.openpty(); print(*os.listdir('/dev'), sep='\\n')")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir("/dev")) == before
    after = os.lstat("/dev/ptmx")
    assert (after.st_mode, after.st_rdev, after.st_ino) == (ptmx.st_mode, ptmx.st_rdev, ptmx.st_ino)
    inside = r.stdout.split()
    assert "vfio" in inside and "ptmx" in inside and "pts" in inside


def test_proc_cmdline_and_interrupts_are_the_simulated_kernels_inside_only(seed_mnt):
    """LXCFS-style: the daemon serves MNT/proc/{cmdline,interrupts} (0444, size 0, as
    procfs) and `vfakefs run` binds them over the host's; outside, the host's stay."""
    host_cmdline = open("/proc/cmdline").read()
    want = "BOOT_IMAGE=/vmlinuz-6.12.117-amd64 root=/dev/sda1 ro quiet intel_iommu=on\n"
    st = os.stat(seed_mnt.path / "proc/cmdline")
    assert (oct(st.st_mode & 0o777), st.st_size) == ("0o444", 0)
    assert (seed_mnt.path / "proc/cmdline").read_text() == want
    r = in_run(seed_mnt.path, "sh", "-c", "cat /proc/cmdline; grep -c IR-PCI-MSI /proc/interrupts; "
                                          "grep ' eth0-TxRx-0$' /proc/interrupts; head -1 /proc/interrupts")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == want.rstrip("\n") and int(lines[1]) >= 10
    assert "IR-PCI-MSIX-0000:03:00.0" in lines[2] and lines[3].split() == ["CPU0", "CPU1"]
    assert open("/proc/cmdline").read() == host_cmdline                  # the host's, untouched
    r = run(["sh", "-c", "echo x > " + str(seed_mnt.path / "proc/cmdline")])
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_run_on_a_mountpoint_too_deep_for_a_unix_socket_name(tmp_path):
    """The daemon's socket is named after the mountpoint; past sun_path's 107 bytes the
    name is cut and hashed, so a deep mountpoint still serves `vfakefs run` (its daemon died
    at bind before) and leaves no socket after the unmount."""
    from tests.conftest import make_mountpoint, mounted
    from vfakefs.cli import _sockfile
    deep = make_mountpoint(tmp_path / ("d" * 60) / ("e" * 60))
    sock = _sockfile(str(deep))
    assert len(os.fsencode(sock)) <= 107 and sock.name.endswith(".sock")
    with mounted("seed-vtd", deep) as m:
        r = run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(m.path), "--",
                 "cat", "/sys/class/net/eth0/device/sriov_totalvfs"], cwd=REPO)
        assert (r.returncode, r.stdout) == (0, "63\n"), r.stderr
        assert sock.exists()
    assert not sock.exists()


def test_run_with_a_topology_mounts_a_fresh_machine_for_the_command_only(tmp_path):
    """`vfakefs run -t PRESET -- CMD` (the examples' runner uses it): CMD sees a machine
    of its own at /sys (its mountpoint in $VFAKEFS_MNT), its exit status is run's, and
    the machine is unmounted and its mountpoint removed when it ends."""
    from tests.conftest import is_mounted
    r = run([sys.executable, "-m", "vfakefs", "run", "-t", "seed-vtd", "--", "bash", "-c",
             "echo $VFAKEFS_MNT; echo 2 > /sys/class/net/eth0/device/sriov_numvfs; "
             "ls /sys/class/net/eth0/device | grep -c virtfn; exit 3"], cwd=REPO)
    assert r.returncode == 3, r.stderr
    mnt, vfs = r.stdout.splitlines()
    assert vfs == "2" and "vfakefs-run-" in mnt
    assert not is_mounted(mnt) and not os.path.exists(mnt)
    # a second run starts from the topology again, not from what the first one left
    r = run([sys.executable, "-m", "vfakefs", "run", "-t", "seed-vtd", "--",
             "cat", "/sys/class/net/eth0/device/sriov_numvfs"], cwd=REPO)
    assert (r.returncode, r.stdout) == (0, "0\n"), r.stderr


def test_run_with_an_unknown_topology_mounts_nothing(tmp_path):
    r = run([sys.executable, "-m", "vfakefs", "run", "-t", str(tmp_path / "none.toml"), "--", "true"], cwd=REPO)
    assert r.returncode == 2 and "none.toml: No such file or directory" in r.stderr, r.stderr
