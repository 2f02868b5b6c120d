"""VFIO_DEVICE_FEATURE on a vfio-pci device fd (drivers/vfio/vfio_main.c
vfio_ioctl_device_feature, include/linux/vfio.h vfio_check_feature, vfio_pci_core.c
vfio_pci_core_ioctl_feature).

The ioctl takes struct vfio_device_feature {u32 argsz; u32 flags; u8 data[]}: the low 16
bits of flags name the feature, GET/SET/PROBE say what to do with it. vfio-pci has no
migration or dirty-logging ops, so those features are ENOTTY; the VF token and the three
low-power features are vfio-pci's own.

Low power is modelled as its state (pm_runtime_engaged and the wake-up eventfd) with the
kernel's checks; the device is taken to suspend as soon as the feature engages it (runtime
PM allowed, nothing else holding it) and to resume at its next VFIO_DEVICE_FEATURE, which
is when the kernel's ioctl wrapper (vfio_device_pm_runtime_get) would wake it: the wake-up
eventfd is then signalled and low power left. The other device ioctls and region I/O do
not wake it here, and BAR mmaps do not fault while it sleeps.
"""
from __future__ import annotations

import errno
import struct
import uuid

from vfakefs.model.errors import SysfsError
from vfakefs.model.vfio.intrs import _eventfd

# include/uapi/linux/vfio.h
VFIO_DEVICE_FEATURE_MASK = 0xFFFF
VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_SET, VFIO_DEVICE_FEATURE_PROBE = 1 << 16, 1 << 17, 1 << 18
VFIO_DEVICE_FEATURE_PCI_VF_TOKEN = 0
VFIO_DEVICE_FEATURE_MIGRATION, VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE = 1, 2
VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP = 3, 4
VFIO_DEVICE_FEATURE_LOW_POWER_EXIT = 5
VFIO_DEVICE_FEATURE_DMA_LOGGING_START, VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP = 6, 7
VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, VFIO_DEVICE_FEATURE_MIG_DATA_SIZE = 8, 9
FEATURE_MINSZ = 8               # offsetofend(struct vfio_device_feature, flags)
UUID_SIZE = 16
WAKEUP_ENTRY_SIZE = 8           # struct vfio_device_low_power_entry_with_wakeup {s32 fd; u32 reserved}

# vfio core features that need mig_ops or log_ops, which vfio-pci itself does not have
_CORE_FEATURES = (VFIO_DEVICE_FEATURE_MIGRATION, VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
                  VFIO_DEVICE_FEATURE_DMA_LOGGING_START, VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
                  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, VFIO_DEVICE_FEATURE_MIG_DATA_SIZE)


def check_feature(flags: int, argsz: int, supported_ops: int, minsz: int) -> bool:
    """vfio_check_feature(): EINVAL for an operation the feature lacks; False for a PROBE
    (answered 0, nothing done); EINVAL without GET or SET, or data shorter than minsz."""
    if flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET) & ~supported_ops:
        raise SysfsError(errno.EINVAL)
    if flags & VFIO_DEVICE_FEATURE_PROBE:
        return False
    if not flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET):
        raise SysfsError(errno.EINVAL)
    if argsz < minsz:
        raise SysfsError(errno.EINVAL)
    return True


def _read(data, n: int) -> bytes:
    """copy_from_user() of the first n bytes of data[]: bytes, or a reader (the adapter's
    view of the program's memory, read only when the kernel would read it)."""
    raw = data(n) if callable(data) else bytes(data[:n])
    if len(raw) < n:
        raise SysfsError(errno.EFAULT)
    return raw


def device_feature(vdev, flags: int, argsz: int, data=b"", fdget=None) -> None:
    """vfio_ioctl_device_feature(), in its order of checks. data: data[] (bytes or a
    reader); fdget: what an fd number in data[] is (an eventfd object, else as intrs takes it)."""
    vdev.runtime_resume()                              # vfio_device_pm_runtime_get()
    if argsz < FEATURE_MINSZ:
        raise SysfsError(errno.EINVAL)
    if flags & ~(VFIO_DEVICE_FEATURE_MASK | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET
                 | VFIO_DEVICE_FEATURE_PROBE):
        raise SysfsError(errno.EINVAL)
    if (not flags & VFIO_DEVICE_FEATURE_PROBE and flags & VFIO_DEVICE_FEATURE_SET
            and flags & VFIO_DEVICE_FEATURE_GET):
        raise SysfsError(errno.EINVAL)                 # GET and SET only together with PROBE
    feature, size = flags & VFIO_DEVICE_FEATURE_MASK, argsz - FEATURE_MINSZ
    if feature in _CORE_FEATURES:
        raise SysfsError(errno.ENOTTY)                 # no mig_ops / log_ops
    if feature == VFIO_DEVICE_FEATURE_PCI_VF_TOKEN:
        _feature_token(vdev, flags, size, data)
    elif feature == VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY:
        if check_feature(flags, size, VFIO_DEVICE_FEATURE_SET, 0):
            _pm_entry(vdev, None)
    elif feature == VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP:
        if check_feature(flags, size, VFIO_DEVICE_FEATURE_SET, WAKEUP_ENTRY_SIZE):
            fd, _reserved = struct.unpack("<iI", _read(data, WAKEUP_ENTRY_SIZE))
            if fd < 0:
                raise SysfsError(errno.EINVAL)
            efd = _eventfd(fdget(fd) if fdget is not None else fd)   # eventfd_ctx_fdget: EBADF, EINVAL
            _pm_entry(vdev, efd)
    elif feature == VFIO_DEVICE_FEATURE_LOW_POWER_EXIT:
        if check_feature(flags, size, VFIO_DEVICE_FEATURE_SET, 0):
            vdev.runtime_pm_exit()
    else:
        raise SysfsError(errno.ENOTTY)                 # vfio_pci_core_ioctl_feature's default


def _feature_token(vdev, flags: int, size: int, data) -> None:
    """vfio_pci_core_feature_token(): only a PF on vfio-pci has one (ENOTTY); SET only,
    16 bytes of UUID; it replaces the token whether or not VFs are in use."""
    tok = vdev.dev.vf_token
    if tok is None:
        raise SysfsError(errno.ENOTTY)
    if check_feature(flags, size, VFIO_DEVICE_FEATURE_SET, UUID_SIZE):
        tok.uuid = uuid.UUID(bytes=_read(data, UUID_SIZE))


def _pm_entry(vdev, efd) -> None:
    """vfio_pci_runtime_pm_entry(): EINVAL when already engaged."""
    if vdev.pm_runtime_engaged:
        raise SysfsError(errno.EINVAL)
    vdev.pm_runtime_engaged, vdev.pm_wake_eventfd = True, efd
