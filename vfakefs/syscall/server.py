"""The daemon's side: a Unix socket where `vfakefs run` hands over seccomp listeners,
and a task per listener answering what it traps (open of /dev/vfio/*, VFIO ioctls,
region pread/pwrite) from the model. Everything else continues natively.

Every notification is answered exactly once: a trapped call whose handler raised
fails EIO (logged), never hangs, and never runs natively by mistake.
"""
from __future__ import annotations

import array
import errno
import logging
import os
import select
import socket
import struct
import weakref

import outcome
import trio

from vfakefs.model import syslog
from vfakefs.model.errors import SysfsError
from vfakefs.model.syslog import Syslog
from vfakefs.syscall import front, netmirror, netns, seccomp, statfs
from vfakefs.syscall.files import Files
from vfakefs.syscall.modules import CAP_SYSLOG, ModuleCalls, capable
from vfakefs.syscall.process import ProcMemory
from vfakefs.syscall.uevent_sock import NR_socket, ON_OUR_FDS, NlCall, UeventSockets
from vfakefs.syscall.vfio import GROUP_GET_DEVICE_FD, GROUP_UNSET_CONTAINER, Call, Vfio

log = logging.getLogger("vfakefs")
AT_FDCWD = -100
O_CLOEXEC = os.O_CLOEXEC
HELLO, READY = b"listener\n", b"ok\n"
NETLINK_CALLS = frozenset((NR_socket, *ON_OUR_FDS))
# "listener[ netns][ FD_BASE]\n": netns: the program has a network namespace of its own to
# mirror the netdevs in (netns.py); FD_BASE: where its uevent sockets' fds go (uevent_sock.py)
NETNS_WORD = b"netns"
SO_PEERCRED = 17


def _int(v: int) -> int:
    """A 32-bit int argument (fds, dirfds) from its 64-bit register."""
    v &= 0xFFFF_FFFF
    return v - (1 << 32) if v >> 31 else v


def _off(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


CAP_SYS_ADMIN, CAP_SYSLOG = 21, 34


def _may_syslog(tid: int) -> bool:
    """check_syslog_permissions(): CAP_SYSLOG, or CAP_SYS_ADMIN (the kernel warns once)."""
    try:
        with open(f"/proc/{tid}/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return False
    return bool(eff & (1 << CAP_SYSLOG | 1 << CAP_SYS_ADMIN))


class Later:
    """A call answered from a task of its own, once work() (async) has run: for calls
    whose answer needs our own mount, which this loop must go on serving meanwhile."""
    __slots__ = ("work",)

    def __init__(self, work):
        self.work = work


class SyscallServer:
    def __init__(self, host, sockpath: str):
        self.sockpath = sockpath
        self.host = host
        self._syslogs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # KernelLog -> Syslog
        self.files = Files()
        self.vfio = Vfio(host, self.files)
        self.modules = ModuleCalls(host)
        # a host kernel without modules has no /proc/modules for `vfakefs run` to bind
        # the simulated one over: opens of it are answered here
        self.proc_modules_missing = not os.path.exists("/proc/modules")
        self.uevents = UeventSockets(host)
        self.host = host
        self.mirrors: set[netmirror.NetMirror] = set()    # the network namespaces of running programs

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        sock = front.bind(self.sockpath)
        task_status.started()
        await self.serve_on(sock)

    async def serve_on(self, sock) -> None:
        """Accept on sock, bound and listening at sockpath (front.py), until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery        # calls answered later, from a task of their own (Later)
                self.uevents.start(nursery)
                nursery.start_soon(self._closes)
                while True:
                    conn, _ = await sock.accept()
                    nursery.start_soon(self._accept, conn, nursery)
        finally:
            sock.close()
            try:
                os.unlink(self.sockpath)
            except FileNotFoundError:
                pass
            self.files.close()
            self.uevents.close()

    async def _accept(self, conn, nursery) -> None:
        """One `vfakefs run`: its listener (SCM_RIGHTS), acknowledged once we hold it."""
        with conn:
            fds = array.array("i")
            msg, anc, _flags, _addr = await conn.recvmsg(64, socket.CMSG_SPACE(fds.itemsize))
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            word, *rest = msg.removesuffix(b"\n").split(b" ")
            netns_wanted = NETNS_WORD in rest
            base = [w for w in rest if w != NETNS_WORD]
            if (word + b"\n" != HELLO or len(fds) != 1 or len(base) > 1
                    or not all(w.isdigit() for w in base)):
                for fd in fds:
                    os.close(fd)
                return
            lis = seccomp.Listener(fds[0])
            lis.fd_base = int(base[0]) if base else None
            mirror = None
            if netns_wanted:
                try:
                    mirror = await self._mirror(conn)
                except BaseException:
                    lis.close()
                    raise
            nursery.start_soon(self._listen, lis, mirror)
            await conn.send(READY)

    async def _mirror(self, conn) -> netmirror.NetMirror | None:
        """The program's network namespace filled with the simulated netdevs, before it runs
        (netns.py). Never the daemon's own namespace (a program sharing it asked for the host's)."""
        pid = struct.unpack("=iII", conn.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, 12))[0]
        try:
            if netns.NetNamespace.same_as_ours(pid):
                return None
            mirror = netmirror.NetMirror(self.host, pid)
        except OSError:
            log.warning("network namespace of %d", pid, exc_info=True)
            return None
        try:
            await mirror.fill()
        except Exception:      # noqa: BLE001 - the program runs; its namespace shows what was made
            log.exception("network namespace of %d", pid)
        except BaseException:
            mirror.detach()
            raise
        return mirror

    async def _closes(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self.files.fd)
            self.files.closes()

    async def _listen(self, lis: seccomp.Listener, mirror: netmirror.NetMirror | None = None) -> None:
        """Until every trapped process is gone (the listener hangs up); their network
        namespace's mirror as long."""
        if mirror is not None:
            self.mirrors.add(mirror)
            self._nursery.start_soon(mirror.follow)
        p = select.poll()
        p.register(lis.fd, select.POLLIN)
        try:
            while True:
                await trio.lowlevel.wait_readable(lis.fd)
                while True:
                    ev = p.poll(0)
                    ev = ev[0][1] if ev else 0
                    if ev & select.POLLIN:
                        self._one(lis)
                    elif ev & (select.POLLHUP | select.POLLERR):
                        return
                    else:
                        break
        finally:
            lis.close()
            if mirror is not None:
                self.mirrors.discard(mirror)
                mirror.stop()

    async def catch_up(self) -> None:
        """What programs did to their links (`ip link set ...`) reaches the machine: before a
        file of the mount is opened, so a read after it sees it, as on the kernel (and what the
        machine refused is set back in their namespaces)."""
        for mirror in list(self.mirrors):
            if mirror.take_events():
                await mirror.settled()

    async def settle(self) -> None:
        """Until every program's network namespace shows the changes made so far."""
        for mirror in list(self.mirrors):
            await mirror.settled()

    def _one(self, lis: seccomp.Listener) -> None:
        n = lis.recv()
        if n is None:
            return
        answered = []

        def give(fd: int, cloexec: bool, at: int | None = None) -> int:
            newfd = lis.addfd_send(n.id, fd, cloexec) if at is None else lis.addfd_at(n.id, fd, at, cloexec)
            answered.append(newfd)
            return newfd
        if n.nr in NETLINK_CALLS and lis.fd_base is not None:
            # socket() of a uevent socket, or a call on an fd >= fd_base (uevent_sock.py);
            # one not on a uevent socket runs natively (a filter trapping these calls for
            # another reason must route them past this)
            call = NlCall(n.tid, give, lambda: lis.id_valid(n.id))
            self._answer(lis, n, answered, lambda: self._later_if(self.uevents.call(call, n.nr, n.args, lis.fd_base)))
            return
        self._answer(lis, n, answered, lambda: self._dispatch(n, give))

    def _answer(self, lis: seccomp.Listener, n: seccomp.Notification, answered: list, run) -> None:
        """run() is the call: its result, None (run natively) or Later; what it raises
        becomes the caller's errno."""
        try:
            val = run()
        except SysfsError as e:
            lis.fail(n.id, e.errno)
        except OSError as e:
            # the process went away (ESRCH) or its memory is not there (EFAULT)
            lis.fail(n.id, e.errno if e.errno in (errno.EFAULT, errno.ESRCH, errno.ENOENT) else errno.EIO)
        except Exception:     # noqa: BLE001 - answered and logged, the daemon goes on
            log.exception("system call %d of thread %d", n.nr, n.tid)
            lis.fail(n.id, errno.EIO)
        else:
            if isinstance(val, Later):
                self._nursery.start_soon(self._later, lis, n, val.work)
            elif val is None:
                lis.proceed(n.id)
            elif not answered:
                lis.reply(n.id, val)

    @staticmethod
    def _later_if(val):
        """A uevent socket's blocking receive (an awaitable) is answered later."""
        return Later(val) if callable(val) else val

    async def _later(self, lis: seccomp.Listener, n: seccomp.Notification, work) -> None:
        result = await outcome.acapture(work)
        self._answer(lis, n, [], result.unwrap)

    def _dispatch(self, n: seccomp.Notification, give) -> int | None:
        """The call's result, or None to let it run natively."""
        a = n.args
        if n.nr == seccomp.NR_ioctl:
            f = self.files.of(n.tid, _int(a[0]))
            if f is None:
                return None
            cmd = a[1] & 0xFFFF_FFFF
            if cmd in (GROUP_UNSET_CONTAINER, GROUP_GET_DEVICE_FD):
                self.files.closes()      # their answers count open device fds: a close made before counts
            return self.vfio.ioctl(Call(n.tid, give), f, cmd, a[2])
        if n.nr in (seccomp.NR_statfs, seccomp.NR_fstatfs):
            return self._statfs(n)
        if n.nr in (seccomp.NR_init_module, seccomp.NR_finit_module, seccomp.NR_delete_module):
            return self._module_call(n)
        if n.nr == seccomp.NR_syslog:
            return self._syslog(n)
        if n.nr in (seccomp.NR_pread64, seccomp.NR_pwrite64):
            f = self.files.of(n.tid, _int(a[0]))
            if f is None:
                return None
            return self.vfio.region_io(Call(n.tid, give), f, a[1], a[2], _off(a[3]),
                                       n.nr == seccomp.NR_pwrite64)
        return self._open(n, give)

    def _open(self, n: seccomp.Notification, give) -> int | None:
        a, mem = n.args, ProcMemory(n.tid)
        if n.nr == seccomp.NR_open:
            dirfd, ptr, flags = AT_FDCWD, a[0], a[1]
        elif n.nr == seccomp.NR_openat:
            dirfd, ptr, flags = _int(a[0]), a[1], a[2]
        else:                                  # openat2: struct open_how { u64 flags; ... }
            dirfd, ptr = _int(a[0]), a[1]
            flags = int.from_bytes(mem.read(a[2], 8), "little")
        raw = mem.read_string(ptr)
        if raw == b"/proc/modules" and self.proc_modules_missing:
            return self._proc_modules(n, give, flags)
        if raw.startswith(b"/") and not raw.startswith(b"/dev/vfio/"):
            return None                       # the common case, decided without a lookup
        path = self._resolve(n.tid, dirfd, os.fsdecode(raw))
        if path is None or not path.startswith("/dev/vfio/"):
            return None
        self.files.closes()          # a close the program made before this open counts first
        return self.vfio.open(Call(n.tid, give), path, bool(flags & O_CLOEXEC))

    def _proc_modules(self, n: seccomp.Notification, give, flags: int) -> int:
        """open("/proc/modules"): a read-only file holding what the simulated kernel's
        would show this caller (addresses with CAP_SYSLOG), as of the open."""
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise SysfsError(errno.EACCES)
        text = self.vfio.m.modules.proc_text(capable(n.tid, CAP_SYSLOG)).encode()
        mfd = os.memfd_create("modules", os.MFD_CLOEXEC)
        try:
            os.write(mfd, text)
            ro = os.open(f"/proc/self/fd/{mfd}", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.close(mfd)
        try:
            return give(ro, bool(flags & O_CLOEXEC))
        finally:
            os.close(ro)

    def _module_call(self, n: seccomp.Notification) -> int | Later:
        """init_module, finit_module, delete_module: the simulated kernel's module list,
        never the host's (syscall/modules.py)."""
        a, mods = n.args, self.modules
        self.files.closes()          # a VFIO fd the program closed before no longer holds its module
        if n.nr == seccomp.NR_init_module:
            return mods.init_module(n.tid, a[0], a[1], a[2])
        if n.nr == seccomp.NR_delete_module:
            return mods.delete_module(n.tid, a[0], a[1] & 0xFFFF_FFFF)
        return Later(mods.finit_module(n.tid, _int(a[0]), a[1], _int(a[2])))

    def _statfs(self, n: seccomp.Notification) -> int | Later | None:
        """statfs(path, buf) / fstatfs(fd, buf) of the mount's trees: the kernel's answer
        for sysfs or debugfs written to buf; anything else runs natively."""
        a = n.args
        mem = ProcMemory(n.tid)
        if n.nr == seccomp.NR_fstatfs:
            try:
                path = os.readlink(f"/proc/{n.tid}/fd/{_int(a[0])}")   # the link's text: no FUSE request
            except OSError:
                return None
            kind = statfs.magic(path)
            if kind is None:
                return None
            mem.write(a[1], statfs.statfs(kind))
            return 0
        path = self._resolve(n.tid, AT_FDCWD, os.fsdecode(mem.read_string(a[0])))
        kind = statfs.magic(path) if path is not None else None
        if kind is None:
            return None

        async def looked_up() -> int:
            # whether the path is there (ENOENT, ENOTDIR, ...) is the program's lookup through its
            # own root: on our mount, so a worker thread makes it while this loop serves it
            try:
                await trio.to_thread.run_sync(os.statvfs, f"/proc/{n.tid}/root{path}")
            except OSError as e:
                raise SysfsError(e.errno) from None    # the lookup's own answer, whatever it is
            mem.write(a[1], statfs.statfs(kind))
            return 0
        return Later(looked_up)

    def _syslog(self, n: seccomp.Notification) -> int:
        """syslog(type, bufp, len) answered from the simulated log (model/syslog.py)."""
        action, bufp, length = _int(n.args[0]), n.args[1], _int(n.args[2])
        log = self.host.machine.kmsg
        sl = self._syslogs.get(log)
        if sl is None:
            sl = self._syslogs[log] = Syslog(log)
        if action in (syslog.READ, syslog.READ_ALL, syslog.READ_CLEAR) and not bufp and length:
            raise SysfsError(errno.EINVAL)
        out = sl.call(action, length, _may_syslog(n.tid))
        if isinstance(out, bytes):
            ProcMemory(n.tid).write(bufp, out)
            return len(out)
        return out

    @staticmethod
    def _resolve(tid: int, dirfd: int, path: str) -> str | None:
        """The absolute path a relative one names (from the cwd or dirfd), normalised."""
        if not path.startswith("/"):
            where = "cwd" if dirfd == AT_FDCWD else f"fd/{dirfd}"
            try:
                path = os.readlink(f"/proc/{tid}/{where}") + "/" + path
            except OSError:
                return None
        return os.path.normpath(path).replace("//", "/")
