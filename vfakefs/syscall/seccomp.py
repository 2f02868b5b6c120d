"""seccomp user notification (include/uapi/linux/seccomp.h, kernel/seccomp.c): the
filter `vfakefs run` installs in the program it starts, and the listener the daemon
answers on.

What the filter sends to the daemon, and only that (the rest runs natively, at the
cost of one BPF program per system call):
- open, openat, openat2: every open (the daemon reads the path and lets all but
  /dev/vfio/* continue);
- ioctl whose command's type byte is ';' (VFIO's);
- pread64 and pwrite64 at offsets of 1 TiB and more: a VFIO device's regions other
  than BAR0 (index << 40, vfio_pci_private.h's VFIO_PCI_OFFSET_SHIFT);
- statfs and fstatfs: /sys must say sysfs, not FUSE (statfs.py);
- init_module, finit_module, delete_module: the simulated kernel's modules (modules.py);
- socket(AF_NETLINK, *, NETLINK_KOBJECT_UEVENT), and read, recvfrom, recvmsg, bind,
  getsockname, getsockopt, setsockopt on fds from fd_base up: the simulated kernel's
  uevents (uevent_sock.py), in fds the daemon places there (netlink_fd_base());
- syslog (klogctl): the simulated kernel's log, never the host's (model/syslog.py).
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import resource
import struct

# x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl)
NR_open, NR_openat, NR_openat2 = 2, 257, 437
NR_ioctl, NR_pread64, NR_pwrite64 = 16, 17, 18
NR_statfs, NR_fstatfs = 137, 138
NR_seccomp = 317
NR_init_module, NR_delete_module, NR_finit_module = 175, 176, 313
NR_read, NR_socket, NR_recvfrom, NR_recvmsg, NR_bind, NR_getsockname = 0, 41, 45, 47, 49, 51
NR_setsockopt, NR_getsockopt = 54, 55
AF_NETLINK, NETLINK_KOBJECT_UEVENT = 16, 15
NR_syslog = 103
AUDIT_ARCH_X86_64 = 0xC000003E

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5     # 5.19+: no EINTR once the daemon has it
SECCOMP_RET_USER_NOTIF, SECCOMP_RET_ALLOW = 0x7FC00000, 0x7FFF0000
PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG = 38, 1

# the listener's ioctls: SECCOMP_IOWR/IOW('!', n, ...)
NOTIF_RECV, NOTIF_SEND, NOTIF_ID_VALID = 0xC0502100, 0xC0182101, 0x40082102
NOTIF_ADDFD, NOTIF_SET_FLAGS = 0x40182103, 0x40082104
USER_NOTIF_FLAG_CONTINUE = 1 << 0
ADDFD_FLAG_SETFD, ADDFD_FLAG_SEND = 1 << 0, 1 << 1
USER_NOTIF_FD_SYNC_WAKE_UP = 1 << 0                  # 6.6+: the woken task runs next, here

FD_SETSIZE = 1024
VFIO_TYPE = ord(";")
REGION_OFFSET_MIN = 1 << 40

# struct seccomp_data: nr, arch, instruction_pointer, args[6]
_NR, _ARCH, _ARG = 0, 4, lambda i, hi=False: 16 + 8 * i + (4 if hi else 0)
# classic BPF opcodes
_LD_ABS, _JEQ, _JGE, _AND, _RET = 0x20, 0x15, 0x35, 0x54, 0x06


def _assemble(prog: list) -> bytes:
    """(code, jt, jf, k) with jt/jf as labels (str) or 0; a str alone names the next line."""
    labels, lines = {}, []
    for item in prog:
        if isinstance(item, str):
            labels[item] = len(lines)
        else:
            lines.append(item)
    out = b""
    for i, (code, jt, jf, k) in enumerate(lines):
        rel = [labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf)]
        out += struct.pack("<HBBI", code, rel[0], rel[1], k)
    return out


def netlink_fd_base() -> int:
    """Where the fds of trapped uevent sockets start: 64 numbers counting down from the
    soft RLIMIT_NOFILE, at most FD_SETSIZE (1024: a program's select() takes them, and no
    fd table grows to a million entries), far above what a program's own fds reach."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    top = FD_SETSIZE if soft == resource.RLIM_INFINITY else min(soft, FD_SETSIZE)
    return max(top - 64, top // 2)


def filter_program(fd_base: int | None = None) -> bytes:
    """fd_base: where the uevent sockets' fds start (None: no netlink sockets trapped)."""
    netlink = [] if fd_base is None else [
        (_JEQ, "socket", 0, NR_socket),
        (_JEQ, "ourfd", 0, NR_read),
        (_JEQ, "ourfd", 0, NR_recvfrom),
        (_JEQ, "ourfd", 0, NR_recvmsg),
        (_JEQ, "ourfd", 0, NR_bind),
        (_JEQ, "ourfd", 0, NR_getsockname),
        (_JEQ, "ourfd", 0, NR_getsockopt),
        (_JEQ, "ourfd", 0, NR_setsockopt),
    ]
    tail = [] if fd_base is None else [
        "socket",
        (_LD_ABS, 0, 0, _ARG(0)),
        (_JEQ, 0, "allow", AF_NETLINK),
        (_LD_ABS, 0, 0, _ARG(2)),
        (_JEQ, "notify", "allow", NETLINK_KOBJECT_UEVENT),
        "ourfd",
        (_LD_ABS, 0, 0, _ARG(0)),
        (_JGE, "notify", "allow", fd_base),
    ]
    return _assemble([
        (_LD_ABS, 0, 0, _ARCH),
        (_JEQ, 0, "allow", AUDIT_ARCH_X86_64),
        (_LD_ABS, 0, 0, _NR),
        *netlink,
        (_JEQ, "notify", 0, NR_open),
        (_JEQ, "notify", 0, NR_openat),
        (_JEQ, "notify", 0, NR_openat2),
        (_JEQ, "notify", 0, NR_statfs),
        (_JEQ, "notify", 0, NR_fstatfs),
        (_JEQ, "notify", 0, NR_init_module),
        (_JEQ, "notify", 0, NR_finit_module),
        (_JEQ, "notify", 0, NR_delete_module),
        (_JEQ, "notify", 0, NR_syslog),
        (_JEQ, "ioctl", 0, NR_ioctl),
        (_JEQ, "offset", 0, NR_pread64),
        (_JEQ, "offset", "allow", NR_pwrite64),
        "ioctl",
        (_LD_ABS, 0, 0, _ARG(1)),
        (_AND, 0, 0, 0xFF00),
        (_JEQ, "notify", "allow", VFIO_TYPE << 8),
        "offset",
        (_LD_ABS, 0, 0, _ARG(3, hi=True)),
        (_JGE, "notify", "allow", REGION_OFFSET_MIN >> 32),
        *tail,
        "notify",
        (_RET, 0, 0, SECCOMP_RET_USER_NOTIF),
        "allow",
        (_RET, 0, 0, SECCOMP_RET_ALLOW),
    ])


def install_filter(fd_base: int | None = None) -> int:
    """In the program's process, before exec: no_new_privs (what lets an unprivileged
    process install a filter), then the filter; returns the listener fd."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    code = filter_program(fd_base)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("<HxxxxxxQ", len(code) // 8, ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog, len(fprog))
    flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    fd = libc.syscall(NR_seccomp, SECCOMP_SET_MODE_FILTER, flags, fbuf)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER)")
    return fd


_NOTIF = struct.Struct("<QIIiIQ6Q")      # struct seccomp_notif (80 bytes)
_RESP = struct.Struct("<QqiI")           # struct seccomp_notif_resp (24 bytes)
_ZERO = bytes(_NOTIF.size)


class Notification:
    """struct seccomp_notif: id, the trapped thread (tid), the call and its arguments."""
    __slots__ = ("id", "tid", "nr", "args")

    def __init__(self, raw: bytes):
        f = _NOTIF.unpack(raw)
        self.id, self.tid, self.nr, self.args = f[0], f[1], f[3], f[6:]


class Listener:
    """The daemon's end: receive one notification, answer it exactly once."""

    def __init__(self, fd: int):
        self.fd = fd
        self.fd_base: int | None = None     # where its program's uevent sockets' fds go (uevent_sock.py)
        self._buf, self._resp = bytearray(_NOTIF.size), bytearray(_RESP.size)
        try:
            fcntl.ioctl(fd, NOTIF_SET_FLAGS, USER_NOTIF_FD_SYNC_WAKE_UP)
        except OSError:
            pass              # before 6.6: the same answers, only slower

    def recv(self) -> Notification | None:
        """None when the notification went away (its thread was killed) before we took it."""
        self._buf[:] = _ZERO                   # RECV wants a zeroed struct (EINVAL otherwise)
        try:
            fcntl.ioctl(self.fd, NOTIF_RECV, self._buf)
        except OSError as e:
            if e.errno in (2, 4):     # ENOENT, EINTR
                return None
            raise
        return Notification(self._buf)

    def _send(self, nid: int, val: int, error: int, flags: int) -> None:
        if self.fd < 0:
            return                    # closed: every trapped process is gone, nobody to answer
        try:
            _RESP.pack_into(self._resp, 0, nid, val, error, flags)
            fcntl.ioctl(self.fd, NOTIF_SEND, self._resp)
        except OSError as e:
            if e.errno != 2:          # ENOENT: the thread died meanwhile; nobody to answer
                raise

    def reply(self, nid: int, val: int) -> None:
        self._send(nid, val, 0, 0)

    def fail(self, nid: int, errno_: int) -> None:
        self._send(nid, 0, -errno_, 0)

    def proceed(self, nid: int) -> None:
        """Let the call run as if no filter were there (SECCOMP_USER_NOTIF_FLAG_CONTINUE)."""
        self._send(nid, 0, 0, USER_NOTIF_FLAG_CONTINUE)

    def addfd_send(self, nid: int, srcfd: int, cloexec: bool) -> int:
        """Install srcfd's file in the thread's table and make it the call's return value
        at once (SECCOMP_ADDFD_FLAG_SEND): the number it got there."""
        flags = os.O_CLOEXEC if cloexec else 0
        # a mutable buffer: fcntl.ioctl then returns the call's result, not the buffer
        return fcntl.ioctl(self.fd, NOTIF_ADDFD, bytearray(struct.pack("<QIIII", nid, ADDFD_FLAG_SEND, srcfd, 0, flags)))

    def addfd_at(self, nid: int, srcfd: int, newfd: int, cloexec: bool) -> int:
        """As addfd_send, at the number newfd (SECCOMP_ADDFD_FLAG_SETFD: the caller made
        sure it is free there, or it would be replaced as by dup2)."""
        flags = os.O_CLOEXEC if cloexec else 0
        return fcntl.ioctl(self.fd, NOTIF_ADDFD, bytearray(struct.pack(
            "<QIIII", nid, ADDFD_FLAG_SEND | ADDFD_FLAG_SETFD, srcfd, newfd, flags)))

    def id_valid(self, nid: int) -> bool:
        """The notification's thread still waits for our answer (SECCOMP_IOCTL_NOTIF_ID_VALID)."""
        if self.fd < 0:
            return False
        try:
            fcntl.ioctl(self.fd, NOTIF_ID_VALID, struct.pack("<Q", nid))
        except OSError:
            return False
        return True

    def close(self) -> None:
        os.close(self.fd)
        self.fd = -1                  # an answer from a task still running goes nowhere, not to a reused fd
