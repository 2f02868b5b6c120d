"""The system-call adapter under `vfakefs run`, driven by Python programs (the C
programs' essay and error paths are in test_vfio_programs.py): what it leaves alone
stays native, what it takes is answered from the model, nothing deadlocks or hangs."""
from __future__ import annotations

import os
import sys
import textwrap

import pytest

from tests.conftest import REPO, run

GROUP = 42
MEMBERS = ("0000:01:00.0", "0000:01:00.1")


def vfio_bind(mnt, *names):
    for name in names:
        dev = mnt / "sys/bus/pci/devices" / name
        if (dev / "driver").exists():
            (dev / "driver/unbind").write_text(name)
        (dev / "driver_override").write_text("vfio-pci")
        (mnt / "sys/bus/pci/drivers_probe").write_text(name)
        assert os.readlink(dev / "driver").endswith("/vfio-pci")


def py(mnt, code: str, **kw):
    """Run a Python program under `vfakefs run` (the filter installed, the listener with
    the daemon)."""
    return run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(mnt), "--", sys.executable, "-c",
                textwrap.dedent(code)], cwd=REPO, **kw)


@pytest.fixture
def seed(mount_preset):
    m = mount_preset("seed-vtd")
    vfio_bind(m.path, *MEMBERS)
    return m.path


def test_vfio_calls_are_answered_and_other_files_stay_native(seed):
    r = py(seed, f"""
        import fcntl, os, struct
        c = os.open("/dev/vfio/vfio", os.O_RDWR)
        print("api", fcntl.ioctl(c, 0x3B64), "type1v2", fcntl.ioctl(c, 0x3B65, 3))
        g = os.open("/dev/vfio/{GROUP}", os.O_RDWR)
        st = bytearray(struct.pack("<II", 8, 0))
        fcntl.ioctl(g, 0x3B67, st)
        print("status", struct.unpack("<II", st)[1])
        # a file of the mount itself: the adapter must not stat through it (a
        # FUSE request to the daemon that is answering this very call)
        v = os.open("/sys/bus/pci/devices/0000:01:00.0/vendor", os.O_RDONLY)
        try:
            fcntl.ioctl(v, 0x3B64)
        except OSError as e:
            print("sysfs ioctl", e.errno)
        print("sysfs pread", os.pread(v, 7, 1 << 41))
        print("vendor", os.read(v, 7))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:5] == ["api 0 type1v2 1", "status 1", "sysfs ioctl 25", "sysfs pread b''",
                                        "vendor b'0x10de\\n'"]


def test_group_node_is_exclusive_and_released_when_the_program_exits(seed):
    code = f"""
        import os
        g = os.open("/dev/vfio/{GROUP}", os.O_RDWR)
        try:
            os.open("/dev/vfio/{GROUP}", os.O_RDWR)
        except OSError as e:
            print("second", e.errno)
        d = os.dup(g)
        os.close(g)
        try:
            os.open("/dev/vfio/{GROUP}", os.O_RDWR)   # the dup still holds it
        except OSError as e:
            print("after dup", e.errno)
    """
    for _ in range(2):          # the second run finds the node free again
        r = py(seed, code)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["second", "16", "after", "dup", "16"]


def test_nodes_that_do_not_exist_and_relative_paths(seed):
    r = py(seed, """
        import os
        for p in ("/dev/vfio/7", "/dev/vfio/0042", "/dev/vfio/../vfio/vfio"):
            try:
                fd = os.open(p, os.O_RDWR); print(p, "fd")
            except OSError as e:
                print(p, e.errno)
        os.chdir("/dev/vfio")
        fd = os.open("vfio", os.O_RDWR)
        import fcntl
        print("relative", fcntl.ioctl(fd, 0x3B64))
        d = os.open("/dev", os.O_RDONLY | os.O_DIRECTORY)
        fd = os.open("vfio/42", os.O_RDWR, dir_fd=d)
        print("dirfd ok")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:5] == ["/dev/vfio/7 2", "/dev/vfio/0042 2", "/dev/vfio/../vfio/vfio fd",
                                        "relative 0", "dirfd ok"]


def test_bad_pointers_and_unknown_calls(seed):
    r = py(seed, f"""
        import ctypes, fcntl, os
        libc = ctypes.CDLL(None, use_errno=True)
        c = os.open("/dev/vfio/vfio", os.O_RDWR)
        g = os.open("/dev/vfio/{GROUP}", os.O_RDWR)
        for fd, cmd, arg in ((g, 0x3B67, 8), (g, 0x3B68, 16), (c, 0x3B70, 8), (g, 0x3B7F, 0), (c, 0x3B7F, 0)):
            rc = libc.ioctl(fd, cmd, ctypes.c_void_p(arg))
            print(hex(cmd), rc, ctypes.get_errno())
        print("pread group", libc.pread(g, ctypes.create_string_buffer(4), 4, ctypes.c_long(7 << 40)),
              ctypes.get_errno())
    """)
    assert r.returncode == 0, r.stderr
    # EFAULT for unreadable structs; ENOTTY on a group, EINVAL on a container before SET_IOMMU
    assert r.stdout.split("\n")[:6] == ["0x3b67 -1 14", "0x3b68 -1 14", "0x3b70 -1 22", "0x3b7f -1 25",
                                        "0x3b7f -1 22", "pread group -1 22"]


def test_run_without_the_daemons_socket_runs_plainly(seed, tmp_path):
    """A mount whose daemon predates the adapter (no socket): run still works, and the
    nodes fail as they do outside `vfakefs run`."""
    sock = [p for p in (os.listdir("/run/vfakefs") if os.path.isdir("/run/vfakefs") else [])
            if p.endswith(".sock") and p.startswith(str(seed).strip("/").replace("/", "_"))]
    assert len(sock) == 1
    path = f"/run/vfakefs/{sock[0]}"
    os.rename(path, path + ".away")
    try:
        r = py(seed, """
            import os
            try:
                os.open("/dev/vfio/vfio", os.O_RDWR)
            except OSError as e:
                print(e.errno)
        """)
    finally:
        os.rename(path + ".away", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["13"]


def test_statfs_says_sysfs_and_debugfs_not_fuse(seed):
    """sd-device (udevadm, driverctl) checks /sys's f_type; a real kernel says sysfs."""
    r = run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(seed), "--", "sh", "-c",
             'stat -f -c "%T %t %s %b %c %l" /sys /sys/bus/pci/devices/0000:01:00.0 /sys/kernel/debug/iommu; '
             'cd /sys/bus && stat -f -c "%T" pci; stat -f -c "%T" /proc'], cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["sysfs 62656572 4096 0 0 255"] * 2 + ["debugfs 64626720 4096 0 0 255",
                                                                         "sysfs", "proc"]
    r = py(seed, """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open("/sys/bus/pci/devices", os.O_RDONLY)
        st = os.fstatvfs(fd)
        print(st.f_bsize, st.f_blocks, st.f_namemax, st.f_flag & 0x100e)
        buf = ctypes.create_string_buffer(120)
        print(libc.statfs(b"/sys", ctypes.c_void_p(8)), ctypes.get_errno())     # bad buffer: EFAULT
        print(libc.fstatfs(9999, buf), ctypes.get_errno())                      # not open: EBADF
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["4096 0 255 4110", "-1 14", "-1 9"]


def test_statfs_of_what_is_not_there_fails_as_the_lookup_does(seed):
    """The program's own lookup decides (ENOENT, ENOTDIR): only a path that exists is sysfs."""
    r = run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(seed), "--", "sh", "-c",
             'stat -f -c %T /sys/nosuchthing; echo rc=$?; '
             'stat -f -c %T /sys/bus/pci/devices/0000:01:00.0/vendor/x; echo rc=$?; '
             'stat -f -c %T /sys/bus/pci/devices/0000:01:00.0/vendor; echo rc=$?'], cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["rc=1", "rc=1", "sysfs", "rc=0"]
    assert "No such file or directory" in r.stderr and "Not a directory" in r.stderr
