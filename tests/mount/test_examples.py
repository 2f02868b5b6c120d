"""The examples in mountpoint-examples/, as `make examples` runs them: each folder's
run.sh under `vfakefs run -t` (tools/run-examples), its output compared exactly with
the folder's `expected`. A new folder is a new test without editing this file."""
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run

EXAMPLES = Path(REPO) / "mountpoint-examples"
RUNNER = Path(REPO) / "tools" / "run-examples"
FOLDERS = sorted(p.name for p in EXAMPLES.iterdir() if (p / "run.sh").exists())


def run_examples(*args):
    return run(["env", f"PYTHON={sys.executable}", RUNNER, *args], cwd=REPO, timeout=120)


def test_every_folder_is_complete():
    """The shape the runner and the README promise: a machine, a script, its output, a README
    of three lines."""
    assert {"gpu-passthrough", "sriov-nic", "vtd-verification", "acs-groups", "dma-fault-storm",
            "ats"} <= set(FOLDERS)
    for name in FOLDERS:
        d = EXAMPLES / name
        assert (d / "topology.toml").exists() != (d / "preset").exists(), name
        assert (d / "expected").exists(), name
        assert len((d / "README").read_text().splitlines()) == 3, name


@pytest.mark.parametrize("name", FOLDERS)
def test_example_prints_its_expected_output(name):
    r = run_examples(name)
    assert (r.returncode, r.stdout) == (0, f"PASS {name}\n"), r.stdout + r.stderr


def test_a_changed_expected_output_fails_with_the_diff(tmp_path):
    """A folder whose output differs from `expected` is a FAIL with the diff and exit 1;
    --update writes the output and it passes again."""
    d = tmp_path / "sriov-nic"
    shutil.copytree(EXAMPLES / "sriov-nic", d)
    good = (d / "expected").read_text()
    (d / "expected").write_text(good.replace("\n63\n", "\n64\n", 1))
    r = run_examples(str(d))
    assert r.returncode == 1
    assert r.stdout.startswith("FAIL sriov-nic (exit 0)\n")
    assert "\n-64\n+63\n" in r.stdout
    r = run_examples("--update", str(d))
    assert (r.returncode, r.stdout) == (0, "UPDATED sriov-nic (exit 0)\n")
    assert (d / "expected").read_text() == good
    assert run_examples(str(d)).stdout == "PASS sriov-nic\n"


def test_a_failing_script_fails(tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "preset").write_text("seed-vtd\n")
    (d / "run.sh").write_text("cat /sys/class/net/eth0/device/sriov_totalvfs\nexit 3\n")
    (d / "expected").write_text("63\n")
    r = run_examples(str(d))
    assert r.returncode == 1 and r.stdout.startswith("FAIL broken (exit 3)\n"), r.stdout
    (d / "preset").write_text("no-such-machine\n")
    r = run_examples(str(d))
    assert r.returncode == 1 and "no-such-machine: no such preset" in r.stdout, r.stdout


def test_passthrough_leaves_a_consistent_tree(mount_preset):
    """After the gpu-passthrough example, the tree says what its transcript says."""
    m = mount_preset("seed-vtd")
    r = run(["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "vfakefs", "run", "--mnt", m.path,
             "--", "bash", "run.sh"], cwd=EXAMPLES / "gpu-passthrough")
    assert r.returncode == 0, r.stdout + r.stderr
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
