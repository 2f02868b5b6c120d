"""Telling a blocked FUSE read that its reader was signalled.

pyfuse3 drops FUSE_INTERRUPT, so a read waiting for the next /dev/kmsg record
would keep its reader (even a killed one) until a record came. A waiting read
asks /proc now and then instead."""
from __future__ import annotations

import os


def signalled(pid: int) -> bool:
    """Whether a thread of the process that has thread `pid` has a signal pending that
    it does not block: a reader waiting in a FUSE read is told of it only by a
    FUSE_INTERRUPT, which pyfuse3 drops, and cannot even die before the read is
    answered (a fatal signal shows as a pending SIGKILL)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            tgid = next(line.split()[1] for line in f if line.startswith("Tgid:"))
        tasks = os.listdir(f"/proc/{tgid}/task")
    except (OSError, StopIteration):
        return False   # gone: whoever inherited the descriptor is still reading
    for tid in tasks:
        try:
            with open(f"/proc/{tgid}/task/{tid}/status") as f:
                masks = {k: int(v, 16) for k, _, v in (line.partition(":\t") for line in f)
                         if k in ("SigPnd", "ShdPnd", "SigBlk")}
        except (OSError, ValueError):
            continue
        if (masks.get("SigPnd", 0) | masks.get("ShdPnd", 0)) & ~masks.get("SigBlk", 0):
            return True
    return False
