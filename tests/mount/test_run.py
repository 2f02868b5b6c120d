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
