"""The two exception types of the model.

SysfsError is what a kernel store() returns: an errno. The FUSE adapter turns it
into the same errno for the caller; nothing else in the model raises errnos.
TopologyError is a user's mistake in a topology file: it names file, device and
field, and the command line prints it without a traceback.
"""
import errno as _errno


def errno_named(name) -> int | None:
    """The errno a name such as "EBUSY" stands for (a user's rule or scenario names one),
    None for anything else."""
    n = getattr(_errno, name, None) if isinstance(name, str) and name.startswith("E") else None
    return n if isinstance(n, int) else None


class SysfsError(Exception):
    def __init__(self, errno: int, message: str = ""):
        super().__init__(message or _errno.errorcode.get(errno, str(errno)))
        self.errno = errno


class TopologyError(Exception):
    def __init__(self, source: str, where: str, message: str):
        super().__init__(f"{source}: {where}: {message}" if where else f"{source}: {message}")
        self.source, self.where, self.message = source, where, message
