"""The simulated kernel log: printk records with sequence numbers and timestamps.

A record is what the kernel's printk ring buffer holds: facility, level,
sequence number, timestamp (microseconds since boot) and text. `kmsg()` is the
record as /dev/kmsg hands it out (Documentation/ABI/testing/dev-kmsg), `dmesg()`
as dmesg prints it. The log keeps LOG_BUF_LEN bytes of text; older records are
dropped first, as the ring buffer overwrites them.
"""
from __future__ import annotations

import bisect
import errno
import time
from typing import Callable, NamedTuple

from vfakefs.model.errors import SysfsError

KERN_EMERG, KERN_ALERT, KERN_CRIT = 0, 1, 2
KERN_ERR, KERN_WARNING, KERN_NOTICE, KERN_INFO, KERN_DEBUG = 3, 4, 5, 6, 7
LOG_KERN, LOG_USER = 0, 1              # syslog facilities: printk, and writes to /dev/kmsg
DEFAULT_MESSAGE_LOGLEVEL = KERN_WARNING  # CONFIG_MESSAGE_LOGLEVEL_DEFAULT: a write without <N>
PRINTKRB_RECORD_MAX = 1024             # devkmsg_write: a longer write is EINVAL
LOG_BUF_LEN = 1 << 20                  # bytes of text kept (log_buf_len=1M)


def _escape(text: str) -> str:
    """msg_add_ext_text(): bytes below ' ', from 127 up, and the backslash as \\xNN."""
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return "".join(c if " " <= c < "\x7f" and c != "\\"
                   else "".join("\\x%02x" % b for b in (c.encode() if ord(c) > 0xFF else bytes([ord(c)])))
                   for c in text)


def _kmsg_len(prio: int, seq: int, usec: int, t: str) -> int:
    """The length of a record's /dev/kmsg line (Record.kmsg_bytes), its text escaped."""
    if t.isascii() and t.isprintable() and "\\" not in t:
        return len("%d,%d,%d,-;" % (prio, seq, usec)) + len(t) + 1
    return len(("%d,%d,%d,-;%s\n" % (prio, seq, usec, _escape(t))).encode("ascii"))


class Record(NamedTuple):
    """One printk record. A named tuple: immutable, and made at a third of a frozen
    dataclass's cost (thousands of VFs log six lines each)."""
    level: int
    seq: int
    usec: int
    text: str
    facility: int = LOG_KERN

    @property
    def prio(self) -> int:
        return self.facility << 3 | self.level

    def kmsg(self) -> str:
        """/dev/kmsg's format: `prio,seq,usec,flags;message\\n` (prio = facility<<3 | level),
        non-printable bytes escaped as \\xNN."""
        return f"{self.prio},{self.seq},{self.usec},-;{_escape(self.text)}\n"

    def kmsg_bytes(self) -> bytes:
        return self.kmsg().encode("ascii")

    def kmsg_len(self) -> int:
        """len(kmsg_bytes()), without making them for a text that needs no escape."""
        return _kmsg_len(self.facility << 3 | self.level, self.seq, self.usec, self.text)

    def dmesg(self) -> str:
        return "[%5d.%06d] %s\n" % (self.usec // 1_000_000, self.usec % 1_000_000, self.text)


_new_record = tuple.__new__


def _width(n: int) -> tuple[int, int, int]:
    """(digits of n in decimal, the lowest and one past the highest number of as many digits)."""
    if n < 0:
        return len(str(n)), n, n + 1
    d = len(str(n))
    return d, 0 if d == 1 else 10 ** (d - 1), 10 ** d


class KernelLog:
    """The ring buffer. `records` holds the records still in the buffer, oldest
    first; `first_seq`..`next_seq` are their sequence numbers. Listeners
    (`subscribe`) are called with each new record, after it is in the buffer."""

    def __init__(self, clock=time.monotonic, capacity: int = LOG_BUF_LEN):
        self.records: list[Record] = []
        self._clock = clock
        self._t0 = clock()
        self._boot_usec = 0
        self._last_usec = 0             # the newest record's timestamp (0 before the first)
        self._seq_width = self._usec_width = _width(0)   # (digits, lowest, past highest) of a number
        self.capacity = capacity
        self._text_bytes = 0
        self.next_seq = 0
        # where each record starts in the stream of /dev/kmsg records since boot
        self._starts: list[int] = []    # (of the first len(_starts) records: _count() does the rest)
        self._end = 0                   # where the stream ends after those
        self._listeners: list[Callable[[Record], None]] = []

    # --- printk ------------------------------------------------------------------------
    def boot(self, text: str, level: int = KERN_INFO, at: int | None = None) -> None:
        """A boot-time line: timestamps climb in small steps from zero; `at` (usec)
        moves the clock forward to that time (never back)."""
        if at is not None and not self.records:
            self._boot_usec = at
        else:
            self._boot_usec = max(self._boot_usec + 317, at or 0)
        self._append(level, self._boot_usec, text)

    def log(self, text: str, level: int = KERN_INFO) -> None:
        # each line stamped when it is logged, at least 1 us after the one before
        usec = self._boot_usec + int((self._clock() - self._t0) * 1e6) + 1_000_000   # uptime_usec()
        self._append(level, usec if usec > self._last_usec else self._last_usec + 1, text)

    def uptime_usec(self) -> int:
        return self._boot_usec + int((self._clock() - self._t0) * 1e6) + 1_000_000

    def dev(self, dev, text: str, level: int = KERN_INFO, prefix: str | None = None) -> None:
        """dev_info()'s form: the bound driver's name (else the bus's), the device, the message:
        `pci 0000:03:10.0: ...`, `nvme 0000:01:00.0: ...`."""
        if prefix is None:
            prefix = dev.driver.name if dev.driver is not None else "pci"
        self.log(f"{prefix} {dev.name}: {text}", level)

    def user_write(self, data: bytes) -> int:
        """A write(2) to /dev/kmsg (devkmsg_write): one record, facility LOG_USER unless
        a `<N>` prefix names another; `<N>`'s low three bits are the level. One
        trailing newline is dropped, as printk drops it. Returns the count written."""
        if len(data) > PRINTKRB_RECORD_MAX:
            raise SysfsError(errno.EINVAL, "record too long")
        text = data.decode("latin-1")
        level, facility = DEFAULT_MESSAGE_LOGLEVEL, LOG_USER
        if text.startswith("<"):
            digits = 1
            while digits < len(text) and text[digits].isdigit():
                digits += 1
            if digits < len(text) and text[digits] == ">":
                u = int(text[1:digits] or "0") & 0xFFFFFFFF   # simple_strtoul: "<>" is 0
                level = u & 7
                if u >> 3:
                    facility = u >> 3
                text = text[digits + 1:]
        if text.endswith("\n"):
            text = text[:-1]
        self._append(level, max(self.uptime_usec(), self._last_usec + 1 if self.records else 0),
                     text, facility)
        return len(data)

    def _append(self, level: int, usec: int, text: str, facility: int = LOG_KERN) -> None:
        seq = self.next_seq
        rec = _new_record(Record, (level, seq, usec, text, facility))   # Record(...), without its __new__'s frame
        self.next_seq = seq + 1
        self._last_usec = usec
        self.records.append(rec)
        self._text_bytes += len(text)
        if self._text_bytes > self.capacity:
            self._drop()
        if self._listeners:
            for fn in list(self._listeners):
                fn(rec)

    def _count(self) -> None:
        """Where each record appended since the last look starts in the stream of /dev/kmsg
        records since boot: counted when looked at (stream_end, seq_at), not at every printk
        of thousands of VFs' probes. A record's length from the widths of its numbers, kept
        between records (printing them cost more than the rest of it)."""
        starts, records = self._starts, self.records
        if len(starts) == len(records):
            return
        end, seq_w, usec_w = self._end, self._seq_width, self._usec_width
        for i in range(len(starts), len(records)):
            level, seq, usec, text, facility = records[i]
            starts.append(end)
            if text.isascii() and text.isprintable() and "\\" not in text:
                if not seq_w[1] <= seq < seq_w[2]:
                    seq_w = _width(seq)
                if not usec_w[1] <= usec < usec_w[2]:
                    usec_w = _width(usec)
                prio = facility << 3 | level
                end += (1 if 0 <= prio < 10 else len(str(prio))) + seq_w[0] + usec_w[0] + 5 + len(text) + 1
            else:                                                   # "P,S,U,-;" text "\n", escaped
                end += _kmsg_len(facility << 3 | level, seq, usec, text)
        self._end, self._seq_width, self._usec_width = end, seq_w, usec_w

    @property
    def stream_end(self) -> int:
        """The length of every /dev/kmsg record since boot (what stat shows for /dev/kmsg)."""
        self._count()
        return self._end

    def _drop(self) -> None:
        """Overwrite the oldest records: down to 7/8 of the capacity at once, so that
        dropping costs O(1) per record."""
        self._count()                   # (their offsets stay counted in the stream)
        keep, n = self.capacity * 7 // 8, 0
        while self._text_bytes > keep and n < len(self.records) - 1:
            self._text_bytes -= len(self.records[n].text)
            n += 1
        del self.records[:n]
        del self._starts[:n]

    # --- readers --------------------------------------------------------------------------
    @property
    def first_seq(self) -> int:
        """The oldest record still in the buffer (next_seq when the buffer is empty)."""
        return self.records[0].seq if self.records else self.next_seq

    def get(self, seq: int) -> Record | None:
        """Record `seq` if it is still in the buffer."""
        i = seq - self.first_seq
        return self.records[i] if 0 <= i < len(self.records) else None

    def seq_at(self, offset: int) -> int:
        """The first record that starts at or after `offset` in the stream of /dev/kmsg
        records since boot (next_seq past the end; first_seq before the buffer)."""
        self._count()
        i = bisect.bisect_left(self._starts, offset)
        return self.first_seq + i

    def subscribe(self, fn: Callable[[Record], None]) -> Callable[[], None]:
        """Call fn(record) for every new record; returns the unsubscribe function."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def text(self) -> str:
        return "".join(r.dmesg() for r in self.records)
