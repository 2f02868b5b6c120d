"""Receiving on a uevent socket inside `vfakefs run` (uevent_sock.py): recvmsg, recvfrom
and read answered as netlink_recvmsg does for the kernel's multicast.

The message is taken from the program's own queue, through a copy of its fd
(pidfd_getfd), so what poll/epoll saw is what the call gets. msg_name is
sockaddr_nl{AF_NETLINK, pid 0, groups 1}; with SO_PASSCRED on, one SCM_CREDENTIALS
{pid 0, uid 0, gid 0} (sd-device drops messages without them or not from pid 0 on
group 1); MSG_PEEK keeps the message queued, MSG_TRUNC returns its whole length, a
short buffer sets MSG_TRUNC in msg_flags. Nothing queued: EAGAIN for MSG_DONTWAIT or
O_NONBLOCK, else the call waits in a task of its own (_Wait, run as Later).
"""
from __future__ import annotations

import errno
import os
import socket
import struct

import trio

from vfakefs.model.errors import SysfsError
from vfakefs.syscall import process

AF_NETLINK, KERNEL_GROUP = 16, 1
SOL_SOCKET, SO_PASSCRED, SCM_CREDENTIALS = 1, 16, 2
MSG_PEEK, MSG_TRUNC, MSG_DONTWAIT, MSG_CTRUNC = 0x2, 0x20, 0x40, 0x8
NR_read, NR_recvfrom, NR_recvmsg = 0, 45, 47
MAX_MSG = 8192                  # larger than any uevent (UEVENT_BUFFER_SIZE 2048 + header)
SOCKADDR_NL = struct.Struct("<HHII")           # nl_family, nl_pad, nl_pid, nl_groups
_MSGHDR = struct.Struct("<QI4xQQQQi4x")         # name, namelen, iov, iovlen, control, controllen, flags
_IOVEC = struct.Struct("<QQ")
_CRED = struct.pack("<QiiiII", 28, SOL_SOCKET, SCM_CREDENTIALS, 0, 0, 0) + bytes(4)   # CMSG_SPACE(12)


def int32(v: int) -> int:
    """An int argument (an fd, flags) from its 64-bit register."""
    v &= 0xFFFF_FFFF
    return v - (1 << 32) if v >> 31 else v


def receive(call, nr: int, a):
    """recvmsg / recvfrom / read: one message from the program's queue, as netlink_recvmsg."""
    flags = int32(a[2]) if nr == NR_recvmsg else int32(a[3]) if nr == NR_recvfrom else 0
    mine = process.fetch_fd(call.pid, int32(a[0]))
    sock = socket.socket(fileno=mine)
    try:
        msg = _take(sock, flags)
    except BlockingIOError:
        nonblock = flags & MSG_DONTWAIT or os.get_blocking(mine) is False
        if nonblock:
            sock.close()
            raise SysfsError(errno.EAGAIN) from None
        return _Wait(call, nr, a, sock, flags)
    try:
        return _answer(call, nr, a, msg, flags, sock)
    finally:
        sock.close()


def _take(sock: socket.socket, flags: int) -> bytes:
    return sock.recv(MAX_MSG, socket.MSG_DONTWAIT | (flags & MSG_PEEK))

def _answer(call, nr: int, a, msg: bytes, flags: int, sock) -> int:
    src = SOCKADDR_NL.pack(AF_NETLINK, 0, 0, 1 << (KERNEL_GROUP - 1))   # the kernel's multicast
    if nr == NR_read:
        n = min(len(msg), a[2])
        call.mem.write(a[1], msg[:n])
        return n
    if nr == NR_recvfrom:
        n = min(len(msg), a[2])
        call.mem.write(a[1], msg[:n])
        if a[4] and a[5]:
            have = struct.unpack("<i", call.mem.read(a[5], 4))[0]
            call.mem.write(a[4], src[:max(0, min(have, len(src)))])
            call.mem.write(a[5], struct.pack("<i", len(src)))
        return len(msg) if flags & MSG_TRUNC else n
    name, namelen, iov, iovlen, control, controllen, _f = _MSGHDR.unpack(call.mem.read(a[1], _MSGHDR.size))
    out_flags, pos = 0, 0
    for i in range(min(iovlen, 1024)):
        base, length = _IOVEC.unpack(call.mem.read(iov + i * _IOVEC.size, _IOVEC.size))
        part = msg[pos:pos + length]
        if part:
            call.mem.write(base, part)
        pos += len(part)
    if pos < len(msg):
        out_flags |= MSG_TRUNC
    if name:
        call.mem.write(name, src[:min(namelen, len(src))])
        namelen = len(src)
    used = 0
    if sock.getsockopt(SOL_SOCKET, SO_PASSCRED):
        if controllen >= 28:                            # CMSG_LEN(sizeof(struct ucred))
            used = min(controllen, len(_CRED))
            call.mem.write(control, _CRED[:used])
        else:
            out_flags |= MSG_CTRUNC
    call.mem.write(a[1] + 8, struct.pack("<I", namelen))
    call.mem.write(a[1] + 40, struct.pack("<Q", used))
    call.mem.write(a[1] + 48, struct.pack("<i", out_flags))
    return len(msg) if flags & MSG_TRUNC else pos


def signal_pending(tid: int) -> bool:
    """A signal the thread does not block waits for it (SigPnd, ShdPnd, SigBlk of
    /proc/TID/status): a real blocking recvmsg would return for it (EINTR, or a restart)."""
    fields = {}
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line[:6] in (b"SigPnd", b"ShdPnd", b"SigBlk"):
                    fields[line[:6]] = int(line.split()[1], 16)
    except OSError:
        return False
    return bool((fields.get(b"SigPnd", 0) | fields.get(b"ShdPnd", 0)) & ~fields.get(b"SigBlk", 0))


class _Wait:
    """A blocking receive with nothing queued: answered from a task of its own once a
    message arrives (the server runs it as Later). The thread waits for us killably only
    (the filter's WAIT_KILLABLE_RECV), so a signal for it is looked for here: EINTR then,
    as the kernel's interrupted wait (its handler runs as the call returns). Gives up
    when the caller is gone."""

    def __init__(self, call, nr, a, sock, flags):
        self.call, self.nr, self.a, self.sock, self.flags = call, nr, a, sock, flags

    async def __call__(self) -> int:
        try:
            while True:
                try:
                    msg = _take(self.sock, self.flags)
                except BlockingIOError:
                    with trio.move_on_after(0.1):
                        await trio.lowlevel.wait_readable(self.sock)
                        continue
                    if not self.call.alive() or signal_pending(self.call.tid):
                        raise SysfsError(errno.EINTR) from None   # (a gone caller takes no answer)
                    continue
                return _answer(self.call, self.nr, self.a, msg, self.flags, self.sock)
        finally:
            self.sock.close()
