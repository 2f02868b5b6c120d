"""Held stores (model/faults.py) on the engine's simulated clock, under trio's MockClock:
the engine finishes a held write when Machine.clock reaches it, and the FUSE write
handler's wait (SysfsOps.wait_held) answers with the store's outcome, a reset's
ENODEV, or the daemon's shutdown, without a mount and without real time."""
from __future__ import annotations

import errno
import os

import pyfuse3
import pytest
import trio
import trio.testing

from vfakefs import engine
from vfakefs.fuse.files import OpenFile
from vfakefs.fuse.ops import SysfsOps
from vfakefs.model import fault_control, topology
from vfakefs.model.host import Host
from vfakefs.sysfs import iov
from vfakefs.sysfs.nodes import Dir, store
from vfakefs.sysfs.vfakefs_debugfs import faults_store

PF = "0000:03:00.0"


@pytest.fixture
def host():
    return Host(topology.load("seed-vtd"))


def write_numvfs(m, n: int):
    return store(iov.sriov_numvfs.bind(m.lookup(PF)), f"{n}\n")


async def start_engine(nursery, host):
    await nursery.start(lambda task_status=trio.TASK_STATUS_IGNORED:
                        engine.run(host, task_status=task_status))


def waiter():
    """The FUSE side alone: a SysfsOps over an empty tree, and an open file of ours."""
    ops = SysfsOps(Dir({}), lambda: 0)
    return ops, OpenFile(node=None, pid=os.getpid())


async def test_the_engine_finishes_a_held_store_when_the_simulated_clock_reaches_it(host, autojump_clock):
    m = host.machine
    faults_store(m, f"{PF} sriov_numvfs delay=5")
    held = write_numvfs(m, 4)
    async with trio.open_nursery() as nursery:
        await start_engine(nursery, host)
        await trio.sleep(5 - 0.1)
        assert not held.done and m.lookup(PF).sriov.num_vfs == 0
        await trio.sleep(0.2)
        assert held.done and held.errno == 0 and m.lookup(PF).sriov.num_vfs == 4
        nursery.cancel_scope.cancel()
    m.check()


async def test_the_write_handler_waits_while_other_requests_go_on(host, autojump_clock):
    m = host.machine
    faults_store(m, f"{PF} sriov_numvfs delay=3")
    ops, of = waiter()
    answered = []

    async def writer():
        await ops.wait_held(of, write_numvfs(m, 4))
        answered.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        await start_engine(nursery, host)
        t0 = trio.current_time()
        nursery.start_soon(writer)
        await trio.sleep(1)
        assert answered == [] and ops.waiters == 1 and len(ops.holding) == 1
        # meanwhile another store of the same machine is not held (another device)
        assert store(iov.sriov_numvfs.bind(m.lookup("0000:03:00.1")), "1\n") is None
        await trio.sleep(2 + 0.1)
        assert len(answered) == 1 and answered[0] - t0 == pytest.approx(3, abs=0.05)
        assert ops.waiters == 0 and not ops.holding
        nursery.cancel_scope.cancel()


async def test_a_held_store_that_fails_answers_its_errno(host, autojump_clock):
    m = host.machine
    faults_store(m, f"{PF} sriov_numvfs delay=1 fail=EIO")
    ops, of = waiter()
    async with trio.open_nursery() as nursery:
        await start_engine(nursery, host)
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.wait_held(of, write_numvfs(m, 4))
        assert e.value.errno == errno.EIO and m.lookup(PF).sriov.num_vfs == 0
        nursery.cancel_scope.cancel()


async def test_a_reset_while_held_answers_enodev_and_the_engine_goes_on_with_the_new_machine(host, autojump_clock):
    m = host.machine
    faults_store(m, f"{PF} sriov_numvfs delay=60")
    ops, of = waiter()
    async with trio.open_nursery() as nursery:
        await start_engine(nursery, host)
        nursery.start_soon(_reset_later, host)
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.wait_held(of, write_numvfs(m, 4))
        assert e.value.errno == errno.ENODEV and host.machine is not m
        new = host.machine
        faults_store(new, f"{PF} sriov_numvfs delay=1")
        await ops.wait_held(of, write_numvfs(new, 2))
        assert new.lookup(PF).sriov.num_vfs == 2
        nursery.cancel_scope.cancel()


async def _reset_later(host):
    await trio.sleep(1)
    host.reset()


async def test_shutdown_lets_a_held_writer_go_with_enotconn(host, autojump_clock):
    m = host.machine
    faults_store(m, f"{PF} sriov_numvfs delay=3600")
    ops, of = waiter()
    held = write_numvfs(m, 4)
    async with trio.open_nursery() as nursery:
        await start_engine(nursery, host)

        async def stop():
            await trio.sleep(2)
            ops.shutdown()
        nursery.start_soon(stop)
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.wait_held(of, held)
        assert e.value.errno == errno.ENOTCONN and trio.current_time() < 3 and not held.done
        nursery.cancel_scope.cancel()


async def test_a_vfs_late_probe_and_netdev_run_on_the_engine(host, autojump_clock):
    m = host.machine
    pf = m.lookup(PF)
    vf0, vf1 = str(pf.sriov.vf_bdf(0)), str(pf.sriov.vf_bdf(1))
    faults_store(m, f"{vf0} probe delay=2")
    faults_store(m, f"{vf1} netdev delay=4")
    assert write_numvfs(m, 2) is None
    async with trio.open_nursery() as nursery:
        await start_engine(nursery, host)
        await trio.sleep(1)
        assert m.lookup(vf0).driver is None and m.lookup(vf1).driver is not None and not m.lookup(vf1).netdevs
        await trio.sleep(1 + 0.1)
        assert m.lookup(vf0).driver is not None and m.lookup(vf0).netdevs and not m.lookup(vf1).netdevs
        await trio.sleep(2)
        assert m.lookup(vf1).netdevs
        nursery.cancel_scope.cancel()
    assert fault_control.faults_show(m).count("hits=1") == 2
    m.check()
