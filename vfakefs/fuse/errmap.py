"""The one place model errors meet the FUSE protocol.

A SysfsError carries the kernel's errno and passes through unchanged; anything
else is a bug in vfakefs: logged with its traceback and answered EIO, so it can
never pass for a kernel answer.
"""
from __future__ import annotations

import errno
import logging

import pyfuse3

from vfakefs.model.errors import SysfsError

log = logging.getLogger("vfakefs")


def errno_of(e: Exception) -> int:
    """The errno that e, caught while serving a request, answers: a SysfsError's or a
    FUSEError's own; anything else is a bug, logged with its traceback (so call this
    in the except block) and answered EIO."""
    if isinstance(e, (SysfsError, pyfuse3.FUSEError)):
        return e.errno
    log.exception("internal error (answered EIO)")
    return errno.EIO


class kernel_errors:   # noqa: N801 - used as a function, like contextlib.suppress
    """`with kernel_errors():` turns what the body raises into the FUSEError of its errno
    (errno_of); a FUSEError and what is no Exception (trio's Cancelled) pass unchanged.
    A class, not a @contextmanager: it runs on every open and costs a few calls less."""
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, e, tb) -> bool:
        if kind is None or not issubclass(kind, Exception) or issubclass(kind, pyfuse3.FUSEError):
            return False
        raise pyfuse3.FUSEError(errno_of(e)) from None
