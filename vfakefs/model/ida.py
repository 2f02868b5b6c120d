"""Ida: the kernel's ID allocator (lib/idr.c ida_alloc): the lowest free number, reused after free."""
from __future__ import annotations

import heapq


class Ida:
    def __init__(self, reserved=()):
        self.reserved = set(reserved)   # numbers never handed out by alloc() (pinned elsewhere)
        self._next = 0                  # every number below it is in use or in _freed
        self._freed: list[int] = []     # a heap of released numbers below _next
        self._used: set[int] = set()

    def alloc(self) -> int:
        while self._freed:
            n = heapq.heappop(self._freed)
            if n not in self._used:
                break
        else:
            while self._next in self._used or self._next in self.reserved:
                self._next += 1
            n = self._next
            self._next += 1
        self._used.add(n)
        return n

    def take(self, n: int) -> None:
        """Mark a number used that was chosen elsewhere (a pinned group, a named netdev)."""
        self._used.add(n)

    def free(self, n: int) -> None:
        self._used.discard(n)
        if n < self._next and n not in self.reserved:
            heapq.heappush(self._freed, n)

    def __contains__(self, n: int) -> bool:
        return n in self._used
