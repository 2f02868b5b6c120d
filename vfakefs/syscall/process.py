"""A trapped program as the daemon reaches it: its memory (process_vm_readv/writev,
which need no /proc/PID/mem open per access), its files (pidfd_getfd), its limits."""
from __future__ import annotations

import ctypes
import errno
import os
import resource

from vfakefs.model.errors import SysfsError

_libc = ctypes.CDLL(None, use_errno=True)
NR_pidfd_open, NR_pidfd_getfd = 434, 438
CAP_IPC_LOCK = 14
PAGE = 4096


class _iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


# No argtypes: ctypes' conversion of declared arguments took half of each call's 5 us.
# Every argument is passed as a ctypes object of its C type instead.
_vm_readv, _vm_writev = _libc.process_vm_readv, _libc.process_vm_writev
for _f in (_vm_readv, _vm_writev):
    _f.restype = ctypes.c_ssize_t
_ONE, _NO_FLAGS = ctypes.c_ulong(1), ctypes.c_ulong(0)


# one daemon thread does all transfers: one scratch buffer and one iovec pair serve them
SCRATCH = 65536
_scratch = ctypes.create_string_buffer(SCRATCH)
_scratch_addr = ctypes.addressof(_scratch)
_local, _remote = _iovec(), _iovec()
_local_p, _remote_p = ctypes.byref(_local), ctypes.byref(_remote)


def _address(data: bytes | bytearray) -> int:
    """Where data's bytes are, without copying them (a device write of a megabyte
    copied once more cost as much as the transfer). Valid while data lives."""
    if isinstance(data, bytes):
        return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    return ctypes.addressof((ctypes.c_char * len(data)).from_buffer(data))


class ProcMemory:
    """One process's address space (model/vfio/memory.py's ProcessMemory): what MAP_DMA
    pins and device DMA reaches. A range that is not mapped there is EFAULT."""

    def __init__(self, pid: int):
        self.pid, self._pid = pid, ctypes.c_int(pid)

    def _xfer(self, fn, vaddr: int, addr: int, n: int) -> None:
        _local.base, _local.len, _remote.base, _remote.len = addr, n, vaddr, n
        if fn(self._pid, _local_p, _ONE, _remote_p, _ONE, _NO_FLAGS) != n:
            raise SysfsError(errno.EFAULT)

    def read(self, vaddr: int, n: int) -> bytes:
        if n == 0:
            return b""
        if n <= SCRATCH:                       # the ioctls' structs: no allocation per call
            self._xfer(_vm_readv, vaddr, _scratch_addr, n)
            return ctypes.string_at(_scratch_addr, n)
        buf = ctypes.create_string_buffer(n)
        self._xfer(_vm_readv, vaddr, ctypes.addressof(buf), n)
        return buf.raw

    def write(self, vaddr: int, data: bytes) -> None:
        if data:
            n = len(data)
            if n <= SCRATCH:
                ctypes.memmove(_scratch_addr, data, n)
                self._xfer(_vm_writev, vaddr, _scratch_addr, n)
                return
            if not isinstance(data, (bytes, bytearray)):
                data = bytes(data)             # a memoryview or array: one copy, kept alive here
            self._xfer(_vm_writev, vaddr, _address(data), n)

    def read_string(self, addr: int, limit: int = 4096) -> bytes:
        """A NUL-terminated string, read page by page (the next page may be unmapped);
        EFAULT past the mapping, ENAMETOOLONG without a NUL within limit."""
        out = b""
        while len(out) < limit:
            chunk = PAGE - (addr + len(out)) % PAGE
            part = self.read(addr + len(out), min(chunk, limit - len(out)))
            end = part.find(b"\0")
            if end >= 0:
                return out + part[:end]
            out += part
        raise SysfsError(errno.ENAMETOOLONG)


def tgid(tid: int) -> int:
    """The process a trapped thread belongs to (memory, limits and files are its)."""
    with open(f"/proc/{tid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"Tgid:"):
                return int(line.split()[1])
    raise ProcessLookupError(tid)


def identity(pid: int) -> tuple[int, int]:
    """(pid, start time): a process, even after its pid is reused."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return pid, int(f.read().rpartition(b")")[2].split()[19])


def memlock(pid: int) -> tuple[int | None, bool]:
    """(RLIMIT_MEMLOCK in bytes or None when unlimited, whether it has CAP_IPC_LOCK):
    what vfio_pin_pages_remote() checks."""
    soft, _hard = resource.prlimit(pid, resource.RLIMIT_MEMLOCK)
    cap = False
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"CapEff:"):
                cap = bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    return (None if soft == resource.RLIM_INFINITY else soft), cap


def fetch_fd(pid: int, fd: int) -> int:
    """A copy of the process's file fd in the daemon (pidfd_getfd): EBADF if not open."""
    pidfd = _libc.syscall(NR_pidfd_open, pid, 0)
    if pidfd < 0:
        raise OSError(ctypes.get_errno(), "pidfd_open")
    try:
        mine = _libc.syscall(NR_pidfd_getfd, pidfd, fd, 0)
        if mine < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        return mine
    finally:
        os.close(pidfd)
