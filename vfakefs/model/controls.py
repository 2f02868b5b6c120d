"""vfakefs's own controls (MNT/sys/kernel/debug/vfakefs/): inject a DMA, raise an
MSI, shape simulated traffic, set the fault threshold, reset the machine.

Each parser rejects bad input with EINVAL and a kernel-log line saying why, so a
script's mistake shows in dmesg like a driver's would.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

from vfakefs.model.iommu import iommu
from vfakefs.model.iommu.device_dma import dma_read, dma_write
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.errors import SysfsError
from vfakefs.model.intel.irte import IR_FAULT_REASONS
from vfakefs.model.kmsg import KERN_INFO, KERN_WARNING
from vfakefs.model.vfio import msihandler


def reject(m, control: str, why: str, err: int = errno.EINVAL):
    m.kmsg.log(f"vfakefs: {control}: {why}", KERN_WARNING)
    raise SysfsError(err, why)


def _device(m, control: str, word: str):
    try:
        bdf = Bdf.from_str(word)
    except ValueError:
        reject(m, control, f"malformed device {word!r}")
    dev = m.by_bdf.get(bdf)
    if dev is None:
        reject(m, control, f"no device {bdf}")
    return dev


def _int(m, control: str, word: str, what: str, lo: int | None = None, hi: int | None = None) -> int:
    """A number in C's notations (0x, 0o, 0b), within [lo, hi] when given."""
    try:
        n = int(word, 0)
    except ValueError:
        reject(m, control, f"{what} {word!r} is not a number")
    if lo is not None and not lo <= n <= hi:
        reject(m, control, f"{what} {n} is outside {lo}..{hi}")
    return n


# --- dma: `<bdf> read <iova> <length>`, `<bdf> write <iova> <length> [data=<hex>]` -----------------
MAX_DMA_LENGTH = 4096      # a read: its bytes come back in the answer, which is one page as any show
MAX_DMA_WRITE = 1 << 20    # a write: one transfer of a device's DMA engine, sent as requests of at
                           # most 4096 bytes that never cross a 4 KiB boundary (device_dma.py)
DMA_USAGE = ("expected '<bdf> read <iova> <length> [at=translated]' or "
             "'<bdf> write <iova> <length> [data=<hex>] [at=translated]'")


def dma_request(m, text: str) -> str:
    """Issue one DMA request and return what the hardware answered.

    iova is a 64-bit bus address (0..2^64-1) and the request ends within 2^64;
    a read's length is 1..4096 bytes (they come back in the answer: one page), a
    write's 1..1 MiB: one transfer of the device's DMA engine, which the bus carries
    as requests of at most 4096 bytes (PCIe r6 7.5.3.4: Max_Payload_Size tops out at
    4096) never crossing a 4 KiB boundary. A write
    carries `data=<hex>` (whole bytes in hex, repeated to fill the length, cut at the
    length when longer) or, without it, zeros. The bytes move through
    iommu/device_dma.py: page by page, up to the first page that faults.

    `at=translated` sends the requests as translated (PCIe AT 10b: the device claims iova is
    a host address, as a device with an ATC would): the unit passes them untranslated only
    through a device-TLB context entry (TT 01b) and blocks them otherwise (fault reason 0x0d).

    The first line is the translation (`-> hpa`, `not issued`, or `fault: `); a read
    adds `data <hex>` with the bytes it read (all of them, or those before the fault),
    a write cut short by a fault adds `wrote <n> of <length> bytes`."""
    words = text.split()
    if len(words) not in (4, 5, 6):
        reject(m, "dma", DMA_USAGE)
    dev = _device(m, "dma", words[0])
    if words[1] not in ("read", "write"):
        reject(m, "dma", f"direction {words[1]!r} is not read or write")
    write = words[1] == "write"
    iova, length = _int(m, "dma", words[2], "iova"), _int(m, "dma", words[3], "length")
    if length <= 0 or iova < 0:
        reject(m, "dma", "length must be positive and iova not negative")
    if not write and length > MAX_DMA_LENGTH:
        reject(m, "dma", f"length {length} is more than one read answers ({MAX_DMA_LENGTH})")
    if write and length > MAX_DMA_WRITE:
        reject(m, "dma", f"length {length} is more than one write transfers ({MAX_DMA_WRITE})")
    if iova + length > 1 << 64:
        reject(m, "dma", f"iova {iova:#x} + length {length} is past the 64-bit address space")
    payload, at = None, 0
    for word in words[4:]:
        if word == "at=translated" and not at:
            at = 2            # AT 10b (entries.AT_TRANSLATED): the device sends a host address
        elif word.startswith("data=") and payload is None:
            if not write:
                reject(m, "dma", "data= is for writes only")
            pattern = _hex(m, word.removeprefix("data="))
            payload = (pattern * -(-length // len(pattern)))[:length]
        elif word == "at=translated" or word.startswith("data="):
            reject(m, "dma", f"repeated setting {word[:32]!r}")
        else:
            reject(m, "dma", f"unknown setting {word[:32]!r}")
    if write and payload is None:
        payload = bytes(length)
    t = dma_write(m, dev, iova, payload, at) if write else dma_read(m, dev, iova, length, at)
    head = f"{dev.name} {words[1]} iova {iova:#x}"
    if not t.issued:
        return f"{head}: not issued (bus mastering disabled)\n"
    if t.fault is None:
        note = ' (atc hit)' if t.atc_hit else ' (iotlb hit)' if t.iotlb_hit else ''
        line = f"{head} -> hpa {t.hpa:#x}{note}\n"
    else:
        line = f"{head}: fault: {t.fault.log_line().removeprefix('DMAR: ')}\n"
    if not write and t.done:
        line += f"data {t.data.hex()}\n"
    elif write and t.fault is not None and t.done:
        line += f"wrote {t.done} of {length} bytes\n"
    return line


def _hex(m, text: str) -> bytes:
    """data=: hex digits, two to a byte, nothing else."""
    if not text:
        reject(m, "dma", "data= is empty")
    bad = next((c for c in text if c not in "0123456789abcdefABCDEF"), None)
    if bad is not None:
        reject(m, "dma", f"data= holds {bad!r}, not a hex digit")
    if len(text) % 2:
        reject(m, "dma", f"data= has {len(text)} hex digits, not whole bytes")
    return bytes.fromhex(text)


# --- msi: `<bdf> <address> <data>`, `<bdf> vector <n>` -------------------------------------------
MSI_USAGE = "expected '<bdf> <address> <data>' or '<bdf> vector <n>'"
MAX_VECTOR = 2047          # MSI-X: at most 2048 table entries (Table Size is 11 bits)


def msi(m, text: str) -> str:
    """A device writes an MSI; the remapping hardware checks it against its IRTE.

    Raw form: address is in the interrupt window 0xfee00000-0xfeefffff; data is the
    32-bit message data (0..0xffffffff, MSI-X's Message Data width). Vector form: the
    device raises its MSI or MSI-X vector n (0..2047) with the message programmed in
    its capability or MSI-X table (pci/msi.py); EINVAL when that vector is not enabled,
    since a function cannot send it. Either way, a message delivered to an IRTE whose
    irq a VFIO device requested signals the eventfd its program registered."""
    words = text.split()
    if len(words) != 3:
        reject(m, "msi", MSI_USAGE)
    dev = _device(m, "msi", words[0])
    if words[1] == "vector":
        return _msi_vector(m, dev, _int(m, "msi", words[2], "vector", 0, MAX_VECTOR))
    address = _int(m, "msi", words[1], "address")
    data = _int(m, "msi", words[2], "data", 0, 0xFFFF_FFFF)
    if address >> 20 != 0xFEE:
        reject(m, "msi", f"address {address:#x} is not in the MSI window 0xfee00000-0xfeefffff")
    if m.irq_remap is None:
        return f"{dev.name}: delivered without remapping (vector {data & 0xFF:#x})\n"
    return _msi_answer(dev, msihandler.deliver(m, dev, address, data))


def _msi_vector(m, dev, n: int) -> str:
    try:
        msg, r = msihandler.raise_vector(m, dev, n)
    except SysfsError as e:
        reject(m, "msi", str(e))
    if msg.held is not None:
        return f"{dev.name}: vector {n}: not issued ({msg.held})\n"
    if r is None:
        return f"{dev.name}: delivered without remapping (vector {msg.data & 0xFF:#x})\n"
    return _msi_answer(dev, r)


def _msi_answer(dev, r) -> str:
    index = "compatibility format" if r.index is None else f"index {r.index:#x}"
    if r.blocked:
        return f"{dev.name}: {index}: blocked: [fault reason {r.reason:#04x}] {IR_FAULT_REASONS.get(r.reason, '')}\n"
    how = "posted" if r.posted else "delivered"
    cpus = ",".join(map(str, r.cpus))
    return f"{dev.name}: {index}: {how} vector {r.vector:#04x} to cpu {cpus}\n"


# --- reset ----------------------------------------------------------------------------------------
def reset(host, text: str) -> None:
    """`1` (any non-zero number) puts the machine back to its topology's initial state:
    the host (host.Host) boots a fresh Machine from the same topology."""
    if _int(host.machine, "reset", text.strip(), "value"):
        host.reset()


# --- carrier: `<interface> 1|0` -------------------------------------------------------------------
def carrier_show(m) -> str:
    """Each interface's link state as its driver sees it: `<name> 1|0`."""
    return "".join(f"{name} {int(nd.carrier)}\n" for name, nd in sorted(m.netdevs.items()))


def carrier_command(m, text: str) -> None:
    """Plug (1) or pull (0) an interface's cable: its carrier, operstate and, inside
    `vfakefs run`, the namespace's interface follow (NO-CARRIER)."""
    words = text.split()
    if len(words) != 2 or words[1] not in ("0", "1"):
        reject(m, "carrier", "expected '<interface> 1|0'")
    nd = m.netdevs.get(words[0])
    if nd is None:
        reject(m, "carrier", f"no interface {words[0]!r}", errno.ENODEV)
    nd.link_event(words[1] == "1")


# --- fault_threshold ---------------------------------------------------------------------------
MAX_FAULT_THRESHOLD = 2**31 - 1     # a C int, as a kernel module parameter would hold it


def set_fault_threshold(m, text: str) -> None:
    """DMA faults a device may cause before it loses bus mastering: 1..2^31-1."""
    n = _int(m, "fault_threshold", text.strip(), "threshold")
    if n < 1:
        reject(m, "fault_threshold", "threshold must be at least 1")
    if n > MAX_FAULT_THRESHOLD:
        reject(m, "fault_threshold", f"threshold {n} is more than {MAX_FAULT_THRESHOLD}")
    m.fault_threshold = n


# --- traffic: `start <bdf> [rate=N] [mix=R] [ws=BYTES] [pattern=sequential|random|storm]`, `stop <bdf>|all` ------
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
