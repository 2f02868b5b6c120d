"""The one place model errors meet the FUSE protocol.

A SysfsError carries the kernel's errno and passes through unchanged; anything
else is a bug in vfakefs: logged with its traceback and answered EIO, so it can
never pass for a kernel answer.
"""
from __future__ import annotations

import errno
import logging
from contextlib import contextmanager

import pyfuse3

from vfakefs.model.errors import SysfsError

log = logging.getLogger("vfakefs")


@contextmanager
def kernel_errors():
    try:
        yield
    except SysfsError as e:
        raise pyfuse3.FUSEError(e.errno) from None
    except pyfuse3.FUSEError:
        raise
    except Exception:
        log.exception("internal error (answered EIO)")
        raise pyfuse3.FUSEError(errno.EIO) from None
