"""vfakefs's own controls (MNT/sys/kernel/debug/vfakefs/): inject a DMA, raise an
MSI, shape simulated traffic, set the fault threshold, reset the machine.

Each parser rejects bad input with EINVAL and a kernel-log line saying why, so a
script's mistake shows in dmesg like a driver's would.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

from vfakefs.model.iommu import iommu
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.errors import SysfsError
from vfakefs.model.intel.irte import IR_FAULT_REASONS
from vfakefs.model.kmsg import KERN_WARNING


def reject(m, control: str, why: str):
    m.kmsg.log(f"vfakefs: {control}: {why}", KERN_WARNING)
    raise SysfsError(errno.EINVAL, why)


def _device(m, control: str, word: str):
    try:
        bdf = Bdf.from_str(word)
    except ValueError:
        reject(m, control, f"malformed device {word!r}")
    dev = m.by_bdf.get(bdf)
    if dev is None:
        reject(m, control, f"no device {bdf}")
    return dev


def _int(m, control: str, word: str, what: str) -> int:
    try:
        return int(word, 0)
    except ValueError:
        reject(m, control, f"{what} {word!r} is not a number")


# --- dma: `<bdf> read|write <iova> <length>` -----------------------------------------------------
def dma_request(m, text: str) -> str:
    """Issue one DMA request and return what the hardware answered, as a line."""
    words = text.split()
    if len(words) != 4:
        reject(m, "dma", "expected '<bdf> read|write <iova> <length>'")
    dev = _device(m, "dma", words[0])
    if words[1] not in ("read", "write"):
        reject(m, "dma", f"direction {words[1]!r} is not read or write")
    iova, length = _int(m, "dma", words[2], "iova"), _int(m, "dma", words[3], "length")
    if length <= 0 or iova < 0:
        reject(m, "dma", "length must be positive and iova not negative")
    t = iommu.dma(m, dev, iova, length, words[1] == "write")
    if t.hpa is not None:
        return f"{dev.name} {words[1]} iova {iova:#x} -> hpa {t.hpa:#x}{' (iotlb hit)' if t.iotlb_hit else ''}\n"
    if t.fault is None:
        return f"{dev.name} {words[1]} iova {iova:#x}: not issued (bus mastering disabled)\n"
    return f"{dev.name} {words[1]} iova {iova:#x}: fault: {t.fault.log_line().removeprefix('DMAR: ')}\n"


# --- msi: `<bdf> <address> <data>` -------------------------------------------------------------
def msi(m, text: str) -> str:
    """A device writes an MSI; the remapping hardware checks it against its IRTE."""
    words = text.split()
    if len(words) != 3:
        reject(m, "msi", "expected '<bdf> <address> <data>'")
    dev = _device(m, "msi", words[0])
    address, data = _int(m, "msi", words[1], "address"), _int(m, "msi", words[2], "data")
    if address >> 20 != 0xFEE:
        reject(m, "msi", f"address {address:#x} is not in the MSI window 0xfee00000-0xfeefffff")
    if m.irq_remap is None:
        return f"{dev.name}: delivered without remapping (vector {data & 0xFF:#x})\n"
    r = m.irq_remap.deliver_msi(dev, address, data)
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


# --- fault_threshold ---------------------------------------------------------------------------
def set_fault_threshold(m, text: str) -> None:
    n = _int(m, "fault_threshold", text.strip(), "threshold")
    if n < 1:
        reject(m, "fault_threshold", "threshold must be at least 1")
    m.fault_threshold = n


# --- traffic: `start <bdf> [rate=N] [mix=R] [ws=BYTES] [pattern=sequential|random]`, `stop <bdf>|all` ------
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

    def describe(self) -> str:
        hist = " ".join(str(c) for c in self.latency)
        return (f"{self.dev.name} rate={self.rate} mix={self.read_share:.2f} ws={self.working_set} "
                f"pattern={self.pattern} requests={self.requests} faults={self.faults} latency=[{hist}]\n")


def traffic_command(m, text: str) -> None:
    words = text.split()
    if not words or words[0] not in ("start", "stop"):
        reject(m, "traffic", "expected 'start <bdf> [rate=N] [mix=R] [ws=BYTES] [pattern=P]' or 'stop <bdf>|all'")
    if words[0] == "stop":
        if len(words) != 2:
            reject(m, "traffic", "expected 'stop <bdf>|all'")
        if words[1] == "all":
            m.traffic.clear()
        else:
            dev = _device(m, "traffic", words[1])
            if m.traffic.pop(dev.name, None) is None:
                reject(m, "traffic", f"no traffic from {dev.name}")
        return
    if len(words) < 2:
        reject(m, "traffic", "expected a device after start")
    dev = _device(m, "traffic", words[1])
    t = Traffic(dev)
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
        elif key == "pattern" and value in ("sequential", "random", "storm"):
            t.pattern = value
        else:
            reject(m, "traffic", f"unknown setting {kv!r}")
    if t.rate <= 0 or not 0 <= t.read_share <= 1 or t.working_set < 4096:
        reject(m, "traffic", "rate must be positive, mix within 0..1, ws at least 4096")
    t.iovas = [(iommu.dma_map(m, dev, t.working_set), t.working_set)]
    t.latency = [0] * 8
    m.traffic[dev.name] = t


def traffic_show(m) -> str:
    return "".join(t.describe() for t in m.traffic.values())
