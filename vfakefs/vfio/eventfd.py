"""Eventfds for SET_IRQS: real eventfd(2) file descriptors, so a test select()s and
os.eventfd_read()s them as a C program would.

SET_IRQS takes a reference to the eventfd, as eventfd_ctx_fdget() does: the model keeps
a dup of the descriptor, so closing (or reusing) the program's fd number does not
change where the interrupt goes; the dup closes when the model lets the vector go.
"""
from __future__ import annotations

import os
import select
import weakref


CLOSED_FD = 0x7FFFFFFF                   # INT_MAX: past any RLIMIT_NOFILE, so never open


class EventFd:
    """eventfd(initval, flags); non-blocking and close-on-exec unless told otherwise."""

    def __init__(self, initval: int = 0, flags: int = os.EFD_CLOEXEC | os.EFD_NONBLOCK):
        self.fd = os.eventfd(initval, flags)

    def fileno(self) -> int:
        return self.fd

    def signal(self) -> None:
        os.eventfd_write(self.fd, 1)

    def read(self) -> int:
        """The counter, reset (eventfd_read; BlockingIOError at zero when non-blocking)."""
        return os.eventfd_read(self.fd)

    def readable(self) -> bool:
        return bool(select.select([self.fd], [], [], 0)[0])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "EventFd":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EventfdCtx:
    """struct eventfd_ctx: the kernel's own reference to an eventfd, signalled by the device."""

    def __init__(self, fd: int):
        self.fd = os.dup(fd)
        self._close = weakref.finalize(self, os.close, self.fd)

    def signal(self) -> None:
        os.eventfd_write(self.fd, 1)


class NotAnEventfd:
    """An open file that is no eventfd: the model answers EINVAL for it (no signal())."""


def _is_eventfd(fd: int) -> bool:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return any(line.startswith("eventfd-count:") for line in f)


def eventfd_arg(x):
    """One DATA_EVENTFD element as the model takes it: -1 / None de-assign, an EventFd or an
    fd number becomes an EventfdCtx, a closed fd number stays a number (the model's EBADF
    at the kernel's moment), any other object with signal() passes as it is."""
    if x is None or isinstance(x, int) and x < 0:
        return x
    fd = x if isinstance(x, int) else (x.fileno() if isinstance(x, EventFd) else None)
    if fd is None:
        return x
    if fd < 0:
        return CLOSED_FD                 # a closed EventFd: a number no open file has
    try:
        os.fstat(fd)
    except OSError:
        return fd
    return EventfdCtx(fd) if _is_eventfd(fd) else NotAnEventfd()
