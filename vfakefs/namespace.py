"""`vfakefs run`'s private mount namespace, made with the system calls themselves
(unshare(2), mount(2)) in the program's process before it execs: the mount's trees
over /sys, /dev/vfio, /dev/kmsg, /lib/modules and /proc's cmdline, interrupts, cpuinfo,
modules and iomem, the host's own never touched.

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
import fcntl
import os
import socket
import stat
import struct

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
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


def _lo_up() -> None:
    """A new network namespace has lo, down; a booted kernel's is up (127.0.0.1, ::1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def enter(mnt: str, stage: str, host_net: bool = False) -> None:
    """Move this process into a new private mount namespace with the mount at mnt over
    /sys, /dev/vfio and /dev/kmsg, and (unless host_net) a network namespace of its own,
    lo up, where the daemon makes the simulated interfaces (syscall/netns.py). stage is
    an empty directory to bind the host's /dev at meanwhile."""
    real = os.path.realpath(mnt)
    _check(_libc.unshare(CLONE_NEWNS | (0 if host_net else CLONE_NEWNET)), "unshare")
    if not host_net:
        _lo_up()
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _bind(f"{real}/sys", "/sys", recursive=True)
    if os.path.isdir(f"{real}/dev/vfio"):
        if not os.path.isdir("/dev/vfio"):
            _private_dev(stage)
        _bind(f"{real}/dev/vfio", "/dev/vfio")
    if os.path.exists(f"{real}/dev/kmsg"):
        _bind(f"{real}/dev/kmsg", "/dev/kmsg")
    # the simulated kernel's, LXCFS-style; cpuinfo so that it agrees with /sys/devices/system/cpu
    # (lscpu and hwloc read both). What no file answers stays the host's: sched_getaffinity (nproc,
    # hwloc's binding) and the CPUID instruction (hwloc's x86 backend; HWLOC_COMPONENTS=-x86).
    # A host kernel without modules has no /proc/modules to bind over: the system-call adapter
    # answers its opens instead (syscall/server.py)
    for name in ("cmdline", "interrupts", "cpuinfo", "modules", "iomem"):
        if os.path.exists(f"{real}/proc/{name}") and os.path.exists(f"/proc/{name}"):
            _bind(f"{real}/proc/{name}", f"/proc/{name}")
    if os.path.isdir(f"{real}/lib/modules"):   # kmod's and lspci -k's /lib/modules/$(uname -r)
        _lib_modules(f"{real}/lib/modules", stage)


def _lib_modules(src: str, stage: str) -> None:
    """Bind src over /lib/modules. A host without /lib/modules (a container) gets a
    mountpoint for it in a private copy of the directory holding it (/usr/lib where /lib
    is a link to it, as for /dev above): a tmpfs with every host entry bound back, so the
    host's directory is never written to and its libraries stay where they are."""
    target = os.path.realpath("/lib/modules")
    if not os.path.isdir(target):
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            return   # no /lib at all: nothing reads modules here
        st = os.stat(parent)
        _private_copy(parent, stage)
        os.mkdir(target, 0o755)
        os.utime(parent, ns=(st.st_atime_ns, st.st_mtime_ns))   # ls -l shows the host's times
    _bind(src, target, recursive=True)


def _private_copy(path: str, stage: str) -> None:
    """Replace directory path, in this namespace only, by a tmpfs of the same mode and
    owner whose entries are the host's, bound back (symlinks copied). Nothing may be
    loaded from path meanwhile: only system calls run between the two mounts."""
    st = os.stat(path)
    _bind(path, stage, recursive=True)
    _mount("vfakefs-copy", path, "tmpfs", 0,
           f"mode={stat.S_IMODE(st.st_mode):o},uid={st.st_uid},gid={st.st_gid}")
    for e in os.scandir(stage):
        new = f"{path}/{e.name}"
        est = os.lstat(e.path)
        if stat.S_ISLNK(est.st_mode):
            os.symlink(os.readlink(e.path), new)
            continue
        if stat.S_ISDIR(est.st_mode):
            os.mkdir(new)
        else:
            os.close(os.open(new, os.O_CREAT | os.O_WRONLY, 0o600))
        _bind(e.path, new, recursive=True)
    _check(_libc.umount2(os.fsencode(stage), MNT_DETACH), f"umount {stage}")
