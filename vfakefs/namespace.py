"""`vfakefs run`'s private mount namespace, made with the system calls themselves
(unshare(2), mount(2)) in the program's process before it execs: the mount's trees
over /sys, /dev/vfio, /dev/kmsg, /proc/cmdline, /proc/interrupts and /proc/iomem, the host's own
never touched.

Where the host has no /dev/vfio the namespace gets its own /dev (a tmpfs with every
host entry bound back), so nothing is ever created in the host's /dev. /dev/ptmx is
the exception: opening it finds its devpts instance by the name "pts" beside it in
the same mount (the kernel's devpts_acquire/path_pts), which a bind of the host's
node alone lacks (every pty would fail ENOENT). So the private /dev gets the host's
devpts at pts (bound) and a ptmx node of its own beside it, as the host's /dev has
them: the same ptys, the caller's terminal still /dev/pts/N. A host whose ptmx is a
symlink to pts/ptmx (a container) keeps the symlink.

Done in Python rather than by a shell script of mount(8) calls: a host /dev of a
hundred entries took a hundred mount processes, a second per `vfakefs run`."""
from __future__ import annotations

import ctypes
import os
import stat

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x1000, 0x4000, 1 << 18
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _mount(src: str | None, target: str, fstype: str | None = None, flags: int = 0, data: str | None = None):
    enc = lambda s: None if s is None else os.fsencode(s)   # noqa: E731
    _check(_libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {src or fstype} on {target}")


def _bind(src: str, target: str, recursive: bool = False) -> None:
    _mount(src, target, None, MS_BIND | (MS_REC if recursive else 0))


def _private_dev(stage: str) -> None:
    """A tmpfs /dev holding every host entry (bound back, or copied for links and
    ptmx) and an empty vfio directory for the mount's."""
    _bind("/dev", stage, recursive=True)
    _mount("vfakefs-dev", "/dev", "tmpfs", MS_NOSUID, "mode=755")
    for e in os.scandir(stage):
        new = "/dev/" + e.name
        st = os.lstat(e.path)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(e.path), new)
        elif e.name == "ptmx" and stat.S_ISCHR(st.st_mode):
            os.mknod(new, stat.S_IFCHR | 0o600, st.st_rdev)
            os.chmod(new, stat.S_IMODE(st.st_mode))
            os.chown(new, st.st_uid, st.st_gid)
        elif stat.S_ISDIR(st.st_mode):
            os.mkdir(new)
            _bind(e.path, new, recursive=True)
        else:
            os.close(os.open(new, os.O_CREAT | os.O_WRONLY, 0o600))
            _bind(e.path, new)
    os.mkdir("/dev/vfio")
    _check(_libc.umount2(os.fsencode(stage), MNT_DETACH), f"umount {stage}")


def enter(mnt: str, stage: str) -> None:
    """Move this process into a new private mount namespace with the mount at mnt over
    /sys, /dev/vfio and /dev/kmsg. stage is an empty directory to bind the host's /dev
    at meanwhile."""
    real = os.path.realpath(mnt)
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _bind(f"{real}/sys", "/sys", recursive=True)
    if os.path.isdir(f"{real}/dev/vfio"):
        if not os.path.isdir("/dev/vfio"):
            _private_dev(stage)
        _bind(f"{real}/dev/vfio", "/dev/vfio")
    if os.path.exists(f"{real}/dev/kmsg"):
        _bind(f"{real}/dev/kmsg", "/dev/kmsg")
    for name in ("cmdline", "interrupts", "iomem"):     # the simulated kernel's, LXCFS-style
        if os.path.exists(f"{real}/proc/{name}"):
            _bind(f"{real}/proc/{name}", f"/proc/{name}")
