"""The `traffic` control (MNT/sys/kernel/debug/vfakefs/traffic): simulated DMA streams
a device sends through its IOMMU domain, which the engine runs step by step (engine.py),
and what ends them (a VFIO claim of the group, a stop, a reset)."""
from __future__ import annotations

import errno
from dataclasses import dataclass

from vfakefs.model.controls import _device, _int, reject
from vfakefs.model.errors import SysfsError
from vfakefs.model.iommu import iommu
from vfakefs.model.kmsg import KERN_INFO


# What one stream may ask of the engine. The engine runs a step every 10 ms of
# simulated time and issues at most STEP_CAP requests of a stream in one step,
# CHUNK at a time with a checkpoint between chunks (so a FUSE request waits for
# one chunk at most): at MAX_RATE a step's share (10,000) is under the cap, so a
# stream at any allowed rate keeps up with simulated time.
MAX_RATE = 1_000_000           # requests per second
STEP_CAP = 16_384              # requests of one stream in one engine step
CHUNK = 256                    # requests between two checkpoints: about a millisecond of walks, the
                               # longest a FUSE request waits behind traffic (1,024 made a read's
                               # four requests wait 4x as long: p99 7.7 ms against 4.0 ms)
# A DMA-API stream's working set is one dma_map'd buffer: at most 1 GiB, a quarter of the
# 4 GiB below which iommu-dma places a PCI device's mappings first (beside the MSI window).
# A VFIO stream's ws= is a limit on the program's mapped space it walks, with the same bound.
MAX_WS = 1 << 30
PATTERNS = ("sequential", "random", "storm")


@dataclass
class Traffic:
    """One device's simulated DMA stream, which the engine runs."""
    dev: object
    rate: int = 100_000           # requests per second
    read_share: float = 0.7       # fraction of reads
    working_set: int = 1 << 20    # bytes mapped through the DMA API
    pattern: str = "sequential"
    iovas: list = None            # (iova, size) mapped for it
    requests: int = 0
    faults: int = 0
    cursor: int = 0
    latency: list = None          # requests per simulated-latency bucket (engine.LATENCY_NS)
    elapsed: float = 0.0          # simulated seconds the engine has run this stream
    issued: int = 0               # requests issued while the device could master the bus
    rng: object = None            # the engine's random generator for this stream
    behind: int = 0               # requests due that the last step left for later (STEP_CAP)
    domain: object = None         # the domain its buffer is mapped in (None: no translation)
    vfio: object = None           # a VFIO stream: the type1 backend whose mappings it walks
    past: int | None = None       # the first address past everything the stream may reach (storm's)
    walk: object = None           # the engine's page index over iovas, when they are several runs
    hpa: int | None = None        # a DMA-API stream's buffer in host memory

    def describe(self) -> str:
        hist = " ".join(str(c) for c in self.latency)
        return (f"{self.dev.name} rate={self.rate} mix={self.read_share:.2f} ws={self.working_set} "
                f"pattern={self.pattern} requests={self.requests} faults={self.faults} "
                f"behind={self.behind} latency=[{hist}]\n")


def traffic_command(m, text: str) -> None:
    """`start <bdf> [rate=N] [mix=R] [ws=BYTES] [pattern=P]` starts (or restarts) a
    device's stream; `stop <bdf>|all` ends streams and unmaps their buffers.

    rate: requests per second, 1..MAX_RATE (1,000,000); mix: the share of reads,
    0..1; ws: 4096..MAX_WS (1 GiB); pattern: sequential, random or storm (addresses
    just past everything the stream reaches: every request faults).

    Two kinds of stream, by the device's IOMMU group:
    - a DMA-API stream (the group is the kernel's): ws is a buffer mapped with dma_map
      into the group's default domain (ENOMEM when it has no IOVA space left), unmapped
      and freed when the stream stops or restarts: a strict (DMA) domain queues the
      page-selective invalidation at once; a DMA-FQ domain leaves it to the flush queue,
      whose 10 ms timer queues one domain-selective flush and frees the IOVA range
      (model/iommu/flush_queue.py). Host memory and page-table pages come back, so
      start/stop for ever leaks nothing.
    - a VFIO stream (the group is claimed by a VFIO container, group.owner): the device's
      DMA targets are the IOVAs the program mapped with MAP_DMA, so the stream walks the
      container's mappings (type1's dma_list) as they are at start, in IOVA order, through
      the VFIO domain (the context entry's, as the `dma` control translates), and maps
      nothing of its own. ws= limits the walk to the first ws bytes of that mapped space
      (whole pages); without ws= it walks all of it. EINVAL while the container maps
      nothing (no SET_IOMMU yet, or no MAP_DMA): the device has no address to use.
      Mappings unmapped later, or the group released, make its requests fault (or, with
      bus mastering cleared by vfio-pci's close, not be issued), as the hardware would.
    Requests are translations only (IOTLB, faults, latency): no payload moves, so a
    program's memory is never written by a stream (the `dma` control moves bytes)."""
    words = text.split()
    if not words or words[0] not in ("start", "stop"):
        reject(m, "traffic", "expected 'start <bdf> [rate=N] [mix=R] [ws=BYTES] [pattern=P]' or 'stop <bdf>|all'")
    if words[0] == "stop":
        if len(words) != 2:
            reject(m, "traffic", "expected 'stop <bdf>|all'")
        if words[1] == "all":
            for t in m.traffic.values():
                release(m, t)
            m.traffic.clear()
        else:
            dev = _device(m, "traffic", words[1])
            t = m.traffic.pop(dev.name, None)
            if t is None:
                reject(m, "traffic", f"no traffic from {dev.name}")
            release(m, t)
        return
    if len(words) < 2:
        reject(m, "traffic", "expected a device after start")
    dev = _device(m, "traffic", words[1])
    t = Traffic(dev)
    ws_given = False
    for kv in words[2:]:
        key, _, value = kv.partition("=")
        if key == "rate":
            t.rate = _int(m, "traffic", value, "rate")
        elif key == "mix":
            try:
                t.read_share = float(value)
            except ValueError:
                reject(m, "traffic", f"mix {value!r} is not a fraction")
        elif key == "ws":
            t.working_set = _int(m, "traffic", value, "ws")
            ws_given = True
        elif key == "pattern" and value in PATTERNS:
            t.pattern = value
        else:
            reject(m, "traffic", f"unknown setting {kv!r}")
    if t.rate <= 0 or not 0 <= t.read_share <= 1 or t.working_set < 4096:
        reject(m, "traffic", "rate must be positive, mix within 0..1, ws at least 4096")
    if t.rate > MAX_RATE:
        reject(m, "traffic", f"rate {t.rate} is more than {MAX_RATE} requests a second")
    if t.working_set > MAX_WS:
        reject(m, "traffic", f"ws {t.working_set} is more than {MAX_WS} bytes")
    owner = dev.group.owner if dev.group is not None else None
    if owner is not None:
        _vfio_walk(m, t, owner, ws_given)
    else:
        try:
            t.iovas = [(iommu.dma_map(m, dev, t.working_set), t.working_set)]
        except SysfsError as e:
            reject(m, "traffic", f"ws {t.working_set}: {e}", e.errno)
        u = iommu.unit(m)
        t.domain = iommu.dma_domain(dev.group) if u is not None and dev.group is not None else None
        t.past = t.iovas[0][0] + t.working_set
        mapped = t.domain.mappings.get(t.iovas[0][0]) if t.domain is not None else None
        t.hpa = mapped[0] if mapped is not None else t.iovas[0][0]
    t.latency = [0] * 8
    old = m.traffic.get(dev.name)
    if old is not None:
        release(m, old)                   # a restart: the old stream's buffer is unmapped
    m.traffic[dev.name] = t


def _vfio_walk(m, t: Traffic, owner, ws_given: bool) -> None:
    """A VFIO stream's runs: the container's mappings in IOVA order, cut at ws when given."""
    backend = owner.container.iommu if owner.container is not None else None
    if backend is None or not backend.dma_list:
        reject(m, "traffic", f"{t.dev.name}: group {owner.group.id} is claimed by VFIO and its "
                             "container maps nothing")
    left = t.working_set & ~0xFFF if ws_given else None
    runs = []
    for d in backend.dma_list:
        size = d.size if left is None else min(d.size, left)
        runs.append((d.iova, size))
        if left is not None:
            left -= size
            if not left:
                break
    t.iovas, t.vfio, t.domain = runs, backend, backend.domain
    t.working_set = sum(size for _, size in runs)
    t.past = max(d.iova + d.size for d in backend.dma_list)   # nothing the program maps is there


def dma_owner_claimed(m, group) -> None:
    """A VFIO container claimed `group` (iommu_group_claim_dma_owner). A DMA-API stream
    stands for a kernel DMA-API user of its device, and the claim succeeds only when no
    member has one (a bound DMA-API driver makes SET_CONTAINER fail EPERM; its remove()
    stopped its DMA and unmapped its buffers): the members' DMA-API streams end here, their
    buffers dma_unmap'd from the default domain the claim displaced, which stays the DMA
    API's (iommu_get_dma_domain) and comes back when VFIO lets go."""
    for name, t in list(m.traffic.items()):
        if t.vfio is None and t.dev.group is group:
            release(m, t)
            del m.traffic[name]
            m.kmsg.log(f"vfakefs: traffic: {name}: stopped: group {group.id} claimed by VFIO, "
                       "its DMA API buffer unmapped", KERN_INFO)


def release(m, t: Traffic) -> None:
    """dma_unmap the stream's buffer (page-selective invalidations queued; its IOVA range,
    emptied page-table pages and host pages go back), if its domain is still the device's
    DMA domain; when a `type` write or a removal freed that domain, mappings and all, only
    the host pages are left to give back. A VFIO stream mapped nothing: the program's
    mappings are the program's, and the default domain is not its."""
    dev = t.dev
    if t.vfio is not None or t.iovas is None:
        return
    if m.by_bdf.get(dev.bdf) is dev and dev.group is not None and \
            (t.domain is None or iommu.dma_domain(dev.group) is t.domain):
        for iova, _ in t.iovas:
            iommu.dma_unmap(m, dev, iova)
    elif t.hpa is not None and m.host_memory.owner(t.hpa) == iommu.DMA_BUFFER:
        m.free_host_memory(t.hpa)
    t.iovas = None


def traffic_show(m) -> str:
    return "".join(t.describe() for t in m.traffic.values())
