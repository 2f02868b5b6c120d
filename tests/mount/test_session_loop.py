"""What the daemon's FUSE session loop (pyfuse3's, patched: patches/) guarantees, through a
real mount: a request whose handler waits (a blocking /dev/kmsg read) holds up no other
request, however many wait at once, and the daemon still exits cleanly on umount and on
SIGTERM once workers have waited and gone idle, or while they wait."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from tests.conftest import daemon_pid, is_mounted, make_mountpoint, mounted, sh, vfakefs, wait_exit

VENDOR = "sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0/vendor"   # seed-vtd's 0000:03:00.0

WAITER = textwrap.dedent("""
    import os, sys
    fd = os.open(sys.argv[1], os.O_RDONLY)       # blocking
    os.lseek(fd, 0, os.SEEK_END)
    sys.stdout.write(os.read(fd, 8192).decode())
""")

READS = textwrap.dedent("""
    import sys
    got = set()
    for _ in range(50):
        with open(sys.argv[1], "rb", buffering=0) as f:
            got.add(f.read(4096))
    print(got)
""")


def in_read(pid: int) -> bool:
    """Whether single-threaded process pid is inside read(2) (syscall 0 on x86-64)."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split()[0] == "0"
    except (OSError, IndexError):
        return False


def blocked_readers(kmsg, n: int) -> list[subprocess.Popen]:
    """n processes, each blocked in a read of kmsg."""
    ps = [subprocess.Popen([sys.executable, "-c", WAITER, str(kmsg)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
          for _ in range(n)]
    deadline = time.monotonic() + 60
    while not all(in_read(p.pid) for p in ps):
        assert all(p.poll() is None for p in ps), "a blocking read of /dev/kmsg returned"
        assert time.monotonic() < deadline, "the readers did not reach read(2)"
        time.sleep(0.05)
    return ps


def end(ps: list[subprocess.Popen]) -> None:
    for p in ps:
        p.kill()
        p.wait()


def test_blocked_kmsg_readers_hold_up_no_other_request(tmp_path):
    mnt = make_mountpoint(tmp_path)
    with mounted("seed-vtd", mnt):
        ps = blocked_readers(mnt / "dev/kmsg", 4)
        try:
            # 200 requests while four handlers wait: none of them waits for those
            r = subprocess.run([sys.executable, "-c", READS, str(mnt / VENDOR)],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and r.stdout == "{b'0x8086\\n'}\n", r.stderr
            assert all(p.poll() is None and in_read(p.pid) for p in ps)
            assert sh(f"echo '<4>after fifty reads' > {mnt}/dev/kmsg").returncode == 0
            outs = [p.communicate(timeout=30)[0] for p in ps]
        finally:
            end(ps)
        assert [o.split(";", 1)[1] for o in outs] == ["after fifty reads\n"] * 4
        # the four workers that waited are idle now: umount still ends the daemon
        pid = daemon_pid(mnt)
        r = vfakefs("umount", mnt)
        assert r.returncode == 0, r.stderr
        wait_exit(pid)
        assert not is_mounted(mnt)


def test_sigterm_ends_the_daemon_while_reads_wait(tmp_path):
    mnt = make_mountpoint(tmp_path)
    with mounted("seed-vtd", mnt):
        ps = blocked_readers(mnt / "dev/kmsg", 3)
        pid = daemon_pid(mnt)
        try:
            os.kill(pid, signal.SIGTERM)
            wait_exit(pid)
            assert not is_mounted(mnt)
            outs = [p.communicate(timeout=30) for p in ps]
        finally:
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)   # a reader killed while its read waits waits for the answer
            end(ps)
        # each read was answered before the daemon went: the error a dead server's reader gets
        assert [p.returncode for p in ps] == [1] * 3
        assert all(err.rstrip().endswith("OSError: [Errno 107] Transport endpoint is not connected")
                   for _, err in outs), outs


HAMMER = textwrap.dedent("""
    import os, sys
    n = 0
    while True:
        try:
            fd = os.open(sys.argv[1], os.O_RDONLY)
            os.read(fd, 4096)
            os.close(fd)
        except OSError:
            break                                # the daemon went
        n += 1
        if n == 500:
            print("going", flush=True)
""")


def test_other_tasks_run_under_a_steady_stream_of_requests(tmp_path):
    # Two readers without pause on the daemon's CPU: each reply lets one run and send its
    # next request before the daemon looks again, so the session loop reads request after
    # request straight away (patches/: BURST_MAX). A woken /dev/kmsg read and SIGTERM are
    # other trio tasks: they must still get their turn.
    mnt = make_mountpoint(tmp_path)
    cpu = min(os.sched_getaffinity(0))
    with mounted("seed-vtd", mnt):
        pid = daemon_pid(mnt)
        os.sched_setaffinity(pid, {cpu})
        waiter = blocked_readers(mnt / "dev/kmsg", 1)
        hammers = [subprocess.Popen([sys.executable, "-c", HAMMER, str(mnt / VENDOR)],
                                    stdout=subprocess.PIPE, text=True,
                                    preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
                   for _ in range(2)]
        try:
            assert [h.stdout.readline() for h in hammers] == ["going\n"] * 2
            assert sh(f"echo '<4>under load' > {mnt}/dev/kmsg").returncode == 0
            out = waiter[0].communicate(timeout=30)[0]
            assert out.split(";", 1)[1] == "under load\n"
            assert all(h.poll() is None for h in hammers)
            os.kill(pid, signal.SIGTERM)
            wait_exit(pid)
            assert not is_mounted(mnt)
            assert [h.wait(timeout=30) for h in hammers] == [0, 0]
        finally:
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)
            end(waiter + hammers)
