"""SR-IOV enable and disable carried out in steps (sriov.Stepwise), on the model alone: the same
machine, kernel log and uevents as the enable at once, VFs in sysfs as they are added while
sriov_numvfs (pf.sriov.num_vfs, iov->num_VFs) shows the old count, and what happens to an enable in progress
when its PF is unbound or removed, or a VF's probe fails, or an `add` rule pauses it."""
from __future__ import annotations

import errno

import pytest

from vfakefs.model import fault_control, faults, topology
from vfakefs.model.base import binding
from vfakefs.model.errors import SysfsError
from vfakefs.model.pci import hotplug, sriov

from tests.model.clock import fq_timer as advance

PF, PF1 = "0000:03:00.0", "0000:03:00.1"      # seed-vtd: ixgbe PFs with SR-IOV (63 VFs each)


def machine():
    return topology.load("seed-vtd")


def record(m) -> tuple:
    """All a change leaves: functions, drivers, netdevs, config spaces, log texts, uevents."""
    log = [line.split("] ", 1)[1] for line in m.kmsg.text().splitlines()]
    events = [(e.action, e.devpath, e.env) for e in m.uevents.events]
    return ([f.name for f in m.functions], [(f.name, f.driver and f.driver.name) for f in m.functions],
            sorted(m.netdevs), [bytes(f.config.bytes) for f in m.functions], log, events)


def stepped(m, pf, steps, old: int = 0) -> list[int]:
    """Drive steps one at a time; the virtfn count seen after each (the PF's VFs so far)."""
    seen = []
    while not steps.step():
        seen.append(len(pf.sriov.vfs))
        assert pf.sriov.num_vfs == old        # the old count until done
        m.check()
    return seen


@pytest.mark.parametrize("n", [1, 8, 9, 63])
def test_an_enable_in_steps_leaves_what_the_enable_at_once_leaves(n):
    a, b = machine(), machine()
    sriov.configure(a, a.lookup(PF), n)
    pf = b.lookup(PF)
    steps = sriov.configure_steps(b, pf, n)
    seen = stepped(b, pf, steps)
    assert record(a) == record(b)
    assert pf.sriov.num_vfs == n and pf.sriov.pending is None
    # the VFs appeared a few at a time, and sriov_numvfs showed 0 meanwhile
    assert seen == sorted(seen) and all(0 < k < n for k in seen) and len(seen) == (n - 1) // sriov.step_size(n)
    b.check()


def test_sriov_numvfs_shows_the_old_count_until_the_enable_is_done():
    m = machine()
    pf = m.lookup(PF)
    steps = sriov.enable_steps(m, pf, 63, every=8)
    assert not steps.step()
    assert len(pf.sriov.vfs) == 8 and pf.sriov.num_vfs == 0
    vf = m.lookup(str(pf.sriov.vf_bdf(7)))
    assert vf is not None and vf.driver.name == "ixgbevf" and vf.physfn is pf
    # the PF's change uevent comes last, after every VF's own
    assert [e.action for e in m.uevents.events if e.devpath.endswith(PF)] == []
    steps.finish()
    assert pf.sriov.num_vfs == 63 and m.uevents.events[-1].devpath.endswith(PF)


def test_a_disable_in_steps_removes_vf0_first_and_shows_the_old_count_until_done():
    a, b = machine(), machine()
    for m in (a, b):
        sriov.configure(m, m.lookup(PF), 63)
    sriov.configure(a, a.lookup(PF), 0)
    pf = b.lookup(PF)
    steps = sriov.configure_steps(b, pf, 0)
    assert not steps.step()
    left = [vf.vf_id for vf in pf.sriov.vfs]
    assert left == list(range(sriov.step_size(63), 63)) and pf.sriov.num_vfs == 63
    seen = stepped(b, pf, steps, 63)
    assert seen == sorted(seen, reverse=True)
    assert record(a) == record(b) and pf.sriov.num_vfs == 0


def test_a_refused_enable_raises_before_any_change():
    m = machine()
    pf = m.lookup(PF)
    before = record(m)
    with pytest.raises(SysfsError) as e:
        sriov.configure_steps(m, pf, 64)
    assert e.value.errno == errno.ERANGE and record(m) == before and pf.sriov.pending is None


def test_unbinding_the_pf_mid_enable_completes_the_enable_first():
    """device_release_driver() takes device_lock(PF): it waits for the enable, then ixgbe's
    remove disables SR-IOV. The enable's own PF change comes before the VFs go."""
    m = machine()
    pf = m.lookup(PF)
    steps = sriov.configure_steps(m, pf, 63)
    steps.step()
    binding.release(m, pf)
    assert steps.done and pf.sriov.pending is None and pf.sriov.vfs == [] and pf.driver is None
    pf_changes = [i for i, e in enumerate(m.uevents.events) if e.devpath.endswith(PF) and e.action == "change"]
    vf_removes = [i for i, e in enumerate(m.uevents.events) if e.action == "remove"]
    assert pf_changes and vf_removes and pf_changes[0] < vf_removes[0]
    assert steps.step() is True                  # the writer's next step finds it done
    m.check()


def test_removing_the_pfs_bridge_mid_enable_completes_the_enable_then_removes_everything():
    m = machine()
    pf = m.lookup(PF)
    bridge = pf.parent
    steps = sriov.configure_steps(m, pf, 63)
    steps.step()
    hotplug.remove_function(m, bridge)
    assert steps.done and m.lookup(PF) is None
    assert not [f for f in m.functions if f.is_virtfn and f.physfn is pf]
    assert sum(1 for e in m.uevents.events if e.action == "add" and e.subsystem == "pci" and "03:1" in e.devpath) == 63
    m.check()


def test_a_vf_probe_failing_mid_enable_leaves_it_unbound_and_the_enable_completes():
    a, b = machine(), machine()
    vf5 = str(a.lookup(PF).sriov.vf_bdf(5))
    for m in (a, b):
        fault_control.faults_command(m, f"{vf5} probe fail=EIO", lambda dev: ())
    sriov.configure(a, a.lookup(PF), 16)
    pf = b.lookup(PF)
    stepped(b, pf, sriov.configure_steps(b, pf, 16))
    assert record(a) == record(b)
    assert b.lookup(vf5).driver is None and pf.sriov.num_vfs == 16


def test_an_add_rule_pauses_the_steps_before_its_vf_and_the_clock_ends_the_pause():
    m = machine()
    pf = m.lookup(PF)
    vf5 = pf.sriov.vf_bdf(5)
    fault_control.faults_command(m, f"{vf5} add delay=2", lambda dev: ())
    steps = sriov.configure_steps(m, pf, 16)
    assert not steps.step()
    assert len(pf.sriov.vfs) == 5 and steps.wait is not None and not steps.wait.done
    advance(m, 2.01)
    assert steps.wait.done and not steps.step() and len(pf.sriov.vfs) >= 6
    steps.finish()
    assert pf.sriov.num_vfs == 16 and "hits=1" in fault_control.faults_show(m)
    m.check()


def test_an_add_rule_takes_no_fail_and_a_reset_answers_its_pause():
    m = machine()
    with pytest.raises(SysfsError):
        fault_control.faults_command(m, f"{m.lookup(PF).sriov.vf_bdf(0)} add fail=EIO", lambda dev: ())
    pf = m.lookup(PF)
    fault_control.faults_command(m, f"{pf.sriov.vf_bdf(3)} add delay=60", lambda dev: ())
    steps = sriov.configure_steps(m, pf, 8)
    steps.step()
    faults.abandon(m)
    assert steps.wait.done and steps.wait.errno == errno.ENODEV
