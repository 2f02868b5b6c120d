"""The essay's procedures, as a user runs them: the scripts in mountpoint-examples/
against a fresh mount, their output compared with the expected output beside them."""
from pathlib import Path

import pytest

from tests.conftest import REPO, run

EXAMPLES = Path(REPO) / "mountpoint-examples"


@pytest.mark.parametrize("script", ["passthrough", "sriov"])
def test_example_script_prints_what_the_kernel_would(mount_preset, script):
    m = mount_preset("seed-vtd")
    r = run(["bash", str(EXAMPLES / f"{script}.sh"), str(m.path)])
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout == (EXAMPLES / f"{script}.expected").read_text()


def test_passthrough_leaves_a_consistent_tree(mount_preset):
    m = mount_preset("seed-vtd")
    run(["bash", str(EXAMPLES / "passthrough.sh"), str(m.path)])
    drv = m.pci / "drivers"
    assert sorted(p.name for p in (drv / "vfio-pci").iterdir() if p.name.startswith("0000")) == \
        ["0000:01:00.0", "0000:01:00.1"]
    assert not any(p.name.startswith("0000") for p in (drv / "nouveau").iterdir())
    assert "DRIVER=vfio-pci" in m.read(m.devdir("0000:01:00.0") / "uevent")
    assert m.read(m.devdir("0000:01:00.1") / "driver_override") == "vfio-pci\n"


def test_sriov_vfs_vanish_completely(mount_preset):
    m = mount_preset("seed-vtd")
    pf = m.devdir("0000:03:00.0")
    for n in ("4", "0"):
        r = run(["bash", "-c", f"echo {n} > {pf}/sriov_numvfs"])
        assert r.returncode == 0, r.stderr
    r = run(["bash", "-c", f"grep -rl '03:10' {m.path}/sys/bus {m.path}/sys/kernel/iommu_groups "
                           f"{m.path}/sys/class/net 2>/dev/null; find {m.path}/sys -name '0000:03:1*'"])
    assert r.stdout == ""
    assert not [p for p in pf.iterdir() if p.name.startswith("virtfn")]
