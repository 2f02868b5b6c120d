#!/usr/bin/env python3
"""Read-rate benchmark: vfakefs against tmpfs, real sysfs and a C libfuse server.

Everything is measured side by side in one run, with the daemon(s) and this
reader pinned to one CPU, and printed as ratios (DESIGN.md, "Performance
notes"); absolute numbers move between machines, ratios much less.

What it does, in order:
 1. Mounts vfakefs (`python -m vfakefs mount --topology T MNT` under
    `taskset -c CPU`) K times and times each: from starting the command to it
    returning, and to the first successful stat of MNT/sys/bus/pci/devices.
    The last mount is kept for the read tests.
 2. Copies MNT/sys into a fresh tmpfs (directories, symlinks as symlinks, the
    content of every readable regular file; write-only files are skipped).
 3. Compiles bench/cfuse_baseline.c (a minimal single-threaded libfuse3
    direct_io server with one 7-byte file) into a temp dir and mounts it, and
    mounts its Python twin bench/pyfuse3_minimal.py (pyfuse3 + trio, with
    vfakefs's own max_tasks): the ceiling of a pyfuse3 server.
 4. Measures, in interleaved rounds, ops/s against vfakefs, the tmpfs copy,
    the host's real /sys (read only) and the two minimal servers; and, from
    vfakefs's `requests` control read around each vfakefs run, the FUSE
    requests per op (the control's own read subtracted).

Where each request of a read comes from (the libfuse debug trace of a
foreground mount beside `strace` of the reader, and the `requests` control;
tests/mount/test_requests.py pins them), for MNT/sys/bus/pci/devices/
0000:03:00.0/vendor once its path is in the kernel's dentry cache:
  READLINK  the walk through the bus's symlink `0000:03:00.0`: the kernel does not
            cache a FUSE symlink's target (pyfuse3 never asks FUSE_CAP_CACHE_SYMLINKS),
            so every walk asks, a stat too. The canonical path MNT/sys/devices/
            pci0000:00/0000:00:1c.0/0000:03:00.0/vendor has no READLINK.
  OPEN      openat(): every open reaches the server (show() runs here, as kernfs's open).
  GETATTR   fstat() on the new fd (cat, python's open()): the previous READ that
            reached the server marked the inode's atime stale, so the attributes are
            asked again despite the hour-long attr timeout; os.open+os.read never
            fstats and sends none. The first read after a LOOKUP has none either.
  READ      each read() (direct_io): cat and python's open().read() read again to
            the end (a second READ, answered empty); read(4096) once is one.
  RELEASE   close() (FLUSH was answered ENOSYS once, and the kernel sends no more).
  IOCTL     python's buffered open() (the default buffering) asks isatty(): TCGETS,
            answered ENOTTY by libfuse itself (not counted by `requests`).
So: `cat` 5 (+1 through the link): OPEN GETATTR READ READ RELEASE; python
open(p, "rb", buffering=0).read(4096) 4: GETATTR OPEN READ RELEASE (the four of
the C baseline); open(p).read() 6: OPEN GETATTR IOCTL READ READ RELEASE;
os.open/os.read/os.close 3: OPEN READ RELEASE. A stat of a cached path costs none.

Every mount is undone in `finally`. Run as root (tmpfs and FUSE mounts):

    taskset -c 0 .venv/bin/python bench/read_rate.py [--ops N] [--cache] [--json FILE]
"""
from __future__ import annotations

import argparse
import errno
import gc
import json
import os
import signal
import statistics
import stat as st
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import wait_ready, write as write_figures  # noqa: E402
from report_figures import read_figures  # noqa: E402

C_SOURCE = Path(__file__).resolve().parent / "cfuse_baseline.c"

# DESIGN.md, "Performance notes": minimal C libfuse direct_io server, reader on
# the same CPU, open + read(4096) + close of a 7-byte attribute.
DOCUMENTED_C_BASELINE = 31_900

# Attribute files read in the cycled tests, found in every PCI function
# directory under sys/devices that has them.
ATTR_NAMES = (
    "vendor", "device", "subsystem_vendor", "subsystem_device", "class",
    "revision", "irq", "uevent", "resource", "modalias", "numa_node",
    "local_cpulist", "enable", "sriov_totalvfs", "sriov_numvfs",
    "sriov_offset", "sriov_stride", "sriov_vf_device",
)

COPY_READ_CAP = 1 << 20   # a resourceN or rom file could be large; sysfs attrs are <= 4 KiB


# ---------------------------------------------------------------- mounts

def warn(msg: str) -> None:
    """stderr that cannot raise: cleanup must go on with a closed pipe."""
    try:
        print(msg, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def mounted_at(path: Path) -> bool:
    """Whether path is a mount point, from /proc/self/mounts (never touches a
    possibly hung FUSE mount, unlike os.path.ismount)."""
    want = os.fsencode(os.path.abspath(path))
    with open("/proc/self/mounts", "rb") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1 and _unescape_mount(fields[1]) == want:
                return True
    return False


def _unescape_mount(field: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(field):
        if field[i:i + 1] == b"\\" and field[i + 1:i + 4].isdigit():
            out.append(int(field[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def pids_with_arg(arg: str) -> list[int]:
    """Processes whose command line holds `arg` (our unique temp mount path),
    i.e. daemons this script started."""
    mine = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == mine:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.fsencode(arg) in argv:
            found.append(int(entry))
    return found


def cpus_allowed(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def end_processes(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, the given pids (all started by this script)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [p for p in pids if _alive(p)]
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        if not pids:
            break
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


class VfakefsMount:
    """Mounts and unmounts the daemon under test; remembers its pids."""

    def __init__(self, mnt: Path, topology: str, cpu: int, log_dir: Path, mount_args: tuple = ()):
        self.mnt, self.topology, self.cpu, self.log_dir = mnt, topology, cpu, log_dir
        self.mount_args = list(mount_args)
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), self.env.get("PYTHONPATH")) if p)
        self.daemon_pids: list[int] = []

    def mount(self, timeout: float = 120.0) -> tuple[float, float]:
        """Returns (seconds until the command returned, seconds until ready)."""
        cmd = ["taskset", "-c", str(self.cpu), sys.executable, "-m", "vfakefs",
               "mount", *self.mount_args, "--topology", self.topology, str(self.mnt)]
        # Files, not pipes: a daemon that forks keeps inherited pipes open and
        # would make reading them block until it exits.
        with open(self.log_dir / "mount.out", "wb") as out, \
                open(self.log_dir / "mount.err", "wb") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=out,
                                    stderr=err, stdin=subprocess.DEVNULL)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                end_processes([proc.pid])
                raise RuntimeError(f"vfakefs mount did not return in {timeout:.0f} s")
            t_returned = time.perf_counter() - t0
            if rc != 0:
                raise RuntimeError(f"vfakefs mount exited {rc}: "
                                   + (self.log_dir / "mount.err").read_text(errors="replace")[-2000:])
            wait_ready(self.mnt)
            t_ready = time.perf_counter() - t0
        self.daemon_pids = sorted(set(self.daemon_pids) | set(pids_with_arg(str(self.mnt))))
        return t_returned, t_ready

    def umount(self) -> float | None:
        """Unmounts if mounted; returns seconds taken by `vfakefs umount`."""
        took = None
        if mounted_at(self.mnt):
            t0 = time.perf_counter()
            try:
                subprocess.run([sys.executable, "-m", "vfakefs", "umount", str(self.mnt)],
                               cwd=REPO, env=self.env, timeout=60,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                pass
            took = time.perf_counter() - t0
            if mounted_at(self.mnt):
                warn(f"vfakefs umount left {self.mnt} mounted; fusermount3 -u -z")
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], timeout=30)
                took = None
        pids = sorted(set(self.daemon_pids) | set(pids_with_arg(str(self.mnt))))
        left = wait_gone(pids, 10.0)
        if left:
            warn(f"daemon pid(s) {left} still running after unmount; ending them")
            end_processes(left)
        self.daemon_pids = []
        return took


class CBaseline:
    """bench/cfuse_baseline.c, compiled and mounted in a temp dir."""

    def __init__(self, workdir: Path, cpu: int):
        self.dir, self.cpu = workdir, cpu
        self.mnt = workdir / "cmnt"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = self.dir / "cfuse_baseline"
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], check=True,
                               capture_output=True, text=True).stdout.split()
        subprocess.run(["cc", "-O2", "-o", str(exe), str(C_SOURCE), *flags], check=True)
        self.mnt.mkdir()
        self.proc = subprocess.Popen(["taskset", "-c", str(self.cpu), str(exe), str(self.mnt)],
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not mounted_at(self.mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("C baseline server did not mount")
            time.sleep(0.01)
        os.stat(self.mnt / "vendor")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # libfuse (pyfuse3) unmounts and exits
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                end_processes([self.proc.pid])
        if mounted_at(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], timeout=30)
        if self.mnt.exists() and not mounted_at(self.mnt):
            self.mnt.rmdir()


class PyfuseBaseline(CBaseline):
    """bench/pyfuse3_minimal.py, with the max_tasks vfakefs runs pyfuse3.main with (keep_cache:
    its cached-mode twin, for `--cache`)."""

    def __init__(self, workdir: Path, cpu: int, keep_cache: bool = False):
        super().__init__(workdir, cpu)
        self.keep_cache = keep_cache

    def start(self) -> None:
        sys.path.insert(0, str(REPO))
        from vfakefs.fuse.files import MAX_TASKS
        self.mnt = self.dir / "pymnt"
        self.mnt.mkdir()
        self.proc = subprocess.Popen(["taskset", "-c", str(self.cpu), sys.executable,
                                      str(REPO / "bench" / "pyfuse3_minimal.py"), str(self.mnt),
                                      "--max-tasks", str(MAX_TASKS), *(["--keep-cache"] if self.keep_cache else [])],
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not mounted_at(self.mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("pyfuse3 baseline server did not mount")
            time.sleep(0.01)
        os.stat(self.mnt / "vendor")


class Requests:
    """vfakefs's `requests` control: the FUSE requests served around a run, less the
    control's own reads (measured once: the difference of two reads with nothing between)."""

    def __init__(self, root: Path):
        sys.path.insert(0, str(REPO))
        from vfakefs.client import Controls
        self.controls = Controls(root)
        self.path = root / "sys" / "kernel" / "debug" / "vfakefs" / "requests"
        self.ok = self.path.exists()
        if self.ok:
            self.read()
            self.overhead = self.diff(self.read(), self.read())

    def read(self) -> dict[str, int]:
        return self.controls.requests()

    @staticmethod
    def diff(a: dict, b: dict) -> dict:
        return {op: b[op] - a.get(op, 0) for op in b if op != "forget" and b[op] != a.get(op, 0)}

    def per_op(self, before: dict, after: dict, n: int) -> dict[str, float]:
        d = self.diff(before, after)
        for op, k in self.overhead.items():
            d[op] = d.get(op, 0) - k
        return {op: k / n for op, k in d.items() if k}


def mount_tmpfs(path: Path) -> None:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m,mode=0755",
                    "vfakefs-bench", str(path)], check=True)


def umount_tmpfs(path: Path) -> None:
    if mounted_at(path):
        r = subprocess.run(["umount", str(path)])
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(path)])
    if path.exists() and not mounted_at(path):
        path.rmdir()


# ---------------------------------------------------------------- tree

def copy_tree(src: Path, dst: Path, stats: dict) -> None:
    """Directories, symlinks as symlinks, and the content of readable regular
    files; write-only files (no read bit, as sysfs's 0200) are skipped."""
    os.mkdir(dst)
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        s, d = Path(e.path), dst / e.name
        try:
            info = os.lstat(s)
        except OSError:
            stats["errors"] += 1
            continue
        if st.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(s), d)
            stats["links"] += 1
        elif st.S_ISDIR(info.st_mode):
            copy_tree(s, d, stats)
            stats["dirs"] += 1
        elif st.S_ISREG(info.st_mode):
            if not info.st_mode & 0o444:
                stats["write_only_skipped"] += 1
                continue
            try:
                data = read_all(s)
            except OSError as exc:
                name = errno.errorcode.get(exc.errno, str(exc.errno))
                stats["errors"] += 1
                stats.setdefault("error_names", {}).setdefault(name, 0)
                stats["error_names"][name] += 1
                stats.setdefault("error_paths", []).append(f"{name} {s}")
                continue
            with open(d, "wb") as f:
                f.write(data)
            os.chmod(d, st.S_IMODE(info.st_mode))
            stats["files"] += 1
            stats["bytes"] += len(data)
        else:
            stats["other_skipped"] += 1
    os.chmod(dst, st.S_IMODE(os.stat(src).st_mode))


def read_all(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        chunks, total = [], 0
        while total < COPY_READ_CAP:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
            total += len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def pci_function_dirs(sys_root: Path) -> list[Path]:
    """Directories under sys/devices that hold both `vendor` and `config`
    (PCI functions), found without following symlinks."""
    found = []
    for dirpath, dirnames, filenames in os.walk(sys_root / "devices"):
        if "vendor" in filenames and "config" in filenames:
            found.append(Path(dirpath))
    return sorted(found)


def attr_files(sys_root: Path) -> list[str]:
    """Readable attribute files of ATTR_NAMES, relative to sys_root, sorted."""
    out = []
    for d in pci_function_dirs(sys_root):
        for name in ATTR_NAMES:
            p = d / name
            try:
                info = os.lstat(p)
            except OSError:
                continue
            if st.S_ISREG(info.st_mode) and info.st_mode & 0o444:
                out.append(str(p.relative_to(sys_root)))
    return out


# ---------------------------------------------------------------- measurements

def _timed(fn, seq) -> float:
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn(seq)
        return len(seq) / (time.perf_counter() - t0)
    finally:
        gc.enable()


def _pyopen_read_close(seq):
    # Python's open() fstats the new fd, as cat does: GETATTR OPEN READ RELEASE
    # on a direct_io FUSE file, the per-op requests of DESIGN.md's table.
    for p in seq:
        with open(p, "rb", buffering=0) as f:
            f.read(4096)


def _osopen_read_close(seq):
    o, r, c, flags = os.open, os.read, os.close, os.O_RDONLY
    for p in seq:
        fd = o(p, flags)
        r(fd, 4096)
        c(fd)


def _stat(seq):
    s = os.stat
    for p in seq:
        s(p)


def _listdir(seq):
    ls = os.listdir
    for p in seq:
        ls(p)


METRICS = {
    # key: (label, function, which path list, which op count)
    "read1": ("open()+read(4096)+close, one 7 B file", _pyopen_read_close, "one", "ops"),
    "read1_raw": ("os.open+os.read+os.close, one 7 B file", _osopen_read_close, "one", "ops"),
    "readN": ("open()+read(4096)+close, attrs cycled", _pyopen_read_close, "attrs", "ops"),
    "readN_raw": ("os.open+os.read+os.close, attrs cycled", _osopen_read_close, "attrs", "ops"),
    "stat": ("stat, attrs cycled", _stat, "attrs", "ops"),
    "listdir": ("os.listdir, PCI function dirs cycled", _listdir, "dirs", "listdir_ops"),
}


def cycled(paths: list[str], n: int) -> list[str]:
    return (paths * (n // len(paths) + 1))[:n]


def check_readable(paths: list[str]) -> list[str]:
    ok = []
    for p in paths:
        try:
            _osopen_read_close([p])
            ok.append(p)
        except OSError:
            pass
    return ok


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=20000, help="ops per read/stat measurement (20000)")
    ap.add_argument("--listdir-ops", type=int, default=2000, help="ops per listdir measurement (2000)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved rounds; the median of the rounds is reported (3)")
    ap.add_argument("--mount-cycles", type=int, default=5, help="timed mount/umount cycles (5)")
    ap.add_argument("--topology", default="seed-vtd", help="vfakefs topology (seed-vtd)")
    ap.add_argument("--cpu", type=int, default=0, help="CPU for daemons and reader (0)")
    ap.add_argument("--json", metavar="FILE", help="also write results as JSON")
    ap.add_argument("--cache", action="store_true",
                    help="mount with `vfakefs mount --cache` (skipped if the daemon has no such option)")
    ap.add_argument("--no-c-baseline", action="store_true", help="skip the C libfuse server")
    ap.add_argument("--no-pyfuse3-baseline", action="store_true", help="skip the minimal pyfuse3 server")
    ap.add_argument("--no-real-sysfs", action="store_true", help="skip the host's /sys")
    ap.add_argument("--mount-root", metavar="DIR",
                    help="benchmark an already mounted vfakefs root (or any tree with "
                         "sys/) instead of mounting one; skips the mount timing")
    a = ap.parse_args(argv)
    if a.ops < 1 or a.listdir_ops < 1 or a.repeats < 1 or a.mount_cycles < 1:
        ap.error("counts must be >= 1")
    return a


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    os.sched_setaffinity(0, {a.cpu})
    if os.geteuid() != 0:
        print("read_rate.py needs root (tmpfs and FUSE mounts)", file=sys.stderr)
        return 2

    if a.cache and not a.mount_root and not mount_has_option("--cache"):
        why = "`vfakefs mount` has no --cache option"
        print(f"read_rate.py --cache: skipped: {why}")
        if a.json:
            write_figures(a.json, "read_rate.py", [], skipped=why)
        return 0
    work = Path(tempfile.mkdtemp(prefix="vfakefs-bench-"))
    report: dict = {"config": {k: v for k, v in vars(a).items()},
                    "python": sys.version.split()[0], "cpu": a.cpu}
    vf = (VfakefsMount(work / "mnt", a.topology, a.cpu, work, ("--cache",) if a.cache else ())
          if not a.mount_root else None)
    cb = CBaseline(work, a.cpu) if not a.no_c_baseline else None
    pb = PyfuseBaseline(work, a.cpu, keep_cache=a.cache) if not a.no_pyfuse3_baseline else None
    tmpfs = work / "tmpfs"
    try:
        # 1. mount timing; the last mount stays up for the read tests
        if vf is not None:
            vf.mnt.mkdir()
            returned, ready, umounts = [], [], []
            for i in range(a.mount_cycles):
                r, t = vf.mount()
                returned.append(r)
                ready.append(t)
                if i < a.mount_cycles - 1:
                    umounts.append(vf.umount())
            root = vf.mnt
            report["mount"] = {
                "cycles": a.mount_cycles,
                "returned_s": returned, "ready_s": ready, "umount_s": umounts,
                "ready_median_s": statistics.median(ready), "ready_min_s": min(ready),
                "returned_median_s": statistics.median(returned), "returned_min_s": min(returned),
                "daemon_pids": vf.daemon_pids,
                "daemon_cpus_allowed": {p: cpus_allowed(p) for p in vf.daemon_pids},
            }
        else:
            root = Path(a.mount_root)

        # 2. the tmpfs copy of the same tree
        mount_tmpfs(tmpfs)
        copy_stats = {k: 0 for k in ("dirs", "files", "links", "bytes", "write_only_skipped",
                                     "other_skipped", "errors")}
        t0 = time.perf_counter()
        copy_tree(root / "sys", tmpfs / "sys", copy_stats)
        copy_stats["seconds"] = time.perf_counter() - t0
        report["tmpfs_copy"] = copy_stats

        # 3. the C server
        if cb is not None:
            cb.start()
            report["c_baseline_cpus_allowed"] = cpus_allowed(cb.proc.pid)
        if pb is not None:
            pb.start()

        # path lists: vfakefs and tmpfs share one list; real sysfs its own
        rel_attrs = attr_files(root / "sys")
        if not rel_attrs:
            raise RuntimeError(f"no attribute files found under {root}/sys/devices")
        rel_dirs = [str(d.relative_to(root / "sys")) for d in pci_function_dirs(root / "sys")]
        rel_one = next(p for p in rel_attrs if p.endswith("/vendor"))
        targets: dict[str, dict[str, list[str]]] = {}
        for name, base in (("vfakefs", root / "sys"), ("tmpfs", tmpfs / "sys")):
            targets[name] = {
                "one": [str(base / rel_one)],
                "attrs": check_readable([str(base / p) for p in rel_attrs]),
                "dirs": [str(base / p) for p in rel_dirs],
            }
        if not a.no_real_sysfs and os.path.isdir("/sys/bus/pci/devices"):
            real = Path("/sys")
            r_attrs = check_readable([str(real / p) for p in attr_files(real)])
            r_dirs = [str(d) for d in pci_function_dirs(real)]
            r_one = [p for p in r_attrs if p.endswith("/vendor")][:1]
            if r_attrs and r_one:
                targets["real-sysfs"] = {"one": r_one, "attrs": r_attrs, "dirs": r_dirs}
        if cb is not None:
            targets["C-libfuse"] = {"one": [str(cb.mnt / "vendor")]}
        if pb is not None:
            targets["pyfuse3"] = {"one": [str(pb.mnt / "vendor")]}
        counter = Requests(root)
        per_op: dict[str, dict[str, float]] = {}
        report["paths"] = {t: {k: (len(v) if k != "one" else v[0]) for k, v in d.items()}
                           for t, d in targets.items()}

        # 4. measure, in interleaved rounds so drift hits every target alike
        samples: dict[str, dict[str, list[float]]] = {m: {} for m in METRICS}
        for rnd in range(a.repeats):
            for m, (_label, fn, kind, count) in METRICS.items():
                n = a.ops if count == "ops" else a.listdir_ops
                for t, lists in targets.items():
                    if kind not in lists or not lists[kind]:
                        continue
                    seq = cycled(lists[kind], n)
                    fn(seq[: min(len(seq), max(200, n // 20))])   # warm the caches
                    counted = t == "vfakefs" and counter.ok
                    before = counter.read() if counted else None
                    samples[m].setdefault(t, []).append(_timed(fn, seq))
                    if counted:
                        per_op[m] = counter.per_op(before, counter.read(), len(seq))
        report["results"] = {
            m: {t: {"ops_per_s": statistics.median(v), "samples": v} for t, v in d.items()}
            for m, d in samples.items()}
        report["ratios"] = ratios(report["results"])
        report["vfakefs_requests_per_op"] = per_op
        report["documented_c_baseline_ops_per_s"] = DOCUMENTED_C_BASELINE
        if "vfakefs" in report["results"]["read1"]:
            report["vfakefs_read1_vs_documented_c_baseline"] = (
                report["results"]["read1"]["vfakefs"]["ops_per_s"] / DOCUMENTED_C_BASELINE)
        print_report(report, a, root)
    finally:
        # each step on its own, so one failure cannot leave a later mount behind
        steps = [lambda: cb is not None and cb.stop(), lambda: pb is not None and pb.stop(),
                 lambda: umount_tmpfs(tmpfs)]
        if vf is not None:
            steps += [vf.umount,
                      lambda: (vf.mnt.exists() and not mounted_at(vf.mnt) and vf.mnt.rmdir())]
        steps.append(lambda: cleanup_workdir(work))
        for step in steps:
            try:
                step()
            except BaseException as exc:   # noqa: BLE001 - go on cleaning up
                warn(f"cleanup step failed: {exc!r}")

    if a.json:
        report["figures"] = read_figures(report, a, METRICS)
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
        print(f"\nJSON written to {a.json}")
    return 0


def cleanup_workdir(work: Path) -> None:
    """Removes the temp dir unless anything under it is still mounted."""
    prefix = os.fsencode(str(work)) + b"/"
    with open("/proc/self/mounts", "rb") as f:
        if any(_unescape_mount(l.split()[1]).startswith(prefix) for l in f if l.strip()):
            warn(f"warning: something is still mounted under {work}; left in place")
            return
    for p in sorted(work.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        else:
            p.unlink()
    work.rmdir()


def ratios(results: dict) -> dict:
    out = {}
    for m, d in results.items():
        v = d.get("vfakefs", {}).get("ops_per_s")
        if v is None:
            continue
        out[m] = {f"vfakefs/{t}": v / r["ops_per_s"] for t, r in d.items() if t != "vfakefs"}
    return out


def print_report(rep: dict, a, root: Path) -> None:
    print(f"vfakefs read-rate benchmark: topology {a.topology}, CPU {a.cpu} for every "
          f"server and the reader, {a.ops} ops per read/stat run, {a.listdir_ops} per "
          f"listdir run, median of {a.repeats} interleaved rounds")
    print(f"reader pid {os.getpid()} cpus {cpus_allowed(os.getpid())}")
    if "mount" in rep:
        m = rep["mount"]
        print(f"\nmount ({m['cycles']} cycles, `taskset -c {a.cpu} python -m vfakefs mount "
              f"--topology {a.topology} MNT` until stat of MNT/sys/bus/pci/devices succeeds):")
        print(f"  ready:            median {m['ready_median_s']:.3f} s   min {m['ready_min_s']:.3f} s")
        print(f"  command returned: median {m['returned_median_s']:.3f} s   min {m['returned_min_s']:.3f} s")
        um = [u for u in m["umount_s"] if u is not None]
        if um:
            print(f"  umount:           median {statistics.median(um):.3f} s   min {min(um):.3f} s")
        print(f"  daemon pid(s) and allowed CPUs: "
              + (", ".join(f"{p}: {c}" for p, c in m["daemon_cpus_allowed"].items()) or "none found"))
    else:
        print(f"\nusing the existing tree at {root} (no mount timing)")
    c = rep["tmpfs_copy"]
    print(f"\ntmpfs copy of {root}/sys: {c['files']} files ({c['bytes']} B), {c['links']} symlinks, "
          f"{c['dirs']} dirs, {c['write_only_skipped']} write-only skipped, "
          f"{c['errors']} unreadable {c.get('error_names', '')}".rstrip() + f", in {c['seconds']:.2f} s")
    errs = c.get("error_paths", [])
    if errs:
        names = sorted({e.split(" ", 1)[0] + " " + Path(e.split(" ", 1)[1]).name for e in errs})
        print(f"  unreadable file names (errno name): {', '.join(names)}")
    if "c_baseline_cpus_allowed" in rep:
        print(f"C libfuse baseline (bench/cfuse_baseline.c, direct_io, 1 thread) "
              f"cpus {rep['c_baseline_cpus_allowed']}")
    print("paths per target: " + "; ".join(
        f"{t}: " + ", ".join(f"{k}={v if k != 'one' else Path(v).name}" for k, v in d.items())
        for t, d in rep["paths"].items()))

    cols = ["vfakefs", "tmpfs", "real-sysfs", "C-libfuse", "pyfuse3"]
    res = rep["results"]
    head = f"{'ops/s':<42}" + "".join(f"{c:>12}" for c in cols) + \
        f"{'vf/tmpfs':>10}{'vf/sysfs':>10}{'vf/C':>8}{'vf/py':>7}{'req/op':>8}  vfakefs requests per op"
    print("\n" + head)
    print("-" * len(head))
    for mkey, (label, *_rest) in METRICS.items():
        row = f"{label:<42}"
        for c in cols:
            v = res[mkey].get(c, {}).get("ops_per_s")
            row += f"{v:>12,.0f}" if v is not None else f"{'-':>12}"
        rat = rep["ratios"].get(mkey, {})
        for c, w in (("tmpfs", 10), ("real-sysfs", 10), ("C-libfuse", 8), ("pyfuse3", 7)):
            v = rat.get(f"vfakefs/{c}")
            row += f"{v:>{w}.3f}" if v is not None else f"{'-':>{w}}"
        mix = rep.get("vfakefs_requests_per_op", {}).get(mkey)
        if mix is not None:
            row += f"{sum(mix.values()):>8.2f}  " + " ".join(
                f"{op.upper()}" + (f"x{k:.2g}" if abs(k - 1) > 0.005 else "") for op, k in mix.items())
        print(row)
    v = rep.get("vfakefs_read1_vs_documented_c_baseline")
    if v is not None:
        print(f"\nvfakefs open()+read+close of one 7 B file: "
              f"{res['read1']['vfakefs']['ops_per_s']:,.0f}/s = {v:.3f} x the documented C "
              f"baseline figure ({DOCUMENTED_C_BASELINE:,}/s same CPU, DESIGN.md) -- "
              f"vs the documented C baseline figure, not measured here")
    if "C-libfuse" in res["read1"] and "vfakefs" in res["read1"]:
        print(f"vfakefs / C libfuse baseline measured in this run (same op, same CPU): "
              f"{rep['ratios']['read1']['vfakefs/C-libfuse']:.3f}")
    if "C-libfuse" in res["read1"] and "pyfuse3" in res["read1"]:
        print(f"minimal pyfuse3 / C libfuse baseline (the ceiling of a pyfuse3 server, same run): "
              f"{res['read1']['pyfuse3']['ops_per_s'] / res['read1']['C-libfuse']['ops_per_s']:.3f}")


def mount_has_option(opt: str) -> bool:
    """Whether `vfakefs mount --help` (this checkout's) lists opt."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    r = subprocess.run([sys.executable, "-m", "vfakefs", "mount", "--help"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    return opt in r.stdout.split() or f"{opt}," in r.stdout.split()


if __name__ == "__main__":
    sys.exit(main())
