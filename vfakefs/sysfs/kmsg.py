"""The kernel log as files: /dev/kmsg (kernel/printk/printk.c, devkmsg_*) and
debugfs's vfakefs/dmesg.

/dev/kmsg is a character device (1,11) on a real system; FUSE cannot serve a
device node, so the mount shows a regular file, mode 0644, whose reads and
writes behave as the device's: each read returns one whole record
`prio,seq,usec,-;text\\n`, EINVAL when the buffer is too small for it, EPIPE
once when the reader's next record was overwritten; at the end EAGAIN with
O_NONBLOCK, else the read waits for the next record. A write is one record
(`<N>` sets the level, facility LOG_USER).

Seeking. FUSE handles lseek in the kernel and never tells the server, but
every read carries the file offset. Its size in stat is the length of every
record since boot in this format, and a record's offset is where it starts in
that stream, so the kernel's own lseek lands where devkmsg_llseek would:
SEEK_SET 0 -> the first record still in the buffer, SEEK_END -> after the last
record, SEEK_DATA 0 -> the first record (no `dmesg -C` here to move it). A
reader that reads on from where its last read ended continues with its next
record whatever the offset means (after EPIPE the two part ways).
"""
from __future__ import annotations

import errno

from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KernelLog
from vfakefs.sysfs.nodes import Attr, Stream


class KmsgReader:
    """One open of /dev/kmsg (devkmsg_user): the next record's sequence number and
    the file offset a read that goes on from the last one arrives with."""

    def __init__(self, log: KernelLog, nonblock: bool):
        self.log = log
        self.nonblock = nonblock
        self.seq = log.first_seq
        self.pos = 0

    def seek(self, off: int) -> None:
        log = self.log
        if off == 0:
            self.seq = log.first_seq                 # SEEK_SET (and SEEK_DATA without a clear)
        elif off >= log.stream_end:
            self.seq = log.next_seq                  # SEEK_END
        else:
            self.seq = max(log.seq_at(off), log.first_seq)
        self.pos = off

    def read(self, off: int, size: int) -> bytes | None:
        if off != self.pos:
            self.seek(off)
        log = self.log
        if self.seq < log.first_seq:                 # overwritten since the last read
            self.seq = log.first_seq
            raise SysfsError(errno.EPIPE)
        rec = log.get(self.seq)
        if rec is None:
            return None
        data = rec.kmsg_bytes()
        if len(data) > size:
            raise SysfsError(errno.EINVAL)
        self.seq += 1
        self.pos = off + len(data)
        return data

    def write(self, data: bytes) -> int:
        return self.log.user_write(data)


def _open(log: KernelLog, nonblock: bool) -> KmsgReader:
    return KmsgReader(log, nonblock)


def _subscribe(log: KernelLog, fn):
    return log.subscribe(lambda rec: fn())


DEV_KMSG = Stream("kmsg", _open, _subscribe, size=lambda log: log.stream_end, mode=0o644)
DMESG = Attr("dmesg", lambda log: log.text(), size=0)


def dev_entries(v) -> dict:
    """What /dev holds besides vfio/: kmsg."""
    return {"kmsg": DEV_KMSG.bind(v.m.kmsg)}


def debug_entries(v) -> dict:
    """What sys/kernel/debug/vfakefs/ holds of the log: dmesg, the whole log as dmesg prints it."""
    return {"dmesg": DMESG.bind(v.m.kmsg)}
