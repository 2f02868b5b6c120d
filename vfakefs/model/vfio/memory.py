"""The user program's memory as VFIO sees it: what MAP_DMA pins and device DMA lands in,
and the process's mm as type1 charges it (locked_vm against RLIMIT_MEMLOCK)."""
from __future__ import annotations

import errno
from typing import Protocol

from vfakefs.model.errors import SysfsError


class ProcessMemory(Protocol):
    """A process's address space (the seccomp adapter backs it with process_vm_readv/writev).
    Either raises SysfsError(EFAULT) for an address the process has not mapped. It may also
    have fault_in(vaddr, size, write) to check a whole range for MAP_DMA (type1.fault_in)."""

    def read(self, vaddr: int, n: int) -> bytes: ...

    def write(self, vaddr: int, data: bytes) -> None: ...


PAGE = 4096


class Mm:
    """The mm_struct of a process that maps DMA: its memory, mm->locked_vm (pages, shared
    by every container the process uses), RLIMIT_MEMLOCK in bytes (None: unlimited) and
    whether it has CAP_IPC_LOCK. type1 charges each mapping to the mm of the process that
    made it (vfio_dma->mm) and gives the pages back to that mm on unmap."""

    def __init__(self, memory: ProcessMemory | None = None, memlock_limit: int | None = None,
                 cap_ipc_lock: bool = False):
        self.memory, self.memlock_limit, self.cap_ipc_lock = memory, memlock_limit, cap_ipc_lock
        self.locked_vm = 0

    def limit_pages(self) -> int | None:
        """rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT, read when pinning (None: RLIM_INFINITY)."""
        return None if self.memlock_limit is None else self.memlock_limit // PAGE

    def account(self, npage: int, lock_cap: bool) -> None:
        """__account_locked_vm(): a charge past the limit without CAP_IPC_LOCK is ENOMEM
        and changes nothing; a refund never takes locked_vm below zero."""
        if npage > 0:
            limit = self.limit_pages()
            if not lock_cap and limit is not None and self.locked_vm + npage > limit:
                raise SysfsError(errno.ENOMEM)
            self.locked_vm += npage
        else:
            self.locked_vm -= min(-npage, self.locked_vm)


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
