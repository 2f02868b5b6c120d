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
- recvmsg, recvfrom, read: the message with the kernel's address and credentials
  (uevent_recv.py).
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
from vfakefs.syscall import process, uevent_recv
from vfakefs.syscall.uevent_recv import KERNEL_GROUP, MAX_MSG, SOCKADDR_NL, int32
from vfakefs.syscall.vfio import Call

AF_NETLINK, NETLINK_KOBJECT_UEVENT = 16, 15
SOCK_DGRAM, SOCK_RAW, SOCK_MAX, SOCK_TYPE_MASK = 2, 3, 11, 0xF
SOCK_NONBLOCK, SOCK_CLOEXEC = 0o4000, 0o2000000
SOL_SOCKET, SOL_NETLINK = 1, 270
SO_TYPE, SO_PROTOCOL, SO_DOMAIN = 3, 38, 39
NETLINK_ADD_MEMBERSHIP, NETLINK_DROP_MEMBERSHIP = 1, 2
NR_read, NR_socket, NR_recvfrom, NR_recvmsg, NR_bind, NR_getsockname = 0, 41, 45, 47, 49, 51
NR_setsockopt, NR_getsockopt = 54, 55
ON_OUR_FDS = (NR_read, NR_recvfrom, NR_recvmsg, NR_bind, NR_getsockname, NR_setsockopt, NR_getsockopt)
FD_RANGE = 64                   # the reserved fd numbers: [fd_base, fd_base + FD_RANGE)
PENDING_MAX = 1 << 16           # messages held for a reader that does not read: then dropped


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
        if not self.by_ino:
            return                                        # nobody listens: the common case
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
        kind = int32(args[1])
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
        s = self.of(call.tid, int32(args[0]))
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
        return uevent_recv.receive(call, nr, args)

    def _bind(self, call, s: NlSock, a):
        """netlink_bind(): a sockaddr_nl, its port id fixed once, the groups replaced."""
        if int32(a[2]) < SOCKADDR_NL.size:
            raise SysfsError(errno.EINVAL)
        family, _pad, pid, groups = SOCKADDR_NL.unpack(call.mem.read(a[1], SOCKADDR_NL.size))
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
        call.mem.write(a[1], SOCKADDR_NL.pack(AF_NETLINK, 0, s.portid, s.groups)[:have])
        call.mem.write(lenp, struct.pack("<i", SOCKADDR_NL.size))
        return 0

    def _getsockopt(self, call, s: NlSock, a):
        level, name = int32(a[1]), int32(a[2])
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
        level, name = int32(a[1]), int32(a[2])
        if level != SOL_NETLINK or name not in (NETLINK_ADD_MEMBERSHIP, NETLINK_DROP_MEMBERSHIP):
            return None
        if int32(a[4]) < 4:
            raise SysfsError(errno.EINVAL)
        group = struct.unpack("<I", call.mem.read(a[3], 4))[0]
        if not 0 < group <= 32:
            raise SysfsError(errno.EINVAL)
        bit = 1 << (group - 1)
        s.groups = s.groups | bit if name == NETLINK_ADD_MEMBERSHIP else s.groups & ~bit
        return 0
