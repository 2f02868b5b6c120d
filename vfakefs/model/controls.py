"""vfakefs's own controls (MNT/sys/kernel/debug/vfakefs/): inject a DMA, raise an
MSI, set the fault threshold, pull a cable, reset the machine (the traffic
control is traffic.py).

Each parser rejects bad input with EINVAL and a kernel-log line saying why, so a
script's mistake shows in dmesg like a driver's would.
"""
from __future__ import annotations

import errno

from vfakefs.model.iommu.device_dma import dma_read, dma_write
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.errors import SysfsError
from vfakefs.model.intel.irte import IR_FAULT_REASONS
from vfakefs.model.kmsg import KERN_WARNING
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
