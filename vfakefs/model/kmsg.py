"""The simulated kernel log: printk records with sequence numbers and timestamps."""
from __future__ import annotations

import time
from dataclasses import dataclass

KERN_ERR, KERN_WARNING, KERN_NOTICE, KERN_INFO, KERN_DEBUG = 3, 4, 5, 6, 7


@dataclass(frozen=True, slots=True)
class Record:
    level: int
    seq: int
    usec: int
    text: str

    def kmsg(self) -> str:
        """/dev/kmsg's format: `prio,seq,usec,flags;message` (facility 0 = kernel)."""
        return f"{self.level},{self.seq},{self.usec},-;{self.text}\n"

    def dmesg(self) -> str:
        return "[%5d.%06d] %s\n" % (self.usec // 1_000_000, self.usec % 1_000_000, self.text)


class KernelLog:
    def __init__(self, clock=time.monotonic):
        self.records: list[Record] = []
        self._clock = clock
        self._t0 = clock()
        self._boot_usec = 0

    def boot(self, text: str, level: int = KERN_INFO) -> None:
        """A boot-time line: timestamps climb in small steps from zero."""
        self._boot_usec += 317
        self._append(level, self._boot_usec, text)

    def log(self, text: str, level: int = KERN_INFO) -> None:
        usec = self.uptime_usec()
        last = self.records[-1].usec if self.records else 0
        self._append(level, max(usec, last + 1), text)

    def uptime_usec(self) -> int:
        return self._boot_usec + int((self._clock() - self._t0) * 1e6) + 1_000_000

    def dev(self, dev, text: str, level: int = KERN_INFO, prefix: str | None = None) -> None:
        """dev_info()'s form: the bound driver's name (else the bus's), the device, the message:
        `pci 0000:03:10.0: ...`, `nvme 0000:01:00.0: ...`."""
        if prefix is None:
            prefix = dev.driver.name if dev.driver is not None else "pci"
        self.log(f"{prefix} {dev.name}: {text}", level)

    def _append(self, level: int, usec: int, text: str) -> None:
        self.records.append(Record(level, len(self.records), usec, text))

    def text(self) -> str:
        return "".join(r.dmesg() for r in self.records)
