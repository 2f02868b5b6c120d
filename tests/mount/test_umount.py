"""`vfakefs umount` tells the truth, and the daemon's state (pidfile, log) is clean
after every exit: umount, SIGTERM/SIGINT/SIGHUP, and a SIGKILL recovered. A mount
with a file open is busy (nothing changes) unless --lazy detaches it, and then the
daemon serves the open file and exits when it is closed."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest

from vfakefs.fuse import state
from tests.conftest import (daemon_pid, is_mounted, make_mountpoint, mounted, mounts_at, pidfile,
                            run, vfakefs, wait_exit)

VENDOR = "sys/bus/pci/devices/0000:03:00.0/vendor"


def logfile(mnt: Path) -> Path:
    """The daemon's log, beside its pidfile."""
    return pidfile(mnt).with_suffix(".log")


def exited(pid: int) -> bool:
    """Whether process pid has exited by now (no waiting)."""
    return state.wait_exit(pid, 0)


def one_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("vfakefs: ")
    return lines[0]


def assert_no_state(mnt: Path) -> None:
    assert not pidfile(mnt).exists()
    assert not logfile(mnt).exists() and not Path(f"{logfile(mnt)}.1").exists()
    assert not pidfile(mnt).with_suffix(".sock").exists()     # `vfakefs run`'s way to the daemon


def test_umount_waits_for_the_daemon_and_leaves_no_state(tmp_path):
    mnt = make_mountpoint(tmp_path)
    with mounted("seed-vtd", mnt):
        pid = daemon_pid(mnt)
        assert logfile(mnt).is_file()   # while it runs, the log is beside the pidfile
        r = vfakefs("umount", mnt)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert exited(pid)              # already gone when umount returns
        assert not is_mounted(mnt)
        assert_no_state(mnt)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_signalled_daemon_cleans_up_and_umount_says_not_mounted(tmp_path, sig):
    mnt = make_mountpoint(tmp_path)
    with mounted("seed-vtd", mnt):
        assert run(["cat", mnt / VENDOR]).stdout == "0x8086\n"
        pid = daemon_pid(mnt)
        os.kill(pid, sig)
        wait_exit(pid)
        assert not is_mounted(mnt)
        assert_no_state(mnt)
        r = vfakefs("umount", mnt)
        assert r.returncode == 1
        line = one_line(r)
        assert line == f"vfakefs: {mnt} is not mounted", line
        assert_no_state(mnt)


def test_umount_recovers_a_sigkilled_daemons_mount_and_state(tmp_path):
    mnt = make_mountpoint(tmp_path)
    with mounted("seed-vtd", mnt):
        assert run(["cat", mnt / VENDOR]).stdout == "0x8086\n"
        pid = daemon_pid(mnt)
        os.kill(pid, signal.SIGKILL)
        wait_exit(pid)
        assert pidfile(mnt).exists() and mounts_at(mnt) == ["fuse.vfakefs"]   # what SIGKILL leaves
        assert pidfile(mnt).with_suffix(".sock").exists()
        r = vfakefs("umount", mnt)
        assert r.returncode == 0, r.stderr
        assert not is_mounted(mnt)
        assert_no_state(mnt)


def test_umount_with_a_file_open_is_busy_and_changes_nothing(tmp_path):
    mnt = make_mountpoint(tmp_path)
    with mounted("seed-vtd", mnt):
        pid = daemon_pid(mnt)
        fd = os.open(mnt / VENDOR, os.O_RDONLY)
        try:
            r = vfakefs("umount", mnt)
            assert r.returncode == 1
            line = one_line(r)
            assert "busy" in line and str(mnt) in line and "--lazy" in line, line
            # mount, daemon and pidfile intact: the mount still answers, the open file too
            assert mounts_at(mnt) == ["fuse.vfakefs"]
            assert not exited(pid) and daemon_pid(mnt) == pid
            assert run(["cat", mnt / VENDOR]).stdout == "0x8086\n"
            assert os.pread(fd, 64, 0) == b"0x8086\n"
        finally:
            os.close(fd)
        r = vfakefs("umount", mnt)
        assert r.returncode == 0, r.stderr
        assert exited(pid) and not is_mounted(mnt)
        assert_no_state(mnt)


def test_a_cwd_on_the_mount_is_busy_too(tmp_path):
    mnt = make_mountpoint(tmp_path)
    with mounted("seed-vtd", mnt):
        p = subprocess.Popen(["cat"], cwd=mnt / "sys", stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            r = vfakefs("umount", mnt)
            assert r.returncode == 1 and "busy" in one_line(r)
            assert mounts_at(mnt) == ["fuse.vfakefs"]
        finally:
            p.communicate(b"")
        assert vfakefs("umount", mnt).returncode == 0 and not is_mounted(mnt)


def test_lazy_umount_detaches_and_the_daemon_exits_when_the_last_file_closes(tmp_path):
    mnt = make_mountpoint(tmp_path)
    with mounted("seed-vtd", mnt):
        pid = daemon_pid(mnt)
        fd = os.open(mnt / VENDOR, os.O_RDONLY)
        try:
            r = vfakefs("umount", "--lazy", mnt)
            assert r.returncode == 0, r.stderr
            line = one_line(r)
            assert "busy" in line and "detached" in line and str(pid) in line, line
            assert not is_mounted(mnt)                    # gone from the namespace at once
            assert os.pread(fd, 64, 0) == b"0x8086\n"     # the open file is still served
            assert not exited(pid) and daemon_pid(mnt) == pid
            r = vfakefs("umount", mnt)                    # nothing left to unmount: said so
            assert r.returncode == 1
            line = one_line(r)
            assert "not mounted" in line and "--lazy" in line and str(pid) in line, line
            # and the mountpoint can be used again at once, by a new daemon with its own state
            r = vfakefs("mount", "-t", "seed-vtd", mnt)
            assert r.returncode == 0, r.stderr
            new = daemon_pid(mnt)
            assert new != pid and mounts_at(mnt) == ["fuse.vfakefs"]
        finally:
            os.close(fd)
        wait_exit(pid)   # the last file closed: the detached daemon exits
        # leaving the new daemon's mount, pidfile and log alone
        assert mounts_at(mnt) == ["fuse.vfakefs"] and daemon_pid(mnt) == new
        assert logfile(mnt).is_file()
        assert run(["cat", mnt / VENDOR]).stdout == "0x8086\n"
        assert vfakefs("umount", mnt).returncode == 0
        assert exited(new) and not is_mounted(mnt)
        assert_no_state(mnt)


def test_a_detached_daemon_stopped_by_sigterm_leaves_the_new_mount_alone(tmp_path):
    mnt = make_mountpoint(tmp_path)
    with mounted("seed-vtd", mnt):
        old = daemon_pid(mnt)
        fd = os.open(mnt / VENDOR, os.O_RDONLY)
        try:
            assert vfakefs("umount", "--lazy", mnt).returncode == 0
            assert vfakefs("mount", "-t", "seed-vtd", mnt).returncode == 0
            new = daemon_pid(mnt)
            os.kill(old, signal.SIGTERM)
            wait_exit(old)
        finally:
            os.close(fd)
        assert mounts_at(mnt) == ["fuse.vfakefs"] and daemon_pid(mnt) == new
        assert run(["cat", mnt / VENDOR]).stdout == "0x8086\n"


def test_lazy_umount_of_an_idle_mount_is_a_plain_umount(tmp_path):
    mnt = make_mountpoint(tmp_path)
    with mounted("seed-vtd", mnt):
        pid = daemon_pid(mnt)
        r = vfakefs("umount", "--lazy", mnt)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert exited(pid) and not is_mounted(mnt)
        assert_no_state(mnt)


def test_a_log_with_something_in_it_is_kept_until_the_next_mount(tmp_path):
    mnt = make_mountpoint(tmp_path)
    with mounted("seed-vtd", mnt):
        with open(logfile(mnt), "a") as f:   # as if the daemon had reported an internal error
            f.write("vfakefs: internal error (answered EIO)\n")
        assert vfakefs("umount", mnt).returncode == 0
        assert not pidfile(mnt).exists()
        assert logfile(mnt).read_text() == "vfakefs: internal error (answered EIO)\n"
    with mounted("seed-vtd", mnt):             # the next mount there replaces it
        assert logfile(mnt).read_text() == ""
    assert_no_state(mnt)


def test_umount_refuses_a_mount_that_is_not_vfakefs(tmp_path):
    mnt = make_mountpoint(tmp_path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "h2-test", mnt], check=True)
    try:
        r = vfakefs("umount", mnt)
        assert r.returncode == 1
        assert one_line(r) == f"vfakefs: {mnt} is not a vfakefs mount (tmpfs)"
        assert mounts_at(mnt) == ["tmpfs"]
    finally:
        subprocess.run(["umount", mnt])
    assert not is_mounted(mnt)


def test_the_log_is_capped_with_one_older_part(tmp_path):
    from vfakefs.fuse.state import CappedLog
    path = tmp_path / "d.log"
    spare = os.open(os.devnull, os.O_WRONLY)   # stands for the daemon's stderr
    handler = CappedLog(path, fds=(spare,), max_bytes=100)
    logger = logging.getLogger("vfakefs-test-capped")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(20):
            logger.error("line %02d %s", i, "x" * 20)
        os.write(spare, b"from stderr\n")
        handler.flush()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["d.log", "d.log.1"]
        assert path.stat().st_size <= 100 + len("from stderr\n")
        assert Path(f"{path}.1").stat().st_size <= 100
        assert path.read_text().splitlines()[-2:] == ["line 19 " + "x" * 20, "from stderr"]
    finally:
        logger.removeHandler(handler)
        handler.close()
        os.close(spare)
