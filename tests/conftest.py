"""Shared fixtures: real vfakefs mounts, always unmounted, and helpers to run
real programs (bash, cat, stat, find, lspci) against them.

Every mount made here goes through the real command line
(`python -m vfakefs mount -t PRESET MNT`) and is unmounted in a `finally`
(`python -m vfakefs umount --lazy MNT`, then `fusermount3 -u -z`, then `umount -l`),
also when the test or the mount itself fails, or left a file open on the mount. A session fixture checks at the
end that none of the mountpoints made here is still in /proc/mounts.
"""
from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import tempfile
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.fidelity.capture import LSPCI_NAMES

# Hypothesis: no deadline and no too_slow health check anywhere, so a loaded machine cannot
# fail a test; in CI (CI set, as .ci/run does) the examples are derandomized as well: the
# same examples on every run, so a red CI is a real regression, not a new random draw.
# HYPOTHESIS_PROFILE=<name> picks a profile by hand. The tests' own settings(...) inherit
# from the profile loaded here (conftest is imported before any test module).
settings.register_profile("vfakefs", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("vfakefs-ci", settings.get_profile("vfakefs"), derandomize=True,
                          database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("vfakefs-ci" if os.environ.get("CI") else "vfakefs"))

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
MOUNT_TIMEOUT = 60
CMD_TIMEOUT = 60
# English messages from coreutils and bash, whatever the caller's locale
ENV = dict(os.environ, LC_ALL="C", LANG="C")

_MOUNTPOINTS: list[Path] = []   # every mountpoint this session made, checked at the end


# --- running things ------------------------------------------------------------------------
def run(cmd, *, cwd=None, user: int | None = None, input: str | bytes | None = None,
        text: bool = True, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess:
    """Run a real program. user=65534 runs it unprivileged through setpriv; pass
    cwd=MNT and paths relative to it then (pytest's temp dirs are 0700, and the
    cwd is entered before privileges are dropped).
    Output goes through files, not pipes, so that a daemon the command forks
    cannot keep us waiting for EOF."""
    if isinstance(cmd, str):
        cmd = ["bash", "-c", cmd]
    cmd = [str(c) for c in cmd]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run(cmd, cwd=cwd, env=ENV, stdout=out, stderr=err, timeout=timeout,
                           input=input.encode() if isinstance(input, str) else input,
                           stdin=None if input is not None else subprocess.DEVNULL)
        out.seek(0)
        err.seek(0)
        o, e = out.read(), err.read()
    if text:
        return subprocess.CompletedProcess(p.args, p.returncode, o.decode(errors="replace"),
                                           e.decode(errors="replace"))
    return subprocess.CompletedProcess(p.args, p.returncode, o, e)


def lspci_argv(sysfs_path: str, *args) -> list[str]:
    """lspci reading the PCI tree at sysfs_path (`sysfs.path=...`, relative to its cwd or
    not) and only that: -A linux-sysfs never falls back to the host's /proc/bus/pci, and
    names come from the pinned pci.ids, never the host's udev hwdb (LSPCI_NAMES)."""
    return ["lspci", "-A", "linux-sysfs", "-O", sysfs_path, *LSPCI_NAMES, *args]


def sh(script: str, **kw) -> subprocess.CompletedProcess:
    return run(["bash", "-c", script], **kw)


def vfakefs(*args, timeout: float = MOUNT_TIMEOUT) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "vfakefs", *args], cwd=REPO, timeout=timeout)


def mounts_at(mnt: Path | str) -> list[str]:
    """Filesystem types mounted exactly at mnt (per /proc/self/mounts)."""
    real = os.path.realpath(mnt)
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            # /proc/mounts escapes space, tab, newline and backslash as \ooo
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1])
            if point == real:
                out.append(parts[2])
    return out


def is_mounted(mnt: Path | str) -> bool:
    return bool(mounts_at(mnt))


def pidfile(mnt: Path | str) -> Path:
    """Where the CLI records the daemon's pid: /run/vfakefs/<realpath, '/' -> '_'>.pid."""
    return Path("/run/vfakefs") / (os.path.realpath(mnt).strip("/").replace("/", "_") + ".pid")


def daemon_pid(mnt: Path | str) -> int:
    pid = int(pidfile(mnt).read_text().strip())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    # only ever signal the daemon of a mount we made: a `python -m vfakefs mount ... MNT`
    assert b"vfakefs" in cmdline and os.fsencode(str(mnt)) in cmdline, (pid, cmdline)
    return pid


def wait_exit(pid: int, timeout: float = 30) -> None:
    """Block until process pid (not our child) has exited: a pidfd becomes readable then."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        assert p.poll(timeout * 1000), f"process {pid} did not exit within {timeout}s"
    finally:
        os.close(fd)


def force_unmount(mnt: Path | str) -> None:
    """Unmount by every means, quietly: the CLI first (--lazy: a file a test left open
    must not keep the mount), then fusermount3 -u -z, then umount -l."""
    mnt = str(mnt)
    try:
        vfakefs("umount", "--lazy", mnt, timeout=30)
    except subprocess.TimeoutExpired:
        pass
    for cmd in (["fusermount3", "-u", "-z", mnt], ["umount", "-l", mnt]):
        if not is_mounted(mnt):
            break
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- mounts ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mount:
    path: Path
    preset: str

    @property
    def sys(self) -> Path:
        return self.path / "sys"

    @property
    def pci(self) -> Path:
        return self.path / "sys/bus/pci"

    def devdir(self, bdf: str) -> Path:
        """The /sys/bus/pci/devices/<bdf> link (a path through the mount)."""
        return self.pci / "devices" / bdf

    def rel(self, p: Path | str) -> str:
        """p relative to the mount's root, for commands run with cwd=MNT."""
        return os.path.relpath(p, self.path)

    def read(self, p: Path | str) -> str:
        r = run(["cat", p])
        assert r.returncode == 0, r.stderr
        return r.stdout

    def lspci(self, *args) -> subprocess.CompletedProcess:
        return run(lspci_argv(f"sysfs.path={self.pci}", *args))


def make_mountpoint(parent: Path) -> Path:
    mnt = parent / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    return mnt


@contextmanager
def mounted(preset: str, mnt: Path, *opts: str):
    """Mount preset (a name or a TOML file) at mnt, with `vfakefs mount` options opts;
    unmount whatever happens."""
    _MOUNTPOINTS.append(mnt)
    try:
        r = vfakefs("mount", *opts, "-t", preset, str(mnt))
        assert r.returncode == 0, f"vfakefs mount -t {preset} {mnt} failed ({r.returncode}): {r.stderr}"
        assert mounts_at(mnt) == ["fuse.vfakefs"], mounts_at(mnt)
        yield Mount(mnt, preset)
    finally:
        force_unmount(mnt)


@pytest.fixture
def mount_preset(tmp_path):
    """Factory: mount_preset("seed-vtd"[, "--cache"]) -> a fresh Mount, unmounted at the end of the test."""
    stack = []

    def make(name: str, *opts: str) -> Mount:
        cm = mounted(name, make_mountpoint(tmp_path / f"m{len(stack)}"), *opts)
        m = cm.__enter__()
        stack.append(cm)
        return m

    try:
        yield make
    finally:
        while stack:
            stack.pop().__exit__(None, None, None)


@pytest.fixture(scope="module")
def seed_mnt(tmp_path_factory):
    """seed-vtd, shared by a module's read-only tests."""
    with mounted("seed-vtd", make_mountpoint(tmp_path_factory.mktemp("seed"))) as m:
        yield m


@pytest.fixture(scope="module")
def qemu_mnt(tmp_path_factory):
    """qemu-ref, shared by a module's read-only tests."""
    with mounted("qemu-ref", make_mountpoint(tmp_path_factory.mktemp("qemu"))) as m:
        yield m


@pytest.fixture(scope="session", autouse=True)
def no_mount_left_behind():
    yield
    left = [str(m) for m in _MOUNTPOINTS if is_mounted(m)]
    for m in left:
        force_unmount(m)
    assert not left, f"mounts left behind: {left}"


# --- what the presets say (the tests' expectations come from the topology files) --------------
def preset_topology(name: str) -> dict:
    return tomllib.loads((resources.files("vfakefs.presets") / f"{name}.toml").read_text())


def preset_devices(name: str) -> dict[str, dict]:
    """bdf -> the [[device]] table of a preset."""
    return {d["bdf"]: d for d in preset_topology(name)["device"]}


def sysfs_device_path(devs: dict[str, dict], bdf: str) -> str:
    """devices/pci0000:00/<bridge>/.../<bdf>: where the kernel puts a function, below its bridges."""
    chain = [bdf]
    while "parent" in devs[chain[-1]]:
        chain.append(devs[chain[-1]]["parent"])
    return "devices/pci0000:00/" + "/".join(reversed(chain))


def is_bridge(dev: dict) -> bool:
    return dev["kind"] in ("root_port", "upstream_port", "downstream_port", "pci_bridge", "pcie_pci_bridge") \
        or (dev["class"] >> 8) == 0x0604


# --- views of fresh machines, for tests without a mount ------------------------------------------
@pytest.fixture
def seed():
    """A View of a fresh seed-vtd Machine (kernel 6.12)."""
    from vfakefs.model import topology
    from vfakefs.sysfs.tree import View
    return View(topology.load("seed-vtd"))


@pytest.fixture
def qemu():
    """A View of a fresh qemu-ref Machine (kernel 6.1)."""
    from vfakefs.model import topology
    from vfakefs.sysfs.tree import View
    return View(topology.load("qemu-ref"))
