"""The engine: trio tasks that run the machine's background activity.

It runs in the FUSE daemon's trio loop, under one nursery: every tick each
traffic stream (controls.Traffic) sends its share of DMA requests through the
remapping unit as one vectorised batch, so IOTLB statistics, latency histograms
and faults move while a user watches. Tests drive it with trio's MockClock, or
call step() directly with a time delta.
"""
from __future__ import annotations

import zlib

import trio

from vfakefs.model.host import Host
from vfakefs.model.iommu import iommu
from vfakefs.model.intel.dmar import Fault

TICK = 0.01                                   # seconds of simulated time per step
IDLE_TICK = 0.1                               # the same when there is nothing to run
LATENCY_NS = (50, 100, 200, 400, 800, 1600, 3200)   # histogram bucket tops (ns)


async def run(machine, *, tick: float = TICK, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """machine: a Machine, or a host.Host (its Machine, whichever a reset left, each tick)."""
    host = machine if isinstance(machine, Host) else Host(machine)
    task_status.started()
    while True:
        machine = host.machine
        # an idle machine (no streams, no delayed work) is looked at ten times less often
        dt = tick if machine.traffic or machine.delayed else IDLE_TICK
        await trio.sleep(dt)
        step(machine, dt)


def step(m, dt: float) -> None:
    """One tick: delayed work that has come due, then each live stream issues rate*dt requests."""
    m.clock += dt
    due = [w for w in m.delayed if w[0] <= m.clock]
    if due:
        m.delayed = [w for w in m.delayed if w[0] > m.clock]
        with m.batch():
            for _, work in due:
                work()
    if not m.traffic:
        return
    import numpy as np   # only once there is traffic: numpy stays off the mount path
    u = iommu.unit(m)
    for name, t in list(m.traffic.items()):
        dev = t.dev
        if dev not in m.functions:
            del m.traffic[name]                  # the device went away
            continue
        if not dev.config.r16(0x04) & 0x4:
            continue                             # bus mastering disabled: the device stops
        # what is due by now, not per tick, so fractions (rate=250 at 10 ms ticks is
        # 2.5 a tick) add up exactly: the tolerance absorbs float error in the sum of ticks
        t.elapsed += dt
        n = int(t.rate * t.elapsed + 1e-6) - t.issued
        if n <= 0:
            continue
        t.issued += n
        iovas = _addresses(t, n)
        writes = _rng(t).random(n) >= t.read_share
        t.requests += n
        if u is None:
            continue
        faults = 0
        for write in (False, True):
            sel = iovas[writes == write]
            if not len(sel):
                continue
            hits_before = u.iotlb.hits[dev.group.domain.did] if dev.group.domain else 0
            _, reason = u.translate_batch(dev.bdf.rid, sel, write)
            hits = (u.iotlb.hits[dev.group.domain.did] if dev.group.domain else 0) - hits_before
            _latency(t, u, len(sel), hits)
            bad = np.nonzero(reason)[0]
            faults += len(bad)
            for i in bad[: u.nfr + 1]:           # the hardware records what its registers hold
                u.record_fault(Fault(dev.bdf.rid, int(sel[i]) & ~0xFFF, int(reason[i]), not write))
        if faults:
            t.faults += faults
            iommu.handle_faults(m)


def _rng(t):
    import numpy as np
    if t.rng is None:
        t.rng = np.random.default_rng(zlib.crc32(t.dev.name.encode()))   # the same mix every run
    return t.rng


def _addresses(t, n: int):
    import numpy as np
    base, size = t.iovas[0]
    pages = size >> 12
    if t.pattern == "storm":                     # addresses nothing maps: every request faults
        return np.uint64(base + size) + (np.arange(n, dtype=np.uint64) << np.uint64(12))
    if t.pattern == "random":
        offs = _rng(t).integers(0, pages, n, dtype=np.uint64) << np.uint64(12)
    else:
        offs = ((np.arange(n, dtype=np.uint64) + np.uint64(t.cursor)) % np.uint64(pages)) << np.uint64(12)
        t.cursor = (t.cursor + n) % pages
    return np.uint64(base) + offs


def _latency(t, u, n: int, hits: int) -> None:
    """Simulated translation latency: an IOTLB hit is 50 ns, a walk 100 ns a level."""
    walk_ns = 100 * u.levels
    t.latency[0] += hits
    bucket = next((i for i, top in enumerate(LATENCY_NS) if walk_ns <= top), len(LATENCY_NS))
    t.latency[bucket] += n - hits
