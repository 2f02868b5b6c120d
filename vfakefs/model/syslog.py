"""syslog(2) / klogctl() on the simulated kernel log (kernel/printk/printk.c do_syslog):
what busybox dmesg and `dmesg -S` read instead of /dev/kmsg. Inside `vfakefs run` the
system-call adapter answers it from here, so no program sees the host's log.

Records come out as syslog_print_all() formats them with printk.time on:
`<prio>[    0.000000] text\\n`, prio = facility << 3 | level. READ_ALL starts at clear_seq
(moved by CLEAR and READ_CLEAR) and gives the newest records that fit in the buffer;
READ consumes from syslog_seq; where the kernel would wait for a new record, it returns 0."""
from __future__ import annotations

import errno

from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import LOG_BUF_LEN, KernelLog

(CLOSE, OPEN, READ, READ_ALL, READ_CLEAR, CLEAR, CONSOLE_OFF, CONSOLE_ON, CONSOLE_LEVEL,
 SIZE_UNREAD, SIZE_BUFFER) = range(11)
LOGLEVEL_MIN, LOGLEVEL_MAX = 1, 8        # CONSOLE_LEVEL's accepted range (MINIMUM_CONSOLE_LOGLEVEL ..)


def restricted(action: int) -> bool:
    """syslog_action_restricted() with dmesg_restrict=0 (reading /dev/kmsg needs no privilege
    here either): every action but READ_ALL and SIZE_BUFFER needs CAP_SYSLOG."""
    return action not in (READ_ALL, SIZE_BUFFER)


class Syslog:
    def __init__(self, log: KernelLog):
        self.log = log
        self.clear_seq = 0           # where READ_ALL starts (CLEAR moves it to the end)
        self.syslog_seq = 0          # what READ has handed out
        self.console_loglevel = 7

    @staticmethod
    def line(rec) -> bytes:
        t = "[%5d.%06d] " % (rec.usec // 1_000_000, rec.usec % 1_000_000)
        return "".join(f"<{rec.prio}>{t}{part}\n" for part in rec.text.split("\n")).encode("utf-8", "replace")

    def _from(self, seq: int) -> list:
        first = self.log.first_seq
        return self.log.records[max(seq, first) - first:]

    def call(self, action: int, length: int, privileged: bool) -> int | bytes:
        """The call's result: a number, or the bytes to copy to the caller's buffer (their
        count is the result). Raises SysfsError with do_syslog's errno."""
        if restricted(action) and not privileged:
            raise SysfsError(errno.EPERM)
        if action in (CLOSE, OPEN, CONSOLE_OFF, CONSOLE_ON):
            return 0
        if action in (READ, READ_ALL, READ_CLEAR):
            if length < 0:
                raise SysfsError(errno.EINVAL)
            if length == 0:
                return 0
            if action == READ:
                out = b""
                for rec in self._from(self.syslog_seq):
                    text = self.line(rec)
                    if out and len(out) + len(text) > length:
                        break
                    out += text
                    self.syslog_seq = rec.seq + 1
                return out[:length]
            lines = [self.line(r) for r in self._from(self.clear_seq)]
            total, keep = 0, 0
            for text in reversed(lines):             # the newest records that fit
                if total + len(text) > length:
                    break
                total += len(text)
                keep += 1
            out = b"".join(lines[len(lines) - keep:])
            if action == READ_CLEAR:
                self.clear_seq = self.log.next_seq
            return out
        if action == CLEAR:
            self.clear_seq = self.log.next_seq
            return 0
        if action == CONSOLE_LEVEL:
            if not LOGLEVEL_MIN <= length <= LOGLEVEL_MAX:
                raise SysfsError(errno.EINVAL)
            self.console_loglevel = max(length, 1)
            return 0
        if action == SIZE_UNREAD:
            return sum(len(self.line(r)) for r in self._from(self.syslog_seq))
        if action == SIZE_BUFFER:
            return LOG_BUF_LEN
        raise SysfsError(errno.EINVAL)
