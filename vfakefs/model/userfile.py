"""Files a user names to the daemon or the CLI (a topology, a config dump, a card to plug,
a scenario): read whole, but only regular files and only up to MAX_FILE, so /dev/zero, a
FIFO or a huge file named by mistake is an error, never a daemon that waits for ever or
runs out of memory."""
from __future__ import annotations

import errno
import os
import stat

MAX_FILE = 16 << 20     # far above any machine description (seed-vtd's is 20 KiB)


def read_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes; OSError (with a strerror to show) for anything else."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just after)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > MAX_FILE:
                raise OSError(errno.EFBIG, f"larger than {MAX_FILE >> 20} MiB")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
