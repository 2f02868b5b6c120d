"""The user program's memory as VFIO sees it: what MAP_DMA pins and device DMA lands in."""
from __future__ import annotations

import errno
from typing import Protocol

from vfakefs.model.errors import SysfsError


class ProcessMemory(Protocol):
    """A process's address space (the seccomp adapter backs it with process_vm_readv/writev)."""

    def read(self, vaddr: int, n: int) -> bytes: ...

    def write(self, vaddr: int, data: bytes) -> None: ...


class BytesMemory:
    """A bytearray mapped at `base`: a process's memory for tests; EFAULT outside it."""

    def __init__(self, base: int, size: int):
        self.base, self.buf = base, bytearray(size)

    def _off(self, vaddr: int, n: int) -> int:
        off = vaddr - self.base
        if off < 0 or off + n > len(self.buf):
            raise SysfsError(errno.EFAULT)
        return off

    def read(self, vaddr: int, n: int) -> bytes:
        off = self._off(vaddr, n)
        return bytes(self.buf[off: off + n])

    def write(self, vaddr: int, data: bytes) -> None:
        off = self._off(vaddr, len(data))
        self.buf[off: off + len(data)] = data
