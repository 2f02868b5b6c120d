"""Cached mode (`vfakefs mount --cache`, fuse/pagecache.py): attributes served through the
kernel's page cache, stat showing their content's length, and no read ever older than the
write before it: through fresh opens, through a file kept open and read again at offset 0,
from other threads at the same time, and for attributes a write changes besides its own."""
from __future__ import annotations

import os
import threading

import pytest

from tests.conftest import run

PF = "0000:03:00.0"


@pytest.fixture
def cached(mount_preset):
    return mount_preset("seed-vtd", "--cache")


def sizes(m, names):
    r = run(["stat", "-c", "%s %n", *names], cwd=m.devdir(PF))
    assert r.returncode == 0, r.stderr
    return {n: int(s) for s, n in (line.split() for line in r.stdout.splitlines())}


def test_stat_shows_content_lengths_and_what_moves_stays_as_sysfs(cached, seed_mnt):
    names = ["vendor", "device", "class", "sriov_totalvfs", "resource", "modalias", "irq"]
    got = sizes(cached, names)
    for n in names:
        assert got[n] == len((cached.devdir(PF) / n).read_bytes()), n
    assert got["vendor"] == 7
    # writable and binary files, a clock and procfs files are served as in strict mode
    same = ["sriov_numvfs", "uevent", "config", "power/runtime_active_time"]
    assert sizes(cached, same) == sizes(seed_mnt, same) == dict.fromkeys(same, 4096)
    assert os.stat(cached.path / "proc/interrupts").st_size == os.stat(seed_mnt.path / "proc/interrupts").st_size == 0
    # the default mount is strict: sysfs's 4096 for every attribute
    assert set(sizes(seed_mnt, names).values()) == {4096}


def test_reads_and_sizes_follow_each_write_through_bash(cached):
    """operstate and uevent_seqnum are cached (read-only); writes to flags and uevent
    move them. A refused write moves nothing."""
    script = """
    net=sys/class/net/eth0 seq=sys/kernel/uevent_seqnum
    for f in 0x1002 0x1003 0x1002 0x1003; do
        echo $f > $net/flags && echo change > $net/device/uevent &&
        printf '%s %s %s|' "$(cat $net/operstate)" "$(stat -c %s $net/operstate)" "$(cat $seq)"
    done
    echo
    echo bogus > $net/flags; echo "[$?]"
    cat $net/operstate $seq
    """
    r = run(script, cwd=cached.path)
    lines = r.stdout.splitlines()
    states = [x.split() for x in lines[0].rstrip("|").split("|")]
    assert [s[:2] for s in states] == [["down", "5"], ["up", "3"], ["down", "5"], ["up", "3"]], r.stdout + r.stderr
    seq = [int(s[2]) for s in states]
    assert seq == list(range(seq[0], seq[0] + 4)), seq
    assert lines[1] == "[1]" and "Invalid argument" in r.stderr, r.stdout + r.stderr
    assert lines[2:] == ["up", str(seq[-1])], "a failed write changes nothing, cached or not"


def test_a_file_kept_open_and_readers_in_threads_never_see_an_older_value(cached):
    """Writes to flags and uevent (direct_io) move operstate and uevent_seqnum (cached):
    a file kept open and read at offset 0 again and new opens see each write once it is
    answered, and readers in other threads meanwhile never see a value older than the
    last write answered. (A read that overlaps the change itself may get the new bytes
    cut to the old length: pagecache.py; those are not counted as values.)"""
    net = cached.path / "sys/class/net/eth0"
    oper, seqnum = net / "operstate", cached.path / "sys/kernel/uevent_seqnum"
    held = [os.open(oper, os.O_RDONLY), os.open(seqnum, os.O_RDONLY)]
    answered: list[int] = []        # uevent_seqnum after each write pair
    stop = threading.Event()
    bad: list[tuple] = []
    torn: list[bool] = []

    def reader():
        fds = [os.open(oper, os.O_RDONLY), os.open(seqnum, os.O_RDONLY)]
        try:
            while not stop.is_set():
                seen = len(answered)          # writes answered before these reads began
                s1, s2 = os.pread(fds[1], 4096, 0), seqnum.read_bytes()
                o1, o2 = os.pread(fds[0], 4096, 0), oper.read_bytes()
                whole = [int(x) for x in (s1, s2) if x[:-1].isdigit() and x[-1:] == b"\n"]
                torn.append(len(whole) < 2 or {o1, o2} - {b"up\n", b"down\n"} != set())
                if whole and seen and min(whole) < answered[seen - 1]:
                    bad.append(("older", answered[seen - 1], s1, s2))
        except Exception as e:   # noqa: BLE001 - reported by the test
            bad.append(("error", repr(e)))
        finally:
            for fd in fds:
                os.close(fd)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(120):
            state = ("0x1002", b"down\n") if i % 2 == 0 else ("0x1003", b"up\n")
            (net / "flags").write_text(state[0])
            (net / "device/uevent").write_text("change")
            now = int(seqnum.read_text())
            answered.append(now)
            assert os.pread(held[0], 4096, 0) == oper.read_bytes() == state[1]
            assert int(os.pread(held[1], 4096, 0)) == now
            assert os.stat(oper).st_size == len(state[1])
    finally:
        stop.set()
        for t in threads:
            t.join()
        for fd in held:
            os.close(fd)
    assert answered == list(range(answered[0], answered[0] + 120)), "one uevent a write"
    assert not bad, bad[:5]
    assert len(torn) > sum(torn), "the readers read whole values meanwhile"


def test_a_structural_write_moves_a_cached_value(cached):
    """Unbinding the PF's driver sends uevents (unbind, the netdev's remove): uevent_seqnum
    read through a file kept open (offset 0 again) and through a new open shows them once
    the unbind is answered."""
    d, seqnum = cached.devdir(PF), cached.path / "sys/kernel/uevent_seqnum"
    fd = os.open(seqnum, os.O_RDONLY)
    try:
        before = int(os.pread(fd, 4096, 0))
        (d / "driver/unbind").write_text(PF)
        after = int(seqnum.read_text())
        assert int(os.pread(fd, 4096, 0)) == after > before
        assert not (d / "driver").exists()
    finally:
        os.close(fd)


def test_new_functions_and_gone_ones(cached):
    d = cached.devdir(PF)
    (d / "sriov_numvfs").write_text("4")
    vf = d / "virtfn3"
    assert (vf / "device").read_text() == "0x1515\n"
    assert os.stat(vf / "device").st_size == 7
    r = cached.lspci("-n", "-s", "03:10.6")
    assert "8086:1515" in r.stdout, r.stdout + r.stderr
    (d / "sriov_numvfs").write_text("0")
    assert not vf.exists()
    assert (d / "sriov_numvfs").read_text() == "0\n"


def test_config_is_cached_for_root_only_and_follows_setpci(cached, seed_mnt):
    """config's size never moves: root reads it through the page cache; a user reads the
    first 64 bytes from the server as sysfs gives them, never root's cached pages."""
    def dump(m, user=None):
        r = run(["lspci", "-A", "linux-sysfs", "-O", "sysfs.path=sys/bus/pci", "-s", "03:00.0", "-xxx"],
                user=user, cwd=m.path)   # relative: pytest's temp dirs are 0700
        assert r.returncode == 0, r.stderr
        return [line for line in r.stdout.splitlines()[1:] if line]
    assert dump(cached) == dump(seed_mnt) and len(dump(cached)) == 16
    assert dump(cached, user=65534) == dump(cached)[:4]
    setpci = ["setpci", "-A", "linux-sysfs", "-O", f"sysfs.path={cached.pci}", "-s", "03:00.0"]
    for value in ("0006", "0406", "0106"):
        assert run([*setpci, f"COMMAND={value}"]).returncode == 0
        assert run([*setpci, "COMMAND"]).stdout.strip() == value
        assert dump(cached)[0].split()[5:7] == [value[2:], value[:2]]
