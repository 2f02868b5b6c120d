"""The engine (vfakefs/engine.py) on a model Machine, no mount, under trio's MockClock:
simulated time only, so every count is exact and nothing waits for real time.

engine.run(machine, tick=0.01) sleeps one tick, then step()s: each stream issues
what rate * time says is due (at most traffic.STEP_CAP a step, traffic.CHUNK
between two checkpoints). With autojump_clock, `await
trio.sleep(T)` in the test lets exactly the ticks that fall within T run.
"""
from __future__ import annotations

import math
import re

import pytest
import trio
import trio.testing

from vfakefs import engine
from vfakefs.model import topology, traffic
from vfakefs.model.pci.bdf import Bdf

TICK = 0.01
IXGBE, IXGBE1 = "0000:03:00.0", "0000:03:00.1"
HALF_TICK = TICK / 2            # sleep to a point between two ticks: no float ties


@pytest.fixture
def m():
    return topology.load("seed-vtd")


def dev(m, bdf):
    return m.by_bdf[Bdf.from_str(bdf)]


def did(m, bdf) -> int:
    return dev(m, bdf).group.domain.did


async def start_engine(nursery, m, tick=TICK):
    await nursery.start(lambda task_status=trio.TASK_STATUS_IGNORED:
                        engine.run(m, tick=tick, task_status=task_status))


async def test_requests_are_rate_times_time(m, autojump_clock):
    traffic.traffic_command(m, f"start {IXGBE} rate=1000 ws=65536")
    traffic.traffic_command(m, f"start {IXGBE1} rate=300 ws=65536 pattern=random")
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await start_engine(nursery, m)
        await trio.sleep(1.0 + HALF_TICK)
        assert m.traffic[IXGBE].requests == 1000 * 1.0
        assert m.traffic[IXGBE1].requests == 300 * 1.0
        await trio.sleep(0.5)
        assert m.traffic[IXGBE].requests == 1000 * 1.5
        assert m.traffic[IXGBE1].requests == 300 * 1.5
        assert trio.current_time() - t0 == pytest.approx(1.5 + HALF_TICK)
        nursery.cancel_scope.cancel()
    assert sum(m.traffic[IXGBE].latency) == 1500              # every request is in the histogram
    assert m.traffic[IXGBE].faults == 0 and m.dmar[0].fault_log == []


async def test_manual_clock_one_tick_per_jump(m, mock_clock):
    traffic.traffic_command(m, f"start {IXGBE} rate=300 ws=8192")
    async with trio.open_nursery() as nursery:
        await start_engine(nursery, m)
        await trio.testing.wait_all_tasks_blocked()
        assert m.traffic[IXGBE].requests == 0                 # nothing before the first tick
        for n in range(1, 21):
            mock_clock.jump(TICK)
            await trio.testing.wait_all_tasks_blocked()
            assert m.traffic[IXGBE].requests == 3 * n         # 300/s * 10 ms
        nursery.cancel_scope.cancel()
    assert m.traffic[IXGBE].requests == 300 * 20 * TICK


def test_step_directly(m):
    traffic.traffic_command(m, f"start {IXGBE} rate=1000 ws=8192")
    engine.step(m, 0.5)
    assert m.traffic[IXGBE].requests == 500
    engine.step(m, 0.01)
    assert m.traffic[IXGBE].requests == 510


@pytest.mark.parametrize("rate", [250, 1, 1234])
async def test_requests_are_rate_times_time_for_any_rate(m, autojump_clock, rate):
    traffic.traffic_command(m, f"start {IXGBE} rate={rate} ws=65536")
    async with trio.open_nursery() as nursery:
        await start_engine(nursery, m)
        await trio.sleep(2.0 + HALF_TICK)
        n = m.traffic[IXGBE].requests
        nursery.cancel_scope.cancel()
    assert n == rate * 2


async def test_iotlb_hits_and_misses_move(m, autojump_clock):
    pages = 16
    traffic.traffic_command(m, f"start {IXGBE} rate=1000 ws={pages * 4096}")
    d = did(m, IXGBE)
    assert d not in m.dmar[0].iotlb.stats() or m.dmar[0].iotlb.stats()[d][:2] == (0, 0)
    async with trio.open_nursery() as nursery:
        await start_engine(nursery, m)
        await trio.sleep(TICK + HALF_TICK)                    # one tick: 10 new pages, all misses
        hits, misses, _ = m.dmar[0].iotlb.stats()[d]
        assert (hits, misses) == (0, 10)
        await trio.sleep(1.0 - TICK)                           # 1000 requests in all
        hits, misses, _ = m.dmar[0].iotlb.stats()[d]
        assert hits + misses == m.traffic[IXGBE].requests == 1000
        assert misses == pages                                 # each page walked once, then cached
        assert m.traffic[IXGBE].latency[0] == hits             # hits are the 50 ns bucket
        nursery.cancel_scope.cancel()
    # the other domains saw nothing
    assert all(h == mi == 0 for k, (h, mi, _) in m.dmar[0].iotlb.stats().items() if k != d)


async def test_storm_faults_and_threshold_stops_the_device(m, autojump_clock):
    m.fault_threshold = 20
    traffic.traffic_command(m, f"start {IXGBE} rate=1000 pattern=storm ws=8192")
    t, d, u = m.traffic[IXGBE], dev(m, IXGBE), m.dmar[0]
    async with trio.open_nursery() as nursery:
        await start_engine(nursery, m)
        await trio.sleep(TICK + HALF_TICK)
        assert t.requests == 10 and t.faults == 10             # every storm request faults
        assert d.dma_faults == u.nfr                           # the recording registers hold nfr; the rest overflow
        assert d.config.r16(0x04) & 0x4
        ticks = math.ceil(m.fault_threshold / u.nfr)
        await trio.sleep((ticks - 1) * TICK)
        assert d.dma_faults >= m.fault_threshold
        assert not d.config.r16(0x04) & 0x4                    # bus mastering disabled
        stopped_at = t.requests
        assert stopped_at == 10 * ticks
        await trio.sleep(1.0)
        assert t.requests == stopped_at and t.faults == stopped_at    # the device issues nothing more
        nursery.cancel_scope.cancel()
    texts = [r.text for r in m.kmsg.records]
    assert f"ixgbe {IXGBE}: DMAR: {m.fault_threshold} DMA faults reached the threshold; " \
           "bus mastering disabled" in texts
    storm = re.compile(r"DMAR: \[DMA (Read|Write) NO_PASID\] Request device \[03:00\.0\] fault addr "
                       r"0x1000[0-9a-f]{5} \[fault reason 0x0(5\] PTE Write|6\] PTE Read) access is not set")
    assert any(storm.fullmatch(x) for x in texts)             # just past the mapped working set
    assert len(u.fault_log) == d.dma_faults


async def test_default_threshold_also_stops_a_storm(m, autojump_clock):
    traffic.traffic_command(m, f"start {IXGBE} rate=1000 pattern=storm")
    t, d = m.traffic[IXGBE], dev(m, IXGBE)
    async with trio.open_nursery() as nursery:
        await start_engine(nursery, m)
        await trio.sleep(2.0 + HALF_TICK)
        nursery.cancel_scope.cancel()
    assert not d.config.r16(0x04) & 0x4 and d.dma_faults >= 100
    assert t.requests < 2000 and t.requests == t.faults


async def test_stop_stops_a_stream(m, autojump_clock):
    traffic.traffic_command(m, f"start {IXGBE} rate=1000 ws=8192")
    traffic.traffic_command(m, f"start {IXGBE1} rate=1000 ws=8192")
    a, b = m.traffic[IXGBE], m.traffic[IXGBE1]
    async with trio.open_nursery() as nursery:
        await start_engine(nursery, m)
        await trio.sleep(0.1 + HALF_TICK)
        assert a.requests == b.requests == 100
        traffic.traffic_command(m, f"stop {IXGBE}")
        assert list(m.traffic) == [IXGBE1]
        await trio.sleep(0.1)
        assert a.requests == 100 and b.requests == 200
        traffic.traffic_command(m, "stop all")
        await trio.sleep(0.1)
        assert b.requests == 200 and m.traffic == {}
        nursery.cancel_scope.cancel()


async def test_removed_device_stream_is_dropped(m, autojump_clock):
    traffic.traffic_command(m, f"start {IXGBE} rate=1000 ws=8192")
    traffic.traffic_command(m, "start 0000:06:00.0 rate=1000 ws=8192")
    t = m.traffic["0000:06:00.0"]
    async with trio.open_nursery() as nursery:
        await start_engine(nursery, m)
        await trio.sleep(0.05 + HALF_TICK)
        assert t.requests == 50
        m.remove_function(dev(m, "0000:00:1d.0"))              # the root port above the NVMe switch
        await trio.sleep(0.05)
        assert "0000:06:00.0" not in m.traffic and t.requests == 50
        assert m.traffic[IXGBE].requests == 100                 # the others go on
        m.rescan()                                              # the device is back, its stream is not
        await trio.sleep(0.05)
        assert "0000:06:00.0" not in m.traffic and t.requests == 50
        nursery.cancel_scope.cancel()


def test_delayed_work_runs_when_due():
    """QEMU's NVMe VFs probe, then give up 0.5 s later (the reference capture's -19):
    delayed work the engine runs when the simulated clock reaches it."""
    from vfakefs.model.pci import sriov
    m = topology.load("qemu-ref")
    pf = m.lookup("0000:01:00.0")
    pf.sriov.drivers_autoprobe = 1
    sriov.configure(m, pf, 1)
    vf = m.lookup("0000:01:00.1")
    assert vf.driver is not None and vf.driver.name == "nvme"
    for _ in range(49):                      # 0.49 s: not yet
        engine.step(m, 0.01)
    assert vf.driver is not None
    engine.step(m, 0.02)
    assert vf.driver is None
    assert [r.text for r in m.kmsg.records[-2:]] == [
        "nvme nvme2: Device not ready; aborting initialisation, CSTS=0x2",
        "nvme nvme2: Removing after probe failure status: -19"]
    m.check()


# --- a stream that cannot run, bounded steps ------------------------------------------------------
async def test_a_failing_stream_is_dropped_and_the_machine_goes_on(m, autojump_clock, caplog):
    """The state the old IOVA allocator left for `ws=8589934592` (a buffer mapped below
    IOVA 0): the stream's step raises OverflowError. That stream stops with a kernel-log
    line and a traceback in the daemon's log; the engine task, the other stream and
    delayed work go on."""
    traffic.traffic_command(m, f"start {IXGBE} rate=1000 ws=8192")
    traffic.traffic_command(m, f"start {IXGBE1} rate=1000 ws=8192")
    bad, good = m.traffic[IXGBE], m.traffic[IXGBE1]
    bad.iovas = [((1 << 32) - (8 << 30), 8 << 30)]
    ran = []
    async with trio.open_nursery() as nursery:
        await start_engine(nursery, m)
        await trio.sleep(0.1 + HALF_TICK)
        assert IXGBE not in m.traffic and bad.requests == 0
        assert good.requests == 100
        m.schedule(0.05, lambda: ran.append(m.clock))
        await trio.sleep(0.1)
        assert good.requests == 200 and len(ran) == 1          # the engine still runs
        nursery.cancel_scope.cancel()
    errors = [(r.level, r.text) for r in m.kmsg.records if r.text.startswith("vfakefs: traffic:")]
    assert len(errors) == 1 and errors[0][0] == 3
    assert errors[0][1].startswith(f"vfakefs: traffic: {IXGBE}: stream stopped: OverflowError: ")
    assert any(r.exc_info and r.exc_info[0] is OverflowError for r in caplog.records)
    m.check()


def test_failing_delayed_work_does_not_stop_the_rest(m):
    """A work item that fails (a bind of a function removed before it ran: the
    driver core answers ENODEV) is logged; the items after it run."""
    from vfakefs.model.base import binding
    from vfakefs.model.errors import SysfsError
    m.remove_function(dev(m, "0000:00:1d.0"))                  # the root port above 06:00.0
    ran = []
    m.schedule(0.01, lambda: binding.bind(m, m.drivers["nvme"], "0000:06:00.0"))
    m.schedule(0.01, lambda: ran.append(True))
    with pytest.raises(SysfsError):
        m.delayed[0][1]()                                       # what the engine will meet
    engine.step(m, 0.01)
    assert ran == [True] and m.delayed == []
    failed = [(r.level, r.text) for r in m.kmsg.records if r.text.startswith("vfakefs: delayed work:")]
    assert len(failed) == 1 and failed[0][0] == 3 and "SysfsError" in failed[0][1]
    m.check()


def test_a_step_issues_at_most_the_cap_in_chunks(m):
    """A stream at the highest rate, stepped over a whole second at once: the step
    issues STEP_CAP requests, CHUNK at a time (a checkpoint after each), and reports
    the rest as behind; later steps catch up (10,000 due a tick < STEP_CAP)."""
    traffic.traffic_command(m, f"start {IXGBE} rate={traffic.MAX_RATE} ws=65536 pattern=random")
    t = m.traffic[IXGBE]
    per_yield = []
    for _ in engine.steps(m, 1.0):
        per_yield.append(t.requests - sum(per_yield))
    assert t.requests == traffic.STEP_CAP
    assert max(per_yield) == traffic.CHUNK and len(per_yield) == -(-traffic.STEP_CAP // traffic.CHUNK)
    assert t.behind == traffic.MAX_RATE - traffic.STEP_CAP
    assert f"behind={t.behind} " in traffic.traffic_show(m)
    steps = 0
    while t.behind:
        engine.step(m, TICK)
        steps += 1
        assert t.requests - t.issued == 0
    assert t.requests == traffic.MAX_RATE * (1 + steps * TICK) and steps < 200
    assert traffic.MAX_RATE * TICK < traffic.STEP_CAP          # run()'s ticks never fall behind
