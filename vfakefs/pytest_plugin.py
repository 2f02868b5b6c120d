"""vfakefs's pytest plugin: a simulated machine per session, reset before each test.

Installing vfakefs registers it (entry point group `pytest11`); without the
install, `pytest -p vfakefs.pytest_plugin` loads it. A test asks for `vfakefs`:

    def test_vfs(vfakefs):
        vfakefs.write("/sys/class/net/eth0/device/sriov_numvfs", "4")
        assert "Virtual Function" in vfakefs.run("lspci").stdout

Fixtures:
- `vfakefs_machines` (session): the mounts, one per topology, made on first use
  through the real command line (`python -m vfakefs mount -t TOPOLOGY MNT`) and all
  unmounted at the end of the session, whatever happened (`umount --lazy`).
- `vfakefs_machine` (session): the mount of the session's topology
  (`--vfakefs-topology`, default: presets.DEFAULT).
- `vfakefs` (function): the test's machine, reset to its topology's initial state
  through the `reset` control (a fresh boot in milliseconds, not a remount). Its
  topology is the marker's, `@pytest.mark.vfakefs_topology(NAME)` (a preset, or
  a topology file relative to the test's folder), else the session's.

The plugin talks to the mount's files and the command line only, as a user's
test would.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from vfakefs import presets
from vfakefs.client import Controls

DEFAULT_TOPOLOGY = presets.DEFAULT
MOUNT_TIMEOUT = 60


def pytest_addoption(parser):
    group = parser.getgroup("vfakefs", "simulated PCI / IOMMU / SR-IOV machine (vfakefs)")
    group.addoption("--vfakefs-topology", default=None, metavar="NAME|FILE",
                    help=f"the machine the vfakefs fixtures mount: a preset name or a "
                         f"topology TOML file (default {DEFAULT_TOPOLOGY})")
    group.addoption("--vfakefs-cache", action="store_true", default=False,
                    help="mount in cached mode (`vfakefs mount --cache`): attributes served "
                         "through the page cache, stat showing their content's length")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "vfakefs_topology(name): the machine (preset name or topology file) "
                   "this test's vfakefs fixture mounts")


def _vfakefs_cli(*args: str, timeout: float = MOUNT_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfakefs", *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def _mounted(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        # /proc/mounts escapes space, tab, newline and backslash as \ooo
        return any(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[1]) == real
                   for line in f)


class Machine:
    """One mounted machine: its topology and mountpoint."""

    def __init__(self, topology: str, path: Path, cache: bool = False):
        self.topology = topology
        self.path = path
        self.cache = cache
        self.controls = Controls(path)

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        r = _vfakefs_cli("mount", *(["--cache"] if self.cache else []), "-t", self.topology, str(self.path))
        if r.returncode != 0:
            raise RuntimeError(f"vfakefs mount -t {self.topology} {self.path} failed "
                               f"({r.returncode}): {r.stderr.strip()}")

    def unmount(self) -> None:
        """Quietly, by every means: the CLI (--lazy: a file left open does not keep the
        mount), then fusermount3 -u -z."""
        try:
            _vfakefs_cli("umount", "--lazy", str(self.path), timeout=30)
        except subprocess.TimeoutExpired:
            pass
        if _mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def reset(self) -> None:
        self.controls.reset()


class Machines:
    """The session's mounts, one per topology, mounted on first use."""

    def __init__(self, base: Path, cache: bool = False):
        self.base = base
        self.cache = cache
        self.by_topology: dict[str, Machine] = {}
        self.failed: dict[str, str] = {}     # topology -> why its mount failed

    def get(self, topology: str) -> Machine:
        if topology in self.failed:          # every test that asks is told, not only the first
            raise RuntimeError(self.failed[topology])
        m = self.by_topology.get(topology)
        if m is None:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(topology).name)
            m = Machine(topology, self.base / f"{len(self.by_topology)}-{safe[:24]}", self.cache)
            # recorded before mounting: a mount that half-failed is still unmounted at the end
            self.by_topology[topology] = m
            try:
                m.mount()
            except Exception as e:
                self.failed[topology] = str(e)
                raise
        return m

    def close(self) -> None:
        for m in self.by_topology.values():
            m.unmount()


class VFakeFS:
    """What a test gets: a freshly reset machine and helpers to use it."""

    def __init__(self, machine: Machine):
        self.machine = machine
        self.path = machine.path
        self.topology = machine.topology
        self.controls = machine.controls
        self._kmsg_start = self._kmsg_end()

    def host_path(self, path: str | os.PathLike) -> Path:
        """A path of the simulated machine ("/sys/...", "/dev/...") on the mount."""
        return self.path / str(path).lstrip("/")

    def read(self, path: str | os.PathLike) -> str:
        """An attribute's text, e.g. read("/sys/class/net/eth0/device/sriov_totalvfs")."""
        return self.host_path(path).read_text()

    def write(self, path: str | os.PathLike, text: str) -> None:
        """One write(2) of text to the attribute, as `echo` does; a store the kernel
        refuses raises OSError with its errno (and changes nothing)."""
        fd = os.open(self.host_path(path), os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def fault(self, bdf: str, point: str, *, fail: int | str | None = None, delay: float | None = None,
              times: int | str = 1) -> None:
        """Hardware that misbehaves on cue: e.g. fault("0000:03:00.0", "sriov_numvfs", delay=5)
        holds the next write 5 simulated seconds; fault(bdf, "probe", fail="EIO") fails the next
        probe (client.Controls.fault). The reset before each test clears the rules."""
        self.controls.fault(bdf, point, fail=fail, delay=delay, times=times)

    def fault_rules(self) -> list[str]:
        return self.controls.fault_rules()

    def run(self, cmd: str | list[str], *, input: str | None = None, timeout: float | None = 60,
            check: bool = False, env: dict | None = None,
            cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
        """Run cmd where /sys and /dev/vfio are the machine's (`vfakefs run`): a string
        through bash -c, a list as it is. Returns the CompletedProcess, output as text."""
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else [str(c) for c in cmd]
        return subprocess.run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(self.path),
                               "--", *argv], input=input, capture_output=True, text=True,
                              timeout=timeout, check=check, env=env, cwd=cwd,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def scenario(self, scenario: str | os.PathLike, wait: bool = True, timeout: float | None = 60) -> dict:
        """Run a scenario's timed steps on the machine (model/scenario.py): a file, or the
        TOML text itself. wait: return its final status once it has ended (else at once,
        the status of its start). A mistake in it raises OSError EINVAL, the kernel log
        (dmesg_since_start) saying where. The next test's reset stops it."""
        text = str(scenario)
        if "\n" in text:                 # TOML text: a file for the daemon to read
            with tempfile.NamedTemporaryFile("w", suffix=".toml", prefix="vfakefs-scenario-") as f:
                f.write(text)
                f.flush()
                self.controls.scenario_start(f.name)   # the daemon has read it when this returns
        else:
            self.controls.scenario_start(scenario)
        return self.controls.scenario_wait(timeout) if wait else self.controls.scenario_status()

    def stop_scenario(self) -> dict:
        self.controls.scenario_stop()
        return self.controls.scenario_status()

    def hotplug(self, action: str, *args: str | os.PathLike) -> None:
        """hotplug("add", "6", "card.toml") plugs a card (a TOML file of [[device]] tables, a
        path relative to the test's cwd is made absolute) into pciehp slot 6;
        hotplug("remove", "6") pulls it out. A refusal raises OSError with the control's errno."""
        if action == "add" and len(args) == 2:
            self.controls.hotplug_add(str(args[0]), args[1])
        elif action == "remove" and len(args) == 1:
            self.controls.hotplug_remove(str(args[0]))
        else:
            raise ValueError("hotplug('add', slot, card) or hotplug('remove', slot|bdf)")

    def _kmsg_end(self) -> int:
        """The /dev/kmsg offset after the last record (devkmsg_llseek SEEK_END)."""
        fd = os.open(self.host_path("/dev/kmsg"), os.O_RDONLY | os.O_NONBLOCK)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)

    def dmesg_since_start(self) -> list[str]:
        """The kernel log's lines since this test began (after the reset): each record's
        text, as dmesg prints it without the timestamp."""
        lines = []
        fd = os.open(self.host_path("/dev/kmsg"), os.O_RDONLY | os.O_NONBLOCK)
        try:
            os.lseek(fd, self._kmsg_start, os.SEEK_SET)
            while True:
                try:
                    rec = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno == errno.EPIPE:   # records overwritten: go on with the oldest left
                        continue
                    raise
                if not rec:
                    break
                head, _, rest = rec.decode(errors="replace").partition(";")
                lines.append(rest.split("\n", 1)[0])
        finally:
            os.close(fd)
        return lines


def _resolve(topology: str, base: Path) -> str:
    """A preset name as it is; a relative topology file from base (the marking test's
    folder, or where pytest was started for the option), whatever the cwd."""
    if topology.endswith(".toml") and not os.path.isabs(topology):
        return str((base / topology).resolve())
    return topology


def _session_topology(config) -> str:
    return _resolve(config.getoption("vfakefs_topology") or DEFAULT_TOPOLOGY,
                    config.invocation_params.dir)


@pytest.fixture(scope="session")
def vfakefs_machines(pytestconfig):
    # a short directory of its own, not pytest's basetemp: the daemon's socket is named
    # after the mountpoint's path, and an AF_UNIX path holds at most 107 bytes
    base = Path(tempfile.mkdtemp(prefix="vfakefs-pytest-"))
    machines = Machines(base, cache=pytestconfig.getoption("vfakefs_cache"))
    try:
        yield machines
    finally:
        machines.close()
        for m in machines.by_topology.values():   # never rmtree: it would reach into a mount
            with contextlib.suppress(OSError):
                m.path.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()


@pytest.fixture(scope="session")
def vfakefs_machine(vfakefs_machines, pytestconfig) -> Machine:
    return vfakefs_machines.get(_session_topology(pytestconfig))


@pytest.fixture
def vfakefs(request, vfakefs_machines) -> VFakeFS:
    marker = request.node.get_closest_marker("vfakefs_topology")
    if marker is not None:
        if len(marker.args) != 1:
            raise pytest.UsageError("vfakefs_topology takes one argument: a preset name or file")
        topology = _resolve(str(marker.args[0]), request.path.parent)
    else:
        topology = _session_topology(request.config)
    machine = vfakefs_machines.get(topology)
    machine.reset()
    return VFakeFS(machine)
