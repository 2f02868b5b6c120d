"""Unmodified C programs doing VFIO on seed-vtd under `vfakefs run`: compiled here with
gcc against the system's <linux/vfio.h> (tests/vfio_programs/), run as a user would run
them, their output compared line by line with what the kernel answers.

While a program waits (it prints a prompt and reads a line), the test acts on the
machine from outside, as the device or the administrator would: the `dma` and `msi`
controls, driver binds through sysfs, kill -9.
"""
from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import CMD_TIMEOUT, ENV, REPO, sh

GCC = shutil.which("gcc")
pytestmark = pytest.mark.skipif(GCC is None, reason="gcc is not installed (apt-get install gcc libc6-dev)")
SOURCES = REPO / "tests/vfio_programs"
GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"
PATTERN = "0123456789abcdef"                 # the `dma` payload: 8 bytes, repeated to the length


# --- building ----------------------------------------------------------------------------------
def build(src: str, out: Path, *flags: str) -> Path:
    r = subprocess.run([GCC, "-O2", "-Wall", "-pthread", *flags, "-o", str(out), str(SOURCES / src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"gcc {src} {' '.join(flags)}: {r.stderr}"
    return out


@pytest.fixture(scope="module")
def progs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("vfio-programs")
    for name in ("essay", "errors", "fork", "threads"):
        build(f"{name}.c", d / name)
    return d


@pytest.fixture(scope="module")
def static_essay(progs) -> Path:
    libc_a = subprocess.run([GCC, "-print-file-name=libc.a"], capture_output=True, text=True).stdout.strip()
    assert os.path.isabs(libc_a), "no static libc (libc.a): the machine needs libc6-dev"
    return build("essay.c", progs / "essay-static", "-static")


# --- running a program under `vfakefs run`, talking to it -------------------------------------
class Program:
    """`python -m vfakefs run --mnt MNT -- argv` (no argv: `vfakefs shell --mnt MNT`, bash),
    its stdout read line by line as it comes."""

    def __init__(self, mnt: Path, argv: list):
        self.err = tempfile.TemporaryFile()
        cmd = ["run", "--mnt", str(mnt), "--", *map(str, argv)] if argv else ["shell", "--mnt", str(mnt)]
        self.p = subprocess.Popen([sys.executable, "-m", "vfakefs", *cmd], cwd=REPO, env=dict(ENV, SHELL="/bin/bash"),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)
        self.buf = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.p.stdout, selectors.EVENT_READ)

    def _line(self, deadline: float) -> str | None:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sel.select(left):
                raise AssertionError(f"no line within {CMD_TIMEOUT}s; so far {self.buf!r}; stderr: {self.stderr()}")
            chunk = os.read(self.p.stdout.fileno(), 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace")

    def until(self, prompt: str) -> list[str]:
        """The lines printed before `prompt` (which must come)."""
        deadline, lines = time.monotonic() + CMD_TIMEOUT, []
        while (line := self._line(deadline)) != prompt:
            assert line is not None, f"exited ({self.p.wait()}) before {prompt!r}: {lines}; stderr: {self.stderr()}"
            lines.append(line)
        return lines

    def send(self, text: str = "go\n") -> None:
        self.p.stdin.write(text.encode())
        self.p.stdin.flush()

    def finish(self) -> list[str]:
        """The rest of the output; the program must exit 0."""
        deadline, lines = time.monotonic() + CMD_TIMEOUT, []
        while (line := self._line(deadline)) is not None:
            lines.append(line)
        assert self.p.wait(CMD_TIMEOUT) == 0, (self.p.returncode, lines, self.stderr())
        return lines

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()        # the `vfakefs run` we started: its program dies with it (PDEATHSIG)
            self.p.wait()
        self.p.stdin.close()
        self.p.stdout.close()
        self.sel.close()
        self.err.close()


@contextmanager
def program(mnt: Path, *argv):
    prog = Program(mnt, list(argv))
    try:
        yield prog
    finally:
        prog.close()


def run_to_end(mnt: Path, *argv, stdin: str = "") -> list[str]:
    with program(mnt, *argv) as p:
        p.send(stdin)
        p.p.stdin.close()
        return p.finish()


# --- the machine, from outside ------------------------------------------------------------------
def ok(script: str) -> None:
    r = sh(script)
    assert r.returncode == 0, f"{script}: {r.stderr}"


def bind_gpu(mnt) -> None:
    """The essay: take the GPU from nouveau and give it to vfio-pci by id."""
    s = mnt.sys
    ok(f"echo {GPU} > {s}/bus/pci/devices/{GPU}/driver/unbind && "
       f"echo '10de 1b80' > {s}/bus/pci/drivers/vfio-pci/new_id")


def bind_audio(mnt) -> None:
    """The essay: the audio function follows through driver_override; group 42 is viable."""
    s = mnt.sys
    ok(f"echo vfio-pci > {s}/bus/pci/devices/{AUDIO}/driver_override && "
       f"echo {AUDIO} > {s}/bus/pci/devices/{AUDIO}/driver/unbind && "
       f"echo {AUDIO} > {s}/bus/pci/drivers_probe")
    assert os.readlink(mnt.devdir(AUDIO) / "driver").endswith("/vfio-pci")


def control(mnt, name: str, request: str) -> str:
    """Write a request to one of vfakefs's controls and read its answer on the same open file."""
    fd = os.open(mnt.sys / "kernel/debug/vfakefs" / name, os.O_RDWR)
    try:
        os.write(fd, request.encode())
        return os.pread(fd, 65536, 0).decode()
    finally:
        os.close(fd)


def device_writes(mnt, iova: int, length: int, data: str) -> None:
    answer = control(mnt, "dma", f"{GPU} write {iova:#x} {length} data={data}")
    assert "hpa" in answer and "fault" not in answer, answer


def bus_master_on(mnt, bdf: str = GPU) -> None:
    """Set Bus Master Enable in the function's command register, as root through sysfs
    `config` (a guest's driver would do it through the device fd's config region)."""
    fd = os.open(mnt.devdir(bdf) / "config", os.O_RDWR)
    try:
        cmd = int.from_bytes(os.pread(fd, 2, 4), "little")
        assert os.pwrite(fd, (cmd | 0x4).to_bytes(2, "little"), 4) == 2
    finally:
        os.close(fd)


def context_did(mnt, bdf: str = GPU) -> int | None:
    """The domain id in bdf's context entry (dmar_translation_struct), None when not present."""
    short = bdf.split(":", 1)[1]
    text = (mnt.sys / "kernel/debug/iommu/intel/dmar_translation_struct").read_text()
    for line in text.splitlines():
        if line.startswith(short + "\t"):
            hi, lo = (int(w, 16) for w in line.split("\t")[2].split(":"))
            return (hi >> 8) & 0xFFFF if lo & 1 else None
    return None


def released(mnt, default_did: int) -> bool:
    """Whether the GPU's context entry has its default domain back. The daemon hears of a
    program's last close through inotify, after the exit: wait for it (bounded)."""
    deadline = time.monotonic() + CMD_TIMEOUT
    while context_did(mnt) != default_did and time.monotonic() < deadline:
        time.sleep(0.05)
    return context_did(mnt) == default_did


def pids_running(exe: Path) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.readlink(f"/proc/{d}/exe") == str(exe):
                    out.append(int(d))
            except OSError:
                pass
    return out


# --- the essay's program --------------------------------------------------------------------------
ESSAY_SETUP = [
    "open /dev/vfio/vfio: fd",
    "VFIO_GET_API_VERSION: 0",
    "VFIO_CHECK_EXTENSION(VFIO_TYPE1_IOMMU): 1",
    "open /dev/vfio/42: fd",
    "VFIO_GROUP_GET_STATUS: 0",
    "group flags: 0x1",                              # VIABLE
    "VFIO_GROUP_SET_CONTAINER: 0",
    "VFIO_SET_IOMMU(VFIO_TYPE1_IOMMU): 0",
    "VFIO_GROUP_GET_DEVICE_FD(0000:01:00.0): fd",
    "VFIO_DEVICE_GET_INFO: 0",
    "device flags: 0x3 regions: 9 irqs: 5",          # PCI | RESET; 9 regions, 5 irq types
    "VFIO_IOMMU_MAP_DMA(iova 0, 1 MiB, READ|WRITE): 0",
    "eventfd: fd",
    "VFIO_DEVICE_SET_IRQS(MSI vector 0 -> eventfd): 0",
]


@pytest.mark.parametrize("build_kind", ["dynamic", "static"])
def test_essay_program_runs_unmodified(mount_preset, progs, build_kind, request):
    """The essay's calls in its order, no error checks: every one succeeds; a device write
    at guest address 0x1000 lands in the program's buffer (once the device may master the
    bus) and MSI vector 0 makes its eventfd readable. The static build prints the same."""
    exe = progs / "essay" if build_kind == "dynamic" else request.getfixturevalue("static_essay")
    m = mount_preset("seed-vtd")
    bind_gpu(m)
    bind_audio(m)
    default_did = context_did(m)
    with program(m.path, exe) as p:
        assert p.until("ready") == ESSAY_SETUP
        did = context_did(m)
        assert did is not None and did != default_did           # the container's own domain
        # the essay never sets Bus Master Enable, so the device sends nothing yet; a guest's
        # driver would set it through the config region: the test sets it from outside
        answer = control(m, "dma", f"{GPU} write 0x1000 16 data=ff")
        assert "not issued (bus mastering disabled)" in answer, answer
        bus_master_on(m)
        device_writes(m, 0x1000, 16, PATTERN)
        answer = control(m, "msi", f"{GPU} vector 0")
        assert "blocked" not in answer, answer
        p.send()
        assert p.finish() == [
            f"guest 0x1000: {PATTERN * 2} {'0' * 32}",            # 16 bytes written, the next 16 untouched
            "eventfd: readable count=1",
        ]
    assert released(m, default_did)                              # exit released the group


def test_essay_program_in_vfakefs_shell(mount_preset, progs):
    """The same program started from the shell `vfakefs shell` gives (bash reading the
    commands from a pipe, the program reading its line after them)."""
    m = mount_preset("seed-vtd")
    bind_gpu(m)
    bind_audio(m)
    bus_master_on(m)
    with program(m.path) as p:
        p.send(f"exec {progs / 'essay'}\n")
        assert p.until("ready") == ESSAY_SETUP
        device_writes(m, 0x1000, 16, PATTERN)
        control(m, "msi", f"{GPU} vector 0")
        p.send()
        assert p.finish() == [f"guest 0x1000: {PATTERN * 2} {'0' * 32}", "eventfd: readable count=1"]


# --- every error path --------------------------------------------------------------------------
ERRORS_NOT_VIABLE = [
    "open /dev/vfio/vfio: fd",
    "VFIO_GET_API_VERSION: 0",
    "VFIO_CHECK_EXTENSION(VFIO_TYPE1_IOMMU): 1",
    "VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU): 1",
    "VFIO_CHECK_EXTENSION(VFIO_SPAPR_TCE_IOMMU): 0",
    "container: unknown ioctl before SET_IOMMU: -1 EINVAL",
    "VFIO_SET_IOMMU without a group: -1 EINVAL",
    "open /dev/vfio/42: fd",
    "open /dev/vfio/42 again: -1 EBUSY",
    "VFIO_GROUP_GET_STATUS: 0 flags=0",              # 01:00.1 on snd_hda_intel: not viable
    "VFIO_GROUP_GET_STATUS argsz 4: -1 EINVAL",
    "group: unknown ioctl: -1 ENOTTY",
    "VFIO_GROUP_SET_CONTAINER (not viable): -1 EPERM",
    "VFIO_GROUP_GET_DEVICE_FD without a container: -1 EINVAL",
]
ERRORS_VIABLE = [
    "VFIO_GROUP_GET_STATUS: 0 flags=0x1",
    "VFIO_GROUP_SET_CONTAINER(bad fd): -1 EBADF",
    "VFIO_GROUP_SET_CONTAINER(a group fd): -1 EBADFD",
    "VFIO_GROUP_SET_CONTAINER: 0",
    "VFIO_GROUP_SET_CONTAINER again: -1 EINVAL",
    "VFIO_GROUP_GET_STATUS: 0 flags=0x3",
    "VFIO_GROUP_GET_DEVICE_FD before SET_IOMMU: -1 EINVAL",
    "VFIO_SET_IOMMU(VFIO_SPAPR_TCE_IOMMU): -1 ENODEV",
    "VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU): 0",
    "VFIO_SET_IOMMU again: -1 EINVAL",
    "container: unknown ioctl: -1 ENOTTY",
    "VFIO_GROUP_GET_DEVICE_FD(0000:01:00.7): -1 ENODEV",
    "VFIO_GROUP_GET_DEVICE_FD(0000:03:00.0): -1 ENODEV",
    'VFIO_GROUP_GET_DEVICE_FD("0000:01:00.0\\n"): -1 ENODEV',
    "VFIO_GROUP_GET_DEVICE_FD(0000:01:00.0 junk): -1 EINVAL",
    "VFIO_GROUP_GET_DEVICE_FD(0000:01:00.0): fd",
    "VFIO_DEVICE_GET_INFO: 0 flags=0x3 regions=9 irqs=5",
    "VFIO_DEVICE_GET_INFO argsz 8: -1 EINVAL",
    "device: unknown ioctl: -1 ENOTTY",
    "VFIO_GROUP_UNSET_CONTAINER with a device open: -1 EBUSY",
    "MAP_DMA iova 0 size 2M: 0",
    "MAP_DMA the same again (overlap): -1 EEXIST",
    "MAP_DMA iova 1M size 2M (overlap): -1 EEXIST",
    "MAP_DMA iova 0x200800 (misaligned): -1 EINVAL",
    "MAP_DMA vaddr +0x10 (misaligned): -1 EINVAL",
    "MAP_DMA size 0x1800 (misaligned): -1 EINVAL",
    "MAP_DMA size 0: -1 EINVAL",
    "MAP_DMA flags 0: -1 EINVAL",
    "MAP_DMA argsz 16: -1 EINVAL",
    "MAP_DMA iova 0xfee00000 (reserved): -1 EINVAL",
    "MAP_DMA of unmapped memory: -1 EFAULT",
    "UNMAP_DMA iova 0 size 1M (bisects): -1 EINVAL",  # type1v2: no splitting a mapping
    "UNMAP_DMA iova 0 size 2M: 0 size=0x200000",
    "UNMAP_DMA iova 0 size 2M again: 0 size=0",
    "MAP_DMA iova 0 size 2M: 0",
]
ERRORS_RELEASED = [
    "VFIO_GROUP_GET_STATUS: 0 flags=0x3",
    "close device: 0",
    "VFIO_GROUP_UNSET_CONTAINER: 0",
    "VFIO_GROUP_UNSET_CONTAINER again: -1 EINVAL",
    "VFIO_GROUP_GET_STATUS: 0 flags=0x1",            # 01:00.1 now has no driver: viable
    "close group: 0",
    "open /dev/vfio/42 after close: fd",
    "done",
]


def test_every_error_path(mount_preset, progs):
    m = mount_preset("seed-vtd")
    bind_gpu(m)                                                  # 01:00.1 stays on snd_hda_intel
    with program(m.path, progs / "errors") as p:
        assert p.until("wait viable") == ERRORS_NOT_VIABLE
        bind_audio(m)
        p.send()
        assert p.until("wait claimed") == ERRORS_VIABLE
        # a second program cannot open the group the first one holds
        assert run_to_end(m.path, progs / "essay", stdin="\n")[3] == "open /dev/vfio/42: -1 EBUSY"
        # a DMA-API driver cannot take a member of a claimed group: EBUSY, and no driver after it
        dev = m.devdir(AUDIO)
        ok(f"echo > {dev}/driver_override && echo {AUDIO} > {m.pci}/drivers/vfio-pci/unbind")
        r = sh(f"echo {AUDIO} > {m.pci}/drivers/snd_hda_intel/bind")
        assert r.returncode != 0 and "Device or resource busy" in r.stderr, r
        assert not (dev / "driver").exists()
        p.send()
        assert p.finish() == ERRORS_RELEASED
    # released: the same bind works now
    ok(f"echo {AUDIO} > {m.pci}/drivers/snd_hda_intel/bind")
    assert os.readlink(dev / "driver").endswith("/snd_hda_intel")


# --- fork, threads, kill -9 ----------------------------------------------------------------------
def test_forked_child_uses_the_inherited_fds(mount_preset, progs):
    """The child's ioctls are answered, its MAP_DMA pins its own memory (a device write lands
    there and not in the parent's copy), its eventfd is its own; its exit closes only its
    copies of the fds: the parent still holds the group."""
    m = mount_preset("seed-vtd")
    bind_gpu(m)
    bind_audio(m)
    with program(m.path, progs / "fork") as p:
        assert p.until("child ready") == [
            "parent: set up",
            "parent: bus master on (config region): 2",
            "child: VFIO_GROUP_GET_STATUS: 0",
            "child: group flags: 0x3",
            "child: VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU): 1",
            "child: VFIO_IOMMU_GET_INFO: 0",
            "child: iommu flags: 0x1",
            "child: VFIO_DEVICE_GET_INFO: 0",
            "child: device flags: 0x3 regions: 9 irqs: 5",
            "child: VFIO_IOMMU_MAP_DMA(iova 0x100000, 1 MiB): 0",
            "child: VFIO_DEVICE_SET_IRQS(MSI vector 0 -> eventfd): 0",
        ]
        device_writes(m, 0x1000, 16, "aa")                       # the parent's mapping
        device_writes(m, 0x101000, 16, "bb")                     # the child's
        control(m, "msi", f"{GPU} vector 0")
        p.send()
        assert p.finish() == [
            "child: iova 0x101000: " + "bb" * 16,
            "child: eventfd: readable count=1",
            "child: VFIO_IOMMU_UNMAP_DMA: 0",
            "child: unmapped 0x100000",
            "parent: child exited 0",
            "parent: iova 0x1000: " + "aa" * 16,
            "parent: VFIO_GROUP_GET_STATUS: 0",
            "parent: group flags: 0x3",
            "parent: VFIO_DEVICE_GET_INFO: 0",
            "parent: VFIO_IOMMU_UNMAP_DMA(ALL): 0",
            "parent: unmapped 0x100000",
        ]


def test_two_threads_at_once(mount_preset, progs):
    m = mount_preset("seed-vtd")
    bind_gpu(m)
    bind_audio(m)
    lines = run_to_end(m.path, progs / "threads")
    assert sorted(lines[:2]) == ["asker: 600 calls, 0 wrong", "mapper: 600 calls, 0 wrong"]   # in either order
    assert lines[2:] == [
        "VFIO_IOMMU_UNMAP_DMA(the mapper's range): 0",
        "unmapped 0",                                            # every map had its unmap
        "VFIO_IOMMU_UNMAP_DMA(the set-up's range): 0",
        "unmapped 0x200000",
    ]


def test_kill_9_releases_the_group(mount_preset, progs):
    """SIGKILL closes the program's fds: the group leaves its container, the GPU's context
    entry gets its default domain (DID and all) back, the IRTE its MSI had is freed, and
    the next program opens the node."""
    m = mount_preset("seed-vtd")
    bind_gpu(m)
    bind_audio(m)
    default_did = context_did(m)
    debugfs = m.sys / "kernel/debug/iommu/intel"
    irtes = (debugfs / "ir_translation_struct").read_text()
    group_type = (m.sys / "kernel/iommu_groups/42/type").read_text()
    exe = progs / "essay"
    with program(m.path, exe) as p:
        assert p.until("ready") == ESSAY_SETUP
        assert context_did(m) not in (None, default_did)
        assert (debugfs / "ir_translation_struct").read_text() != irtes      # MSI vector 0's IRTE
        [pid] = pids_running(exe)
        os.kill(pid, signal.SIGKILL)
        assert p.p.wait(CMD_TIMEOUT) == 128 + signal.SIGKILL
    # as in the kernel, the exit's closes come before anything after it: the next program
    # opens the node at once
    assert run_to_end(m.path, exe, stdin="\n")[:len(ESSAY_SETUP)] == ESSAY_SETUP
    assert released(m, default_did)
    assert (debugfs / "ir_translation_struct").read_text() == irtes
    assert (m.sys / "kernel/iommu_groups/42/type").read_text() == group_type
