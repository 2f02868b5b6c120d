"""A daemon's state on disk (its pidfile and its log) and what is mounted where.

The pidfile, the log and the daemon's socket (syscall/server.py: where `vfakefs run`
hands over its seccomp listener) lie beside each other in the state directory
(/run/vfakefs, else /tmp/vfakefs-UID), named after the mountpoint's path ('/' -> '_').

- The daemon writes its pidfile once the mount answers and removes it when it
  exits: unmounted, SIGTERM, SIGINT, SIGHUP, or an error. Only SIGKILL leaves one;
  `vfakefs umount` or the next mount there clears it.
- The log holds what the daemon reports (internal errors, tracebacks). An empty
  log is removed when the daemon exits; one with something in it is kept until
  the next mount of the same mountpoint replaces it. It never grows past
  LOG_MAX bytes: it then moves to <name>.log.1 (the one older part kept).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import logging.handlers
import os
import re
import select
from pathlib import Path

LOG_MAX = 1 << 20
FSTYPE = "fuse.vfakefs"   # what the mount options fsname/subtype give in mountinfo
log = logging.getLogger("vfakefs")


def top_mount(real: str) -> tuple[str, str] | None:
    """(fstype, device "major:minor") of the mount on top at the absolute, resolved
    path real, per /proc/self/mountinfo (the last line for a path is the one on top).
    Reads no file under the path: a daemon that stats its own mount deadlocks."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            # mountinfo escapes space, tab, newline and backslash as \ooo
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point == real:
                found = (right.split()[0], fields[2])
    return found


class CappedLog(logging.handlers.RotatingFileHandler):
    """The daemon's log: LOG_MAX bytes and one older part. Output that does not pass
    through logging (a C library's message on stderr) goes to the same file: fds
    (1 and 2 in the daemon) follow the log to each new file."""

    def __init__(self, path: Path, fds=(1, 2), max_bytes: int = LOG_MAX):
        super().__init__(path, maxBytes=max_bytes, backupCount=1)
        self.fds = fds
        self._follow()

    def _follow(self) -> None:
        for fd in self.fds:
            os.dup2(self.stream.fileno(), fd)

    def doRollover(self) -> None:
        super().doRollover()
        self._follow()

    def parts(self) -> list[Path]:
        return [Path(self.baseFilename), Path(self.baseFilename + ".1")]


def mount_type(mnt: str) -> str | None:
    """The filesystem type mounted on top at mnt, per /proc/self/mountinfo."""
    top = top_mount(os.path.realpath(mnt))
    return top[0] if top else None


def _remove_log(path: Path) -> None:
    for p in (path, Path(f"{path}.1")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _owner(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """A running vfakefs process: not merely a zombie waiting to be reaped, nor
    another program that got the pid of a killed daemon."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"vfakefs" in f.read()
    except OSError:
        return False


def daemon_pid(pidfile: Path) -> int | None:
    """The pid of the live daemon the pidfile names, or None (none, or a stale one)."""
    pid = _owner(pidfile)
    return pid if pid is not None and alive(pid) else None


def wait_exit(pid: int, timeout: float) -> bool:
    """Whether process pid (not our child) has exited within timeout seconds:
    its pidfd becomes readable when it does."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        return bool(p.poll(timeout * 1000))
    finally:
        os.close(fd)


SUN_PATH_MAX = 107      # struct sockaddr_un's sun_path: 108 bytes with the NUL


def sock_path(pidfile: Path) -> Path:
    """The daemon's socket beside its pidfile (`vfakefs run`'s way to it). A deep mountpoint's
    name would not fit in sun_path (bind fails ENAMETOOLONG-like "path too long"): then the
    name is cut and a hash of the whole path keeps it unique."""
    full = pidfile.with_suffix(".sock")
    if len(os.fsencode(full)) <= SUN_PATH_MAX:
        return full
    digest = hashlib.sha1(os.fsencode(full)).hexdigest()[:16]
    room = SUN_PATH_MAX - len(os.fsencode(pidfile.parent)) - len(digest) - len("/-.sock")
    return pidfile.with_name(f"{pidfile.stem[:max(room, 0)]}-{digest}.sock")


def forget(pidfile: Path, logfile: Path) -> None:
    """Remove what a killed daemon left: its pidfile, its socket (`vfakefs run`'s way
    to it, beside the pidfile), and its log if empty."""
    if daemon_pid(pidfile) is not None:
        return
    for left in (pidfile, sock_path(pidfile)):
        with contextlib.suppress(FileNotFoundError):
            left.unlink()
    if all(not p.exists() or p.stat().st_size == 0 for p in (logfile, Path(f"{logfile}.1"))):
        _remove_log(logfile)


@contextlib.contextmanager
def daemon_state(pidfile: Path, logfile: Path | None):
    """Around the daemon's life: yields written(), which writes the pidfile (call it
    once the mount answers); removes the pidfile (if still ours) and an empty log
    on the way out, whatever the way. logfile None: logging goes to stderr."""
    pid = os.getpid()
    handler = None
    if logfile is None:
        logging.basicConfig(level=logging.INFO, format="vfakefs: %(message)s")
    else:
        # a new file, never the old one truncated: a lazily unmounted daemon of the
        # same mountpoint may still hold the old one open
        _remove_log(logfile)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        handler = CappedLog(logfile)
        handler.setFormatter(logging.Formatter("vfakefs: %(message)s"))
        logging.basicConfig(level=logging.INFO, handlers=[handler])

    def written() -> None:
        tmp = pidfile.with_name(f".{pidfile.name}.{pid}")
        tmp.write_text(f"{pid}\n")
        os.replace(tmp, pidfile)   # whole or absent, never half-written

    try:
        yield written
    except Exception:
        log.exception("the daemon ends on an error")
        raise
    finally:
        if _owner(pidfile) == pid:   # a later daemon of the same mountpoint may own it now
            with contextlib.suppress(FileNotFoundError):
                pidfile.unlink()
        if handler is not None:
            handler.flush()
            parts = handler.parts()
            mine = os.fstat(handler.stream.fileno())
            try:
                now = os.stat(parts[0])
                ours = (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)
            except FileNotFoundError:
                ours = False
            if ours and all(not p.exists() or p.stat().st_size == 0 for p in parts):
                _remove_log(logfile)
