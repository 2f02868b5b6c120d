"""A large SR-IOV enable through a real mount is carried out in steps: other processes see the
VFs appear while the writer's write(2) waits for all of them, sriov_numvfs shows the old count
until the end, a second writer waits for the device lock, a killed writer dies and the enable
completes, a reset or the removal of the PF's bridge mid-way; and `vfakefs sriov`.

The enable is paused deterministically by a faults rule on one VF's addition (`<vf> add
delay=...`): the count then stays at that VF's index until the simulated clock ends the pause,
so an observer polling the PF's directory cannot miss it (no timing assertion: the polls only
have an upper bound, as in test_faults.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ENV, REPO, run, vfakefs
from tests.mount.test_faults import FOREVER, PF, PF1, Writer, dev, kmsg_text, seed, wait_for  # noqa: F401
from vfakefs.client import Controls

N = 63                                         # seed-vtd's X540 PF: TotalVFs 63, offset 0x80, stride 2
AT = 20                                        # the VF whose addition the rule pauses


def vf(i: int) -> str:
    rid = (3 << 8) + 0x80 + 2 * i
    return f"0000:{rid >> 8:02x}:{(rid >> 3) & 0x1f:02x}.{rid & 7}"


def virtfns(mnt) -> int:
    """The PF's virtfn links, as another process (ls) lists them."""
    r = run(f"ls {dev(PF)} | grep -c '^virtfn'", cwd=mnt.path)
    return int(r.stdout.strip() or 0)


def numvfs(mnt) -> str:
    return mnt.read(mnt.path / dev(PF) / "sriov_numvfs").strip()


def in_write(pid: int) -> bool:
    """The process sits in write(2) (x86_64 syscall 1): its write reached the mount."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split()[0] == "1"
    except (OSError, IndexError):
        return False


@pytest.fixture
def writers():
    """The writers a test starts; any still waiting when it ends (a failure) is killed
    before the mount goes, so no daemon is left waiting for an hour-long pause."""
    started: list[Writer] = []
    yield started
    for w in started:
        if w.p.poll() is None:
            w.p.kill()
            w.p.wait(60)


def paused_enable(mnt, c: Controls, delay: float, writers: list) -> Writer:
    c.fault(vf(AT), "add", delay=delay)
    w = Writer(mnt, f"echo {N} > {dev(PF)}/sriov_numvfs")
    writers.append(w)
    wait_for(lambda: virtfns(mnt) == AT, f"{AT} VFs listed by another process")
    return w


def test_another_process_sees_the_vfs_appear_while_sriov_numvfs_shows_0_and_a_second_writer_waits(seed, writers):
    c = Controls(seed.path)
    w = paused_enable(seed, c, FOREVER, writers)
    # mid-way, as the kernel between two pci_iov_add_virtfn(): the first VFs with their
    # drivers, links and uevents; iov->num_VFs not yet set
    assert 0 < AT < N and numvfs(seed) == "0" and w.p.poll() is None
    assert os.readlink(seed.path / dev(PF) / f"virtfn{AT - 1}") == f"../{vf(AT - 1)}"
    assert os.readlink(seed.path / dev(vf(AT - 1)) / "driver").endswith("/ixgbevf")
    assert not os.path.exists(seed.path / dev(vf(AT)))
    # the other PF is no part of it: its own enable (in steps too) runs to its end meanwhile
    r = run(f"echo 2 > {dev(PF1)}/sriov_numvfs && cat {dev(PF1)}/sriov_numvfs && ls {dev(PF1)} | grep -c ^virtfn",
            cwd=seed.path)
    assert r.stdout.split() == ["2", "2"], r.stderr
    # a second writer to the same device waits for the device lock (another file of it: two
    # writes of one file are already serialised by the FUSE client's inode lock)
    b = Writer(seed, f"echo {PF} > sys/bus/pci/drivers/ixgbe/unbind")
    writers.append(b)
    wait_for(lambda: in_write(b.p.pid), "the second writer in write(2)")
    assert virtfns(seed) == AT and numvfs(seed) == "0" and b.p.poll() is None and w.p.poll() is None
    # a reset replaces the machine: both writers are answered ENODEV, as held writes are
    c.reset()
    for p in (w, b):
        rc, _, err = p.wait()
        assert rc == 1 and "No such device" in err
    assert virtfns(seed) == 0 and numvfs(seed) == "0"


def test_a_writer_killed_mid_enable_dies_and_the_enable_completes(seed, writers):
    """The kernel's store cannot be interrupted; here the killed writer is let go (EINTR)
    and the enable goes on without it, to the same end."""
    c = Controls(seed.path)
    w = paused_enable(seed, c, 5, writers)
    w.p.kill()
    assert w.wait()[0] == -9
    wait_for(lambda: numvfs(seed) == str(N), "the enable completes")
    assert virtfns(seed) == N
    log = kmsg_text(seed)
    assert log.count("Adding to iommu group") >= N and "ixgbevf" in log
    # the lock was let go: the next write runs at once
    assert run(f"echo 0 > {dev(PF)}/sriov_numvfs", cwd=seed.path).returncode == 0
    assert virtfns(seed) == 0 and numvfs(seed) == "0"


def test_removing_the_pfs_bridge_mid_enable_completes_the_enable_first(seed, writers):
    """pci_stop_and_remove_bus_device() releases the PF's driver under device_lock(PF): it
    waits for the enable, which the writer sees succeed; then everything below goes."""
    c = Controls(seed.path)
    bridge = os.path.basename(os.path.dirname(os.path.realpath(seed.path / dev(PF))))
    w = paused_enable(seed, c, FOREVER, writers)
    assert run(f"echo 1 > {dev(bridge)}/remove", cwd=seed.path).returncode == 0
    assert w.wait()[0] == 0
    assert not os.path.exists(seed.path / dev(PF)) and not os.path.exists(seed.path / dev(vf(0)))
    log = kmsg_text(seed)
    assert log.count(f"pci {vf(N - 1)}: Adding to iommu group") == 1


def test_a_vf_probe_failing_mid_enable_leaves_it_unbound_and_the_write_succeeds(seed):
    c = Controls(seed.path)
    c.fault(vf(7), "probe", fail="EIO")
    r = run(f"echo {N} > {dev(PF)}/sriov_numvfs", cwd=seed.path)
    assert r.returncode == 0, r.stderr
    assert numvfs(seed) == str(N) and virtfns(seed) == N
    assert not os.path.lexists(seed.path / dev(vf(7)) / "driver")
    assert os.path.lexists(seed.path / dev(vf(8)) / "driver")


# --- vfakefs sriov ---------------------------------------------------------------------------------
def test_cli_sriov_enables_shows_the_final_progress_line_and_the_count(seed):
    r = vfakefs("sriov", str(seed.path), "03:00.0", "8")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{PF}: 8 VFs\n"
    assert r.stderr.startswith(f"vfakefs sriov: {PF}: adding VFs: 8/8 100% done in ") and "\x1b" not in r.stderr
    assert numvfs(seed) == "8"


def test_cli_sriov_by_interface_writes_0_first_then_the_new_count(seed):
    assert run(f"echo 8 > {dev(PF)}/sriov_numvfs", cwd=seed.path).returncode == 0
    (iface,) = os.listdir(seed.path / dev(PF) / "net")
    r = vfakefs("sriov", str(seed.path), iface, "4")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"vfakefs sriov: {PF}: removing VFs: 8/8 100% done")
    assert lines[1].startswith(f"vfakefs sriov: {PF}: adding VFs: 4/4 100% done")
    assert r.stdout == f"{PF}: 4 VFs\n" and numvfs(seed) == "4"
    assert "already enabled" not in kmsg_text(seed)            # no EBUSY write on the way


def test_cli_sriov_answers_the_kernels_errno_and_changes_nothing(seed):
    assert run(f"echo 4 > {dev(PF)}/sriov_numvfs", cwd=seed.path).returncode == 0
    r = vfakefs("sriov", str(seed.path), PF, "64")
    assert r.returncode == 1
    assert "writing 64 to sriov_numvfs: Numerical result out of range (ERANGE)" in r.stderr
    # more than sriov_totalvfs: no 0 first (the kernel's range check comes before any change)
    assert numvfs(seed) == "4" and r.stdout == "" and virtfns(seed) == 4
    r = vfakefs("sriov", str(seed.path), PF, "65536")
    assert r.returncode == 1 and "Invalid argument (EINVAL)" in r.stderr


def test_cli_sriov_usage_errors_exit_2(seed, tmp_path):
    for args, why in (((str(seed.path), "0000:99:00.0", "1"), "no PCI device or network interface"),
                      ((str(seed.path), "nosuchif0", "1"), "no PCI device or network interface"),
                      ((str(seed.path), "0000:00:00.0", "1"), "no SR-IOV capability"),
                      ((str(tmp_path), PF, "1"), "is not a vfakefs mount"),
                      ((str(seed.path), PF, "-1"), "invalid number of VFs")):
        r = vfakefs("sriov", *args)
        assert r.returncode == 2 and why in r.stderr, (args, r.stderr)
    assert numvfs(seed) == "0"


def sriov_on_a_terminal(seed) -> tuple[subprocess.CompletedProcess, str]:
    """`vfakefs sriov MNT PF N` with its stderr on a pty: (the run, what the pty showed)."""
    master, slave = os.openpty()
    try:
        p = subprocess.run([sys.executable, "-m", "vfakefs", "sriov", str(seed.path), PF, str(N)], cwd=REPO,
                           env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, timeout=120)
        os.close(slave)
        slave = None
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    return p, out.decode()


def test_cli_sriov_draws_its_progress_line_on_a_terminal(seed):
    p, text = sriov_on_a_terminal(seed)
    assert p.returncode == 0 and p.stdout == f"{PF}: {N} VFs\n".encode()
    # the line redraws itself: carriage return and erase-line before it, the final one last
    assert text.startswith("\r\x1b[K") and f"adding VFs: {N}/{N} 100% done in " in text.rsplit("\r\x1b[K", 1)[1]


def test_cli_sriov_shows_the_count_while_the_enable_is_under_way(seed):
    """A pause at VF 20 (an add rule): the progress line, one lookup a look, comes to show
    20 of 63 before the write answers (the pause outlasts the looks that find it)."""
    Controls(seed.path).fault(vf(AT), "add", delay=3)
    p, text = sriov_on_a_terminal(seed)
    assert p.returncode == 0 and p.stdout == f"{PF}: {N} VFs\n".encode()
    frames = [f for f in text.split("\r\x1b[K") if f]
    assert f"vfakefs sriov: {PF}: adding VFs: {AT}/{N}  31%" in frames, frames
    assert frames[-1].startswith(f"vfakefs sriov: {PF}: adding VFs: {N}/{N} 100% done in ")
