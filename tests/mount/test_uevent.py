"""Uevents through the mount and inside `vfakefs run`: the uevent files (read, write, the
errno of bad writes, nothing sent by a failed write), /sys/kernel/uevent_seqnum, a
program's own NETLINK_KOBJECT_UEVENT socket, and the unmodified `udevadm monitor --kernel
--property` watching `echo 4 > /sys/class/net/eth0/device/sriov_numvfs`."""
from __future__ import annotations

import os
import re
import signal
import sys
import textwrap
import time

import pytest

from tests.clients import client
from tests.conftest import CMD_TIMEOUT, REPO, run
from tests.mount.test_vfio_programs import Program

PF = "0000:03:00.0"
ROOT = "/devices/pci0000:00/0000:00:1c.0"
NUMVFS = "sys/class/net/eth0/device/sriov_numvfs"
UUID = "2d6f3ccb-1c2b-4a9f-9c4e-0b6a2c1d7e10"


def seqnum(m) -> int:
    return int(m.read(m.path / "sys/kernel/uevent_seqnum"))


def sh(m, script: str):
    return run(["bash", "-c", script], cwd=m.path)


# --- the uevent files ------------------------------------------------------------------------------
def test_uevent_files_read_as_the_kernels(mount_preset):
    m = mount_preset("seed-vtd")
    assert m.read(m.sys / "class/net/eth0/uevent") == "INTERFACE=eth0\nIFINDEX=%s\n" % (
        m.read(m.sys / "class/net/eth0/ifindex").strip())
    assert m.read(m.devdir(PF) / "uevent").startswith("DRIVER=ixgbe\nPCI_CLASS=20000\n")
    assert oct(os.stat(m.sys / "kernel/uevent_seqnum").st_mode & 0o777) == "0o444"
    assert seqnum(m) > 0


@pytest.mark.parametrize("path", [f"sys/bus/pci/devices/{PF}/uevent", "sys/class/net/eth0/uevent",
                                  "sys/class/nvme/nvme0/uevent", "sys/bus/pci/drivers/ixgbe/uevent",
                                  "sys/bus/pci/uevent"])
def test_a_uevent_write_sends_one_event_and_a_bad_one_none(mount_preset, path):
    m = mount_preset("seed-vtd")
    before = seqnum(m)
    for good in ("change", "add", f"change {UUID} A=1 B=2"):
        r = sh(m, f"echo '{good}' > {path}")
        assert r.returncode == 0, r.stderr
    assert seqnum(m) == before + 3
    for bad in ("bogus", "", "change x", f"add {UUID} A=b-c"):
        r = sh(m, f"echo '{bad}' > {path}")
        assert r.returncode == 1 and "Invalid argument" in r.stderr, (bad, r.stderr)
    assert seqnum(m) == before + 3


def test_sriov_write_counts_its_events_in_uevent_seqnum(mount_preset):
    m = mount_preset("seed-vtd")
    before = seqnum(m)
    (m.path / NUMVFS).write_text("4")
    assert seqnum(m) == before + 4 * 4 + 1        # per VF add change net-add bind; the PF's change
    r = sh(m, f"echo 5 > {NUMVFS}")               # EBUSY: nothing sent
    assert r.returncode == 1 and "busy" in r.stderr
    assert seqnum(m) == before + 17


# --- a program's own netlink socket under `vfakefs run` -----------------------------------------------
LISTENER = r"""
import os, socket, struct, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 15)
quiet = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 15)   # never bound: hears nothing
print("before bind", s.getsockname())
s.bind((0, 1))
pid, groups = s.getsockname()
print("bound", pid == os.getpid(), groups)
print("domain", s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN), s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE),
      s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL))
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_STREAM, 15)
except OSError as e:
    print("stream", e.errno, socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15).getsockopt(
        socket.SOL_SOCKET, socket.SO_TYPE))
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
try:
    s.recv(64, socket.MSG_DONTWAIT)
except BlockingIOError:
    print("nothing yet")
with open("/sys/class/net/eth0/device/sriov_numvfs", "w") as f:
    f.write("4")
seq = int(open("/sys/kernel/uevent_seqnum").read())
peek = s.recv(16, socket.MSG_PEEK | socket.MSG_TRUNC)     # netlink_recvmsg: the whole length
print("peek", len(peek) > 16)
while True:
    data, anc, flags, addr = s.recvmsg(8192, socket.CMSG_SPACE(12))     # blocking: the events are queued
    (level, kind, cred), = anc
    header, *env = data.rstrip(b"\0").decode().split("\0")
    env = dict(kv.split("=", 1) for kv in env)
    print("event", header, env["SUBSYSTEM"], env.get("DRIVER", "-"), env["SEQNUM"], addr, flags,
          (level, kind), struct.unpack("iII", cred))
    if int(env["SEQNUM"]) == seq:
        break
try:
    quiet.recv(64)
except BlockingIOError:
    print("unbound socket: nothing")
# a blocking receive with nothing queued waits for the next event
import threading, time
got = []
t = threading.Thread(target=lambda: got.append(s.recv(8192)))
t.start()
deadline = time.monotonic() + 30
while not open(f"/proc/self/task/{t.native_id}/syscall").read().startswith("45 "):   # in recvfrom
    assert time.monotonic() < deadline
with open("/sys/bus/pci/devices/0000:03:00.0/uevent", "w") as f:
    f.write("change")
t.join()
print("waited", got[0].split(b"\0")[0].decode())
print("done", seq)
"""


def test_a_netlink_socket_gets_the_simulated_kernels_events(mount_preset):
    m = mount_preset("seed-vtd")
    r = run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(m.path), "--", sys.executable, "-c", LISTENER],
            cwd=REPO)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:6] == ["before bind (0, 0)", "bound True 1", "domain 16 3 15",
                         "stream 94 2",        # netlink_create: ESOCKTNOSUPPORT; a SOCK_DGRAM one says so
                         "nothing yet", "peek True"]
    events = [ln.split(" ", 1)[1] for ln in lines if ln.startswith("event ")]
    seq = int(lines[-1].split()[1])
    kernel = "(0, 1) 0 (1, 2) (0, 0, 0)"       # msg_name pid 0 group 1, SCM_CREDENTIALS pid 0 uid 0 gid 0
    expect = []
    n = seq - 17
    for i in range(4):
        vf = f"{ROOT}/0000:03:10.{2 * i}"
        net = [e for e in events if e.startswith(f"add@{vf}/net/")]
        assert len(net) == 1
        expect += [f"add@{vf} pci - {n + 1} {kernel}", f"change@{vf} pci - {n + 2} {kernel}",
                   f"{net[0].split(' ')[0]} net - {n + 3} {kernel}", f"bind@{vf} pci ixgbevf {n + 4} {kernel}"]
        n += 4
    expect.append(f"change@{ROOT}/{PF} pci ixgbe {seq} {kernel}")
    assert events == expect
    assert lines[-3:] == ["unbound socket: nothing", f"waited change@{ROOT}/{PF}", f"done {seq}"]
    assert seqnum(m) == seq + 1


# --- udevadm monitor ------------------------------------------------------------------------------------
HEADER = re.compile(r"^KERNEL\[\d+\.\d{6}\] (\w+)\s+(\S+) \((\w+)\)$")


def _child(pid: int) -> int:
    """The program `vfakefs run` started (its only child)."""
    deadline = time.monotonic() + CMD_TIMEOUT
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
        if kids:
            return int(kids[0])
    raise AssertionError("vfakefs run started nothing")


def test_udevadm_monitor_shows_enabling_four_vfs_as_a_real_kernel(mount_preset):
    m = mount_preset("seed-vtd")
    mon = Program(m.path, [client("udevadm"), "monitor", "--kernel", "--property"])
    try:
        # udevadm prints this once its socket is bound (setup_monitor before the line)
        assert mon.until("KERNEL - the kernel uevent") == ["monitor will print the received events for:"]
        assert mon.until("") == []
        (m.path / NUMVFS).write_text("4")
        events = []
        while len(events) < 17:
            block = mon.until("")                 # a header, its properties, a blank line
            mt = HEADER.match(block[0])
            assert mt, block
            props = dict(p.split("=", 1) for p in block[1:])
            events.append((mt.group(1), mt.group(2), mt.group(3), props))
        os.kill(_child(mon.p.pid), signal.SIGTERM)    # udevadm itself, by its PID
        assert mon.p.wait(CMD_TIMEOUT) == 0, mon.stderr()
    finally:
        mon.close()
    heads = [(a, p.removeprefix(ROOT), s) for a, p, s, _ in events]
    expect = []
    for i in range(4):
        vf = f"/0000:03:10.{2 * i}"
        net = events[4 * i + 2][3]["INTERFACE"]
        expect += [("add", vf, "pci"), ("change", vf, "pci"), ("add", f"{vf}/net/{net}", "net"), ("bind", vf, "pci")]
    expect.append(("change", f"/{PF}", "pci"))
    assert heads == expect
    add = events[0][3]
    assert add == {"ACTION": "add", "DEVPATH": f"{ROOT}/0000:03:10.0", "SUBSYSTEM": "pci", "PCI_CLASS": "20000",
                   "PCI_ID": "8086:1515", "PCI_SUBSYS_ID": "8086:0001", "PCI_SLOT_NAME": "0000:03:10.0",
                   "MODALIAS": "pci:v00008086d00001515sv00008086sd00000001bc02sc00i00",
                   "SEQNUM": add["SEQNUM"]}
    assert events[3][3]["DRIVER"] == "ixgbevf" and events[16][3]["DRIVER"] == "ixgbe"
    assert [int(e[3]["SEQNUM"]) for e in events] == list(range(int(add["SEQNUM"]), int(add["SEQNUM"]) + 17))
    assert events[2][3]["IFINDEX"] == m.read(m.sys / f"class/net/{events[2][3]['INTERFACE']}/ifindex").strip()
    assert int(events[-1][3]["SEQNUM"]) == seqnum(m)


INTERRUPTED = r"""
import os, signal, socket, threading, time
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 15)
s.bind((0, 1))
class Stop(Exception):
    pass
def handler(*_):
    raise Stop
signal.signal(signal.SIGUSR1, handler)
main = threading.get_native_id()
def poke():
    deadline = time.monotonic() + 30
    while not open(f"/proc/self/task/{main}/syscall").read().startswith("45 "):   # blocked in recvfrom
        assert time.monotonic() < deadline
    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
threading.Thread(target=poke).start()
try:
    s.recv(8192)
except Stop:
    print("interrupted")
"""


def test_a_signal_interrupts_a_blocking_receive(mount_preset):
    """The handler runs as on a real netlink socket, not only at the next event."""
    m = mount_preset("seed-vtd")
    r = run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(m.path), "--", sys.executable, "-c", INTERRUPTED],
            cwd=REPO)
    assert (r.returncode, r.stdout) == (0, "interrupted\n"), r.stderr


def _daemon(mnt) -> int:
    """The mount's daemon: the `vfakefs mount` process serving mnt."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"mount" in argv and str(mnt).encode() in argv:
            return int(pid)
    raise AssertionError(f"no daemon for {mnt}")


def _sockets(pid: int) -> int:
    return sum(1 for fd in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))


def test_the_daemon_lets_go_of_a_programs_sockets_when_it_exits(mount_preset):
    m = mount_preset("seed-vtd")
    daemon = _daemon(m.path)
    before = _sockets(daemon)
    # --host-net: the network namespace's mirror holds sockets of its own (netmirror.py)
    r = run([sys.executable, "-m", "vfakefs", "run", "--host-net", "--mnt", str(m.path), "--", sys.executable, "-c", textwrap.dedent(f"""
        import os, socket
        ss = [socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 15) for _ in range(3)]
        for s in ss:
            s.bind((0, 1))
        # netlink_autobind: the process's pid first, then -4096 counting down
        print([s.getsockname()[0] - (1 << 32) if s.getsockname()[0] >> 31 else s.getsockname()[0] - os.getpid()
               for s in ss])
        print(sum(1 for fd in os.listdir("/proc/{daemon}/fd")
                  if os.readlink("/proc/{daemon}/fd/" + fd).startswith("socket:")))
    """)], cwd=REPO)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "[0, -4096, -4097]"
    assert int(lines[1]) == before + 3          # the daemon's ends, while the program lives
    deadline = time.monotonic() + CMD_TIMEOUT
    while _sockets(daemon) != before:
        assert time.monotonic() < deadline, (before, _sockets(daemon))
    (m.path / NUMVFS).write_text("1")            # nobody left to hear it: no error
    assert (m.path / NUMVFS).read_text() == "1\n"


def test_udevadm_monitor_subsystem_match_filters_natively(mount_preset):
    """--subsystem-match attaches sd-device's socket filter (SO_ATTACH_FILTER): it runs on
    our socket as on netlink, passing kernel messages to udevadm's own subsystem check."""
    m = mount_preset("seed-vtd")
    mon = Program(m.path, [client("udevadm"), "monitor", "--kernel", "--subsystem-match=net"])
    try:
        mon.until("KERNEL - the kernel uevent")
        mon.until("")
        (m.path / NUMVFS).write_text("2")
        lines = []
        while len(lines) < 2:
            line = mon._line(time.monotonic() + CMD_TIMEOUT)
            assert line is not None, mon.stderr()
            lines.append(line)
        (m.path / NUMVFS).write_text("0")
        while len(lines) < 4:
            lines.append(mon._line(time.monotonic() + CMD_TIMEOUT))
        os.kill(_child(mon.p.pid), signal.SIGTERM)
        assert mon.p.wait(CMD_TIMEOUT) == 0, mon.stderr()
    finally:
        mon.close()
    heads = [HEADER.match(line) for line in lines]
    assert all(heads), lines
    assert [(h.group(1), h.group(3)) for h in heads] == [("add", "net"), ("add", "net"), ("remove", "net"),
                                                          ("remove", "net")]
    assert [h.group(2).rsplit("/", 3)[1] for h in heads] == ["0000:03:10.0", "0000:03:10.2"] * 2


def test_udevadm_trigger_writes_uevent_files_and_each_write_is_one_event(mount_preset):
    m = mount_preset("seed-vtd")
    before = seqnum(m)
    r = run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(m.path), "--", client("udevadm"), "trigger",
             "--verbose", "--uuid", "--subsystem-match=net", "--action=change"], cwd=REPO)
    assert r.returncode == 0, r.stderr
    triggered = [ln for ln in r.stdout.splitlines() if ln.startswith("/sys/")]
    assert sorted(triggered) == sorted(["/sys/devices/virtual/net/lo"] + [
        "/sys/" + os.path.realpath(m.sys / "class/net" / n).removeprefix(str(m.sys) + "/") for n in ("eth0", "eth1", "eth2", "eth3")])
    assert seqnum(m) == before + 5


MEMBERSHIP = r"""
import errno, os, socket
SOL_NETLINK, ADD, DROP = 270, 1, 2
a = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 15)
a.bind((0, 0))                                   # no group: hears nothing yet
b = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 15)
try:
    b.bind((a.getsockname()[0], 1))
except OSError as e:
    print("taken", errno.errorcode[e.errno])
def poke():
    with open("/sys/bus/pci/devices/0000:03:00.0/uevent", "w") as f:
        f.write("change")
def heard(s):
    try:
        return s.recv(8192).split(b"@")[0].decode()
    except BlockingIOError:
        return "-"
poke()
print("unsubscribed", heard(a))
a.setsockopt(SOL_NETLINK, ADD, 1)
poke()
print("added", heard(a), a.getsockname()[1])
a.setsockopt(SOL_NETLINK, DROP, 1)
poke()
print("dropped", heard(a))
try:
    a.setsockopt(SOL_NETLINK, ADD, 0)
except OSError as e:
    print("group 0", errno.errorcode[e.errno])
"""


def test_membership_by_setsockopt_and_a_taken_port_id(mount_preset):
    m = mount_preset("seed-vtd")
    r = run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(m.path), "--", sys.executable, "-c", MEMBERSHIP],
            cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["taken EADDRINUSE", "unsubscribed -", "added change 1", "dropped -",
                                     "group 0 EINVAL"]
