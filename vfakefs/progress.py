"""Progress of a long CLI operation (recording a machine, a timeline, thousands of VFs),
as one line on stderr that redraws itself, like apt's or rsync's.

Only on a terminal: when stderr is a pipe or a file (CI logs, tests) nothing is
drawn until done(), which writes the final line once, so logs stay readable.
"""
from __future__ import annotations

import sys
import time

MIN_INTERVAL = 0.1     # redraw at most ten times a second: a fast loop must not pay for its bar


class Progress:
    def __init__(self, label: str, total: int | None = None, stream=None):
        self.label, self.total, self.n = label, total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.start = self._last = time.monotonic()

    def update(self, n: int | None = None, what: str = "") -> None:
        """n items done so far (one more when None); `what` names the current one."""
        self.n = self.n + 1 if n is None else n
        now = time.monotonic()
        if self.tty and now - self._last >= MIN_INTERVAL:
            self._last = now
            self.stream.write("\r\033[K" + self._line(what))
            self.stream.flush()

    def done(self, what: str = "done") -> None:
        line = self._line(f"{what} in {time.monotonic() - self.start:.1f} s")
        self.stream.write(("\r\033[K" if self.tty else "") + line + "\n")
        self.stream.flush()

    def _line(self, what: str) -> str:
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" {100 * self.n // self.total:3d}%" if self.total else ""
        return f"{self.label}: {count}{pct}" + (f" {what}" if what else "")
