"""This process as VFIO's caller: its own memory at its real addresses, and its mm's
memlock accounting (the model's Mm) with RLIMIT_MEMLOCK and CAP_IPC_LOCK read from the
real process unless a test sets them.

A buffer (bytearray, mmap, numpy array, anything C-contiguous with the buffer protocol)
is registered once: the model then reaches it at the address C would see, so a vaddr means
what it means in C. Registration holds an export of the buffer (a bytearray cannot be
resized, an mmap not closed, while registered), which is what keeps a device write from
landing in freed memory; any other address is EFAULT, never a stray write.
"""
from __future__ import annotations

import bisect
import errno
import resource

import numpy as np

from vfakefs.model.errors import SysfsError
from vfakefs.model.vfio.memory import Mm

CAP_IPC_LOCK = 14


class _FromProcess:
    def __repr__(self) -> str:
        return "FROM_PROCESS"


FROM_PROCESS = _FromProcess()      # read the value from the real process when the kernel would


class _Region:
    __slots__ = ("start", "end", "array", "owner")

    def __init__(self, start: int, array: np.ndarray, owner):
        self.start, self.end, self.array, self.owner = start, start + array.size, array, owner


class SelfMemory:
    """A ProcessMemory over the buffers registered with it, at their addresses in this process."""

    def __init__(self):
        self.regions: list[_Region] = []          # by start address

    def register(self, buf) -> int:
        """The address of buf's first byte; registering the same object again is a no-op."""
        for r in self.regions:
            if r.owner is buf:
                return r.start
        view = memoryview(buf)
        if not view.c_contiguous:
            raise ValueError("vfio: a DMA buffer must be C-contiguous")
        array = np.frombuffer(view.cast("B") if view.format != "B" or view.ndim != 1 else view, dtype=np.uint8)
        if not array.size:
            raise ValueError("vfio: a DMA buffer cannot be empty")
        region = _Region(array.ctypes.data, array, buf)
        bisect.insort(self.regions, region, key=lambda r: r.start)
        return region.start

    def unregister(self, buf) -> None:
        """Let buf go (a device write there is EFAULT from now on): only once nothing maps it."""
        self.regions = [r for r in self.regions if r.owner is not buf]

    def address(self, buf) -> int | None:
        return next((r.start for r in self.regions if r.owner is buf), None)

    def _pieces(self, vaddr: int, n: int, write: bool):
        """(region, offset, length) covering [vaddr, vaddr+n); EFAULT for any byte outside
        the registered buffers, or in a read-only one when writing."""
        out, addr, end = [], vaddr, vaddr + n
        while addr < end:
            i = bisect.bisect_right(self.regions, addr, key=lambda r: r.start) - 1
            # overlapping registrations (a view of a registered buffer): take one reaching addr
            region = next((r for r in reversed(self.regions[:i + 1]) if r.start <= addr < r.end), None)
            if region is None or (write and not region.array.flags.writeable):
                raise SysfsError(errno.EFAULT)
            take = min(end, region.end) - addr
            out.append((region, addr - region.start, take))
            addr += take
        return out

    def read(self, vaddr: int, n: int) -> bytes:
        return b"".join(r.array[off:off + k].tobytes() for r, off, k in self._pieces(vaddr, n, False))

    def write(self, vaddr: int, data: bytes) -> None:
        src = np.frombuffer(data, dtype=np.uint8)
        done = 0
        for r, off, k in self._pieces(vaddr, len(data), True):
            r.array[off:off + k] = src[done:done + k]
            done += k

    def fault_in(self, vaddr: int, size: int, write: bool) -> None:
        """pin_user_pages(): every page there, writable when the device may write."""
        self._pieces(vaddr, size, write)


def _has_cap_ipc_lock() -> bool:
    """capable(CAP_IPC_LOCK): the effective set of this process."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    return False


class Process(Mm):
    """This process's mm: SelfMemory, locked_vm shared by every Container using it, and
    RLIMIT_MEMLOCK (soft limit, bytes) / CAP_IPC_LOCK read from the process each time the
    kernel would read them, unless given here (memlock_limit=None is unlimited)."""

    def __init__(self, memlock_limit: int | None | _FromProcess = FROM_PROCESS,
                 cap_ipc_lock: bool | _FromProcess = FROM_PROCESS):
        self._limit, self._cap = memlock_limit, cap_ipc_lock
        super().__init__(SelfMemory(), memlock_limit, cap_ipc_lock)

    @property
    def memlock_limit(self) -> int | None:
        if self._limit is FROM_PROCESS:
            soft = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
            return None if soft == resource.RLIM_INFINITY else soft
        return self._limit

    @memlock_limit.setter
    def memlock_limit(self, value) -> None:
        self._limit = value

    @property
    def cap_ipc_lock(self) -> bool:
        return _has_cap_ipc_lock() if self._cap is FROM_PROCESS else bool(self._cap)

    @cap_ipc_lock.setter
    def cap_ipc_lock(self, value) -> None:
        self._cap = value

    def register(self, buf) -> int:
        return self.memory.register(buf)

    def unregister(self, buf) -> None:
        self.memory.unregister(buf)
