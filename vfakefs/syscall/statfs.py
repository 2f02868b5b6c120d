"""statfs(2) and fstatfs(2) of the mount's trees as the kernel answers them: inside
`vfakefs run`, /sys is sysfs and /sys/kernel/debug is debugfs, not FUSE (issue #11).
systemd's sd-device refuses a /sys whose f_type is not SYSFS_MAGIC, so `udevadm info`
and driverctl need this; `stat -f /sys` shows it.

What a real sysfs answers (fs/libfs.c simple_statfs): the magic, 4 KiB blocks, no
blocks or inodes counted, names up to 255 bytes; f_flags are the mount's
(rw,nosuid,nodev,noexec,relatime)."""
from __future__ import annotations

import struct

SYSFS_MAGIC, DEBUGFS_MAGIC = 0x62656572, 0x64626720
ST_NOSUID, ST_NODEV, ST_NOEXEC, ST_RELATIME = 0x2, 0x4, 0x8, 0x1000
# struct statfs (x86_64): f_type, f_bsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree,
# f_fsid[2], f_namelen, f_frsize, f_flags, f_spare[4]
STATFS = struct.Struct("<qq5Q2iqqq4q")


def magic(path: str) -> int | None:
    """The filesystem magic the kernel reports for an absolute, normalised path in the
    run's namespace, or None for paths outside the mount's trees."""
    if path == "/sys/kernel/debug" or path.startswith("/sys/kernel/debug/"):
        return DEBUGFS_MAGIC
    if path == "/sys" or path.startswith("/sys/"):
        return SYSFS_MAGIC
    return None


def statfs(kind: int) -> bytes:
    flags = ST_NOSUID | ST_NODEV | ST_NOEXEC | ST_RELATIME
    return STATFS.pack(kind, 4096, 0, 0, 0, 0, 0, 0, 0, 255, 4096, flags, 0, 0, 0, 0)
