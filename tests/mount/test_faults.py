"""Misbehaving hardware on cue through real mounts (MNT/sys/kernel/debug/vfakefs/faults,
rules written with vfakefs.client, stores made by bash): a held write keeps its writer
while every other file answers; a refused store changes nothing; a reset, a kill and an
unmount while a write is held each answer the writer.

The daemon's engine runs the simulated clock at about real time; the tests assert what
happens and in which order, never how long it took: a write meant to stay held is held
for far longer than any test runs, and one meant to finish is awaited without a limit
that a slow machine could miss."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time

import pytest

from tests.conftest import ENV, daemon_pid, run, vfakefs, wait_exit
from vfakefs.client import Controls

PF, PF1 = "0000:03:00.0", "0000:03:00.1"      # seed-vtd: ixgbe PFs with SR-IOV
FOREVER = 3600                                 # simulated seconds: longer than any test


class Writer:
    """A bash that runs `script` in the background (cwd=MNT), its output in files."""

    def __init__(self, mnt, script: str):
        self.out, self.err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        self.p = subprocess.Popen(["bash", "-c", script], cwd=mnt.path, env=ENV, stdin=subprocess.DEVNULL,
                                  stdout=self.out, stderr=self.err)

    def wait(self, timeout: float = 60) -> tuple[int, str, str]:
        rc = self.p.wait(timeout)
        self.out.seek(0)
        self.err.seek(0)
        return rc, self.out.read().decode(), self.err.read().decode()


def wait_for(cond, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"never: {what}"
        time.sleep(0.02)


def held(c: Controls, n: int = 1) -> None:
    """Wait until the first rule has been hit n times: its write has reached the store."""
    wait_for(lambda: f"hits={n}" in c.fault_rules()[0], f"rule hit {n} times")


def kmsg_text(mnt) -> str:
    """The kernel log's texts, one per line (MNT/dev/kmsg, non-blocking)."""
    fd = os.open(mnt.path / "dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    out = []
    try:
        while True:
            try:
                out.append(os.read(fd, 8192).decode().split(";", 1)[1])
            except BlockingIOError:
                return "".join(out)
    finally:
        os.close(fd)


def dev(bdf: str) -> str:
    return f"sys/bus/pci/devices/{bdf}"


@pytest.fixture
def seed(mount_preset):
    return mount_preset("seed-vtd")


def test_a_held_sriov_numvfs_write_leaves_every_other_file_answering(seed):
    c = Controls(seed.path)
    c.fault(PF, "sriov_numvfs", delay=FOREVER)
    before = sorted(os.listdir(seed.path / dev(PF)))
    w = Writer(seed, f"echo 4 > {dev(PF)}/sriov_numvfs")
    held(c)
    # while the write is held: reads of the same device (the old count), of others, a
    # write to another device, a listing, lspci; all answer
    r = run(f"cat {dev(PF)}/sriov_numvfs {dev(PF)}/sriov_totalvfs {dev(PF)}/vendor; "
            f"echo 1 > {dev(PF1)}/sriov_numvfs && cat {dev(PF1)}/sriov_numvfs; "
            f"ls {dev(PF)} | grep -c virtfn", cwd=seed.path)
    assert r.stdout.split() == ["0", "63", "0x8086", "1", "0"], r.stderr
    assert seed.lspci("-s", "03:00.0").returncode == 0
    assert w.p.poll() is None                                 # still held
    # kill -9: the writer dies at once (answered EINTR); the store itself is not undone
    w.p.kill()
    rc, _, _ = w.wait()
    assert rc == -signal.SIGKILL
    assert sorted(os.listdir(seed.path / dev(PF))) == before
    assert seed.read(seed.path / dev(PF) / "sriov_numvfs") == "0\n"


def test_a_held_write_finishes_and_a_second_writer_waits_for_it(seed):
    c = Controls(seed.path)
    c.fault(PF, "sriov_numvfs", delay=2)
    log = seed.path.parent / "order"
    a = Writer(seed, f"echo 4 > {dev(PF)}/sriov_numvfs; echo A:$? >> {log}")
    held(c)
    b = Writer(seed, f"echo 2 > {dev(PF)}/sriov_numvfs; echo B:$? >> {log}")
    assert a.wait()[0] == 0
    rc, _, err = b.wait()
    # the second store ran after the first, under the device lock: 4 VFs are enabled by then
    assert rc == 0 and "Device or resource busy" in err
    # (the two shells append in whichever order they are scheduled once both writes returned)
    assert sorted(log.read_text().split()) == ["A:0", "B:1"]
    assert seed.read(seed.path / dev(PF) / "sriov_numvfs") == "4\n"
    assert len([n for n in os.listdir(seed.path / dev(PF)) if n.startswith("virtfn")]) == 4
    assert c.fault_rules() == [f"{PF} sriov_numvfs delay=2 times=1 hits=1"]
    assert f"ixgbe {PF}: 4 VFs already enabled. Disable before enabling 2 VFs" in kmsg_text(seed)


def test_a_reset_answers_a_held_writer_enodev_and_clears_the_rules(seed):
    c = Controls(seed.path)
    c.fault(PF, "sriov_numvfs", delay=FOREVER)
    w = Writer(seed, f"echo 4 > {dev(PF)}/sriov_numvfs")
    held(c)
    c.reset()
    rc, _, err = w.wait()
    assert rc == 1 and "No such device" in err
    assert c.fault_rules() == []
    assert seed.read(seed.path / dev(PF) / "sriov_numvfs") == "0\n"


def test_a_store_fails_with_the_chosen_errno_once_and_changes_nothing(seed):
    c = Controls(seed.path)
    c.fault(PF, "sriov_numvfs", fail="EIO")
    before = sorted(os.listdir(seed.path / dev(PF)))
    r = run(f"echo 4 > {dev(PF)}/sriov_numvfs", cwd=seed.path)
    assert r.returncode == 1 and "Input/output error" in r.stderr
    assert sorted(os.listdir(seed.path / dev(PF))) == before
    assert seed.read(seed.path / dev(PF) / "sriov_numvfs") == "0\n"
    r = run(f"echo 4 > {dev(PF)}/sriov_numvfs", cwd=seed.path)
    assert r.returncode == 0 and seed.read(seed.path / dev(PF) / "sriov_numvfs") == "4\n"
    assert c.fault_rules() == [f"{PF} sriov_numvfs fail=EIO times=1 hits=1"]


def test_a_failed_probe_leaves_the_device_unbound_and_bind_answers_its_errno(seed):
    c = Controls(seed.path)
    drv = "sys/bus/pci/drivers/ixgbe"
    assert run(f"echo {PF1} > {drv}/unbind", cwd=seed.path).returncode == 0
    c.fault(PF1, "probe", fail="ENOMEM")
    kmsg = os.open(seed.path / "dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.lseek(kmsg, 0, os.SEEK_END)
        r = run(f"echo {PF1} > {drv}/bind", cwd=seed.path)
        assert r.returncode == 1 and "Cannot allocate memory" in r.stderr
        assert not os.path.lexists(seed.path / dev(PF1) / "driver")
        assert os.read(kmsg, 8192).decode().split(";", 1)[1] == f"ixgbe {PF1}: probe with driver ixgbe failed with error -12\n"
    finally:
        os.close(kmsg)
    assert run(f"echo {PF1} > {drv}/bind", cwd=seed.path).returncode == 0     # once
    assert os.readlink(seed.path / dev(PF1) / "driver").endswith("/ixgbe")


def test_a_vfs_driver_and_netdev_come_after_the_vfs(seed):
    c = Controls(seed.path)
    vf0, vf1 = "0000:03:10.0", "0000:03:10.2"                # X540: VF offset 0x80, stride 2
    c.fault(vf0, "probe", delay=5)
    c.fault(vf1, "netdev", delay=5)
    assert run(f"echo 2 > {dev(PF)}/sriov_numvfs", cwd=seed.path).returncode == 0
    assert os.path.exists(seed.path / dev(vf0)) and os.path.exists(seed.path / dev(vf1))
    assert not os.path.lexists(seed.path / dev(vf0) / "driver")
    assert os.path.lexists(seed.path / dev(vf1) / "driver") and not os.path.exists(seed.path / dev(vf1) / "net")
    wait_for(lambda: os.path.lexists(seed.path / dev(vf0) / "driver"), "vf0's driver link")
    wait_for(lambda: os.path.exists(seed.path / dev(vf1) / "net"), "vf1's netdev")
    name = os.listdir(seed.path / dev(vf1) / "net")[0]
    assert os.path.realpath(seed.path / "sys/class/net" / name / "device") == os.path.realpath(seed.path / dev(vf1))


@pytest.mark.parametrize("text,why", [
    ("0000:03:00.0 sriov_numvfs hold=5", "unknown setting 'hold=5'"),
    ("0000:03:00.0 sriov_numfvs fail=EIO", "'sriov_numfvs' is no file or point of device 0000:03:00.0"),
    ("0000:03:00.0 vendor fail=EIO", "'vendor' is no file or point of device 0000:03:00.0"),
    ("0000:00:00.0 sriov_numvfs fail=EIO", "'sriov_numvfs' is no file or point of device 0000:00:00.0"),
    ("0000:03:00.0 sriov_numvfs fail=EFOO", "fail='EFOO' is no errno"),
])
def test_a_bad_rule_is_einval_and_changes_no_rule(seed, text, why):
    c = Controls(seed.path)
    c.fault(PF, "reset", fail=5, times="always")
    before = c.fault_rules()
    r = run(f"echo '{text}' > sys/kernel/debug/vfakefs/faults", cwd=seed.path)
    assert r.returncode == 1 and "Invalid argument" in r.stderr
    assert c.fault_rules() == before
    assert f"vfakefs: faults: {why}" in kmsg_text(seed)


def test_an_unmount_while_held_is_busy_and_the_write_goes_on(seed):
    c = Controls(seed.path)
    c.fault(PF, "sriov_numvfs", delay=FOREVER)
    w = Writer(seed, f"echo 4 > {dev(PF)}/sriov_numvfs")
    held(c)
    r = vfakefs("umount", str(seed.path))
    assert r.returncode == 1 and "target is busy" in r.stderr      # the writer has the file open
    assert w.p.poll() is None and os.listdir(seed.path / "sys")
    c.reset()
    assert w.wait()[0] == 1


def test_a_lazy_unmount_while_held_lets_the_write_finish_then_the_daemon_exits(seed):
    c = Controls(seed.path)
    c.fault(PF, "sriov_numvfs", delay=2)
    pid = daemon_pid(seed.path)
    w = Writer(seed, f"echo 4 > {dev(PF)}/sriov_numvfs")
    held(c)
    r = vfakefs("umount", "--lazy", str(seed.path))
    assert r.returncode == 0 and "was busy: detached" in r.stderr
    assert w.wait()[0] == 0                    # the store was done, and answered
    wait_exit(pid)


def test_sigterm_to_the_daemon_while_held_answers_the_writer(seed):
    c = Controls(seed.path)
    c.fault(PF, "sriov_numvfs", delay=FOREVER)
    pid = daemon_pid(seed.path)
    w = Writer(seed, f"echo 4 > {dev(PF)}/sriov_numvfs")
    held(c)
    os.kill(pid, signal.SIGTERM)
    wait_exit(pid)
    rc, _, err = w.wait()
    assert rc == 1 and ("Transport endpoint is not connected" in err or "Software caused connection abort" in err), err


def test_driver_override_then_a_drivers_probe_that_takes_time(seed):
    """driverctl's and dpdk-devbind's path: override, then drivers_probe; the probe rule's
    delay holds the drivers_probe write, the device has no driver until it answers."""
    c = Controls(seed.path)
    assert run(f"echo {PF1} > sys/bus/pci/drivers/ixgbe/unbind && echo vfio-pci > {dev(PF1)}/driver_override",
               cwd=seed.path).returncode == 0
    c.fault(PF1, "probe", delay=FOREVER)
    w = Writer(seed, f"echo {PF1} > sys/bus/pci/drivers_probe")
    held(c)
    assert not os.path.lexists(seed.path / dev(PF1) / "driver")
    assert seed.read(seed.path / dev(PF1) / "driver_override") == "vfio-pci\n"
    assert w.p.poll() is None
    c.reset()                                  # let it go (ENODEV), and back to the topology
    assert w.wait()[0] == 1


def test_a_drivers_probe_held_a_moment_binds_the_override(seed):
    c = Controls(seed.path)
    assert run(f"echo {PF1} > sys/bus/pci/drivers/ixgbe/unbind && echo vfio-pci > {dev(PF1)}/driver_override",
               cwd=seed.path).returncode == 0
    c.fault(PF1, "probe", delay=1)
    r = run(f"echo {PF1} > sys/bus/pci/drivers_probe && readlink {dev(PF1)}/driver", cwd=seed.path)
    assert r.returncode == 0 and r.stdout.endswith("/vfio-pci\n"), r.stderr
    assert c.fault_rules() == [f"{PF1} probe delay=1 times=1 hits=1"]
