"""The pytest plugin (vfakefs/pytest_plugin.py), tested as its users meet it: an inner test
file that uses the fixtures, run by pytest's own pytester in a subprocess with the plugin
loaded by `-p vfakefs.pytest_plugin` (the pytest11 entry point does the same once vfakefs
is installed), its outcomes asserted, and no mount left behind, also when a test fails."""
from __future__ import annotations

import importlib.metadata
import os
import re
import tomllib

import pytest

from tests.conftest import REPO

pytest_plugins = ["pytester"]



def _installed() -> bool:
    """vfakefs is installed with its pytest11 entry point: pytest loads the plugin itself
    (and refuses `-p vfakefs.pytest_plugin` then: the module is registered twice)."""
    return any(ep.value == "vfakefs.pytest_plugin"
               for ep in importlib.metadata.entry_points(group="pytest11", name="vfakefs"))


PLUGIN = ((() if _installed() else ("-p", "vfakefs.pytest_plugin"))
          + ("-p", "no:cacheprovider", "-n", "0"))

INNER = r'''
import errno
import pytest

NUMVFS = "/sys/class/net/eth0/device/sriov_numvfs"


def test_reads_and_writes_and_runs(vfakefs):
    assert vfakefs.read("/sys/class/net/eth0/device/sriov_totalvfs") == "63\n"
    assert vfakefs.read(NUMVFS) == "0\n"
    vfakefs.write(NUMVFS, "4")
    assert vfakefs.read(NUMVFS) == "4\n"
    r = vfakefs.run("lspci | grep -c 'Virtual Function'")
    assert (r.returncode, r.stdout) == (0, "4\n"), r
    r = vfakefs.run(["cat", "/sys/class/net/eth0/device/sriov_numvfs"])
    assert (r.returncode, r.stdout) == (0, "4\n"), r


def test_a_bad_write_raises_the_kernels_errno_and_changes_nothing(vfakefs):
    assert vfakefs.read(NUMVFS) == "0\n"          # the test before left 4: reset
    with pytest.raises(OSError) as e:
        vfakefs.write(NUMVFS, "abc")
    assert e.value.errno == errno.EINVAL
    vfakefs.write(NUMVFS, "2")
    with pytest.raises(OSError) as e:
        vfakefs.write(NUMVFS, "3")                 # N -> M without 0 first
    assert e.value.errno == errno.EBUSY
    assert vfakefs.read(NUMVFS) == "2\n"


def test_the_log_since_the_test_began(vfakefs):
    assert vfakefs.dmesg_since_start() == []      # nothing of the tests before
    vfakefs.write(NUMVFS, "2")
    log = vfakefs.dmesg_since_start()
    for vf in ("0000:03:10.0", "0000:03:10.2"):
        assert f"pci {vf}: [8086:1515] type 00 class 0x020000 PCIe Endpoint" in log, log
        assert any(line.startswith(f"ixgbevf {vf}: ") for line in log), log
    assert not any("03:10.4" in line for line in log), log


@pytest.mark.vfakefs_topology("qemu-ref")
def test_the_marker_picks_the_machine(vfakefs):
    assert vfakefs.topology == "qemu-ref"
    r = vfakefs.run("lspci")
    assert "QEMU PCIe Root port" in r.stdout, r
    assert not vfakefs.host_path("/sys/class/net/eth0/device/sriov_numvfs").exists()


def test_the_session_machine_is_the_default(vfakefs, vfakefs_machine):
    assert vfakefs.path == vfakefs_machine.path and vfakefs.topology == "seed-vtd"
    assert vfakefs.read(NUMVFS) == "0\n"


def test_path_is_the_mountpoint(vfakefs):
    with open("/proc/self/mounts") as f:
        assert any(line.split()[1] == str(vfakefs.path) and line.split()[2] == "fuse.vfakefs"
                   for line in f)
'''


# every inner test notes its machine's mountpoint, to be checked once the session is over
INNER_CONFTEST = '''
import pytest

@pytest.fixture(autouse=True)
def _note_mountpoint(request):
    if "vfakefs" in request.fixturenames:
        with open("mountpoints.txt", "a") as f:
            f.write(str(request.getfixturevalue("vfakefs").path) + "\\n")
'''


@pytest.fixture
def inner(pytester, monkeypatch):
    # the inner pytest (and the `python -m vfakefs` it runs) imports this tree's vfakefs
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest(INNER_CONFTEST)
    return pytester


def vfakefs_mounts() -> list[str]:
    with open("/proc/self/mounts") as f:
        return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[1])
                for line in f if line.split()[2] == "fuse.vfakefs"]


def assert_nothing_left(pytester, topologies: int, workers: int = 1) -> None:
    """The inner session's mountpoints (one per topology, per xdist worker that used it)
    are unmounted and removed."""
    used = set((pytester.path / "mountpoints.txt").read_text().split())
    assert topologies <= len(used) <= topologies * workers, used
    for mnt in used:
        assert mnt not in vfakefs_mounts()
        assert not os.path.exists(mnt)


def test_fixtures_reset_run_read_write_log_and_marker(inner):
    inner.makepyfile(test_inner=INNER)
    r = inner.runpytest_subprocess(*PLUGIN)
    r.assert_outcomes(passed=6, failed=0, errors=0)
    assert_nothing_left(inner, 2)


def test_under_xdist_each_worker_has_its_own_machines(inner):
    """pytest -n 2: every worker is a session of its own, with its own mounts (a reset in
    one worker never touches the other's machine), and all of them are gone at the end."""
    inner.makepyfile(test_inner=INNER)
    r = inner.runpytest_subprocess(*PLUGIN[:-2], "-n", "2")
    r.assert_outcomes(passed=6, failed=0, errors=0)
    assert_nothing_left(inner, 2, workers=2)


def test_the_option_picks_the_session_machine(inner):
    inner.makepyfile(test_inner='''
def test_qemu(vfakefs, vfakefs_machine):
    assert vfakefs.topology == vfakefs_machine.topology == "qemu-ref"
    assert "82574L" in vfakefs.run("lspci").stdout
''')
    r = inner.runpytest_subprocess(*PLUGIN, "--vfakefs-topology", "qemu-ref")
    r.assert_outcomes(passed=1, failed=0, errors=0)
    assert_nothing_left(inner, 1)


def test_the_cache_option_mounts_in_cached_mode(inner):
    """--vfakefs-cache: stat shows an attribute's content length (strict mode: sysfs's 4096),
    and a read follows a write."""
    inner.makepyfile(test_inner='''
import os

def test_cached(vfakefs):
    vendor = vfakefs.path / "sys/class/net/eth0/device/vendor"
    assert os.stat(vendor).st_size == len(vfakefs.read("/sys/class/net/eth0/device/vendor")) == 7
    vfakefs.write("/sys/class/net/eth0/device/sriov_numvfs", "63")
    assert vfakefs.read("/sys/class/net/eth0/device/sriov_numvfs") == "63\\n"
''')
    r = inner.runpytest_subprocess(*PLUGIN, "--vfakefs-cache")
    r.assert_outcomes(passed=1, failed=0, errors=0)
    assert_nothing_left(inner, 1)


def test_a_topology_file_is_found_beside_the_test(inner):
    """The marker's file is relative to the test's folder, not to where pytest runs."""
    topo = (REPO / "vfakefs/presets/seed-vtd.toml").read_text().replace(
        'total_vfs = 63', 'total_vfs = 7', 1)
    assert "total_vfs = 7" in topo
    inner.mkpydir("sub")
    (inner.path / "sub/mine.toml").write_text(topo)
    (inner.path / "sub/test_mine.py").write_text('''
import pytest

@pytest.mark.vfakefs_topology("mine.toml")
def test_mine(vfakefs):
    assert vfakefs.read("/sys/class/net/eth0/device/sriov_totalvfs") == "7\\n"
''')
    r = inner.runpytest_subprocess(*PLUGIN)
    r.assert_outcomes(passed=1, failed=0, errors=0)
    assert_nothing_left(inner, 1)


def test_unmounted_also_when_tests_fail(inner):
    inner.makepyfile(test_inner='''
import pytest

def test_fails(vfakefs):
    vfakefs.write("/sys/class/net/eth0/device/sriov_numvfs", "1")
    assert False, "on purpose"

@pytest.mark.vfakefs_topology("qemu-ref")
def test_raises(vfakefs):
    open(vfakefs.host_path("/dev/kmsg"))          # left open: the lazy unmount still goes
    raise RuntimeError("on purpose")

def test_after_a_failure_the_machine_is_reset(vfakefs):
    assert vfakefs.read("/sys/class/net/eth0/device/sriov_numvfs") == "0\\n"
''')
    r = inner.runpytest_subprocess(*PLUGIN)
    r.assert_outcomes(passed=1, failed=2, errors=0)
    assert_nothing_left(inner, 2)


def test_a_topology_that_does_not_mount_is_an_error_and_leaves_nothing(inner, tmp_path, monkeypatch):
    # the inner session's mounts in a temporary directory of their own (the plugin makes them
    # with tempfile), apart from those other tests of this run make beside it under xdist
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    inner.makepyfile(test_inner='''
import pytest

@pytest.mark.vfakefs_topology("no-such-preset")
def test_x(vfakefs):
    pass

@pytest.mark.vfakefs_topology("no-such-preset")
def test_y(vfakefs):
    pass

def test_other_machines_still_work(vfakefs):
    assert vfakefs.topology == "seed-vtd"
''')
    r = inner.runpytest_subprocess(*PLUGIN)
    r.assert_outcomes(errors=2, passed=1)
    told = [ln for ln in r.outlines
            if ln.startswith("E ") and "RuntimeError: vfakefs mount -t no-such-preset" in ln]
    assert len(told) == 2, r.outlines               # both tests say why, not only the first
    assert_nothing_left(inner, 1)
    assert not [p for p in vfakefs_mounts() if p.startswith(f"{tmp}/")]
    assert not list(tmp.glob("vfakefs-pytest-*"))       # the failed topology's directory too


def test_installing_vfakefs_registers_the_plugin(inner, tmp_path, monkeypatch):
    """pyproject.toml declares the entry point; a distribution that declares it (here a
    bare dist-info on PYTHONPATH, as `pip install` would leave one) loads the plugin
    without -p."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    eps = meta["project"]["entry-points"]["pytest11"]
    assert eps == {"vfakefs": "vfakefs.pytest_plugin"}
    info = tmp_path / "site" / "vfakefs_probe-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vfakefs-probe\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    monkeypatch.setenv("PYTHONPATH", f"{REPO}:{info.parent}")
    inner.makepyfile(test_inner='''
def test_loaded(vfakefs):
    assert vfakefs.read("/sys/class/net/eth0/device/sriov_totalvfs") == "63\\n"
''')
    r = inner.runpytest_subprocess("-p", "no:cacheprovider", "-n", "0")
    r.assert_outcomes(passed=1)
    assert_nothing_left(inner, 1)


def test_the_readme_example(inner):
    """The README's example test file (tests/mount/plugin_example/, named so that this
    suite does not collect it itself): a Python script under test, bash and lspci."""
    src = (REPO / "tests/mount/plugin_example/sriov_setup_example.py").read_text()
    inner.makepyfile(test_sriov_setup=src)
    r = inner.runpytest_subprocess(*PLUGIN, "-v")
    r.assert_outcomes(passed=3, failed=0, errors=0)
    assert_nothing_left(inner, 2)
