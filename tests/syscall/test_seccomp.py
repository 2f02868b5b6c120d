"""The system-call adapter's pieces without a daemon: the filter traps exactly what it
should (VFIO ioctls, region pread/pwrite, opens) and lets the rest run natively; a
listener's answers reach the trapped call; the memfds' last close is seen."""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import termios

import pytest

from vfakefs.syscall import seccomp
from vfakefs.syscall.files import File, Files
from vfakefs.syscall.process import ProcMemory

VFIO_GET_API_VERSION = 0x3B64
TIB = 1 << 40


def trapped_child(body):
    """Fork a child that installs the filter, hands us the listener, then runs body()
    and exits with its return value; returns (pid, Listener)."""
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            parent.close()
            lfd = seccomp.install_filter()
            socket.send_fds(child, [b"l"], [lfd])
            os.close(lfd)
            child.recv(1)
            code = body()
        finally:
            os._exit(code)
    child.close()
    _, fds, _, _ = socket.recv_fds(parent, 1, 1)
    parent.send(b"g")
    parent.close()
    return pid, seccomp.Listener(fds[0])


def wait(pid) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_filter_traps_vfio_ioctls_only_and_answers_reach_the_call():
    r, w = os.pipe()

    def body():
        if fcntl.ioctl(r, termios.FIONREAD, b"\0\0\0\0") != b"\0\0\0\0":   # native: not trapped
            return 2
        if fcntl.ioctl(r, VFIO_GET_API_VERSION) != 1234:
            return 3
        try:
            fcntl.ioctl(r, VFIO_GET_API_VERSION + 1)
        except OSError as e:
            return 10 if e.errno == errno.ENOTTY else 4
        return 5
    pid, lis = trapped_child(body)
    n = lis.recv()
    assert (n.nr, n.args[0], n.args[1]) == (seccomp.NR_ioctl, r, VFIO_GET_API_VERSION)
    lis.reply(n.id, 1234)
    n = lis.recv()
    assert n.args[1] == VFIO_GET_API_VERSION + 1
    lis.fail(n.id, errno.ENOTTY)
    assert wait(pid) == 10
    lis.close()


def test_region_offsets_trap_and_below_one_tib_runs_natively(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"native")
    fd = os.open(path, os.O_RDWR)

    def body():
        if os.pread(fd, 6, 0) != b"native":
            return 2
        if os.pread(fd, 6, 7 * TIB) != b"region":
            return 3
        return 10 if os.pwrite(fd, b"xy", 7 * TIB + 4) == 2 else 4
    pid, lis = trapped_child(body)
    n = lis.recv()
    assert (n.nr, n.args[2], n.args[3]) == (seccomp.NR_pread64, 6, 7 * TIB)
    ProcMemory(n.tid).write(n.args[1], b"region")           # into the caller's buffer
    lis.reply(n.id, 6)
    n = lis.recv()
    assert (n.nr, n.args[3]) == (seccomp.NR_pwrite64, 7 * TIB + 4)
    assert ProcMemory(n.tid).read(n.args[1], 2) == b"xy"
    lis.reply(n.id, 2)
    assert wait(pid) == 10
    assert path.read_bytes() == b"native"                  # the trapped write never ran
    lis.close()


def test_opens_are_trapped_and_may_continue_natively(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")

    def body():
        fd = os.open(path, os.O_RDONLY)                     # openat
        return 10 if os.read(fd, 1) == b"x" else 2
    pid, lis = trapped_child(body)
    n = lis.recv()
    assert n.nr == seccomp.NR_openat
    assert ProcMemory(n.tid).read_string(n.args[1]) == os.fsencode(path)
    lis.proceed(n.id)
    assert wait(pid) == 10
    lis.close()


def test_addfd_send_makes_the_file_the_calls_result():
    memfd = os.memfd_create("x")
    os.write(memfd, b"injected")

    def body():
        fd = os.open("/dev/vfio/vfio", os.O_RDWR)
        return 10 if os.pread(fd, 8, 0) == b"injected" else 2
    pid, lis = trapped_child(body)
    n = lis.recv()
    newfd = lis.addfd_send(n.id, memfd, cloexec=True)
    assert newfd >= 0
    assert wait(pid) == 10
    lis.close()


def test_a_killed_caller_leaves_nothing_to_answer():
    r, w = os.pipe()

    def body():
        fcntl.ioctl(r, VFIO_GET_API_VERSION)
        return 0
    pid, lis = trapped_child(body)
    n = lis.recv()
    os.kill(pid, 9)
    assert wait(pid) == -9
    lis.reply(n.id, 0)              # ENOENT from the kernel, swallowed: nobody waits
    lis.close()


def test_last_close_of_handed_descriptions_releases_once():
    files = Files()
    released = []
    f = File(files, "container", object(), released.append)
    a = f.hand_out(os.dup)          # two programs' descriptions (dups of fresh ones)
    b = f.hand_out(os.dup)
    assert files.of(os.getpid(), a) is f and files.of(os.getpid(), b) is f
    os.close(a)
    files.closes()
    assert released == []
    c = os.dup(b)                   # a dup shares b's description: no event at close
    os.close(b)
    files.closes()
    assert released == []
    os.close(c)
    files.closes()
    assert released == [f.obj]
    assert files.of(os.getpid(), c) is None
    files.close()


@pytest.mark.parametrize("n", [1, 4095, 4096, 4097, 70000])
def test_process_memory_round_trip_and_efault(n):
    import ctypes
    buf = ctypes.create_string_buffer(n)
    mem = ProcMemory(os.getpid())
    data = bytes(range(256)) * (n // 256) + bytes(n % 256)
    mem.write(ctypes.addressof(buf), data)
    assert buf.raw == data and mem.read(ctypes.addressof(buf), n) == data
    from vfakefs.model.errors import SysfsError
    with pytest.raises(SysfsError) as e:
        mem.read(0, 8)
    assert e.value.errno == errno.EFAULT


def test_filter_program_is_well_formed():
    prog = seccomp.filter_program()
    assert len(prog) % 8 == 0
    for i in range(0, len(prog), 8):
        code, jt, jf, k = struct.unpack_from("<HBBI", prog, i)
        assert i // 8 + 1 + max(jt, jf) < len(prog) // 8 or code == 0x06
