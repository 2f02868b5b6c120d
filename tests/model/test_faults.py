"""Misbehaving hardware on cue (model/faults.py), on the model alone: each rule kind,
its errno, nothing changed by a refused store, held stores finished by the machine's
simulated clock (tests/model/clock.py stands in for the engine's step)."""
from __future__ import annotations

import errno

import pytest

from vfakefs.model import fault_control, faults, topology
from vfakefs.model.base import binding
from vfakefs.model.errors import SysfsError
from vfakefs.model.host import Host
from vfakefs.model.pci import sriov
from tests.model.clock import fq_timer as advance

PF, PF1 = "0000:03:00.0", "0000:03:00.1"      # seed-vtd: ixgbe PFs with SR-IOV
POINTS = ("sriov_numvfs", "sriov_drivers_autoprobe", "driver_override", "reset", "remove", "enable")


@pytest.fixture
def m():
    return topology.load("seed-vtd")


def rule(m, text: str) -> None:
    fault_control.faults_command(m, text, lambda dev: POINTS)


def numvfs(m, pf, n: int):
    """A write of n to pf's sriov_numvfs, as the view's store makes it."""
    return faults.store(pf, "sriov_numvfs", f"{n}\n", lambda: sriov.configure(m, pf, n))


def state(m, pf) -> tuple:
    """What a store could change: the functions, bindings, netdevs, the PF's config space."""
    return ([f.name for f in m.functions], [(f.name, f.driver and f.driver.name) for f in m.functions],
            sorted(m.netdevs), bytes(pf.config.bytes), pf.sriov.num_vfs)


def last_line(m) -> str:
    return m.kmsg.text().splitlines()[-1].split("] ", 1)[1]


# --- fail= ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("err", [errno.EIO, errno.EBUSY, errno.ENOMEM])
def test_a_store_fails_once_with_the_chosen_errno_and_changes_nothing(m, err):
    pf = m.lookup(PF)
    rule(m, f"{PF} sriov_numvfs fail={errno.errorcode[err]}")
    before = state(m, pf)
    with pytest.raises(SysfsError) as e:
        numvfs(m, pf, 4)
    assert e.value.errno == err
    assert state(m, pf) == before
    assert last_line(m) == f"vfakefs: faults: {PF} sriov_numvfs: failed with error -{err}"
    assert numvfs(m, pf, 4) is None and pf.sriov.num_vfs == 4      # once: the next write works
    assert fault_control.faults_show(m) == f"{PF} sriov_numvfs fail={errno.errorcode[err]} times=1 hits=1\n"
    m.check()


def test_times_n_then_the_store_works_and_always_never_stops(m):
    pf = m.lookup(PF)
    rule(m, f"{PF} sriov_numvfs fail=5 times=2")
    for _ in range(2):
        with pytest.raises(SysfsError) as e:
            numvfs(m, pf, 2)
        assert e.value.errno == errno.EIO
    numvfs(m, pf, 2)
    assert pf.sriov.num_vfs == 2
    pf1 = m.lookup(PF1)
    rule(m, f"{PF1} sriov_numvfs fail=EBUSY times=always")
    for _ in range(5):
        with pytest.raises(SysfsError):
            numvfs(m, pf1, 1)
    assert pf1.sriov.num_vfs == 0
    assert fault_control.faults_show(m).splitlines() == [f"{PF} sriov_numvfs fail=EIO times=2 hits=2",
                                                  f"{PF1} sriov_numvfs fail=EBUSY times=always hits=5"]


def test_a_rule_acts_on_its_own_device_and_file_only(m):
    pf, pf1 = m.lookup(PF), m.lookup(PF1)
    rule(m, f"{PF} sriov_numvfs fail=EIO")
    numvfs(m, pf1, 1)                                    # another device
    faults.store(pf, "sriov_drivers_autoprobe", "0", lambda: setattr(pf.sriov, "drivers_autoprobe", 0))
    assert pf1.sriov.num_vfs == 1 and pf.sriov.drivers_autoprobe == 0
    assert "hits=0" in fault_control.faults_show(m)


# --- delay= ------------------------------------------------------------------------------------
def test_a_held_store_runs_when_the_clock_reaches_it_and_readers_see_the_old_state_meanwhile(m):
    pf = m.lookup(PF)
    rule(m, f"{PF} sriov_numvfs delay=5")
    before = state(m, pf)
    held = numvfs(m, pf, 4)
    assert isinstance(held, faults.Held) and not held.done
    advance(m, 4.9)
    assert not held.done and state(m, pf) == before       # sriov_numvfs still reads 0
    advance(m, 0.2)
    assert held.done and held.errno == 0
    assert pf.sriov.num_vfs == 4 and len(pf.sriov.vfs) == 4
    m.check()


def test_a_held_store_can_then_fail_and_change_nothing(m):
    pf = m.lookup(PF)
    rule(m, f"{PF} sriov_numvfs delay=2 fail=ETIMEDOUT")
    before = state(m, pf)
    held = numvfs(m, pf, 4)
    advance(m, 2.01)
    assert held.done and held.errno == errno.ETIMEDOUT
    assert state(m, pf) == before


def test_a_second_writer_waits_for_the_device_lock_and_then_sees_the_first_ones_result(m):
    pf = m.lookup(PF)
    rule(m, f"{PF} sriov_numvfs delay=5")
    first, second = numvfs(m, pf, 4), numvfs(m, pf, 2)
    assert isinstance(second, faults.Held)
    # a store that takes no device_lock goes on meanwhile
    assert faults.store(pf, "sriov_drivers_autoprobe", "0",
                        lambda: setattr(pf.sriov, "drivers_autoprobe", 0)) is None
    assert pf.sriov.drivers_autoprobe == 0
    advance(m, 5.01)
    assert (first.done, first.errno) == (True, 0)
    # sriov_numvfs_store's check under the lock: the VFs the first write enabled are there
    assert (second.done, second.errno) == (True, errno.EBUSY)
    assert last_line(m) == f"ixgbe {PF}: 4 VFs already enabled. Disable before enabling 2 VFs"
    assert pf.sriov.num_vfs == 4
    assert not m.faults.busy


def test_writers_queued_behind_a_held_one_take_their_turns_in_order(m):
    pf = m.lookup(PF)
    rule(m, f"{PF} sriov_numvfs delay=1 times=2")
    a, b, c = numvfs(m, pf, 4), numvfs(m, pf, 0), numvfs(m, pf, 3)
    advance(m, 1.01)
    assert a.done and not b.done and not c.done and pf.sriov.num_vfs == 4   # b holds the lock now
    advance(m, 1.0)
    assert (b.done, b.errno, c.done, c.errno) == (True, 0, True, 0)        # c had no rule left
    assert pf.sriov.num_vfs == 3
    m.check()


def test_a_bug_in_a_held_store_answers_eio_and_the_next_writer_still_gets_its_turn(m):
    pf = m.lookup(PF)
    rule(m, f"{PF} sriov_numvfs delay=1")

    def broken():
        raise RuntimeError("a bug")
    first = faults.store(pf, "sriov_numvfs", "4", broken)
    second = numvfs(m, pf, 2)
    with pytest.raises(RuntimeError):            # the engine logs it (engine._failed)
        advance(m, 1.01)
    assert (first.done, first.errno, second.done, second.errno) == (True, errno.EIO, True, 0)
    assert pf.sriov.num_vfs == 2 and not m.faults.busy


def test_the_device_going_away_while_held_answers_enodev(m):
    pf = m.lookup(PF)
    rule(m, f"{PF} sriov_numvfs delay=1")
    held = numvfs(m, pf, 4)
    m.remove_function(pf)
    advance(m, 1.01)
    assert (held.done, held.errno) == (True, errno.ENODEV)
    m.check()


def test_a_device_removed_and_rescanned_while_held_is_another_device(m):
    """The write was to the removed device's file: its node is gone (kernfs: ENODEV), the
    new device at the same address is left alone."""
    pf = m.lookup(PF)
    rule(m, f"{PF} sriov_numvfs delay=1")
    held = numvfs(m, pf, 4)
    m.remove_function(pf)
    m.rescan()
    advance(m, 1.01)
    assert (held.done, held.errno) == (True, errno.ENODEV) and m.lookup(PF).sriov.num_vfs == 0
    m.check()


def test_a_reset_answers_held_writes_enodev_and_starts_without_rules():
    host = Host(topology.load("seed-vtd"))
    m = host.machine
    pf = m.lookup(PF)
    rule(m, f"{PF} sriov_numvfs delay=5")
    first, second = numvfs(m, pf, 4), numvfs(m, pf, 1)
    host.reset()
    assert (first.done, first.errno, second.done, second.errno) == (True, errno.ENODEV, True, errno.ENODEV)
    assert host.machine.faults.rules == [] and fault_control.faults_show(host.machine) == ""
    assert numvfs(host.machine, host.machine.lookup(PF), 2) is None


# --- probe ---------------------------------------------------------------------------------------
def unbound(m, name: str):
    dev = m.lookup(name)
    binding.unbind(m, dev.driver, name)
    return dev


def bind(m, dev, drv):
    return faults.store(drv, "bind", dev.name + "\n", lambda: binding.bind(m, drv, dev.name + "\n"))


def test_a_failed_probe_logs_the_kernels_line_and_bind_answers_its_errno(m):
    dev = unbound(m, PF1)
    ixgbe = m.drivers["ixgbe"]
    rule(m, f"{PF1} probe fail=EIO")
    before = state(m, dev)
    with pytest.raises(SysfsError) as e:
        bind(m, dev, ixgbe)
    assert e.value.errno == errno.EIO
    assert last_line(m) == f"ixgbe {PF1}: probe with driver ixgbe failed with error -5"
    assert state(m, dev) == before and dev.driver is None
    bind(m, dev, ixgbe)                                  # once
    assert dev.driver is ixgbe
    m.check()


@pytest.mark.parametrize("name,answer", [("ENODEV", errno.ENODEV), ("ENXIO", errno.ENXIO),
                                         ("EPROBE_DEFER", errno.EAGAIN)])
def test_probe_errors_the_driver_core_keeps_quiet_about(m, name, answer):
    """really_probe(): ENODEV/ENXIO reject the match (pr_debug); EPROBE_DEFER is answered
    EAGAIN by device_driver_attach."""
    dev = unbound(m, PF1)
    rule(m, f"{PF1} probe fail={name}")
    lines = len(m.kmsg.text().splitlines())
    with pytest.raises(SysfsError) as e:
        bind(m, dev, m.drivers["ixgbe"])
    assert e.value.errno == answer and dev.driver is None
    assert len(m.kmsg.text().splitlines()) == lines


def test_drivers_probe_does_not_report_a_failed_probe(m):
    dev = unbound(m, PF1)
    rule(m, f"{PF1} probe fail=EIO")
    assert faults.store(m, "drivers_probe", PF1, lambda: binding.drivers_probe(m, PF1)) is None
    assert dev.driver is None
    assert last_line(m) == f"ixgbe {PF1}: probe with driver ixgbe failed with error -5"


def test_a_probe_that_takes_time_holds_the_bind_write_then_binds(m):
    dev = unbound(m, PF1)
    rule(m, f"{PF1} probe delay=3")
    held = bind(m, dev, m.drivers["ixgbe"])
    assert isinstance(held, faults.Held) and dev.driver is None
    advance(m, 3.01)
    assert (held.done, held.errno) == (True, 0) and dev.driver is m.drivers["ixgbe"]
    m.check()


def test_an_unbind_waits_for_a_held_bind_of_the_same_device(m):
    dev = unbound(m, PF1)
    ixgbe = m.drivers["ixgbe"]
    rule(m, f"{PF1} bind delay=2")
    bound = bind(m, dev, ixgbe)
    unbind = faults.store(ixgbe, "unbind", PF1, lambda: binding.unbind(m, ixgbe, PF1))
    assert isinstance(unbind, faults.Held) and dev.driver is None
    advance(m, 2.01)
    assert (bound.errno, unbind.done, unbind.errno) == (0, True, 0)   # bound, then unbound
    assert dev.driver is None
    m.check()


def test_a_held_probe_can_fail_with_the_kernels_line(m):
    dev = unbound(m, PF1)
    rule(m, f"{PF1} probe delay=1 fail=ENOMEM times=always")
    held = faults.store(m, "drivers_probe", PF1, lambda: binding.drivers_probe(m, PF1))
    advance(m, 1.01)
    assert (held.done, held.errno) == (True, 0) and dev.driver is None     # drivers_probe: count
    held = bind(m, dev, m.drivers["ixgbe"])
    advance(m, 1.01)
    assert (held.done, held.errno) == (True, errno.ENOMEM) and dev.driver is None
    assert last_line(m) == f"ixgbe {PF1}: probe with driver ixgbe failed with error -12"
    assert "hits=2" in fault_control.faults_show(m)


def test_a_new_vfs_driver_binds_later_and_its_siblings_at_once(m):
    pf = m.lookup(PF)
    vf0, vf1 = str(pf.sriov.vf_bdf(0)), str(pf.sriov.vf_bdf(1))
    rule(m, f"{vf0} probe delay=2")              # the VF does not exist yet: a rule for it may
    numvfs(m, pf, 2)
    assert m.lookup(vf0).driver is None and m.lookup(vf1).driver.name == "ixgbevf"
    m.check()
    advance(m, 2.01)
    assert m.lookup(vf0).driver.name == "ixgbevf" and m.lookup(vf0).netdevs
    m.check()


def test_a_late_probe_of_a_vf_that_went_away_does_nothing(m):
    pf = m.lookup(PF)
    vf0 = str(pf.sriov.vf_bdf(0))
    rule(m, f"{vf0} probe delay=2")
    numvfs(m, pf, 2)
    numvfs(m, pf, 0)
    advance(m, 2.01)
    assert m.lookup(vf0) is None
    m.check()


def test_a_new_vfs_probe_fails_and_it_stays_unbound_while_the_enable_succeeds(m):
    """pci_bus_add_device()'s device_attach() reports nothing: the VFs are there, one without
    a driver, and the kernel's warning names it."""
    pf = m.lookup(PF)
    vf0 = str(pf.sriov.vf_bdf(0))
    rule(m, f"{vf0} probe fail=EIO")
    assert numvfs(m, pf, 2) is None and pf.sriov.num_vfs == 2
    assert m.lookup(vf0).driver is None and m.lookup(str(pf.sriov.vf_bdf(1))).driver.name == "ixgbevf"
    assert f"ixgbevf {vf0}: probe with driver ixgbevf failed with error -5" in m.kmsg.text()
    m.check()


def test_a_vfs_netdev_registers_later(m):
    pf = m.lookup(PF)
    vf0 = str(pf.sriov.vf_bdf(0))
    rule(m, f"{vf0} netdev delay=1.5")
    numvfs(m, pf, 1)
    vf = m.lookup(vf0)
    assert vf.driver.name == "ixgbevf" and vf.netdevs == []
    names = set(m.netdevs)
    m.check()
    advance(m, 1.51)
    assert len(vf.netdevs) == 1 and set(m.netdevs) - names == {vf.netdevs[0].name}
    # the probe's address line came before the netdev and still named the EEPROM's address
    assert f"ixgbevf {vf0}: {vf.netdevs[0].mac}\n" in m.kmsg.text()
    m.check()


def test_a_late_netdev_of_a_device_unbound_meanwhile_never_comes(m):
    pf = m.lookup(PF)
    vf0 = str(pf.sriov.vf_bdf(0))
    rule(m, f"{vf0} netdev delay=1")
    numvfs(m, pf, 1)
    vf = m.lookup(vf0)
    binding.unbind(m, vf.driver, vf0)
    advance(m, 1.01)
    assert vf.netdevs == [] and vf.driver is None
    m.check()


# --- the control's input ---------------------------------------------------------------------------
@pytest.mark.parametrize("text,why", [
    ("", "expected '<bdf> <point>"),
    (f"{PF} sriov_numvfs", "expected '<bdf> <point>"),
    (f"{PF} sriov_numvfs delay=0", "delay 0 is outside"),
    (f"{PF} sriov_numvfs delay=-1", "delay -1 is outside"),
    (f"{PF} sriov_numvfs delay=nan", "delay nan is outside"),
    (f"{PF} sriov_numvfs delay=5000", "delay 5000 is outside"),
    (f"{PF} sriov_numvfs delay=soon", "delay 'soon' is not a number"),
    (f"{PF} sriov_numvfs fail=EWHAT", "fail='EWHAT' is no errno"),
    (f"{PF} sriov_numvfs fail=0", "fail=0 is no errno"),
    (f"{PF} sriov_numvfs fail=EPROBE_DEFER", "EPROBE_DEFER is a probe's answer only"),
    (f"{PF} sriov_numvfs fail=EIO times=0", "times=0 is outside"),
    (f"{PF} sriov_numvfs fail=EIO times=many", "times='many' is not a number"),
    (f"{PF} sriov_numvfs fail=EIO fail=EBUSY", "repeated setting fail="),
    (f"{PF} sriov_numvfs hold=5", "unknown setting 'hold=5'"),
    (f"{PF} sriov_numvfs times=3", "a rule needs delay= or fail="),
    (f"{PF} sriov_numfvs fail=EIO", "'sriov_numfvs' is no file or point of device 0000:03:00.0"),
    (f"{PF} netdev fail=EIO", "netdev takes delay= only"),
    ("03:00.0x sriov_numvfs fail=EIO", "malformed device"),
])
def test_a_bad_rule_is_einval_with_the_reason_in_the_log_and_the_rules_unchanged(m, text, why):
    rule(m, f"{PF} reset fail=EIO")
    before = fault_control.faults_show(m)
    with pytest.raises(SysfsError) as e:
        rule(m, text)
    assert e.value.errno == errno.EINVAL
    assert last_line(m).startswith(f"vfakefs: faults: {why}")
    assert fault_control.faults_show(m) == before


def test_clear_drops_every_rule(m):
    rule(m, f"{PF} reset fail=EIO")
    rule(m, f"{PF1} probe delay=1 times=always")
    rule(m, "clear")
    assert fault_control.faults_show(m) == "" and not m.faults


def test_too_many_rules_is_enospc(m):
    for _ in range(fault_control.MAX_RULES):
        rule(m, f"{PF} reset fail=EIO")
    with pytest.raises(SysfsError) as e:
        rule(m, f"{PF} reset fail=EIO")
    assert e.value.errno == errno.ENOSPC and len(m.faults.rules) == fault_control.MAX_RULES
