"""The essay's procedures, as a user runs them: the scripts in mountpoint-examples/
against a fresh mount, their output compared with the expected output beside them."""
import os
import shlex
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, run
from tests.fidelity.capture import LSPCI_NAMES

EXAMPLES = Path(REPO) / "mountpoint-examples"


@pytest.fixture(scope="module")
def pinned_path(tmp_path_factory) -> str:
    """A PATH whose first `lspci` is the real one with the tests' pinned name sources
    (capture.LSPCI_NAMES): the scripts run lspci as a user would, and their expected
    output does not depend on the host's pci.ids or udev hwdb."""
    real = shutil.which("lspci")
    assert real, "lspci is not installed (apt-get install pciutils)"
    d = tmp_path_factory.mktemp("pinned-bin")
    (d / "lspci").write_text(f'#!/bin/sh\nexec {shlex.join([real, *LSPCI_NAMES])} "$@"\n')
    (d / "lspci").chmod(0o755)
    return f"{d}:{os.environ.get('PATH', '/usr/bin:/bin')}"


@pytest.mark.parametrize("script", ["passthrough", "sriov"])
def test_example_script_prints_what_the_kernel_would(mount_preset, pinned_path, script):
    m = mount_preset("seed-vtd")
    r = run(["env", f"PATH={pinned_path}", "bash", str(EXAMPLES / f"{script}.sh"), str(m.path)])
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
