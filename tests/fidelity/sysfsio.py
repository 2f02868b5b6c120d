"""A stand-in for the capture's C helper `sysfsio`, plus a `dmesg` for a mount.

Self-contained (standard library only): the replay runs it as
`python sysfsio.py SUBCOMMAND ...` from bash, so a capture's command line
`sysfsio asuser 65534 65534 hexdump -C /sys/...` runs verbatim once its paths
are rewritten. The output format copies what the C helper printed in the
captures:

    open("/sys/bus/pci/devices/0000:02:00.0/config", O_RDONLY) = 3
    read(3, buf, 4096) = 4096
    read(3, buf, 4096) = 0
    total=4096

Subcommands:
  asuser UID GID CMD...     drop to UID/GID (no supplementary groups), exec CMD;
                            CMD may itself be `sysfsio ...` (run in-process).
  rawread PATH BUFSIZE      open O_RDONLY, read BUFSIZE-byte chunks to EOF/error.
                            As in the captures, a short read is not printed
                            (only full-size reads, EOF and errors are), but it
                            counts in total=. rc 1 if open or a read failed.
  write PATH DATA           open O_WRONLY, one write() of DATA (C escapes such
                            as \\n expanded), close. rc 1 if open/write failed.
  kmsg PATH                 read a /dev/kmsg-style file (records
                            "prio,seq,usec,flags;text") and print them the way
                            dmesg does: "[%5d.%06d] text". Non-blocking, stops
                            at EOF, EAGAIN or after 5 seconds.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sys


def _err(e: int) -> str:
    return f"-1 {errno.errorcode.get(e, str(e))} ({os.strerror(e)})"


def _c_escape(data: bytes) -> str:
    out = []
    for b in data:
        c = chr(b)
        if c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def _c_unescape(text: str) -> bytes:
    out = bytearray()
    i = 0
    simple = {"n": 10, "t": 9, "r": 13, "0": 0, "\\": 92, "'": 39, '"': 34}
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            n = text[i + 1]
            if n == "x" and i + 4 <= len(text):
                out.append(int(text[i + 2:i + 4], 16))
                i += 4
                continue
            if n in simple:
                out.append(simple[n])
                i += 2
                continue
        out.extend(c.encode())
        i += 1
    return bytes(out)


def rawread(path: str, bufsize: int) -> int:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        print(f'open("{path}", O_RDONLY) = {_err(e.errno)}')
        print("total=0")
        return 1
    print(f'open("{path}", O_RDONLY) = {fd}')
    total = 0
    rc = 0
    while True:
        try:
            data = os.read(fd, bufsize)
        except OSError as e:
            print(f"read({fd}, buf, {bufsize}) = {_err(e.errno)}")
            rc = 1
            break
        total += len(data)
        if len(data) == bufsize or not data:
            print(f"read({fd}, buf, {bufsize}) = {len(data)}")
        if not data:
            break
    os.close(fd)
    print(f"total={total}")
    return rc


def write(path: str, text: str) -> int:
    data = _c_unescape(text)
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        print(f'open("{path}", O_WRONLY) = {_err(e.errno)}')
        return 1
    print(f'open("{path}", O_WRONLY) = {fd}')
    rc = 0
    try:
        n = os.write(fd, data)
        print(f'write({fd}, "{_c_escape(data)}", {len(data)}) = {n}')
    except OSError as e:
        print(f'write({fd}, "{_c_escape(data)}", {len(data)}) = {_err(e.errno)}')
        rc = 1
    try:
        os.close(fd)
        print(f"close({fd}) = 0")
    except OSError as e:
        print(f"close({fd}) = {_err(e.errno)}")
        rc = 1
    return rc


def _timeout(signum, frame):  # pragma: no cover - only on a hung read
    raise TimeoutError


def kmsg(path: str) -> int:
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(5)
    chunks: list[bytes] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        print(f"dmesg: read kernel buffer failed: {os.strerror(e.errno)}", file=sys.stderr)
        return 1
    try:
        for _ in range(100000):
            try:
                data = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:  # record overwritten: go on
                    continue
                break
            if not data:
                break
            chunks.append(data if data.endswith(b"\n") else data + b"\n")
    except TimeoutError:
        pass
    finally:
        signal.alarm(0)
        os.close(fd)
    for line in format_records(b"".join(chunks).decode(errors="replace")):
        print(line)
    return 0


def format_records(text: str) -> list[str]:
    """/dev/kmsg records ("prio,seq,usec,flags;text" lines) as dmesg prints
    them: "[%5d.%06d] text". Dictionary continuation lines are dropped; a line
    that is not a record is kept as it is."""
    out = []
    for raw in text.splitlines():
        if raw.startswith(" "):  # dictionary continuation line (SUBSYSTEM=...)
            continue
        head, sep, text = raw.partition(";")
        fields = head.split(",")
        if not sep or len(fields) < 3 or not fields[2].isdigit():
            out.append(raw)
            continue
        usec = int(fields[2])
        text = text.replace("\\x0a", "\n")
        out.append(f"[{usec // 1000000:5d}.{usec % 1000000:06d}] {text}")
    return out


def asuser(uid: int, gid: int, argv: list[str]) -> int:
    # Resolve the program before dropping privileges: afterwards this
    # interpreter may no longer be able to import anything (its stdlib can
    # live under a directory uid 65534 cannot read).
    prog = None if argv[0] == "sysfsio" else shutil.which(argv[0])
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if argv[0] == "sysfsio":
        return main(argv[1:])
    if prog is None:
        print(f"sysfsio: {argv[0]}: command not found", file=sys.stderr)
        return 127
    sys.stdout.flush()
    try:
        os.execv(prog, argv)
    except OSError as e:
        print(f"sysfsio: exec {argv[0]}: {os.strerror(e.errno)}", file=sys.stderr)
        return 127


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "asuser":
        return asuser(int(args[0]), int(args[1]), args[2:])
    if cmd == "rawread":
        return rawread(args[0], int(args[1]) if len(args) > 1 else 4096)
    if cmd == "write":
        return write(args[0], args[1] if len(args) > 1 else "")
    if cmd == "kmsg":
        return kmsg(args[0])
    print(f"sysfsio: unknown subcommand {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    rc = main(sys.argv[1:])
    sys.stdout.flush()
    sys.exit(rc)
