"""NETLINK_KOBJECT_UEVENT sockets inside `vfakefs run`: the simulated kernel's uevents
(model/uevent.py), never the host's.

How: the filter traps socket() only for (AF_NETLINK, NETLINK_KOBJECT_UEVENT). The daemon
answers with one end of an AF_UNIX SOCK_SEQPACKET pair (message boundaries kept), placed
in the program at a reserved high fd number (ADDFD with SETFD: the highest free number
of [fd_base, soft RLIMIT_NOFILE), fd_base fixed when the filter was made, seccomp.py).
The daemon keeps the other end and writes each new event there, so the program's
poll/epoll/select on its fd work natively and wake when an event is queued.

What a netlink socket answers differently from a Unix one is trapped for fds >= fd_base
only (a compare in the filter; anything not ours there runs natively):
- bind(sockaddr_nl): the groups (group 1 hears the kernel's events) and the port id
  (netlink_autobind: the process's tgid first, then -4096 counting down);
- getsockname: sockaddr_nl{AF_NETLINK, port id, groups};
- getsockopt SO_DOMAIN/SO_TYPE/SO_PROTOCOL, setsockopt NETLINK_ADD/DROP_MEMBERSHIP;
- recvmsg, recvfrom, read: the message (taken from the program's own queue through a
  copy of its fd, pidfd_getfd), msg_name sockaddr_nl{AF_NETLINK, pid 0, groups 1} as the
  kernel's multicast has it, SCM_CREDENTIALS{pid 0, uid 0, gid 0} when SO_PASSCRED is on
  (sd-device drops messages without them, or not from pid 0 on group 1), MSG_TRUNC and
  MSG_PEEK as netlink_recvmsg; EAGAIN for MSG_DONTWAIT or O_NONBLOCK with nothing
  queued, else the call waits in a task of its own (Later).
Everything else (setsockopt SO_PASSCRED/SO_RCVBUF/SO_ATTACH_FILTER, poll, epoll, close,
fcntl) runs natively on the Unix socket and means the same there.

When the program closes its last copy, the daemon's end reads end-of-file and the socket
is dropped. Not handled: recvmmsg, and calls on a copy dup2()ed below fd_base (they
run natively on the Unix socket).
"""
from __future__ import annotations

import errno
import os
import resource
import socket
import struct
from collections import deque

import trio

from vfakefs.model.errors import SysfsError
from vfakefs.syscall import process
from vfakefs.syscall.vfio import Call

AF_NETLINK, NETLINK_KOBJECT_UEVENT = 16, 15
SOCK_DGRAM, SOCK_RAW, SOCK_MAX, SOCK_TYPE_MASK = 2, 3, 11, 0xF
SOCK_NONBLOCK, SOCK_CLOEXEC = 0o4000, 0o2000000
SOL_SOCKET, SOL_NETLINK = 1, 270
SO_TYPE, SO_PROTOCOL, SO_DOMAIN, SO_PASSCRED = 3, 38, 39, 16
NETLINK_ADD_MEMBERSHIP, NETLINK_DROP_MEMBERSHIP = 1, 2
SCM_CREDENTIALS = 2
MSG_PEEK, MSG_TRUNC, MSG_DONTWAIT, MSG_CTRUNC = 0x2, 0x20, 0x40, 0x8
NR_read, NR_socket, NR_recvfrom, NR_recvmsg, NR_bind, NR_getsockname = 0, 41, 45, 47, 49, 51
NR_setsockopt, NR_getsockopt = 54, 55
ON_OUR_FDS = (NR_read, NR_recvfrom, NR_recvmsg, NR_bind, NR_getsockname, NR_setsockopt, NR_getsockopt)
KERNEL_GROUP = 1                # the uevent multicast group (udev's own messages use 2)
MAX_MSG = 8192                  # larger than any uevent (UEVENT_BUFFER_SIZE 2048 + header)
FD_RANGE = 64                   # the reserved fd numbers: [fd_base, fd_base + FD_RANGE)
PENDING_MAX = 1 << 16           # messages held for a reader that does not read: then dropped

_SOCKADDR_NL = struct.Struct("<HHII")          # nl_family, nl_pad, nl_pid, nl_groups
_MSGHDR = struct.Struct("<QI4xQQQQi4x")         # name, namelen, iov, iovlen, control, controllen, flags
_IOVEC = struct.Struct("<QQ")
_CRED = struct.pack("<QiiiII", 28, SOL_SOCKET, SCM_CREDENTIALS, 0, 0, 0) + bytes(4)   # CMSG_SPACE(12)


def _int(v: int) -> int:
    v &= 0xFFFF_FFFF
    return v - (1 << 32) if v >> 31 else v


class NlCall(Call):
    """A trapped call on a uevent socket; alive() says whether its thread still waits."""
    __slots__ = ("alive",)

    def __init__(self, tid: int, give, alive):
        super().__init__(tid, give)
        self.alive = alive


class NlSock:
    """One program's uevent socket: the daemon's end, the program end's inode, its address."""

    def __init__(self, mine: socket.socket, ino: int, tgid: int, kind: int = SOCK_RAW):
        self.mine, self.ino, self.tgid, self.kind = mine, ino, tgid, kind
        self.portid = 0
        self.groups = 0
        self.pending: deque[bytes] = deque()
        self.flushing = False
        self.closed = False


class UeventSockets:
    """Every NETLINK_KOBJECT_UEVENT socket of every `vfakefs run`, by inode."""

    def __init__(self, host):
        self.by_ino: dict[int, NlSock] = {}
        self._nursery = None
        host.machine.uevents.subscribe(self.deliver)   # the log outlives a reset (host.py)

    def start(self, nursery) -> None:
        self._nursery = nursery

    # --- the kernel's side: an event goes to every socket in group 1 -------------------------
    def deliver(self, event) -> None:
        msg = event.wire()
        for s in list(self.by_ino.values()):
            if not s.groups & (1 << (KERNEL_GROUP - 1)) or s.closed:
                continue
            if len(s.pending) >= PENDING_MAX:
                continue                                  # netlink drops what a full socket cannot take
            s.pending.append(msg)
            self._flush(s)

    def _flush(self, s: NlSock) -> None:
        while s.pending:
            try:
                s.mine.send(s.pending[0], socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except BlockingIOError:
                # the Unix socket's queue is short (max_dgram_qlen): the rest waits for room
                if not s.flushing and self._nursery is not None:
                    s.flushing = True
                    self._nursery.start_soon(self._drain, s)
                return
            except OSError:
                self._drop(s)                             # the program's end is gone
                return
            s.pending.popleft()

    async def _drain(self, s: NlSock) -> None:
        try:
            while s.pending and not s.closed:
                await trio.lowlevel.wait_writable(s.mine)
                self._flush(s)
                await trio.sleep(0)
        except (trio.ClosedResourceError, OSError):
            pass
        finally:
            s.flushing = False

    async def _watch(self, s: NlSock) -> None:
        """Until the program closed its last copy (end of file on ours); what a program
        sends on its socket is read and dropped (nobody listens to user messages here)."""
        try:
            while not s.closed:
                await trio.lowlevel.wait_readable(s.mine)
                try:
                    if not s.mine.recv(MAX_MSG, socket.MSG_DONTWAIT):
                        break
                except BlockingIOError:
                    continue
                except OSError:
                    break
        except trio.ClosedResourceError:
            pass
        finally:
            self._drop(s)

    def _drop(self, s: NlSock) -> None:
        if s.closed:
            return
        s.closed = True
        self.by_ino.pop(s.ino, None)
        s.pending.clear()
        trio.lowlevel.notify_closing(s.mine)
        s.mine.close()

    def close(self) -> None:
        for s in list(self.by_ino.values()):
            self._drop(s)

    # --- the calls ---------------------------------------------------------------------------
    def socket(self, call, args, fd_base: int):
        """socket(AF_NETLINK, type, NETLINK_KOBJECT_UEVENT) (the filter checked domain and protocol)."""
        kind = _int(args[1])
        if kind & ~(SOCK_TYPE_MASK | SOCK_NONBLOCK | SOCK_CLOEXEC) or kind & SOCK_TYPE_MASK >= SOCK_MAX:
            raise SysfsError(errno.EINVAL)                  # __sys_socket's and __sock_create's checks
        if kind & SOCK_TYPE_MASK not in (SOCK_RAW, SOCK_DGRAM):
            raise SysfsError(errno.ESOCKTNOSUPPORT)         # netlink_create
        newfd = self._free_fd(call.pid, fd_base)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            theirs.setblocking(not kind & SOCK_NONBLOCK)
            s = NlSock(mine, os.fstat(theirs.fileno()).st_ino, call.pid, kind & SOCK_TYPE_MASK)
            got = call.give(theirs.fileno(), bool(kind & SOCK_CLOEXEC), newfd)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.by_ino[s.ino] = s
        if self._nursery is not None:
            self._nursery.start_soon(self._watch, s)
        return got

    @staticmethod
    def _free_fd(pid: int, fd_base: int) -> int:
        """The highest fd number the process has free below its soft RLIMIT_NOFILE, at
        fd_base or above (EMFILE when there is none, as the kernel says for a full table)."""
        soft, _hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        top = fd_base + FD_RANGE if soft == resource.RLIM_INFINITY else min(soft, fd_base + FD_RANGE)
        for fd in range(top - 1, fd_base - 1, -1):
            if not os.path.lexists(f"/proc/{pid}/fd/{fd}"):
                return fd
        raise SysfsError(errno.EMFILE)

    def of(self, tid: int, fd: int) -> NlSock | None:
        try:
            link = os.readlink(f"/proc/{tid}/fd/{fd}")
        except OSError:
            return None
        if not link.startswith("socket:["):
            return None
        return self.by_ino.get(int(link[8:-1]))

    def call(self, call, nr: int, args, fd_base: int):
        """A trapped call on an fd >= fd_base: ours answered as netlink, others native (None)."""
        if nr == NR_socket:
            return self.socket(call, args, fd_base)
        s = self.of(call.tid, _int(args[0]))
        if s is None:
            return None
        if nr == NR_bind:
            return self._bind(call, s, args)
        if nr == NR_getsockname:
            return self._getsockname(call, s, args)
        if nr == NR_getsockopt:
            return self._getsockopt(call, s, args)
        if nr == NR_setsockopt:
            return self._setsockopt(call, s, args)
        return self._receive(call, s, nr, args)

    def _bind(self, call, s: NlSock, a):
        """netlink_bind(): a sockaddr_nl, its port id fixed once, the groups replaced."""
        if _int(a[2]) < _SOCKADDR_NL.size:
            raise SysfsError(errno.EINVAL)
        family, _pad, pid, groups = _SOCKADDR_NL.unpack(call.mem.read(a[1], _SOCKADDR_NL.size))
        if family != AF_NETLINK:
            raise SysfsError(errno.EINVAL)
        if s.portid and pid and pid != s.portid:
            raise SysfsError(errno.EINVAL)
        if not s.portid:
            if pid and any(o.portid == pid for o in self.by_ino.values()):
                raise SysfsError(errno.EADDRINUSE)          # netlink_insert
            s.portid = pid or self._autobind(s)
        s.groups = groups
        return 0

    def _autobind(self, s: NlSock) -> int:
        """netlink_autobind(): the process's tgid if free, else -4096, -4097, ..."""
        used = {o.portid for o in self.by_ino.values()}
        if s.tgid not in used:
            return s.tgid
        rover = -4096
        while rover & 0xFFFF_FFFF in used:
            rover -= 1
        return rover & 0xFFFF_FFFF

    def _getsockname(self, call, s: NlSock, a):
        lenp = a[2]
        have = struct.unpack("<i", call.mem.read(lenp, 4))[0]
        if have < 0:
            raise SysfsError(errno.EINVAL)
        call.mem.write(a[1], _SOCKADDR_NL.pack(AF_NETLINK, 0, s.portid, s.groups)[:have])
        call.mem.write(lenp, struct.pack("<i", _SOCKADDR_NL.size))
        return 0

    def _getsockopt(self, call, s: NlSock, a):
        level, name = _int(a[1]), _int(a[2])
        value = {SO_DOMAIN: AF_NETLINK, SO_TYPE: s.kind, SO_PROTOCOL: NETLINK_KOBJECT_UEVENT}.get(name)
        if level != SOL_SOCKET or value is None:
            return None                                     # the rest means the same on the Unix socket
        have = struct.unpack("<i", call.mem.read(a[4], 4))[0]
        if have < 0:
            raise SysfsError(errno.EINVAL)
        call.mem.write(a[3], struct.pack("<i", value)[:have])
        call.mem.write(a[4], struct.pack("<i", min(have, 4)))
        return 0

    def _setsockopt(self, call, s: NlSock, a):
        level, name = _int(a[1]), _int(a[2])
        if level != SOL_NETLINK or name not in (NETLINK_ADD_MEMBERSHIP, NETLINK_DROP_MEMBERSHIP):
            return None
        if _int(a[4]) < 4:
            raise SysfsError(errno.EINVAL)
        group = struct.unpack("<I", call.mem.read(a[3], 4))[0]
        if not 0 < group <= 32:
            raise SysfsError(errno.EINVAL)
        bit = 1 << (group - 1)
        s.groups = s.groups | bit if name == NETLINK_ADD_MEMBERSHIP else s.groups & ~bit
        return 0

    # --- receiving ---------------------------------------------------------------------------
    def _receive(self, call, s: NlSock, nr: int, a):
        """recvmsg / recvfrom / read: one message from the program's queue, as netlink_recvmsg."""
        flags = _int(a[2]) if nr == NR_recvmsg else _int(a[3]) if nr == NR_recvfrom else 0
        mine = process.fetch_fd(call.pid, _int(a[0]))
        sock = socket.socket(fileno=mine)
        try:
            msg = self._take(sock, flags)
        except BlockingIOError:
            nonblock = flags & MSG_DONTWAIT or os.get_blocking(mine) is False
            if nonblock:
                sock.close()
                raise SysfsError(errno.EAGAIN) from None
            return _Wait(self, call, s, nr, a, sock, flags)
        try:
            return self._answer(call, s, nr, a, msg, flags, sock)
        finally:
            sock.close()

    @staticmethod
    def _take(sock: socket.socket, flags: int) -> bytes:
        return sock.recv(MAX_MSG, socket.MSG_DONTWAIT | (flags & MSG_PEEK))

    def _answer(self, call, s: NlSock, nr: int, a, msg: bytes, flags: int, sock) -> int:
        src = _SOCKADDR_NL.pack(AF_NETLINK, 0, 0, 1 << (KERNEL_GROUP - 1))   # the kernel's multicast
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

    def __init__(self, owner, call, s, nr, a, sock, flags):
        self.owner, self.call, self.s, self.nr, self.a, self.sock, self.flags = owner, call, s, nr, a, sock, flags

    async def __call__(self) -> int:
        try:
            while True:
                try:
                    msg = self.owner._take(self.sock, self.flags)
                except BlockingIOError:
                    with trio.move_on_after(0.1):
                        await trio.lowlevel.wait_readable(self.sock)
                        continue
                    if not self.call.alive() or signal_pending(self.call.tid):
                        raise SysfsError(errno.EINTR) from None   # (a gone caller takes no answer)
                    continue
                return self.owner._answer(self.call, self.s, self.nr, self.a, msg, self.flags, self.sock)
        finally:
            self.sock.close()
