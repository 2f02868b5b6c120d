"""The engine: trio tasks that run the machine's background activity.

It runs in the FUSE daemon's trio loop, under one nursery: every tick each
traffic stream (traffic.Traffic) sends its share of DMA requests through the
remapping unit as one vectorised batch, so IOTLB statistics, latency histograms
and faults move while a user watches. Tests drive it with trio's MockClock, or
call step() directly with a time delta.
"""
from __future__ import annotations

import logging
import zlib

import trio

from vfakefs.model.host import Host
from vfakefs.model.iommu import dma_stats, iommu
from vfakefs.model.intel.dmar import Fault
from vfakefs.model.kmsg import KERN_ERR

TICK = 0.01                                   # seconds of simulated time per step
IDLE_TICK = 0.1                               # the same when there is nothing to run
LATENCY_NS = (50, 100, 200, 400, 800, 1600, 3200)   # histogram bucket tops (ns)

log = logging.getLogger("vfakefs")


async def run(machine, *, tick: float = TICK, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Step the machine for ever; between two bounded pieces of a step (a delayed work
    item, a chunk of a stream) let every FUSE request that is waiting run first.
    machine: a Machine, or a host.Host (its Machine, whichever a reset left, each tick)."""
    host = machine if isinstance(machine, Host) else Host(machine)
    task_status.started()
    busy = 0.0
    while True:
        machine = host.machine
        # an idle machine (no streams, no delayed work) is looked at ten times less often;
        # a step that took longer than a tick of real time is followed by as long a rest,
        # so the engine never takes more than half the CPU from the requests it serves
        # (simulated time then runs slower than real time: each step is still dt)
        dt = tick if machine.traffic or machine.delayed else IDLE_TICK
        await trio.sleep(max(dt, busy))
        t0 = trio.current_time()
        for _ in steps(machine, dt):
            await trio.sleep(0)
        busy = trio.current_time() - t0


def step(m, dt: float) -> None:
    """One tick at once: delayed work that has come due, then each live stream issues
    rate*dt requests (at most STEP_CAP; the rest waits for the next steps)."""
    for _ in steps(m, dt):
        pass


def steps(m, dt: float):
    """One tick as a generator that yields after each bounded piece of work. Whatever
    a piece raises is caught here: a work item or a stream that fails is logged and
    dropped, and the machine (and the daemon serving it) goes on."""
    m.clock += dt
    due = [w for w in m.delayed if w[0] <= m.clock]
    if due:
        m.delayed = [w for w in m.delayed if w[0] > m.clock]
        for _, work in due:
            try:
                with m.batch():
                    work()
            except Exception as e:
                _failed(m, "delayed work", getattr(work, "__qualname__", repr(work)), e)
            yield
    for name, t in list(m.traffic.items()):
        if m.traffic.get(name) is not t:
            continue                             # stopped (or restarted) during this step
        try:
            yield from _stream(m, name, t, dt)
        except Exception as e:
            if m.traffic.get(name) is t:
                del m.traffic[name]
            _failed(m, "traffic", f"{name}: stream stopped", e)


def _failed(m, what: str, which: str, e: Exception) -> None:
    """A bug or a state the engine cannot run: one kernel-log line for the user, the
    traceback in the daemon's log for whoever fixes it."""
    m.kmsg.log(f"vfakefs: {what}: {which}: {type(e).__name__}: {e}", KERN_ERR)
    log.error("engine: %s: %s", what, which, exc_info=e)


def _live(m, name: str, t) -> bool:
    dev = t.dev
    return m.traffic.get(name) is t and m.by_bdf.get(dev.bdf) is dev and bool(dev.config.r16(0x04) & 0x4)


def _stream(m, name: str, t, dt: float):
    from vfakefs.model.traffic import CHUNK, STEP_CAP   # a stream's: the traffic control stays off the mount path
    dev = t.dev
    if m.by_bdf.get(dev.bdf) is not dev:
        del m.traffic[name]                      # the device went away
        return
    if not dev.config.r16(0x04) & 0x4:
        return                                   # bus mastering disabled: the device stops
    # what is due by now, not per tick, so fractions (rate=250 at 10 ms ticks is
    # 2.5 a tick) add up exactly: the tolerance absorbs float error in the sum of ticks
    t.elapsed += dt
    due = int(t.rate * t.elapsed + 1e-6) - t.issued
    n = min(due, STEP_CAP)                       # bounded work a step: the rest is behind
    t.behind = max(due - n, 0)
    while n > 0:
        k = min(n, CHUNK)
        _issue(m, t, k)
        n -= k
        yield
        if not _live(m, name, t):
            return


def _issue(m, t, n: int) -> None:
    """n requests of the stream through the remapping unit, as one vectorised batch."""
    import numpy as np   # only once there is traffic: numpy stays off the mount path
    dev = t.dev
    t.issued += n
    iovas = _addresses(t, n)
    writes = _rng(t).random(n) >= t.read_share
    t.requests += n
    u = iommu.unit(m)
    if u is None:
        dma_stats.count(dev, None, (0, 0), n, n * dma_stats.PAGE, 0)   # no remapping: every request passes
        return
    mark = dma_stats.iotlb_mark(u)
    faults = 0
    for write in (False, True):
        sel = iovas[writes == write]
        if not len(sel):
            continue
        atc = u.atcs.get(dev.bdf.rid)            # ATS on: the device's ATC answers first
        hits_before = (u.iotlb.hits[dev.group.domain.did] if dev.group.domain else 0) + (atc.hits if atc else 0)
        _, reason = u.device_translate_batch(dev.bdf.rid, sel, write)
        hits = (u.iotlb.hits[dev.group.domain.did] if dev.group.domain else 0) + (atc.hits if atc else 0) \
            - hits_before
        _latency(t, u, len(sel), hits)
        bad = np.nonzero(reason)[0]
        faults += len(bad)
        for i in bad[: u.nfr + 1]:           # the hardware records what its registers hold
            u.record_fault(Fault(dev.bdf.rid, int(sel[i]) & ~0xFFF, int(reason[i]), not write))
    dma_stats.count(dev, u, mark, n, (n - faults) * dma_stats.PAGE, faults)
    if faults:
        t.faults += faults
        iommu.handle_faults(m)


def _rng(t):
    import numpy as np
    if t.rng is None:
        t.rng = np.random.default_rng(zlib.crc32(t.dev.name.encode()))   # the same mix every run
    return t.rng


def _addresses(t, n: int):
    """n addresses of the stream's pattern over its pages: the pages of t.iovas in order
    (one dma_map'd buffer, or a VFIO stream's mappings one after the other)."""
    import numpy as np
    if t.pattern == "storm":                     # addresses nothing maps: every request faults
        base, size = t.iovas[0]
        past = t.past if t.past is not None else base + size
        return np.uint64(past) + (np.arange(n, dtype=np.uint64) << np.uint64(12))
    pages = sum(size >> 12 for _, size in t.iovas) if len(t.iovas) > 1 else t.iovas[0][1] >> 12
    if t.pattern == "random":
        idx = _rng(t).integers(0, pages, n, dtype=np.uint64)
    else:
        idx = (np.arange(n, dtype=np.uint64) + np.uint64(t.cursor)) % np.uint64(pages)
        t.cursor = (t.cursor + n) % pages
    if len(t.iovas) == 1:
        return np.uint64(t.iovas[0][0]) + (idx << np.uint64(12))
    if t.walk is None:                           # the first page index of each run, and its iova
        sizes = np.array([size >> 12 for _, size in t.iovas], dtype=np.uint64)
        t.walk = (np.cumsum(sizes) - sizes, np.array([iova for iova, _ in t.iovas], dtype=np.uint64))
    first, start = t.walk
    run = np.searchsorted(first, idx, side="right") - 1
    return start[run] + ((idx - first[run]) << np.uint64(12))


def _latency(t, u, n: int, hits: int) -> None:
    """Simulated translation latency: an IOTLB hit is 50 ns, a walk 100 ns a level."""
    walk_ns = 100 * u.levels
    t.latency[0] += hits
    bucket = next((i for i, top in enumerate(LATENCY_NS) if walk_ns <= top), len(LATENCY_NS))
    t.latency[bucket] += n - hits
