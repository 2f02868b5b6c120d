"""`vfakefs top MNT`: a live view of a mounted machine in the style of top(1): per PCI
function its bound driver, DMA rate, IOTLB and ATC hit rates, faults and interrupts per
vector; a header with the machine's IOMMU, streams, faults and kernel log rate.

It reads the mount's files only, like `vfakefs draw`, so it watches any mount (one
another process made, in a container too):
- MNT/sys/bus/pci/devices/*: the functions and their `driver` links;
- MNT/sys/kernel/debug/vfakefs/dma_stats: the engine's clock and each function's DMA
  requests, bytes, faulted requests and IOTLB hits and misses (model/iommu/dma_stats.py);
- MNT/sys/kernel/debug/vfakefs/atc_stats: ATS on/off and the device ATC's hits, misses;
- MNT/proc/interrupts: each MSI/MSI-X vector's count (the chip names its function);
- MNT/sys/kernel/debug/vfakefs/traffic: the streams running;
- MNT/sys/class/iommu/*/intel-iommu/domains_used, MNT/sys/kernel/debug/iommu/intel/
  iommu_regset (FSTS): the IOMMU's state;
- MNT/dev/kmsg, read non-blocking from where it ended: the kernel log's new records.
A file the mount does not have leaves its columns `-`.

Rates are counter differences between two samples over the time between them, in
simulated seconds: the engine's clock (dma_stats' first line). The engine advances the
machine in steps of simulated time and, on a loaded host, rests between them, so
simulated time runs slower than real time; over the simulated clock a stream at rate=N
shows N requests/s however loaded the host is, as the machine itself counts. Where the
mount shows no clock, or the clock did not move between two samples (the engine did
not step), the frame's rates are over real time, and its header says so."""
from __future__ import annotations

import errno
import os
import re
import select
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SORT_KEYS = ("dma", "faults", "irqs")
BDF = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])$")
MSI_CHIP = re.compile(r"PCI-MSIX?-([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])$")
FSTS_BITS = (("PFO", 0x01), ("PPF", 0x02), ("IQE", 0x10), ("ICE", 0x20), ("ITE", 0x40))


class TopError(Exception):
    """What the CLI prints on one line; code: its exit status (1: the mount failed while
    watched, 2: not a mount to watch, as a usage error)."""
    code = 1


class NotAMount(TopError):
    code = 2


def parse_bdf(text: str) -> str:
    """0000:03:00.0 or 03:00.0 (domain 0), as lspci -s writes it; the canonical form."""
    r = BDF.match(text.strip())
    if r is None:
        raise ValueError(f"{text!r} is not a PCI address (DDDD:BB:DD.F or BB:DD.F)")
    return "%s:%s:%s.%s" % ((r[1] or "0000").lower(), r[2].lower(), r[3].lower(), r[4])


# --- one sample of the mount's counters ------------------------------------------------------------
@dataclass
class Device:
    bdf: str
    driver: str | None = None
    dma: tuple[int, ...] | None = None   # requests, bytes, faults, iotlb_hits, iotlb_misses
    atc: tuple | None = None             # (ATS on, hits, misses); None: no ATS capability
    vectors: dict[int, int] = field(default_factory=dict)   # MSI index -> interrupts (all CPUs)


@dataclass
class Sample:
    real: float                          # time.monotonic() when taken
    clock: float | None                  # the engine's simulated clock; None: the mount has none
    devices: dict[str, Device]
    streams: int | None
    iommu: str
    log_seq: int | None                  # kernel log records since top began (None: no /dev/kmsg)


def _read(p: Path) -> str | None:
    try:
        return p.read_text()
    except OSError:
        return None


class KernelLog:
    """MNT/dev/kmsg's records since top began, counted by their sequence numbers (so
    records overwritten before they were read count too). Opened for each sample only,
    never held between two (an open file would keep `vfakefs umount` from unmounting):
    each poll reads on from the file offset where the last one ended (kmsg's offsets
    are positions in the stream of every record since boot, so the next open lands on
    the same record) and skips any record it has already counted."""

    def __init__(self, mnt: Path):
        self.path = mnt / "dev/kmsg"
        self.offset: int | None = None       # where the last poll stopped reading
        self.next_seq: int | None = None
        self.seen = 0

    def poll(self) -> int | None:
        """Records logged since the first poll (None: the mount has no /dev/kmsg)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            first = self.offset is None
            os.lseek(fd, 0, os.SEEK_END) if first else os.lseek(fd, self.offset, os.SEEK_SET)
            while True:
                try:
                    rec = os.read(fd, 8192)
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno == errno.EPIPE:     # records lost under us: the next read goes on
                        continue
                    break
                try:
                    seq = int(rec.split(b",", 2)[1])
                except (IndexError, ValueError):
                    break
                if self.next_seq is not None and seq < self.next_seq:
                    continue                       # counted before
                if not first:
                    self.seen += seq + 1 - self.next_seq if self.next_seq is not None else 1
                self.next_seq = seq + 1
            self.offset = os.lseek(fd, 0, os.SEEK_CUR)
        finally:
            os.close(fd)
        return self.seen


def _dma_stats(text: str | None, devices: dict[str, Device]) -> float | None:
    if text is None:
        return None
    lines = text.splitlines()
    clock = None
    try:
        if lines and lines[0].startswith("clock "):
            clock = float(lines[0].split()[1])
        for line in lines[2:]:
            f = line.split()
            if len(f) >= 6 and f[0] in devices:
                devices[f[0]].dma = tuple(int(x) for x in f[1:6])
    except (IndexError, ValueError):
        return None                        # not the format this top reads: no clock, no counters
    return clock


def _atc_stats(text: str | None, devices: dict[str, Device]) -> None:
    for line in (text or "").splitlines()[1:]:
        f = line.split()
        if len(f) >= 4 and f[0] in devices:
            devices[f[0]].atc = (f[1] == "on", int(f[2]), int(f[3]))


def _interrupts(text: str | None, devices: dict[str, Device]) -> None:
    """show_interrupts()'s lines: `irq: <count per CPU> <chip> <hwirq>-<flow> <name>`."""
    lines = (text or "").splitlines()
    if not lines:
        return
    ncpu = len(lines[0].split())
    for line in lines[1:]:
        head, _, rest = line.partition(":")
        f = rest.split()
        if not head.strip().isdigit() or len(f) < ncpu + 2:
            continue
        chip = MSI_CHIP.search(f[ncpu])
        hwirq = f[ncpu + 1].partition("-")[0]
        if chip is None or chip[1] not in devices or not hwirq.isdigit():
            continue
        try:
            devices[chip[1]].vectors[int(hwirq)] = sum(int(c) for c in f[:ncpu])
        except ValueError:
            continue


def _iommu_state(mnt: Path) -> str:
    try:
        units = sorted(os.listdir(mnt / "sys/class/iommu"))
    except OSError:
        return "-"
    if not units:
        return "off"
    out = []
    for u in units:
        used = _read(mnt / "sys/class/iommu" / u / "intel-iommu/domains_used")
        out.append(f"{u} on" + (f", {used.strip()} domains" if used is not None else ""))
    regset = _read(mnt / "sys/kernel/debug/iommu/intel/iommu_regset") or ""
    r = re.search(r"^FSTS\s+0x34\s+0x([0-9a-f]+)", regset, re.M)
    if r is not None:
        fsts = int(r[1], 16)
        bits = [n for n, b in FSTS_BITS if fsts & b]
        out.append(f"FSTS {fsts:#x}" + (f" ({' '.join(bits)})" if bits else ""))
    return ", ".join(out)


def sample(mnt: Path, log: KernelLog) -> Sample:
    devdir = mnt / "sys/bus/pci/devices"
    try:
        names = sorted(os.listdir(devdir))
    except OSError as e:
        raise TopError(f"{mnt}: cannot read {devdir}: {e.strerror}") from None
    devices = {n: Device(n) for n in names}
    for n, d in devices.items():
        try:
            d.driver = os.path.basename(os.readlink(devdir / n / "driver"))
        except OSError:
            pass
    debug = mnt / "sys/kernel/debug/vfakefs"
    clock = _dma_stats(_read(debug / "dma_stats"), devices)
    _atc_stats(_read(debug / "atc_stats"), devices)
    _interrupts(_read(mnt / "proc/interrupts") or _read(debug / "interrupts"), devices)
    traffic = _read(debug / "traffic")
    streams = len(traffic.splitlines()) if traffic is not None else None
    return Sample(time.monotonic(), clock, devices, streams, _iommu_state(mnt), log.poll())


# --- a frame: the differences of two samples --------------------------------------------------------
@dataclass
class Row:
    bdf: str
    driver: str
    req: float | None
    bps: float | None
    iotlb: float | None                 # hit percentage of this interval's lookups
    atc: str                            # hit percentage, "off", or "-" (no ATS capability)
    faults: int | None
    fps: float | None
    irqs: float | None
    vectors: list[tuple[int, float]]


def _delta(new: int, old: int | None) -> int:
    """A counter's growth; one that went back (a reset machine, a re-added device) started again."""
    return new - old if old is not None and new >= old else new


def _pct(hits: int, misses: int) -> float | None:
    return 100.0 * hits / (hits + misses) if hits + misses else None


def rows(old: Sample, new: Sample, dt: float) -> list[Row]:
    out = []
    for bdf, d in new.devices.items():
        o = old.devices.get(bdf)
        req = bps = iotlb = fps = None
        faults = None
        if d.dma is not None:
            od = o.dma if o is not None and o.dma is not None else (None,) * 5
            dr, db, df, dh, dm = (_delta(n, p) for n, p in zip(d.dma, od))
            req, bps, fps, faults = dr / dt, db / dt, df / dt, d.dma[2]
            iotlb = _pct(dh, dm)
        atc = "-"
        if d.atc is not None:
            on, h, mi = d.atc
            oa = o.atc if o is not None and o.atc is not None else (on, None, None)
            p = _pct(_delta(h, oa[1]), _delta(mi, oa[2]))
            atc = "off" if not on else ("%.1f" % p if p is not None else "-")
        vectors = []
        for idx, n in sorted(d.vectors.items()):
            prev = o.vectors.get(idx) if o is not None else None
            vectors.append((idx, _delta(n, prev) / dt))
        irqs = sum(r for _, r in vectors) if vectors else None
        out.append(Row(bdf, d.driver or "-", req, bps, iotlb, atc, faults, fps, irqs, vectors))
    return out


def sort_rows(rs: list[Row], key: str) -> list[Row]:
    """Busiest first by the key (top's sort field), then in bus order."""
    def z(x):
        return x if x is not None else -1.0
    if key == "faults":
        return sorted(rs, key=lambda r: (-z(r.fps), -z(r.faults), r.bdf))
    if key == "irqs":
        return sorted(rs, key=lambda r: (-z(r.irqs), r.bdf))
    return sorted(rs, key=lambda r: (-z(r.req), -z(r.bps), r.bdf))


def human(x: float | None) -> str:
    """A rate in at most 6 characters: 0, 7.5, 123, 12.3k, 410M."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if x < 10:
        return "%.1f" % x
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return ("%.1f" % (x / div) if x / div < 100 else "%.0f" % (x / div)) + suffix
    return "%.0f" % x


COLUMNS = "%-12s %-14s %7s %7s %6s %6s %8s %7s %7s  %s"
HEAD = COLUMNS % ("DEVICE", "DRIVER", "REQ/s", "B/s", "IOTLB%", "ATC%", "FAULTS", "FLT/s", "IRQ/s", "VECTORS/s")


def frame(mnt: Path, old: Sample, new: Sample, sort: str, only: set[str] | None) -> list[str]:
    real = max(new.real - old.real, 1e-6)
    dt = 0.0
    if old.clock is not None and new.clock is not None:
        # a clock that went back is a reset machine: its counters started again with it
        dt = new.clock - old.clock if new.clock >= old.clock else new.clock
    if dt > 0:
        when = f"clock {new.clock:.3f} s, interval {dt:.3f} s simulated ({real:.3f} s real)"
        if new.clock < old.clock:
            old = Sample(old.real, 0.0, {}, None, "", old.log_seq)
    else:
        dt = real
        why = "the mount shows no clock" if new.clock is None else "the engine did not step"
        when = f"interval {dt:.3f} s real ({why})"
    rs = rows(old, new, dt)
    total = sum(r.faults for r in rs if r.faults is not None)
    fps = sum(r.fps for r in rs if r.fps is not None)
    has_dma = any(r.faults is not None for r in rs)
    logs = None
    if new.log_seq is not None:
        logs = _delta(new.log_seq, old.log_seq) / dt
    shown = [r for r in rs if only is None or r.bdf in only]
    lines = [f"vfakefs top - {mnt} - {when}",
             f"IOMMU: {new.iommu}; streams: {new.streams if new.streams is not None else '-'} running; "
             f"DMA faults: {total if has_dma else '-'} total, {human(fps) if has_dma else '-'}/s; "
             f"kernel log: {human(logs) if logs is not None else '-'} lines/s",
             f"Functions: {len(shown)} shown of {len(rs)}, sorted by {sort}",
             "",
             HEAD]
    for r in sort_rows(shown, sort):
        vec = " ".join(f"{i}:{human(v)}" for i, v in r.vectors)
        lines.append((COLUMNS % (r.bdf, r.driver[:14], human(r.req), human(r.bps),
                                 "%.1f" % r.iotlb if r.iotlb is not None else "-", r.atc,
                                 r.faults if r.faults is not None else "-", human(r.fps), human(r.irqs),
                                 vec or "-")).rstrip())
    return lines


# --- the loop ---------------------------------------------------------------------------------------
def check_mount(mnt: Path) -> None:
    if not (mnt / "sys/bus/pci/devices").is_dir():
        raise NotAMount(f"{mnt}: not a vfakefs mount ({mnt / 'sys/bus/pci/devices'} is missing)")


def run(mnt: Path | str, delay: float = 2.0, iterations: int | None = None, batch: bool = False,
        sort: str = "dma", only: set[str] | None = None, out=None) -> int:
    """Frames every `delay` seconds, `iterations` of them (None: until q or Ctrl-C). Batch
    mode writes plain frames (a blank line between two); otherwise, on a terminal, the
    frame is redrawn in place and q quits, o changes the sort key."""
    mnt = Path(mnt)
    out = out or sys.stdout
    check_mount(mnt)
    interactive = not batch and out.isatty() and sys.stdin.isatty()
    log = KernelLog(mnt)
    prev = sample(mnt, log)
    if interactive:
        return _interactive(mnt, prev, log, delay, iterations, sort, only, out)
    n = 0
    while iterations is None or n < iterations:
        time.sleep(delay)
        cur = sample(mnt, log)
        if n:
            out.write("\n")
        out.write("\n".join(frame(mnt, prev, cur, sort, only)) + "\n")
        out.flush()
        prev, n = cur, n + 1
    return 0


def _interactive(mnt, prev, log, delay, iterations, sort, only, out) -> int:
    import termios
    import tty
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    # the alternate screen while it runs until q; with -n the last frame stays on the screen
    alt = iterations is None
    out.write(("\x1b[?1049h" if alt else "") + "\x1b[?25l")      # (and no cursor)
    try:
        tty.setcbreak(fd)
        out.write(f"\x1b[H\x1b[Jvfakefs top - {mnt} - the first frame comes in {delay:g} s (q quits)")
        out.flush()
        n = 0
        deadline = time.monotonic() + delay
        while iterations is None or n < iterations:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            if ready:
                key = os.read(fd, 1)
                if key in (b"q", b"Q", b""):              # b"": the terminal went away
                    return 0
                if key == b"o":
                    sort = SORT_KEYS[(SORT_KEYS.index(sort) + 1) % len(SORT_KEYS)]
                if time.monotonic() < deadline and key != b"o":
                    continue
            cur = sample(mnt, log)
            cols, lines = shutil.get_terminal_size()
            text = frame(mnt, prev, cur, sort, only)[:lines - 1]
            text.append("q quits, o changes the sort key")
            out.write("\x1b[H" + "".join(t[:cols] + "\x1b[K\n" for t in text[:-1]) + text[-1][:cols] + "\x1b[K\x1b[J")
            out.flush()
            if time.monotonic() >= deadline:
                prev, n = cur, n + 1
                deadline = time.monotonic() + delay
        return 0
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        out.write("\x1b[?25h" + ("\x1b[?1049l" if alt else "\n"))
        out.flush()
