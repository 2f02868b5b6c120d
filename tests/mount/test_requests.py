"""The `requests` control (MNT/sys/kernel/debug/vfakefs/requests): the FUSE requests the
mount has served since it was mounted, per opcode, read through vfakefs.client. What a
read costs is the kernel's FUSE client's doing (see bench/read_rate.py's docstring for
the trace): these tests pin it, so a change that adds a request to every read shows here.

Each count is taken at the control's own OPEN; one read of the control through the
client then costs its two READs (the text, then the end) and its RELEASE, and the next
read's OPEN: the overhead every difference below subtracts. FORGETs are left out of the
differences: the kernel sends them when it evicts inodes, whenever it likes.
"""
from __future__ import annotations

import errno
import os
import subprocess

from tests.conftest import run, sh
from vfakefs.client import Controls
from vfakefs.fuse.ops import CACHE_LISTINGS, SysfsOps

VF = "sys/kernel/debug/vfakefs"
FN = "sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0"   # seed-vtd's 0000:03:00.0 where it lives
LINKED = "sys/bus/pci/devices/0000:03:00.0"                # the same, through the bus's symlink
OVERHEAD = {"open": 1, "read": 2, "release": 1}


def delta(a: dict, b: dict) -> dict:
    return {op: b[op] - a[op] for op in b if b[op] != a[op] and op != "forget"}


def cost(c: Controls, action) -> dict:
    """The requests of action(), done once before to warm the kernel's caches."""
    action()
    before = c.requests()
    action()
    d = delta(before, c.requests())
    for op, n in OVERHEAD.items():
        d[op] -= n
    return {op: n for op, n in d.items() if n}


def test_a_read_of_the_control_costs_open_two_reads_release(seed_mnt):
    c = Controls(seed_mnt.path)
    first = c.requests()
    assert list(first)[:5] == ["lookup", "forget", "getattr", "setattr", "readlink"]
    assert first["open"] >= 1 and first["lookup"] >= 1 and first["write"] == 0
    a = c.requests()
    b = c.requests()
    assert delta(a, b) == OVERHEAD


def test_reads_cost_the_requests_the_trace_shows(seed_mnt):
    c = Controls(seed_mnt.path)
    f, linked = seed_mnt.path / FN / "vendor", seed_mnt.path / LINKED / "vendor"

    def cat(p):
        return lambda: subprocess.run(["cat", p], check=True, stdout=subprocess.DEVNULL)

    def raw(p):
        def go():
            fd = os.open(p, os.O_RDONLY)
            assert os.read(fd, 4096) == b"0x8086\n"
            os.close(fd)
        return go

    def unbuffered(p):
        def go():
            with open(p, "rb", buffering=0) as fh:
                assert fh.read(4096) == b"0x8086\n"
        return go

    # cat: openat, fstat (a READ marked the inode's atime stale: GETATTR), read to the end
    assert cost(c, cat(f)) == {"getattr": 1, "open": 1, "read": 2, "release": 1}
    # the four of DESIGN.md's table (and of the C baseline), and without the fstat three
    assert cost(c, unbuffered(f)) == {"getattr": 1, "open": 1, "read": 1, "release": 1}
    assert cost(c, raw(f)) == {"open": 1, "read": 1, "release": 1}
    # a walk through a symlink asks for its target, unless the kernel caches it (the patched
    # pyfuse3 on a kernel >= 6.14: ops.symlink_cache_safe) and has it already from the last walk
    raw(linked)()
    kept = SysfsOps.enable_symlink_cache and CACHE_LISTINGS
    assert cost(c, raw(linked)) == {**({} if kept else {"readlink": 1}), "open": 1, "read": 1, "release": 1}
    # a cached entry's stat asks nothing
    assert cost(c, lambda: os.stat(f)) == {}


def test_requests_is_read_only(seed_mnt):
    c = Controls(seed_mnt.path)
    f = seed_mnt.path / VF / "requests"
    assert oct(os.stat(f).st_mode & 0o777) == "0o444"
    r = sh(f"echo 0 > {f}")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    before = c.requests()
    r = run(["python3", "-c", f"import os\ntry:\n os.open('{f}', os.O_WRONLY)\nexcept OSError as e:\n print(e.errno)"])
    assert r.stdout.strip() == str(errno.EACCES)
    after = c.requests()
    assert after["write"] == before["write"] == 0   # no write ever reached it
    # the refused open is counted (and python3's own start walks nothing on the mount)
    assert delta(before, after) == {**OVERHEAD, "open": OVERHEAD["open"] + 1}


def test_the_counts_go_on_across_a_reset(mount_preset):
    m = mount_preset("seed-vtd")
    c = Controls(m.path)
    before = c.requests()
    c.reset()
    after = c.requests()
    assert after["write"] == before["write"] + 1
    assert all(after[op] >= n for op, n in before.items())
