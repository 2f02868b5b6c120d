"""MNT/dev/kmsg and MNT/sys/kernel/debug/vfakefs/dmesg through a real mount, read
and written by real programs: dd, cat, bash, python's os.read, util-linux dmesg
(in a private mount namespace this test's own command creates, with MNT/dev/kmsg
bound over /dev/kmsg; the host's /dev/kmsg is never touched).
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import NOBODY, REPO, run, sh

RECORD_RE = re.compile(r"^(\d+),(\d+),(\d+),-;(.*)$")
IXGBE = "0000:03:00.0"
VF_BUSY = f"ixgbe {IXGBE}: 4 VFs already enabled. Disable before enabling 8 VFs"


def records(text: str) -> list[tuple[int, int, int, str]]:
    out = []
    for line in text.splitlines():
        m = RECORD_RE.match(line)
        assert m, f"not a /dev/kmsg record: {line!r}"
        out.append((int(m[1]), int(m[2]), int(m[3]), m[4]))
    return out


def read_all(fd: int) -> list[bytes]:
    """Records until EAGAIN, one read(2) each."""
    out = []
    while True:
        try:
            out.append(os.read(fd, 8192))
        except BlockingIOError:
            return out


def test_dev_kmsg_is_a_0644_regular_file(seed_mnt):
    st = os.stat(seed_mnt.path / "dev/kmsg")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert "kmsg" in os.listdir(seed_mnt.path / "dev") and "vfio" in os.listdir(seed_mnt.path / "dev")


def test_dd_nonblock_reads_every_record_then_eagain(seed_mnt):
    r = run(["dd", f"if={seed_mnt.path}/dev/kmsg", "iflag=nonblock", "bs=8k"])
    assert r.returncode == 1 and "Resource temporarily unavailable" in r.stderr, r.stderr
    recs = records(r.stdout)
    assert [s for _, s, _, _ in recs] == list(range(len(recs)))   # from the first record, in order
    n = len(recs)
    assert f"0+{n} records in" in r.stderr                          # one record per read(2)
    assert recs[0][0] == 5 and recs[0][3].startswith("Linux version 6.12")   # kern.notice
    assert any(t == "DMAR: IOMMU enabled" and p == 6 for p, _, _, t in recs)
    usec = [u for _, _, u, _ in recs]
    assert usec == sorted(usec)


def test_python_reads_one_record_per_read(seed_mnt):
    fd = os.open(seed_mnt.path / "dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        first = os.read(fd, 8192)
        assert first.count(b"\n") == 1 and first.startswith(b"5,0,")
        with pytest.raises(OSError) as e:     # a buffer too small for the next record
            os.read(fd, 10)
        assert e.value.errno == errno.EINVAL
        rest = read_all(fd)                  # the failed read lost nothing
        assert rest[0].startswith(b"6,1,") and all(r.count(b"\n") == 1 for r in rest)
        assert os.lseek(fd, 0, os.SEEK_SET) == 0   # SEEK_SET: back to the first record
        assert os.read(fd, 8192) == first
        end = os.lseek(fd, 0, os.SEEK_END)   # SEEK_END: after the last record
        assert end == sum(map(len, [first, *rest])) == os.fstat(fd).st_size
        with pytest.raises(BlockingIOError):
            os.read(fd, 8192)
        assert os.lseek(fd, 0, os.SEEK_DATA) == 0   # SEEK_DATA: the first record (nothing cleared)
        assert os.read(fd, 8192) == first
    finally:
        os.close(fd)


def test_each_open_starts_at_the_first_record(seed_mnt):
    a = os.open(seed_mnt.path / "dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    b = os.open(seed_mnt.path / "dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        ra = read_all(a)
        assert os.read(b, 8192) == ra[0]
    finally:
        os.close(a)
        os.close(b)


def test_a_store_that_logs_appears_as_a_new_record(mount_preset):
    m = mount_preset("seed-vtd")
    numvfs = m.devdir(IXGBE) / "sriov_numvfs"
    fd = os.open(m.path / "dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.lseek(fd, 0, os.SEEK_END)
        assert sh(f"echo 4 > {numvfs}").returncode == 0
        added = records(b"".join(read_all(fd)).decode())
        assert any(t.startswith("ixgbevf 0000:03:10.0") for *_, t in added)
        r = sh(f"echo 8 > {numvfs}")
        assert r.returncode == 1 and "Device or resource busy" in r.stderr
        (prio, seq, usec, text), = records(b"".join(read_all(fd)).decode())
        assert (prio, text) == (4, VF_BUSY) and seq == added[-1][1] + 1 and usec > added[-1][2]
    finally:
        os.close(fd)
    assert m.read(m.path / "sys/kernel/debug/vfakefs/dmesg").splitlines()[-1].endswith("] " + VF_BUSY)


WAITER = textwrap.dedent("""
    import os, sys
    fd = os.open(sys.argv[1], os.O_RDONLY)       # blocking
    os.lseek(fd, 0, os.SEEK_END)
    print("ready", flush=True)
    sys.stdout.write(os.read(fd, 8192).decode())
""")


def start_waiter(path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", WAITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"
    return p


def test_blocking_read_is_woken_by_a_new_record(mount_preset):
    m = mount_preset("seed-vtd")
    p = start_waiter(m.path / "dev/kmsg")
    try:
        assert sh(f"echo 4 > {m.devdir(IXGBE)}/sriov_numvfs").returncode == 0
        out, _ = p.communicate(timeout=30)
    finally:
        p.kill()
        p.wait()
    (prio, _, _, text), = records(out)
    assert text.startswith("pci 0000:03:10.0: [8086:1515]") or text.startswith("ixgbe")


def test_blocking_read_is_woken_by_a_write_to_kmsg(mount_preset):
    m = mount_preset("seed-vtd")
    p = start_waiter(m.path / "dev/kmsg")
    try:
        assert sh(f"echo '<3>from user space' > {m.path}/dev/kmsg").returncode == 0
        out, _ = p.communicate(timeout=30)
    finally:
        p.kill()
        p.wait()
    assert records(out)[0][0] == 11 and records(out)[0][3] == "from user space"   # user.err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_signalled_blocked_reader_goes_away(mount_preset, sig):
    """pyfuse3 passes no FUSE_INTERRUPT on: the server notices the pending signal
    (SIGINT: python's handler; SIGTERM, SIGKILL: fatal)."""
    m = mount_preset("seed-vtd")
    p = start_waiter(m.path / "dev/kmsg")
    p.send_signal(sig)
    try:
        p.wait(timeout=30)
    finally:
        p.kill()
        p.wait()
    assert p.returncode != 0
    # the mount still answers
    assert m.read(m.devdir(IXGBE) / "sriov_numvfs") == "0\n"


def test_writes_need_root_reads_do_not(seed_mnt):
    r = run(["bash", "-c", "echo '<3>nobody' > dev/kmsg"], cwd=seed_mnt.path, user=NOBODY)
    assert r.returncode == 1 and "Permission denied" in r.stderr
    r = run(["dd", "if=dev/kmsg", "iflag=nonblock", "bs=8k", "count=1"], cwd=seed_mnt.path, user=NOBODY)
    assert r.returncode == 0 and records(r.stdout)[0][1] == 0


def test_write_sets_level_and_facility(mount_preset):
    m = mount_preset("seed-vtd")
    kmsg = m.path / "dev/kmsg"
    assert sh(f"echo '<6>informative' > {kmsg}; echo plain > {kmsg}").returncode == 0
    r = run([sys.executable, "-c", "import os, sys; os.write(os.open(sys.argv[1], os.O_WRONLY), b'a\\nb\\n')", kmsg])
    assert r.returncode == 0, r.stderr   # one write(2), one record
    tail = records(run(["dd", f"if={kmsg}", "iflag=nonblock", "bs=8k"]).stdout)[-3:]
    assert [(p, t) for p, _, _, t in tail] == [(14, "informative"), (12, "plain"), (12, "a\\x0ab")]
    r = sh(f"head -c 2000 /dev/zero | tr '\\0' x > {kmsg}")
    assert r.returncode == 1 and "Invalid argument" in r.stderr


def test_debug_dmesg_is_the_log_as_dmesg_prints_it(seed_mnt):
    text = seed_mnt.read(seed_mnt.path / "sys/kernel/debug/vfakefs/dmesg")
    recs = records(run(["dd", f"if={seed_mnt.path}/dev/kmsg", "iflag=nonblock", "bs=8k"]).stdout)
    want = "".join("[%5d.%06d] %s\n" % (u // 1_000_000, u % 1_000_000, t) for _, _, u, t in recs)
    assert text == want
    assert text.startswith("[    0.000000] Linux version 6.12")
    st = os.stat(seed_mnt.path / "sys/kernel/debug/vfakefs/dmesg")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444


# --- util-linux dmesg ----------------------------------------------------------------------------
def in_namespace(mnt, script: str) -> subprocess.CompletedProcess:
    """script in a private mount namespace (made here by unshare) whose /dev is a tmpfs
    holding only MNT/dev/kmsg, bound as /dev/kmsg: the same whatever the host's /dev has
    (a container may have no /dev/kmsg to bind over)."""
    return run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                "mount -t tmpfs -o mode=755 vfakefs-test-dev /dev && : > /dev/kmsg && "
                f"mount --bind {mnt}/dev/kmsg /dev/kmsg && {script}"])


needs_dmesg = pytest.mark.skipif(not shutil.which("dmesg") or not shutil.which("unshare"),
                                 reason="util-linux dmesg and unshare needed")


@needs_dmesg
def test_dmesg_reads_the_simulated_log(seed_mnt):
    r = in_namespace(seed_mnt.path, "dmesg")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # the simulated log, not the host's (dmesg falls back to syslog(2) if /dev/kmsg fails)
    assert re.match(r"^\[    0\.000000\] Linux version 6\.12\.117-amd64 ", lines[0]), lines[0]
    assert seed_mnt.read(seed_mnt.path / "sys/kernel/debug/vfakefs/dmesg") == r.stdout


@needs_dmesg
def test_dmesg_raw_decode_and_level(mount_preset):
    m = mount_preset("seed-vtd")
    assert sh(f"echo 4 > {m.devdir(IXGBE)}/sriov_numvfs; echo 8 > {m.devdir(IXGBE)}/sriov_numvfs").returncode == 1
    assert sh(f"echo '<3>an error from user space' > {m.path}/dev/kmsg").returncode == 0
    r = in_namespace(m.path, "dmesg -r | head -2; echo ==; dmesg -x | tail -2; echo ==; dmesg --level=err,warn")
    assert r.returncode == 0, r.stderr
    raw, decoded, levels = r.stdout.split("==\n")
    assert re.match(r"^<5>\[    0\.000000\] Linux version ", raw)
    assert re.search(r"^<6>\[ *\d+\.\d{6}\] Command line: ", raw, re.M)
    assert re.search(r"^kern  :warn  : \[ *\d+\.\d{6}\] " + re.escape(VF_BUSY) + "$", decoded, re.M)
    assert re.search(r"^user  :err   : \[ *\d+\.\d{6}\] an error from user space$", decoded, re.M)
    assert [re.sub(r"^\[ *\d+\.\d{6}\] ", "", x) for x in levels.splitlines()] == [
        VF_BUSY, "an error from user space"]


@needs_dmesg
def test_vfakefs_run_puts_dev_kmsg_in_place(seed_mnt):
    r = run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(seed_mnt.path), "--", "sh", "-c",
             "dmesg --level=notice"], cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("[    0.000000] Linux version 6.12")


def _in_read(tid: int) -> bool:
    """Whether thread tid of this process is inside read(2) (syscall 0 on x86-64)."""
    try:
        with open(f"/proc/self/task/{tid}/syscall") as f:
            return f.read().split()[0] == "0"
    except (OSError, IndexError):
        return False


def test_80_blocking_readers_all_wait_for_the_next_record(mount_preset):
    """A blocking read of /dev/kmsg never answers EAGAIN, however many wait at once
    (devkmsg_read sleeps on log_wait); O_NONBLOCK readers still get EAGAIN."""
    import threading
    m = mount_preset("seed-vtd")
    kmsg = m.path / "dev/kmsg"
    n = 80
    results: list = [None] * n
    tids: list = [0] * n
    opened = threading.Barrier(n + 1)

    def reader(i):
        tids[i] = threading.get_native_id()
        fd = os.open(kmsg, os.O_RDONLY)
        try:
            os.lseek(fd, 0, os.SEEK_END)
            opened.wait()
            results[i] = os.read(fd, 8192)
        except OSError as e:
            results[i] = e.errno
        finally:
            os.close(fd)

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    opened.wait(timeout=60)
    # every reader is blocked in its read (or, before the fix, already answered EAGAIN)
    import time
    deadline = time.monotonic() + 60
    while not all(results[i] is not None or _in_read(tids[i]) for i in range(n)):
        assert time.monotonic() < deadline, "readers did not reach read(2)"
        time.sleep(0.05)
    assert not [r for r in results if r is not None], "a blocking read returned before any record was written"
    fd = os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.lseek(fd, 0, os.SEEK_END)
        with pytest.raises(BlockingIOError):
            os.read(fd, 8192)
    finally:
        os.close(fd)
    assert sh(f"echo '<4>eighty readers' > {kmsg}").returncode == 0
    for t in threads:
        t.join(timeout=60)
    assert [r for r in results if not isinstance(r, bytes)] == []
    assert {records(r.decode())[0][3] for r in results} == {"eighty readers"}
