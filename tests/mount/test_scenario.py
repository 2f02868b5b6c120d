"""Timelines on a real mount: a scenario started at mount (`--scenario`), by the control,
by `vfakefs scenario`, and from the pytest plugin, seen by real programs inside
`vfakefs run` as they happen. Order only: no assertion on real time."""
from __future__ import annotations

from contextlib import contextmanager

import pytest

from tests.conftest import _MOUNTPOINTS, REPO, force_unmount, make_mountpoint, mounts_at, run, vfakefs

NUMVFS = "/sys/class/net/eth0/device/sriov_numvfs"
CTL = "sys/kernel/debug/vfakefs/scenario"

# one state a second of simulated time (which runs about as fast as real time): a polling
# program sees each, whatever the machine's load
CHURN = f'''
name = "churn"
[[step]]
at = "1s"
write = "{NUMVFS}"
value = 2
[[step]]
at = "2s"
write = "{NUMVFS}"
value = 0
[[step]]
at = "3s"
write = "{NUMVFS}"
value = 3
[[step]]
at = "4s"
control = "carrier"
value = "eth0 0"
'''

# what the program prints each time the state it polls changes: numvfs, virtfn links, carrier
WATCH = r'''
ctl=/sys/kernel/debug/vfakefs/scenario
dev=/sys/class/net/eth0/device
[ -n "$1" ] && echo "$1" > $ctl
state() {   # read twice: a state a step changed between two of the reads is not one
    local a b
    a="$(cat $dev/sriov_numvfs) $(ls -d $dev/virtfn* 2>/dev/null | wc -l) $(cat /sys/class/net/eth0/carrier)"
    b="$(cat $dev/sriov_numvfs) $(ls -d $dev/virtfn* 2>/dev/null | wc -l) $(cat /sys/class/net/eth0/carrier)"
    [ "$a" = "$b" ] && s=$a
}
last=
for i in $(seq 100000); do
    state
    [ "$s" != "$last" ] && echo "$s" && last=$s
    grep -q '^state: running' $ctl || break
done
state
[ "$s" != "$last" ] && echo "$s"
ip -o link show eth0 | grep -o 'NO-CARRIER' 
head -1 $ctl
'''
SEEN = ["0 0 1", "2 2 1", "0 0 1", "3 3 1", "3 3 0", "NO-CARRIER", "state: done"]


@contextmanager
def mounted_with(mnt, *args):
    _MOUNTPOINTS.append(mnt)
    try:
        r = vfakefs("mount", *args, str(mnt))
        assert r.returncode == 0, r.stderr
        yield mnt
    finally:
        force_unmount(mnt)


@pytest.fixture
def churn(tmp_path):
    f = tmp_path / "churn.toml"
    f.write_text(CHURN)
    return f


def watch(mnt, *args) -> list[str]:
    r = vfakefs("run", "--mnt", str(mnt), "--", "bash", "-c", WATCH, "watch", *args, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_a_program_sees_the_steps_in_order(tmp_path, churn):
    """Started by the program itself through the control: it sees every state, in order."""
    with mounted_with(make_mountpoint(tmp_path), "-t", "seed-vtd") as mnt:
        assert watch(mnt, str(churn)) == SEEN
        dmesg = (mnt / "sys/kernel/debug/vfakefs/dmesg").read_text().splitlines()
        lines = [line.split("] ", 1)[-1] for line in dmesg]
        marks = [next(i for i, t in enumerate(lines) if want in t) for want in (
            "vfakefs: scenario churn: started (4 steps, 4 runs, until 4.000 s)",
            "pci 0000:03:10.2: Adding to iommu group",
            "pci 0000:03:10.2: Removing from iommu group",
            "pci 0000:03:10.4: Adding to iommu group",
            "vfakefs: scenario churn: done, 4 runs, 0 failed")]
        assert marks == sorted(marks), lines[marks[0]:]


def test_mount_scenario_starts_with_the_mount(tmp_path, churn):
    with mounted_with(make_mountpoint(tmp_path), "-t", "seed-vtd", "--scenario", str(churn)) as mnt:
        seen = watch(mnt)
        # the program starts while the scenario runs: what it sees is the end of the same order
        assert seen[-4:] == SEEN[-4:] and all(s in SEEN for s in seen), seen
        r = run(["cat", str(mnt / CTL)])
        assert r.stdout.splitlines()[:5] == ["state: done", f"file: {churn}", "name: churn", "step: 4/4", "runs: 4/4"]


def test_mount_refuses_a_bad_scenario_before_mounting(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[[step]]\nat = "1s"\nwrite = "{NUMVFS}"\nvalue = 2\n'
                   '[[step]]\nat = "2s"\ncontrol = "carier"\nvalue = "eth0 0"\n')
    mnt = make_mountpoint(tmp_path)
    _MOUNTPOINTS.append(mnt)
    r = vfakefs("mount", "-t", "seed-vtd", "--scenario", str(bad), str(mnt))
    assert r.returncode == 2
    assert r.stderr.startswith(f"vfakefs: {bad}: step 2: control: no control 'carier' (controls: "), r.stderr
    assert mounts_at(mnt) == []
    bad.write_text('[[step]]\nat = "1s"\nwrite = "/x"\n')
    r = vfakefs("mount", "--scenario", str(bad), str(mnt))
    assert (r.returncode, r.stderr) == (2, f"vfakefs: {bad}: step 1: value: missing: what the step writes\n")
    assert mounts_at(mnt) == []


def test_cli_scenario_waits_and_reports(tmp_path):
    ok = tmp_path / "ok.toml"
    ok.write_text(f'[[step]]\nat = "100ms"\nwrite = "{NUMVFS}"\nvalue = [2, 0]\nevery = "100ms"\n')
    failing = tmp_path / "failing.toml"
    failing.write_text(f'[[step]]\nat = 0\nwrite = "{NUMVFS}"\nvalue = 2\n'
                       f'[[step]]\nat = "50ms"\nwrite = "{NUMVFS}"\nvalue = 4\n')
    with mounted_with(make_mountpoint(tmp_path), "-t", "seed-vtd") as mnt:
        r = vfakefs("scenario", str(mnt))
        assert (r.returncode, r.stdout) == (0, "state: idle\n")
        r = vfakefs("scenario", "--wait", str(mnt), str(ok))
        assert r.returncode == 0, r.stderr
        assert r.stderr.startswith("scenario ok: 2/2 100% done, 0 failed in "), r.stderr
        r = vfakefs("scenario", "--wait", str(mnt), str(failing))
        assert r.returncode == 1
        lines = r.stderr.splitlines()
        assert lines[0].startswith("scenario failing: 2/2 100% done, 1 failed in "), r.stderr
        assert lines[1].startswith("vfakefs: scenario: step 2 at 0.0"), r.stderr
        assert lines[1].endswith(f" s: write {NUMVFS}: 4: EBUSY (Device or resource busy)"), r.stderr
        assert (mnt / NUMVFS.lstrip("/")).read_text() == "2\n"
        # a mistake: every field named, nothing started
        bad = tmp_path / "bad.toml"
        bad.write_text('[[step]]\nat = "1s"\ncontrol = "dma"\nvalue = "x"\ncount = 5\n')
        r = vfakefs("scenario", str(mnt), str(bad))
        assert (r.returncode, r.stderr) == (2, f'vfakefs: {bad}: step 1: every: missing: the step runs 5 times: '
                                               f'say how far apart (e.g. every = "100ms")\n')
        assert (mnt / CTL).read_text().startswith("state: done\nfile: ")


def test_the_control_answers_errnos_a_shell_sees(tmp_path, churn):
    with mounted_with(make_mountpoint(tmp_path), "-t", "seed-vtd") as mnt:
        script = f'''
cd /sys/kernel/debug/vfakefs
echo churn.toml > scenario; echo "relative: $?"
echo /nonexistent.toml > scenario; echo "missing: $?"
echo /dev/zero > scenario; echo "zero: $?"
echo {churn} > scenario; echo "start: $?"
echo {churn} > scenario; echo "again: $?"
echo stop > scenario; echo "stop: $?"
head -1 scenario
dmesg | grep -o 'vfakefs: scenario: .*'
'''
        r = vfakefs("run", "--mnt", str(mnt), "--", "bash", "-c", script, timeout=60)
        out = r.stdout.splitlines()
        assert out[:7] == ["relative: 1", "missing: 1", "zero: 1", "start: 0", "again: 1", "stop: 0",
                           "state: stopped (stopped by the scenario control)"], r.stdout + r.stderr
        assert out[7:] == ["vfakefs: scenario: expected the absolute path of a scenario file, or 'stop'",
                           "vfakefs: scenario: /nonexistent.toml: No such file or directory",
                           "vfakefs: scenario: /dev/zero: not a regular file",
                           f"vfakefs: scenario: {churn} is running: write 'stop' first"], r.stdout
        assert "Invalid argument" in r.stderr and "No such file or directory" in r.stderr
        assert "Device or resource busy" in r.stderr


pytest_plugins = ["pytester"]

PLUGIN_TEST = f'''
import errno
import pytest

NUMVFS = "{NUMVFS}"
STEPS = """
[[step]]
at = "50ms"
write = "{NUMVFS}"
value = [2, 0, 3]
every = "50ms"
"""


def test_a_timeline_from_a_test(vfakefs):
    st = vfakefs.scenario(STEPS, timeout=60)
    assert (st["state"], st["runs"], st["failures"]) == ("done", "3/3", 0), st
    assert vfakefs.read(NUMVFS) == "3\\n"
    assert any(line.startswith("vfakefs: scenario ") and line.endswith(": done, 3 runs, 0 failed")
               for line in vfakefs.dmesg_since_start())


def test_the_reset_stopped_nothing_left_and_errors_raise(vfakefs):
    assert vfakefs.read(NUMVFS) == "0\\n"
    st = vfakefs.scenario(STEPS.replace('at = "50ms"', 'at = "60s"'), wait=False)
    assert st["state"] == "running", st
    assert vfakefs.stop_scenario()["state"] == "stopped"
    vfakefs.scenario(STEPS.replace('at = "50ms"', 'at = "60s"'), wait=False)
    vfakefs.controls.reset()
    st = vfakefs.controls.scenario_status()
    assert (st["state"], st["why"], st["runs"]) == ("stopped", "the machine was reset", "0/3"), st
    with pytest.raises(OSError) as e:
        vfakefs.scenario("[[step]]\\nat = 0\\n")
    assert e.value.errno == errno.EINVAL
    assert any("step 1: write: a step has exactly one of write" in line for line in vfakefs.dmesg_since_start())
'''


def test_the_plugin_runs_a_timeline(pytester, monkeypatch):
    from tests.mount.test_pytest_plugin import PLUGIN
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makepyfile(test_inner=PLUGIN_TEST)
    r = pytester.runpytest_subprocess(*PLUGIN)
    r.assert_outcomes(passed=2, failed=0, errors=0)


EXAMPLES = sorted((REPO / "docs" / "scenarios").glob("*.toml"))


def test_the_examples_run_as_they_say(tmp_path):
    """Each example scenario, on the machine it names (seed-vtd), ends with every run as
    its file expects (the churn's EBUSY among them): `vfakefs scenario --wait` exits 0."""
    assert len(EXAMPLES) == 3
    with mounted_with(make_mountpoint(tmp_path), "-t", "seed-vtd") as mnt:
        for f in EXAMPLES:
            r = vfakefs("scenario", "--wait", str(mnt), str(f), timeout=120)
            assert r.returncode == 0, (f.name, r.stderr)
            assert f" 100% done, 0 failed in " in r.stderr, r.stderr
            (mnt / "sys/kernel/debug/vfakefs/reset").write_text("1")
