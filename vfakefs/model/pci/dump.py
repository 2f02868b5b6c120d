"""Config-space dumps as a topology gives them: text, checked line by line.

Two formats, as the tools print them (and nothing else):

- `hexdump -C`: `00000010  00 00 26 fe 00 00 00 00  00 01 01 00 10 10 00 00  |..&.............|`,
  a `*` line for "the line above repeats", and the closing offset line;
- `lspci -xxx` / `lspci -xxxx`: `10: 00 00 26 fe 00 00 00 00 00 01 01 00 10 10 00 00`,
  with lspci's heading (`00:02.0 Ethernet controller: ...`) allowed as the first line.

Offsets are multiples of 16, climb, and stay inside the function's config space;
each data line holds 1 to 16 bytes. Anything else (a binary file, a text that is
not a dump) is a ValueError naming the line, so a topology's mistake is not
taken for an all-zero config space.
"""
from __future__ import annotations

import re

_HEXDUMP = re.compile(r"([0-9a-fA-F]{8})((?:\s{1,2}[0-9a-fA-F]{2}){1,16})?(?:\s+\|.{1,16}\|)?")
_LSPCI = re.compile(r"([0-9a-fA-F]{2,3}):((?:\s[0-9a-fA-F]{2}){1,16})")
_HEADING = re.compile(r"(?:[0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]\s")


def parse(data: bytes, size: int) -> bytes:
    """The `size` bytes of config space a dump describes (unlisted bytes read 0)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise ValueError(f"not a text hex dump (byte {data[e.start]:#04x} at offset {e.start})") from None
    out = bytearray(size)
    prev: bytes | None = None
    prev_off, repeat, count = -16, False, 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line == "*" and prev is not None:
            repeat = True
            continue
        m = _HEXDUMP.fullmatch(line) or _LSPCI.fullmatch(line)
        if m is None:
            if count == 0 and n == 1 and _HEADING.match(line):
                continue          # lspci's heading line
            raise ValueError(f"line {n} is not a hexdump -C or lspci -xxx line: {raw[:40]!r}")
        off = int(m.group(1), 16)
        if off % 16 or off <= prev_off:
            raise ValueError(f"line {n}: offset {off:#x} is not the next multiple of 16")
        if repeat:                # "*": the line above repeats up to this offset
            for o in range(prev_off + 16, min(off, size), 16):
                out[o:o + 16] = prev
            repeat = False
        if m.group(2) is None:    # hexdump's closing offset line
            if off > size:
                raise ValueError(f"line {n}: dump runs to {off:#x}, past the {size}-byte config space")
            prev_off = off - 16
            continue
        vals = bytes(int(x, 16) for x in m.group(2).split())
        if off + len(vals) > size:
            raise ValueError(f"line {n}: offset {off:#x} is past the {size}-byte config space")
        out[off:off + len(vals)] = vals
        prev, prev_off, count = vals.ljust(16, b"\0"), off, count + 1
    if count == 0:
        raise ValueError("no hex dump lines (expected hexdump -C or lspci -xxx output)")
    return bytes(out)


def span(data: bytes) -> int:
    """Where a dump ends: past its last data byte, or at hexdump's closing offset (0 when the
    text is no dump; parse() says why)."""
    end = 0
    for raw in data.decode("ascii", "replace").splitlines():
        m = _HEXDUMP.fullmatch(raw.strip()) or _LSPCI.fullmatch(raw.strip())
        if m is not None:
            off = int(m.group(1), 16)
            end = max(end, off if m.group(2) is None else off + len(m.group(2).split()))
    return end
