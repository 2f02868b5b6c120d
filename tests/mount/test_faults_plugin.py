"""The plugin's vfakefs.fault() (pytest_plugin.VFakeFS), as a user's test meets it: run by
pytester with the plugin loaded, like tests/mount/test_pytest_plugin.py."""
from __future__ import annotations

from tests.mount.test_pytest_plugin import PLUGIN, assert_nothing_left, inner  # noqa: F401 (fixture)

pytest_plugins = ["pytester"]

INNER = r'''
import errno
import pytest

PF = "0000:03:00.0"
NUMVFS = "/sys/bus/pci/devices/0000:03:00.0/sriov_numvfs"


def test_a_store_that_fails_then_works(vfakefs):
    vfakefs.fault(PF, "sriov_numvfs", fail="EIO")
    with pytest.raises(OSError) as e:
        vfakefs.write(NUMVFS, "4")
    assert e.value.errno == errno.EIO and vfakefs.read(NUMVFS) == "0\n"
    vfakefs.write(NUMVFS, "4")
    assert vfakefs.fault_rules() == [f"{PF} sriov_numvfs fail=EIO times=1 hits=1"]


def test_the_reset_cleared_the_rules_and_a_held_write_returns_when_done(vfakefs):
    assert vfakefs.fault_rules() == [] and vfakefs.read(NUMVFS) == "0\n"
    vfakefs.fault(PF, "sriov_numvfs", delay=0.5)
    vfakefs.write(NUMVFS, "2")                  # returns once the store is done
    assert vfakefs.read(NUMVFS) == "2\n"
    with pytest.raises(OSError) as e:
        vfakefs.fault(PF, "sriov_numvfs", delay=-1)
    assert e.value.errno == errno.EINVAL
    assert "vfakefs: faults: delay -1.0 is outside (0, 3600] seconds" in vfakefs.dmesg_since_start()
'''


def test_the_plugins_fault_helper(inner):  # noqa: F811
    inner.makepyfile(test_inner=INNER)
    r = inner.runpytest_subprocess(*PLUGIN)
    r.assert_outcomes(passed=2, failed=0, errors=0)
    assert_nothing_left(inner, 1)
