"""The VF token from a C program under `vfakefs run` against seed-vtd: the PF's user sets
it with VFIO_DEVICE_FEATURE (the seccomp adapter reads struct vfio_device_feature from the
program's memory), the VF's user gives it after the VF's name."""
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, run

GCC = shutil.which("gcc")
PF = "0000:03:00.0"


@pytest.mark.skipif(GCC is None, reason="gcc is not installed")
def test_vf_token_through_vfio_device_feature(mount_preset, tmp_path):
    prog = tmp_path / "vf_token"
    r = subprocess.run([GCC, "-O2", "-Wall", "-o", str(prog), str(REPO / "tests/vfio_programs/vf_token.c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    mnt = mount_preset("seed-vtd")
    dev = f"/sys/bus/pci/devices/{PF}"
    script = f"""set -e
echo Y > /sys/module/vfio_pci/parameters/enable_sriov
echo {PF} > {dev}/driver/unbind
echo vfio-pci > {dev}/driver_override
echo {PF} > /sys/bus/pci/drivers_probe
echo 1 > {dev}/sriov_numvfs
vf=$(basename $(readlink {dev}/virtfn0))
exec {prog} {PF} $(basename $(readlink {dev}/iommu_group)) $vf \
    $(basename $(readlink /sys/bus/pci/devices/$vf/iommu_group))
"""
    r = run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(mnt.path), "--", "bash", "-c", script], cwd=REPO)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.splitlines() == [
        "open group: ok", "set container: ok", "set iommu: ok", "open group: ok", "set container: ok", "pf: ok",
        "get token: Invalid argument",            # no GET: it would give away the last user's token
        "probe set token: ok",
        "set short token: Invalid argument",      # a UUID is 16 bytes
        "set token: ok",
        "migration: Inappropriate ioctl for device",
        "vf without token: Permission denied",
        "vf with a wrong token: Permission denied",
        "vf with the token: ok",
        "pf again without token: Permission denied",   # its VF is in use now
        "vf sets a token: Inappropriate ioctl for device",
    ]
