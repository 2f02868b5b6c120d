"""Timelines (fuse/timeline.py) on a model Machine run by the engine, no mount, under
trio's MockClock: the steps happen at their simulated times, in order, each through the
Operations a user's write goes through (the same store, errno and cache publishing).

The inode table stands in for the kernel the way tests/test_republish.py's does: what
it would tell the kernel (deliver) is taken as applied at once.
"""
from __future__ import annotations

import errno
from contextlib import asynccontextmanager

import pytest
import trio

from vfakefs import engine
from vfakefs.fuse.ops import SysfsOps
from vfakefs.fuse.timeline import Timeline, check, resolve, write_file
from vfakefs.model import topology
from vfakefs.model.host import Host
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.scenario import ScenarioError, parse
from vfakefs.sysfs.tree import View

TICK = engine.TICK
NUMVFS = "/sys/class/net/eth0/device/sriov_numvfs"
PF = "0000:03:00.0"
CTL = "/sys/kernel/debug/vfakefs/scenario"


class Kernel(SysfsOps):
    """The daemon's Operations; the kernel takes every invalidation at once."""

    slow = 0.0   # simulated seconds the kernel takes to apply them: the thread cannot be abandoned

    async def deliver(self):
        if self.slow and (self.pending or self.pending_attrs):
            with trio.CancelScope(shield=True):
                await trio.sleep(self.slow)
        self.delivered += len(self.pending) + len(self.pending_attrs)
        self.pending, self.pending_attrs = [], set()


class Daemon:
    """A Host, its view and Operations and a Timeline, wired as `vfakefs mount` does."""

    def __init__(self, preset: str = "seed-vtd"):
        self.host = Host(topology.load(preset))
        view = View(self.host)
        self.ops = Kernel(view.root(), lambda: self.host.machine.generation, view.dirty)
        self.ops.delivered = 0
        self.host.subscribe(self.ops.publish)
        self.timeline = self.host.scenario = Timeline(self.host, self.ops)

    @property
    def m(self):
        return self.host.machine

    def numvfs(self) -> int:
        return self.m.by_bdf[Bdf.from_str(PF)].sriov.num_vfs

    def log(self) -> list[str]:
        return [r.text for r in self.m.kmsg.records]

    def scenario_lines(self) -> list[str]:
        return [t for t in self.log() if t.startswith("vfakefs: scenario")]


@pytest.fixture
def d():
    return Daemon()


async def run_engine(nursery, d):
    await nursery.start(engine.run, d.host)
    d.started = trio.current_time()     # the engine's tick k comes k * TICK later (MockClock)
    d.timeline.nursery = nursery


@asynccontextmanager
async def running(d, sc=None):
    """The engine running (and the scenario sc started) for the body; stopped after it."""
    async with trio.open_nursery() as nursery:
        await run_engine(nursery, d)
        if sc is not None:
            d.timeline.start(sc)
        yield nursery
        nursery.cancel_scope.cancel()


async def at(d, t: float):
    """Until the scenario's time t (pick t between two ticks: no float ties). Its time 0 is
    the engine's first tick after the start; under MockClock, the engine's clock is the
    time since its start."""
    while d.timeline.t0 is None:
        await trio.sleep(TICK / 4)
    await trio.sleep_until(d.started + d.timeline.t0 + t)


CHURN = f'''
name = "churn"
[[step]]
at = "100ms"
write = "{NUMVFS}"
value = 4
[[step]]
at = "200ms"
write = "{NUMVFS}"
value = 8
expect = "EBUSY"
[[step]]
at = "300ms"
write = "{NUMVFS}"
value = 0
[[step]]
at = "400ms"
write = "/sys/bus/pci/devices/{PF}/remove"
value = 1
[[step]]
at = "500ms"
write = "/sys/bus/pci/rescan"
value = 1
[[step]]
at = "600ms"
write = "{NUMVFS}"
value = 2
[[step]]
at = "700ms"
control = "carrier"
value = "eth0 0"
'''


async def test_steps_happen_at_their_times_in_order(d, autojump_clock):
    sc = parse(CHURN, "churn.toml")
    async with running(d, sc):
        await at(d, 0.095)
        assert d.numvfs() == 0 and d.timeline.done == 0
        assert "next: step 1 at 0.100 s: write /sys/class/net/eth0/device/sriov_numvfs: 4" in d.timeline.status()
        await at(d, 0.105)
        assert d.numvfs() == 4 and d.timeline.done == 1
        assert d.ops.path_of(resolve(d.ops, "/sys/class/net/eth0/device/virtfn3")).endswith("0000:03:10.6")
        await at(d, 0.205)
        assert d.numvfs() == 4 and d.timeline.done == 2 and d.timeline.nfailed == 0   # EBUSY as expected
        await at(d, 0.305)
        assert d.numvfs() == 0
        await at(d, 0.405)
        assert Bdf.from_str(PF) not in d.m.by_bdf and "eth0" not in d.m.netdevs
        await at(d, 0.505)
        assert Bdf.from_str(PF) in d.m.by_bdf and d.numvfs() == 0
        await at(d, 0.605)
        assert d.numvfs() == 2      # the path through /sys/class/net/eth0 finds the new PF
        await at(d, 0.705)
        assert d.m.netdevs["eth0"].carrier is False
        assert d.timeline.state == "done"
    st = d.timeline.status()
    assert st.splitlines()[:5] == ["state: done", "file: churn.toml", "name: churn", "step: 7/7", "runs: 7/7"]
    assert d.scenario_lines() == ["vfakefs: scenario churn: started (7 steps, 7 runs, until 0.700 s)",
                                  "vfakefs: scenario churn: done, 7 runs, 0 failed"]
    log = d.log()
    # the stores' own kernel lines, in the steps' order
    order = [log.index(line) for line in (
        "ixgbe 0000:03:00.0: 4 VFs already enabled. Disable before enabling 8 VFs",
        "pci 0000:03:00.0: Removing from iommu group 8")]
    assert order == sorted(order)


async def test_repeats_run_every_interval_and_interleave(d, autojump_clock):
    sc = parse('''
[[step]]
at = "50ms"
control = "carrier"
value = ["eth0 0", "eth0 1"]
every = "100ms"
count = 6
[[step]]
at = "120ms"
control = "carrier"
value = "eth1 0"
''')
    seen = []
    async with running(d, sc):
        for t in (0.045, 0.055, 0.125, 0.155, 0.255, 0.355, 0.455, 0.555):
            await at(d, t)
            seen.append((d.m.netdevs["eth0"].carrier, d.m.netdevs["eth1"].carrier, d.timeline.done))
    # eth0: down at 50 ms, up at 150, down at 250 ...; eth1: down at 120 ms (between two of eth0's)
    assert seen == [(True, True, 0), (False, True, 1), (False, False, 2), (True, False, 3),
                    (False, False, 4), (True, False, 5), (False, False, 6), (True, False, 7)]
    assert d.timeline.state == "done"


async def test_a_storm_of_dma_faults_is_one_step(d, autojump_clock):
    sc = parse(f'''
[[step]]
at = 0
control = "fault_threshold"
value = 1000
[[step]]
at = "10ms"
control = "dma"
value = "{PF} write 0xfff00000 64"
every = "1ms"
count = 200
''')
    pf = d.m.by_bdf[Bdf.from_str(PF)]
    async with running(d, sc):
        await at(d, 0.005)
        assert d.m.fault_threshold == 1000 and d.timeline.done == 1   # at 0: the first tick
        for t in (0.005, 0.0105, 0.055, 0.105, 0.155):
            await at(d, t)
            # a tick runs every run that has come due by its time (ten a tick here)
            due = sum(1 for k in range(200) if 0.01 + k * 0.001 <= d.timeline.now() + 1e-9)
            assert d.timeline.done == 1 + due and pf.dma_faults == due
        await at(d, 0.215)
        assert d.timeline.state == "done" and d.timeline.nfailed == 0
    assert pf.dma_faults == 200 and pf.config.r16(0x04) & 0x4      # under the threshold: still mastering
    assert "DMAR: [DMA Write NO_PASID] Request device [03:00.0] fault addr 0xfff00000 [fault reason 0x05] " \
           "PTE Write access is not set" in d.log()


async def test_a_failing_step_is_logged_and_the_timeline_goes_on(d, autojump_clock):
    sc = parse(f'''
[[step]]
at = "10ms"
write = "{NUMVFS}"
value = 64
[[step]]
at = "20ms"
write = "/sys/bus/pci/devices/0000:77:00.0/remove"
value = 1
[[step]]
at = "30ms"
write = "{NUMVFS}"
value = 2
expect = "EBUSY"
[[step]]
at = "40ms"
write = "{NUMVFS}"
value = 3
''', "f.toml")
    async with running(d, sc):
        await at(d, 0.1)
    assert d.numvfs() == 2 and d.timeline.state == "done"
    failures = [line.split(" at ")[0] + ": " + line.split(": ", 2)[2] for line in d.timeline.failures]
    assert failures == [
        f"step 1: 64: ERANGE (Numerical result out of range)",
        "step 2: 1: ENOENT (No such file or directory)",
        "step 3: 2: succeeded, expected EBUSY",
        "step 4: 3: EBUSY (Device or resource busy)",     # step 3 did enable 2 VFs
    ]
    assert d.timeline.status().splitlines()[-5:] == ["failures: 4"] + [f"  {f}" for f in d.timeline.failures]
    warnings = [t for t in d.scenario_lines() if ": step " in t]
    assert warnings == [f"vfakefs: scenario f: {f}" for f in d.timeline.failures]
    assert d.scenario_lines()[-1] == "vfakefs: scenario f: done, 4 runs, 4 failed"


async def test_on_error_stop_ends_the_scenario(d, autojump_clock):
    sc = parse(f'''
[[step]]
at = "10ms"
write = "{NUMVFS}"
value = 99
on_error = "stop"
[[step]]
at = "20ms"
write = "{NUMVFS}"
value = 3
''', "s.toml")
    async with running(d, sc):
        await at(d, 0.1)
    assert d.numvfs() == 0
    assert d.timeline.state == "failed" and d.timeline.done == 1
    assert d.timeline.status().startswith("state: failed (step 1 failed (on_error = stop))\n")
    assert d.scenario_lines()[-1] == "vfakefs: scenario s: step 1 failed (on_error = stop) after 1 of 2 runs"
    assert not d.m.delayed      # nothing left on the workqueue


def test_writes_answer_as_a_users_write(d):
    """The errno of each kind of bad target, as open(2)/write(2) on the mount answer."""
    async def main():
        cases = {}
        for path in ("/sys/bus/pci/devices/0000:77:00.0/remove", "/sys/bus/pci/devices", f"/sys/bus/pci/devices/{PF}/vendor",
                     f"/sys/bus/pci/devices/{PF}/vendor/x", NUMVFS):
            try:
                await write_file(d.ops, path, "99\n")
                cases[path] = 0
            except Exception as e:
                cases[path] = getattr(e, "errno", e)
        return cases
    cases = trio.run(main)
    assert cases == {"/sys/bus/pci/devices/0000:77:00.0/remove": errno.ENOENT, "/sys/bus/pci/devices": errno.EISDIR,
                     f"/sys/bus/pci/devices/{PF}/vendor": errno.EACCES,
                     f"/sys/bus/pci/devices/{PF}/vendor/x": errno.ENOTDIR, NUMVFS: errno.ERANGE}
    assert d.numvfs() == 0


def test_paths_follow_links_as_the_kernel(d):
    ino = resolve(d.ops, "/sys/class/net/eth0/device/../0000:03:00.0/./sriov_numvfs")
    path = d.ops.path_of(ino)
    assert path.startswith("sys/devices/pci0000:00/") and path.endswith("/0000:03:00.0/sriov_numvfs")
    with pytest.raises(Exception) as e:
        resolve(d.ops, "/sys/class/net/eth9/device")
    assert e.value.errno == errno.ENOENT


async def test_the_control_starts_stops_and_reports(d, autojump_clock, tmp_path):
    f = tmp_path / "c.toml"
    f.write_text(CHURN)
    async with running(d):
        assert (await read(d, CTL)) == "state: idle\n"
        await write_file(d.ops, CTL, f"{f}\n")
        assert d.timeline.state == "running"
        with pytest.raises(Exception) as e:
            await write_file(d.ops, CTL, f"{f}\n")
        assert e.value.errno == errno.EBUSY
        assert d.scenario_lines()[-1] == f"vfakefs: scenario: {f} is running: write 'stop' first"
        await at(d, 0.155)
        text = await read(d, CTL)
        assert text.splitlines()[:6] == ["state: running", f"file: {f}", "name: churn", "time: 0.150 s",
                                         "step: 1/7", "runs: 1/7"]
        assert "next: step 2 at 0.200 s: write /sys/class/net/eth0/device/sriov_numvfs: 8" in text
        await write_file(d.ops, CTL, "stop\n")
        assert d.timeline.state == "stopped" and not d.m.delayed
        await at(d, 0.5)
        assert d.numvfs() == 4 and d.timeline.done == 1    # nothing ran after the stop
        assert (await read(d, CTL)).startswith("state: stopped (stopped by the scenario control)\n")
        await write_file(d.ops, CTL, "stop\n")            # stopping nothing is no error


@pytest.mark.parametrize("text, err, why", [
    ("relative.toml", errno.EINVAL, "expected the absolute path of a scenario file, or 'stop'"),
    ("/nonexistent/x.toml", errno.ENOENT, "/nonexistent/x.toml: No such file or directory"),
    ("BAD", errno.EINVAL, "BAD: step 1: every: missing: the step runs 3 times: say how far apart (e.g. every = \"100ms\")"),
    ("NOCTL", errno.EINVAL, "NOCTL: step 1: control: no control 'nosuch' (controls: "),
])
async def test_the_control_refuses_bad_files(d, autojump_clock, tmp_path, text, err, why):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\ncount = 3\n')
    noctl = tmp_path / "noctl.toml"
    noctl.write_text('[[step]]\nat = 0\ncontrol = "nosuch"\nvalue = "x"\n')
    text = text.replace("BAD", str(bad)).replace("NOCTL", str(noctl))
    why = why.replace("BAD", str(bad)).replace("NOCTL", str(noctl))
    async with running(d):
        with pytest.raises(Exception) as e:
            await write_file(d.ops, CTL, text + "\n")
        assert e.value.errno == err
        assert d.scenario_lines()[-1].startswith(f"vfakefs: scenario: {why}")
        assert d.timeline.state == "idle" and (await read(d, CTL)) == "state: idle\n"


def test_check_names_every_missing_control(d):
    with pytest.raises(ScenarioError) as e:
        check(d.ops, parse('[[step]]\nat = 0\ncontrol = "dma"\nvalue = "x"\n'
                               '[[step]]\nat = 1\ncontrol = "faultz"\nvalue = "x"\n', "x.toml"))
    assert e.value.where == "step 2: control" and e.value.message.startswith("no control 'faultz' (controls: ")
    assert "carrier" in e.value.message and "scenario" in e.value.message


async def test_a_reset_stops_the_scenario(d, autojump_clock):
    sc = parse(CHURN, "churn.toml")
    async with running(d, sc):
        await at(d, 0.15)
        assert d.numvfs() == 4
        heard = []
        d.host.subscribe(lambda: heard.append(d.host.machine))   # a listener after the timeline's
        await write_file(d.ops, "/sys/kernel/debug/vfakefs/reset", "1\n")
        assert d.timeline.state == "stopped" and d.timeline.why == "the machine was reset"
        assert heard and heard[0] is d.m         # stopping did not make the machine skip it
        await at(d, 1.0)
        assert d.numvfs() == 0 and d.timeline.done == 1      # the fresh machine saw no step
    assert d.scenario_lines()[-1] == "vfakefs: scenario churn: the machine was reset after 1 of 7 runs"


async def test_a_step_that_resets_the_machine_ends_its_own_scenario(d, autojump_clock):
    sc = parse(f'''
[[step]]
at = "10ms"
write = "{NUMVFS}"
value = 2
[[step]]
at = "20ms"
control = "reset"
value = 1
[[step]]
at = "30ms"
write = "{NUMVFS}"
value = 0
''')
    async with running(d, sc):
        await at(d, 0.1)
    assert d.timeline.state == "stopped" and d.timeline.done == 2 and d.numvfs() == 0


async def test_a_write_step_publishes_as_a_users_write(d, autojump_clock):
    """The kernel was shown eth0's device directory; the step's VFs are published to it."""
    pf_dir = resolve(d.ops, "/sys/class/net/eth0/device")
    d.ops.dir_rows(pf_dir)            # readdir: the kernel holds every entry
    before = d.ops.delivered
    sc = parse(f'[[step]]\nat = 0\nwrite = "{NUMVFS}"\nvalue = 2\n')
    async with running(d, sc):
        await at(d, 0.05)
    names = {n for n, _ in d.ops.dir_rows(pf_dir)}
    assert {b"virtfn0", b"virtfn1"} <= names
    assert d.ops.delivered > before      # the directory's attributes (nlink) went to the kernel


async def read(d, path: str) -> str:
    ino = resolve(d.ops, path)
    info = await d.ops.open(ino, 0, type("Ctx", (), {"uid": 0, "pid": 0})())
    try:
        return (await d.ops.read(info.fh, 0, 65536)).decode()
    finally:
        await d.ops.release(info.fh)


async def test_a_scenario_stopped_during_a_write_leaves_the_next_one_alone(d, autojump_clock, tmp_path):
    """The old runner finishes its write after `stop` and a new start: it must not count its
    run in the new scenario's status nor take the new one's wake-up (which would hang it)."""
    d.ops.dir_rows(resolve(d.ops, "/sys/class/net/eth0/device"))   # the kernel holds the PF's entries
    d.ops.slow = 0.05
    first = parse(f'[[step]]\nat = 0\nwrite = "{NUMVFS}"\nvalue = 2\n', "first.toml")
    second = tmp_path / "second.toml"
    second.write_text('[[step]]\nat = "20ms"\ncontrol = "carrier"\nvalue = ["eth0 0", "eth0 1", "eth0 0"]\n'
                      'every = "20ms"\n')
    async with running(d, first):
        await at(d, 0.005)
        assert d.numvfs() == 2 and d.timeline.done == 0      # stored; the kernel still taking it
        d.timeline.command("stop")
        d.timeline.command(str(second))
        await at(d, 0.3)
    assert d.timeline.state == "done" and d.timeline.scenario.source == str(second)
    assert d.timeline.done == 3 and d.timeline.nfailed == 0
    assert d.m.netdevs["eth0"].carrier is False
