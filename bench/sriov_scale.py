#!/usr/bin/env python3
"""SR-IOV scale benchmark: enabling VFs in the model and through a mount, against tmpfs.

Everything is measured in one run, with the daemon and this script pinned to
one CPU, and printed beside a tmpfs baseline measured in the same run
(DESIGN.md, "Performance notes").

What it does, in order:
 1. seed-vtd, PF 0000:03:00.0 (ixgbe), 63 VFs (ixgbevf, a netdev each):
    - model only: topology.load('seed-vtd'); sriov.configure(m, pf, 63), timed
      (fresh machine per repeat, load not timed);
    - tmpfs: creating the same 63 VF directories the way sysfs shows them
      (directory, attribute files, physfn/driver/virtfnN/bus links, net/ethN);
    - mount: `taskset -c CPU .venv/bin/vfakefs mount -t seed-vtd MNT`, then the
      write(2) of "63\\n" to MNT/sys/bus/pci/devices/0000:03:00.0/sriov_numvfs
      timed, `ls MNT/sys/bus/pci/devices` to confirm, "0\\n" to disable;
      repeated, the first enable is reported separately (cold caches).
    Lazy against eager: the mount's write(2) builds the model, not the view (its
    nodes are made on first lookup), while tmpfs's create builds every file. So
    beside the write alone, each side is also timed "+ walk": the first visit of
    every name tmpfs creates (walk_created: stat, readlink, listdir), the same
    calls on both; "write + first walk" against "create + walk" is like for like.
 2. A generated topology (TOML in the temp dir): a host bridge, 8 root ports
    with ACS, each with one ixgbe PF (8086:1528, SR-IOV total_vfs 256, offset
    128, stride 1, VF 8086:1515 -> ixgbevf); each root port's bus range covers
    its PF's VFs (PF on bus N, VFs on N and N+1). Enabling 256 VFs on each PF in
    turn, 2,048 in all: model only and through the mount (8 writes), with the
    cumulative time and cost per VF at 256, 512, 1024 and 2048 VFs and the
    marginal cost per VF of each PF (flat = linear); then the first walk of the
    created names on the mount (like for like, as in 1).
 3. The tmpfs baseline for the same 2,048 VFs (created, walked, and removed).
 4. Resident memory: VmRSS of the daemon before and after enabling the 2,048
    VFs, per VF; and for the model alone, in a fresh child process, the RSS
    delta and the tracemalloc'd bytes still live after enabling, per VF.
 5. With all 2,048 enabled: `ls -R MNT/sys/bus/pci/devices/ > /dev/null`,
    `lspci -A linux-sysfs -O sysfs.path=MNT/sys/bus/pci -nn | wc -l`, then
    disabling (echo 0) all 8 PFs, each timed.
 6. Where a target is missed (2,048 VFs under 0.5 s, under 20 KiB per VF,
    linear cost), a cProfile of the model-only path, and of the daemon
    (`python -m cProfile -m vfakefs mount -f`, the 8 writes) unless
    --no-profile-daemon.

At the defaults this takes several minutes, nearly all of it inside the daemon
(disabling 2,048 VFs after the lspci walk took 219 s in the first run): the
figures are the finding, not a hang.

Every mount is undone in `finally`. Run as root (tmpfs and FUSE mounts):

    taskset -c 0 .venv/bin/python bench/sriov_scale.py [--repeats N] [--json FILE]
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_figures import scale_figures  # noqa: E402
from read_rate import (cleanup_workdir, cpus_allowed, end_processes, mount_tmpfs,  # noqa: E402
                       mounted_at, umount_tmpfs, wait_gone, warn)

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SEED_TOPOLOGY = "seed-vtd"
SEED_PF = "0000:03:00.0"
SEED_VFS = 63

# targets (the brief): 2,048 VFs in under 0.5 s, under 20 KiB per function, linear cost
TARGET_TOTAL_S = 0.5
TARGET_BYTES_PER_VF = 20 * 1024
# marginal cost per VF of the last PF / of the first PF above this counts as not linear
LINEAR_TOLERANCE = 1.5

TMPFS_ATTRS = ("vendor", "device", "class", "subsystem_vendor", "subsystem_device",
               "revision", "uevent", "modalias")


# ---------------------------------------------------------------- topology

def scale_topology(n_pf: int, vfs: int) -> str:
    """A host bridge and n_pf root ports with ACS, each above one ixgbe PF with
    `vfs` VFs (offset 128, stride 1); each port's bus range holds all its VFs."""
    offset, stride = 128, 1
    span = ((offset + stride * (vfs - 1)) >> 8) + 1           # buses the PF and its VFs need
    out = ['name = "sriov-scale"',
           f'description = "{n_pf} root ports with ACS, one ixgbe PF with {vfs} VFs under each"',
           'kernel = "6.12"', 'cmdline = "intel_iommu=on"', "",
           "[iommu]", 'type = "intel"', "interrupt_remapping = true", "",
           "[[device]]", 'bdf = "0000:00:00.0"', 'kind = "host_bridge"', "vendor = 0x8086",
           "device = 0x3e30", "class = 0x060000", ""]
    bus = 0x10
    for i in range(n_pf):
        if bus + span - 1 > 0xFF:
            raise SystemExit(f"{n_pf} PFs with {vfs} VFs each do not fit in 256 buses")
        port = f"0000:00:{i + 1:02x}.0"
        out += ["[[device]]", f'bdf = "{port}"', 'kind = "root_port"', "vendor = 0x8086",
                "device = 0x1901", "class = 0x060400", "acs = true",
                f"secondary_bus = {bus:#04x}", f"subordinate_bus = {bus + span - 1:#04x}", "",
                "[[device]]", f'bdf = "0000:{bus:02x}:00.0"', f'parent = "{port}"',
                'kind = "endpoint"', "vendor = 0x8086", "device = 0x1528", "class = 0x020000",
                "subsystem_vendor = 0x8086", "subsystem_device = 0x0001",
                'driver = "ixgbe"', "msix = 64",
                'bars = [{ index = 0, type = "mem64", size = "2M", prefetch = true }, '
                '{ index = 4, type = "mem64", size = "16K", prefetch = true }]',
                f"sriov = {{ total_vfs = {vfs}, offset = {offset}, stride = {stride}, "
                'vf_device = 0x1515, vf_driver = "ixgbevf" }', ""]
        bus += span
    return "\n".join(out)


# ---------------------------------------------------------------- model only

def _model():
    from vfakefs.model.pci import sriov
    from vfakefs.model import topology
    return topology, sriov


def sriov_pfs(m) -> list:
    return [f for f in m.functions if f.sriov is not None and not f.is_virtfn]


def model_enable(topo: str, pf_names: list[str] | None, vfs: int) -> dict:
    """One fresh machine; sriov.configure() on each PF in turn, each timed."""
    topology, sriov = _model()
    t0 = time.perf_counter()
    m = topology.load(topo)
    load_s = time.perf_counter() - t0
    pfs = sriov_pfs(m) if pf_names is None else [m.by_bdf[_bdf(n)] for n in pf_names]
    base = len(m.functions)
    gc.collect()
    times = []
    for pf in pfs:
        t0 = time.perf_counter()
        sriov.configure(m, pf, vfs)
        times.append(time.perf_counter() - t0)
    assert len(m.functions) == base + vfs * len(pfs), "VF count"
    m.check()
    vf_names = [[vf.name for vf in pf.sriov.vfs] for pf in pfs]
    drv = {vf.driver.name if vf.driver else None for pf in pfs for vf in pf.sriov.vfs}
    netdevs = sum(len(vf.netdevs) for pf in pfs for vf in pf.sriov.vfs)
    dis = []
    for pf in pfs:
        t0 = time.perf_counter()
        sriov.configure(m, pf, 0)
        dis.append(time.perf_counter() - t0)
    assert len(m.functions) == base
    return {"load_s": load_s, "per_pf_s": times, "disable_per_pf_s": dis,
            "pf_names": [pf.name for pf in pfs], "vf_names": vf_names, "base_functions": base,
            "vf_drivers": sorted(map(str, drv)), "vf_netdevs": netdevs}


def _bdf(name: str):
    from vfakefs.model.pci.bdf import Bdf
    return Bdf.from_str(name)


def model_runs(topo: str, pf_names, vfs: int, repeats: int) -> dict:
    runs = [model_enable(topo, pf_names, vfs) for _ in range(repeats)]
    per_pf = [statistics.median(r["per_pf_s"][i] for r in runs) for i in range(len(runs[0]["per_pf_s"]))]
    dis = [statistics.median(r["disable_per_pf_s"][i] for r in runs) for i in range(len(per_pf))]
    totals = [sum(r["per_pf_s"]) for r in runs]
    first = runs[0]
    return {"repeats": repeats, "per_pf_s": per_pf, "disable_per_pf_s": dis,
            "total_s": statistics.median(totals), "total_min_s": min(totals), "totals_s": totals,
            "disable_total_s": statistics.median(sum(r["disable_per_pf_s"]) for r in runs),
            "load_s": statistics.median(r["load_s"] for r in runs),
            "pf_names": first["pf_names"], "vf_names": first["vf_names"],
            "base_functions": first["base_functions"], "vf_drivers": first["vf_drivers"],
            "vf_netdevs": first["vf_netdevs"]}


def model_memory_child(topo: str, vfs: int, cpu: int) -> dict:
    """RSS delta and tracemalloc of enabling every PF's VFs, in a fresh process."""
    cmd = ["taskset", "-c", str(cpu), sys.executable, str(Path(__file__).resolve()),
           "--_model-mem", topo, "--vfs-per-pf", str(vfs)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"model memory child failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _model_mem_main(topo: str, vfs: int) -> int:
    import tracemalloc
    topology, sriov = _model()
    # RSS delta, no tracing
    m = topology.load(topo)
    pfs = sriov_pfs(m)
    gc.collect()
    before = rss_kib(os.getpid())
    for pf in pfs:
        sriov.configure(m, pf, vfs)
    gc.collect()
    after = rss_kib(os.getpid())
    n = vfs * len(pfs)
    del m, pfs
    gc.collect()
    # bytes still allocated after enabling, on a second fresh machine
    m = topology.load(topo)
    pfs = sriov_pfs(m)
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for pf in pfs:
        sriov.configure(m, pf, vfs)
    gc.collect()
    cur, peak = tracemalloc.get_traced_memory()
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    top = [(str(s.traceback[0]), s.size) for s in snap.statistics("lineno")[:8]]
    print(json.dumps({"vfs": n, "rss_before_kib": before, "rss_after_kib": after,
                      "rss_delta_bytes_per_vf": (after - before) * 1024 / n,
                      "traced_bytes": cur - base, "traced_bytes_per_vf": (cur - base) / n,
                      "traced_peak_bytes": peak - base, "top_lines": top}))
    return 0


def profile_model(topo: str, vfs: int, limit: int = 15) -> dict:
    topology, sriov = _model()
    m = topology.load(topo)
    pfs = sriov_pfs(m)
    gc.collect()
    prof = cProfile.Profile()
    prof.enable()
    for pf in pfs:
        sriov.configure(m, pf, vfs)
    prof.disable()
    return _top(pstats.Stats(prof), limit)


def _top(stats: pstats.Stats, limit: int, cumulative_only: str | None = None) -> dict:
    """Top functions by own time, and by cumulative time (optionally only those
    whose file matches cumulative_only: the daemon's profile also holds imports)."""
    out = {}
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        stats.stream = buf
        restrict = (cumulative_only, limit) if key == "cumulative" and cumulative_only else (limit,)
        stats.sort_stats(key).print_stats(*restrict)
        text = buf.getvalue()
        start = text.find("   ncalls")
        out[key] = text[start:].rstrip() if start >= 0 else text.rstrip()
    out["total_s"] = stats.total_tt
    return out


# ---------------------------------------------------------------- tmpfs baseline

def tmpfs_prepare(root: Path, pf_names: list[str]) -> None:
    """What exists before any VF: the PF directories and links, the driver dir."""
    for d in ("devices/pci0000:00", "bus/pci/devices", "bus/pci/drivers/ixgbevf"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for pf in pf_names:
        (root / "devices/pci0000:00" / pf).mkdir(exist_ok=True)
        link = root / "bus/pci/devices" / pf
        if not link.is_symlink():
            os.symlink(f"../../../devices/pci0000:00/{pf}", link)


def tmpfs_create(root: Path, pf: str, vfs: list[str], netdev_base: int) -> float:
    """One PF's VFs as sysfs shows them: a directory each with TMPFS_ATTRS files,
    physfn and driver links, net/ethN, a virtfnN link in the PF and a
    bus/pci/devices link. Returns seconds."""
    pfdir = root / "devices/pci0000:00" / pf
    busdir = root / "bus/pci/devices"
    gc.collect()
    t0 = time.perf_counter()
    for i, vf in enumerate(vfs):
        d = f"{pfdir}/{vf}"
        os.mkdir(d)
        for name in TMPFS_ATTRS:
            fd = os.open(f"{d}/{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
            os.write(fd, b"0x8086\n")
            os.close(fd)
        os.symlink(f"../{pf}", f"{d}/physfn")
        os.symlink("../../../bus/pci/drivers/ixgbevf", f"{d}/driver")
        os.mkdir(f"{d}/net")
        os.mkdir(f"{d}/net/eth{netdev_base + i}")
        os.symlink(f"./{vf}", f"{pfdir}/virtfn{i}")
        os.symlink(f"../../../devices/pci0000:00/{pf}/{vf}", f"{busdir}/{vf}")
    return time.perf_counter() - t0


def walk_created(sysroot: Path, pf: str, vfs: list[str]) -> float:
    """Visit every name tmpfs_create makes, by the sysfs paths: stat each VF
    directory and its TMPFS_ATTRS files, readlink physfn and driver, list net/
    and stat its entry, readlink the PF's virtfnN. The same calls on tmpfs and
    on the mount, so "create + walk" is like for like: vfakefs builds its view
    nodes on first lookup (lazily), tmpfs builds them in mkdir/open (eagerly).
    Returns seconds."""
    bus = f"{sysroot}/bus/pci/devices"
    gc.collect()
    t0 = time.perf_counter()
    for i, vf in enumerate(vfs):
        d = f"{bus}/{vf}"
        os.stat(d)
        for name in TMPFS_ATTRS:
            os.stat(f"{d}/{name}")
        os.readlink(f"{d}/physfn")
        os.readlink(f"{d}/driver")
        for e in os.listdir(f"{d}/net"):
            os.stat(f"{d}/net/{e}")
        os.readlink(f"{bus}/{pf}/virtfn{i}")
    return time.perf_counter() - t0


def tmpfs_remove(root: Path, pf: str, vfs: list[str]) -> float:
    pfdir = root / "devices/pci0000:00" / pf
    busdir = root / "bus/pci/devices"
    gc.collect()
    t0 = time.perf_counter()
    for i, vf in enumerate(vfs):
        os.unlink(f"{busdir}/{vf}")
        os.unlink(f"{pfdir}/virtfn{i}")
        shutil.rmtree(f"{pfdir}/{vf}")
    return time.perf_counter() - t0


# ---------------------------------------------------------------- the mount

def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def pidfile_of(mnt: Path) -> Path:
    """The daemon's pid file, named as vfakefs.cli names it."""
    name = os.path.realpath(mnt).strip("/").replace("/", "_") + ".pid"
    for base in ("/run/vfakefs", f"/tmp/vfakefs-{os.getuid()}"):
        if (Path(base) / name).exists():
            return Path(base) / name
    return Path("/run/vfakefs") / name


class Mount:
    """`taskset -c CPU .venv/bin/vfakefs mount -t TOPO MNT`, or the same daemon in
    the foreground under cProfile; remembers the daemon pid; umount in finally."""

    def __init__(self, mnt: Path, topology: str, cpu: int, log: Path, profile_out: Path | None = None):
        self.mnt, self.topology, self.cpu, self.log, self.profile_out = mnt, topology, cpu, log, profile_out
        exe = REPO / ".venv" / "bin" / "vfakefs"
        self.cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "vfakefs"]
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), self.env.get("PYTHONPATH")) if p)
        self.pid: int | None = None
        self.proc: subprocess.Popen | None = None
        self.mount_args: list[str] = []          # e.g. ["--cache"] (bench/whole_machine.py)

    def mount(self, timeout: float = 120.0) -> float:
        self.mnt.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        with open(self.log, "ab") as out:
            if self.profile_out is None:
                r = subprocess.run(["taskset", "-c", str(self.cpu), *self.cli, "mount", *self.mount_args,
                                    "-t", self.topology,
                                    str(self.mnt)], cwd=REPO, env=self.env, stdout=out, stderr=out,
                                   stdin=subprocess.DEVNULL, timeout=timeout)
                if r.returncode != 0:
                    raise RuntimeError(f"vfakefs mount exited {r.returncode}: "
                                       + self.log.read_text(errors="replace")[-2000:])
            else:
                self.proc = subprocess.Popen(
                    ["taskset", "-c", str(self.cpu), sys.executable, "-m", "cProfile", "-o",
                     str(self.profile_out), "-m", "vfakefs", "mount", "-f", "-t", self.topology, str(self.mnt)],
                    cwd=REPO, env=self.env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
                self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        probe = self.mnt / "sys" / "bus" / "pci" / "devices"
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("profiled daemon exited: " + self.log.read_text(errors="replace")[-2000:])
            try:
                if mounted_at(self.mnt):
                    os.stat(probe)
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{probe} not ready {timeout:.0f} s after mount")
            time.sleep(0.005)
        took = time.perf_counter() - t0
        if self.pid is None:
            pf = pidfile_of(self.mnt)
            self.pid = int(pf.read_text()) if pf.exists() else None
        return took

    def umount(self) -> None:
        if mounted_at(self.mnt):
            try:
                subprocess.run([*self.cli, "umount", str(self.mnt)], cwd=REPO, env=self.env, timeout=60,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                pass
            if mounted_at(self.mnt):
                warn(f"vfakefs umount left {self.mnt} mounted; fusermount3 -u -z")
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], timeout=30)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=60)          # lets cProfile write its file
            except subprocess.TimeoutExpired:
                end_processes([self.proc.pid])
        elif self.pid is not None:
            left = wait_gone([self.pid], 10.0)
            if left:
                warn(f"daemon pid {left} still running after unmount; ending it")
                end_processes(left)
        self.pid, self.proc = None, None
        # the daemon's own log (/run/vfakefs/<mnt>.log): keep it with ours, then remove it
        state_log = pidfile_of(self.mnt).with_suffix(".log")
        try:
            text = state_log.read_bytes()
            with open(self.log, "ab") as out:
                out.write(text)
            state_log.unlink()
        except OSError:
            pass
        if self.mnt.exists() and not mounted_at(self.mnt):
            self.mnt.rmdir()


def write_attr(path: Path, text: bytes) -> dict:
    """open(O_WRONLY|O_TRUNC) as the shell's `>` does, then write(2) and close, each timed."""
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    t1 = time.perf_counter()
    try:
        n = os.write(fd, text)
        t2 = time.perf_counter()
    finally:
        os.close(fd)
    t3 = time.perf_counter()
    assert n == len(text)
    return {"write_s": t2 - t1, "open_s": t1 - t0, "close_s": t3 - t2, "total_s": t3 - t0}


def ls_devices(mnt: Path) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    r = subprocess.run(["ls", str(mnt / "sys/bus/pci/devices")], capture_output=True, text=True,
                       timeout=300, check=True)
    return time.perf_counter() - t0, r.stdout.split()


def timed_shell(cmd: str, timeout: float = 600) -> tuple[float, str, int]:
    t0 = time.perf_counter()
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=timeout)
    return time.perf_counter() - t0, (r.stdout + r.stderr).strip(), r.returncode


def numvfs_path(mnt: Path, pf: str) -> Path:
    return mnt / "sys/bus/pci/devices" / pf / "sriov_numvfs"


# ---------------------------------------------------------------- sections

def seed_section(a, work: Path, tmp: Path, rep: dict) -> None:
    model = model_runs(SEED_TOPOLOGY, [SEED_PF], SEED_VFS, a.repeats)
    vfs = model["vf_names"][0]
    # tmpfs, same 63 VFs, repeated on fresh trees
    tmpfs_prepare(tmp / "seed", [SEED_PF])
    creates, walks, removes = [], [], []
    for _ in range(a.repeats):
        creates.append(tmpfs_create(tmp / "seed", SEED_PF, vfs, 3))
        walks.append(walk_created(tmp / "seed", SEED_PF, vfs))
        removes.append(tmpfs_remove(tmp / "seed", SEED_PF, vfs))
    tm = {"create_s": statistics.median(creates), "remove_s": statistics.median(removes),
          "walk_s": statistics.median(walks), "create_walk_s": statistics.median(map(sum, zip(creates, walks))),
          "create_samples": creates, "walk_samples": walks, "remove_samples": removes}
    # through the mount
    mnt = Mount(work / "mnt-seed", SEED_TOPOLOGY, a.cpu, work / "mount-seed.log")
    cycles = []
    try:
        mount_s = mnt.mount()
        pid = mnt.pid
        _, before = ls_devices(mnt.mnt)
        rss0 = rss_kib(pid) if pid else None
        for i in range(a.mount_repeats):
            en = write_attr(numvfs_path(mnt.mnt, SEED_PF), b"%d\n" % SEED_VFS)
            walk_s = walk_created(mnt.mnt / "sys", SEED_PF, vfs)
            ls_s, names = ls_devices(mnt.mnt)
            missing = sorted(set(vfs) - set(names))
            rss1 = rss_kib(pid) if pid else None
            dis = write_attr(numvfs_path(mnt.mnt, SEED_PF), b"0\n")
            ls2_s, names2 = ls_devices(mnt.mnt)
            cycles.append({"enable": en, "first_walk_s": walk_s, "ls_s": ls_s, "listed": len(names), "missing": missing,
                           "disable": dis, "ls_after_disable_s": ls2_s, "listed_after_disable": len(names2),
                           "rss_enabled_kib": rss1})
        rep["seed_mount"] = {"mount_s": mount_s, "daemon_pid": pid,
                             "daemon_cpus_allowed": cpus_allowed(pid) if pid else "?",
                             "listed_before": len(before), "rss_before_kib": rss0, "cycles": cycles}
    finally:
        mnt.umount()
    enable_w = [c["enable"]["write_s"] for c in cycles]
    rep["seed"] = {"model": {k: v for k, v in model.items() if k != "vf_names"}, "tmpfs": tm,
                   "vf_first": vfs[0], "vf_last": vfs[-1],
                   "mount_enable_first_write_s": enable_w[0],
                   "mount_enable_median_write_s": statistics.median(enable_w),
                   "mount_enable_walk_first_s": enable_w[0] + cycles[0]["first_walk_s"],
                   "mount_enable_walk_median_s": statistics.median(
                       c["enable"]["write_s"] + c["first_walk_s"] for c in cycles),
                   "mount_disable_median_write_s": statistics.median(c["disable"]["write_s"] for c in cycles)}


def scale_section(a, work: Path, tmp: Path, rep: dict) -> None:
    topo = work / "sriov-scale.toml"
    topo.write_text(scale_topology(a.pfs, a.vfs_per_pf))
    n_total = a.pfs * a.vfs_per_pf
    model = model_runs(str(topo), None, a.vfs_per_pf, a.repeats)
    pf_names, vf_names = model["pf_names"], model["vf_names"]
    rep["scale_topology"] = {"file": str(topo), "pfs": pf_names, "vfs_per_pf": a.vfs_per_pf,
                             "total_vfs": n_total, "base_functions": model["base_functions"],
                             "vf_ranges": [f"{v[0]}..{v[-1]}" for v in vf_names]}
    # tmpfs: the same VFs, PF after PF, and removed
    tm_runs = []
    for r in range(a.repeats):
        root = tmp / f"scale{r}"
        tmpfs_prepare(root, pf_names)
        c = [tmpfs_create(root, pf, vf_names[i], 100 + i * a.vfs_per_pf) for i, pf in enumerate(pf_names)]
        w = sum(walk_created(root, pf, vf_names[i]) for i, pf in enumerate(pf_names))
        ls_s = None
        if r == 0:
            ls_s, out, _rc = timed_shell(f"ls -R {root}/bus/pci/devices/ > /dev/null")
        d = [tmpfs_remove(root, pf, vf_names[i]) for i, pf in enumerate(pf_names)]
        tm_runs.append({"create_per_pf_s": c, "walk_s": w, "remove_per_pf_s": d, "ls_R_s": ls_s})
        shutil.rmtree(root)
    tmpfs = {"create_per_pf_s": [statistics.median(r["create_per_pf_s"][i] for r in tm_runs)
                                 for i in range(a.pfs)],
             "remove_per_pf_s": [statistics.median(r["remove_per_pf_s"][i] for r in tm_runs)
                                 for i in range(a.pfs)],
             "create_total_s": statistics.median(sum(r["create_per_pf_s"]) for r in tm_runs),
             "walk_s": statistics.median(r["walk_s"] for r in tm_runs),
             "create_walk_s": statistics.median(sum(r["create_per_pf_s"]) + r["walk_s"] for r in tm_runs),
             "remove_total_s": statistics.median(sum(r["remove_per_pf_s"]) for r in tm_runs),
             "ls_R_s": tm_runs[0]["ls_R_s"]}
    mem = model_memory_child(str(topo), a.vfs_per_pf, a.cpu)

    # through the mount
    mnt = Mount(work / "mnt-scale", str(topo), a.cpu, work / "mount-scale.log")
    res: dict = {}
    try:
        res["mount_s"] = mnt.mount()
        pid = mnt.pid
        res["daemon_pid"], res["daemon_cpus_allowed"] = pid, cpus_allowed(pid) if pid else "?"
        _, before = ls_devices(mnt.mnt)
        res["listed_before"] = len(before)
        gc.collect()
        res["rss_before_kib"] = rss_kib(pid) if pid else None
        writes = []
        for pf in pf_names:
            writes.append(write_attr(numvfs_path(mnt.mnt, pf), b"%d\n" % a.vfs_per_pf))
        res["enable"] = writes
        res["rss_after_enable_kib"] = rss_kib(pid) if pid else None
        res["first_walk_s"] = sum(walk_created(mnt.mnt / "sys", pf, vf_names[i]) for i, pf in enumerate(pf_names))
        ls_s, names = ls_devices(mnt.mnt)
        want = {v for vs in vf_names for v in vs}
        res["ls_s"], res["listed"] = ls_s, len(names)
        res["missing"] = sorted(want - set(names))[:10]
        res["n_missing"] = len(want - set(names))
        res["rss_after_ls_kib"] = rss_kib(pid) if pid else None
        t, out, rc = timed_shell(f"ls -R {mnt.mnt}/sys/bus/pci/devices/ > /dev/null")
        res["ls_R_s"], res["ls_R_rc"] = t, rc
        t, out, rc = timed_shell(f"lspci -A linux-sysfs -O sysfs.path={mnt.mnt}/sys/bus/pci -nn | wc -l")
        res["lspci_s"], res["lspci_lines"], res["lspci_rc"] = t, out, rc
        res["rss_after_lspci_kib"] = rss_kib(pid) if pid else None
        dis = []
        for pf in pf_names:
            dis.append(write_attr(numvfs_path(mnt.mnt, pf), b"0\n"))
        res["disable"] = dis
        _, after = ls_devices(mnt.mnt)
        res["listed_after_disable"] = len(after)
        res["rss_after_disable_kib"] = rss_kib(pid) if pid else None
    finally:
        mnt.umount()
    rep["scale"] = {"model": {k: v for k, v in model.items() if k != "vf_names"},
                    "tmpfs": tmpfs, "model_memory": mem, "mount": res}


def analyse(a, rep: dict) -> None:
    """Cumulative and marginal costs per VF, ratios, targets."""
    s = rep["scale"]
    n = a.vfs_per_pf
    steps = [k for k in (1, 2, 4, 8, 16, 32) if k <= a.pfs]
    if a.pfs not in steps:
        steps.append(a.pfs)
    series = {
        "model": s["model"]["per_pf_s"],
        "mount": [w["write_s"] for w in s["mount"]["enable"]],
        "tmpfs": s["tmpfs"]["create_per_pf_s"],
    }
    cum = {}
    for name, per_pf in series.items():
        rows = []
        for k in steps:
            total = sum(per_pf[:k])
            rows.append({"vfs": k * n, "total_s": total, "us_per_vf": total / (k * n) * 1e6,
                         "marginal_us_per_vf": per_pf[k - 1] / n * 1e6})
        growth = per_pf[-1] / per_pf[0] if per_pf[0] > 0 else float("inf")
        cum[name] = {"steps": rows, "last_pf_over_first_pf": growth,
                     "linear": growth <= LINEAR_TOLERANCE}
    rep["cumulative"] = cum
    mtot = sum(series["model"])
    wtot = sum(series["mount"])
    ttot = sum(series["tmpfs"])
    m = s["mount"]
    rss_d = None
    if m.get("rss_before_kib") is not None and m.get("rss_after_enable_kib") is not None:
        rss_d = (m["rss_after_enable_kib"] - m["rss_before_kib"]) * 1024 / (a.pfs * n)
    rep["ratios"] = {
        "seed_model/tmpfs": rep["seed"]["model"]["total_s"] / rep["seed"]["tmpfs"]["create_s"],
        "seed_mount_first/tmpfs": rep["seed"]["mount_enable_first_write_s"] / rep["seed"]["tmpfs"]["create_s"],
        "seed_mount_median/tmpfs": rep["seed"]["mount_enable_median_write_s"] / rep["seed"]["tmpfs"]["create_s"],
        "seed_mount_disable/tmpfs_remove": rep["seed"]["mount_disable_median_write_s"]
        / rep["seed"]["tmpfs"]["remove_s"],
        "seed_mount_write+walk/tmpfs_create+walk (first)": rep["seed"]["mount_enable_walk_first_s"]
        / rep["seed"]["tmpfs"]["create_walk_s"],
        "seed_mount_write+walk/tmpfs_create+walk (median)": rep["seed"]["mount_enable_walk_median_s"]
        / rep["seed"]["tmpfs"]["create_walk_s"],
        "scale_mount_write+walk/tmpfs_create+walk": (wtot + m["first_walk_s"]) / s["tmpfs"]["create_walk_s"],
        "scale_model/tmpfs": mtot / ttot,
        "scale_mount/tmpfs": wtot / ttot,
        "scale_mount/model": wtot / mtot,
        "scale_mount_disable/tmpfs_remove": sum(d["write_s"] for d in m["disable"])
        / s["tmpfs"]["remove_total_s"],
        "scale_model_disable/tmpfs_remove": s["model"]["disable_total_s"] / s["tmpfs"]["remove_total_s"],
    }
    if s["tmpfs"].get("ls_R_s"):
        rep["ratios"]["ls_R_mount/tmpfs"] = m["ls_R_s"] / s["tmpfs"]["ls_R_s"]
    mem = s["model_memory"]
    rep["targets"] = {
        "model_2048_under_0.5s": mtot < TARGET_TOTAL_S,
        "mount_2048_under_0.5s": wtot < TARGET_TOTAL_S,
        "daemon_rss_per_vf_under_20KiB": rss_d is not None and rss_d < TARGET_BYTES_PER_VF,
        "model_traced_per_vf_under_20KiB": mem["traced_bytes_per_vf"] < TARGET_BYTES_PER_VF,
        "model_linear": cum["model"]["linear"],
        "mount_linear": cum["mount"]["linear"],
    }
    rep["daemon_rss_bytes_per_vf"] = rss_d


# ---------------------------------------------------------------- report

def fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1e3:.1f} ms" if v < 10 else f"{v:.2f} s"


def print_report(a, rep: dict) -> None:
    sd, sc = rep["seed"], rep["scale"]
    sm = rep["seed_mount"]
    print(f"vfakefs SR-IOV scale benchmark: CPU {a.cpu} for the daemon and this script "
          f"(this pid {os.getpid()} cpus {cpus_allowed(os.getpid())}); model-only figures are the "
          f"median of {a.repeats} fresh machines, tmpfs of {a.repeats} fresh trees")
    print(f"tmpfs baseline per VF: mkdir + {len(TMPFS_ATTRS)} attribute files (open/write/close) + "
          f"physfn, driver links + net/ethN (2 mkdir) + virtfnN and bus/pci/devices links")
    print("What each arm measures: tmpfs create = the whole tree built, eagerly, file by file; model = "
          "sriov.configure, no view; mount write(2) = the model plus invalidations, the view's nodes NOT "
          "built (vfakefs makes them on first lookup, lazily). Like for like: `+ walk` adds the first "
          "visit of every name tmpfs created (stat, readlink, listdir by sysfs paths), the same calls on "
          "both, so both arms end with the tree built and visited once.")

    print(f"\n1. {SEED_TOPOLOGY}: {SEED_VFS} VFs on {SEED_PF} (ixgbe -> ixgbevf + netdev each; "
          f"VFs {sd['vf_first']}..{sd['vf_last']})")
    print(f"   daemon pid {sm['daemon_pid']} cpus {sm['daemon_cpus_allowed']}, mount took "
          f"{fmt_s(sm['mount_s'])}, {sm['listed_before']} functions listed before")
    head = f"   {'':<46}{'time':>12}{'per VF':>12}{'x tmpfs':>10}"
    print(head)
    print("   " + "-" * (len(head) - 3))
    tmc = sd["tmpfs"]["create_s"]
    rows = [("tmpfs: create the 63 VF trees", tmc),
            ("model: sriov.configure(m, pf, 63)", sd["model"]["total_s"]),
            ("mount: write(2) '63', first (cold)", sd["mount_enable_first_write_s"]),
            (f"mount: write(2) '63', median of {a.mount_repeats}", sd["mount_enable_median_write_s"])]
    tcw = sd["tmpfs"]["create_walk_s"]
    for label, v in rows:
        print(f"   {label:<46}{fmt_s(v):>12}{v / SEED_VFS * 1e6:>9.1f} us{v / tmc:>10.2f}")
    print("   like for like (x tmpfs create + walk):")
    rows = [("tmpfs: create + walk the 63 VF trees", tcw),
            ("mount: write(2) '63' + first walk, first", sd["mount_enable_walk_first_s"]),
            (f"mount: write(2) '63' + first walk, median {a.mount_repeats}", sd["mount_enable_walk_median_s"])]
    tmc = tcw
    for label, v in rows:
        print(f"   {label:<46}{fmt_s(v):>12}{v / SEED_VFS * 1e6:>9.1f} us{v / tmc:>10.2f}")
    tmr = sd["tmpfs"]["remove_s"]
    for label, v in (("tmpfs: remove the 63 VF trees", tmr),
                     ("model: sriov.configure(m, pf, 0)", sd["model"]["disable_total_s"]),
                     (f"mount: write(2) '0', median of {a.mount_repeats}", sd["mount_disable_median_write_s"])):
        print(f"   {label:<46}{fmt_s(v):>12}{v / SEED_VFS * 1e6:>9.1f} us{v / tmr:>10.2f}")
    for i, c in enumerate(sm["cycles"]):
        print(f"   cycle {i + 1}: enable write {fmt_s(c['enable']['write_s'])} (open {fmt_s(c['enable']['open_s'])},"
              f" close {fmt_s(c['enable']['close_s'])}); `ls devices` {fmt_s(c['ls_s'])}: {c['listed']} "
              f"entries, {len(c['missing'])} VFs missing; disable {fmt_s(c['disable']['write_s'])}, then "
              f"{c['listed_after_disable']} listed")

    st = rep["scale_topology"]
    print(f"\n2. {len(st['pfs'])} PFs x {st['vfs_per_pf']} VFs = {st['total_vfs']} VFs "
          f"(generated topology, {st['base_functions']} functions before; VFs "
          + ", ".join(st["vf_ranges"][:2]) + ", ...)")
    m = sc["mount"]
    print(f"   daemon pid {m['daemon_pid']} cpus {m['daemon_cpus_allowed']}, mount took {fmt_s(m['mount_s'])}; "
          f"model topology load {fmt_s(sc['model']['load_s'])}")
    head = f"   {'VFs enabled':>11}  {'model':>10} {'us/VF':>7} {'marg.':>7}  {'mount':>10} {'us/VF':>7} " \
           f"{'marg.':>7}  {'tmpfs':>10} {'us/VF':>7}  {'model/tmpfs':>11} {'mount/tmpfs':>11}"
    print(head)
    print("   " + "-" * (len(head) - 3))
    cm = rep["cumulative"]
    for i, row in enumerate(cm["model"]["steps"]):
        w, t = cm["mount"]["steps"][i], cm["tmpfs"]["steps"][i]
        print(f"   {row['vfs']:>11}  {fmt_s(row['total_s']):>10} {row['us_per_vf']:>7.1f} "
              f"{row['marginal_us_per_vf']:>7.1f}  {fmt_s(w['total_s']):>10} {w['us_per_vf']:>7.1f} "
              f"{w['marginal_us_per_vf']:>7.1f}  {fmt_s(t['total_s']):>10} {t['us_per_vf']:>7.1f}  "
              f"{row['total_s'] / t['total_s']:>11.1f} {w['total_s'] / t['total_s']:>11.1f}")
    print("   (cumulative, PFs enabled in turn; marg. = cost per VF of the last PF added, in us)")
    print("   per PF, in order (ms):")
    print("     model  " + " ".join(f"{v * 1e3:7.1f}" for v in sc["model"]["per_pf_s"]))
    print("     mount  " + " ".join(f"{w['write_s'] * 1e3:7.1f}" for w in m["enable"]))
    print("     tmpfs  " + " ".join(f"{v * 1e3:7.1f}" for v in sc["tmpfs"]["create_per_pf_s"]))
    print(f"   linearity (cost of the last PF's VFs / the first's; linear if <= {LINEAR_TOLERANCE}): "
          + ", ".join(f"{k} {v['last_pf_over_first_pf']:.2f}" for k, v in cm.items()))
    tcw = sc["tmpfs"]["create_walk_s"]
    mw = sum(w["write_s"] for w in m["enable"]) + m["first_walk_s"]
    print(f"   like for like, all {st['total_vfs']} VFs: tmpfs create + walk {fmt_s(tcw)} (walk "
          f"{fmt_s(sc['tmpfs']['walk_s'])}); mount writes + first walk {fmt_s(mw)} (walk "
          f"{fmt_s(m['first_walk_s'])}); ratio {mw / tcw:.2f}")
    print(f"   after enabling: `ls devices` {fmt_s(m['ls_s'])}, {m['listed']} entries, {m['n_missing']} VFs "
          f"missing" + (f" (e.g. {', '.join(m['missing'][:3])})" if m["missing"] else ""))

    print("\n3. Walks with all VFs enabled (run once)")
    tl = sc["tmpfs"].get("ls_R_s")
    print(f"   ls -R MNT/sys/bus/pci/devices/ > /dev/null      {fmt_s(m['ls_R_s']):>10}   (rc {m['ls_R_rc']}; "
          f"tmpfs tree {fmt_s(tl)}, ratio {m['ls_R_s'] / tl if tl else float('nan'):.1f})")
    print(f"   lspci -A linux-sysfs -O sysfs.path=... -nn | wc -l {fmt_s(m['lspci_s']):>10}   (rc {m['lspci_rc']}; "
          f"{m['lspci_lines']} lines; {m['lspci_s'] / max(1, m['listed']) * 1e6:.0f} us per function)")

    print("\n4. Disabling (echo 0 > sriov_numvfs, each PF)")
    dw = [d["write_s"] for d in m["disable"]]
    print("     mount  " + " ".join(f"{v * 1e3:7.1f}" for v in dw) + f"   total {fmt_s(sum(dw))}")
    print("     model  " + " ".join(f"{v * 1e3:7.1f}" for v in sc["model"]["disable_per_pf_s"])
          + f"   total {fmt_s(sc['model']['disable_total_s'])}")
    print("     tmpfs  " + " ".join(f"{v * 1e3:7.1f}" for v in sc["tmpfs"]["remove_per_pf_s"])
          + f"   total {fmt_s(sc['tmpfs']['remove_total_s'])}")
    print(f"   {m['listed_after_disable']} functions listed after disabling (before: {m['listed_before']})")

    print("\n5. Memory")
    n = st["total_vfs"]
    kib = lambda v: "-" if v is None else f"{v:,} KiB"   # noqa: E731
    print(f"   daemon VmRSS: before {kib(m['rss_before_kib'])}, after enabling {kib(m['rss_after_enable_kib'])}, "
          f"after ls {kib(m['rss_after_ls_kib'])}, after lspci {kib(m['rss_after_lspci_kib'])}, "
          f"after disabling {kib(m['rss_after_disable_kib'])}")
    d = rep["daemon_rss_bytes_per_vf"]
    if d is not None:
        print(f"   daemon RSS per VF (enabling only): {d / 1024:.1f} KiB")
        if m["rss_after_lspci_kib"] is not None:
            print(f"   daemon RSS per VF incl. the walks (ls -R, lspci): "
                  f"{(m['rss_after_lspci_kib'] - m['rss_before_kib']) * 1024 / n / 1024:.1f} KiB")
    mem = sc["model_memory"]
    print(f"   model alone (fresh process): RSS delta {mem['rss_delta_bytes_per_vf'] / 1024:.1f} KiB per VF; "
          f"tracemalloc live after enabling {mem['traced_bytes_per_vf'] / 1024:.1f} KiB per VF "
          f"(peak {mem['traced_peak_bytes'] / n / 1024:.1f} KiB)")
    print("   biggest live allocations (tracemalloc, by line):")
    for where, size in mem["top_lines"][:6]:
        print(f"     {size / n:8.0f} B/VF  {where.replace(str(REPO) + '/', '')}")

    print("\n6. Ratios (vfakefs time / tmpfs time, same run)")
    for k, v in rep["ratios"].items():
        print(f"   {k:<52}{v:>10.2f}")

    print("\n7. Targets")
    model_tot = sum(sc["model"]["per_pf_s"])
    mount_tot = sum(w["write_s"] for w in m["enable"])
    t = rep["targets"]
    ok = lambda b: "met" if b else "MISSED"   # noqa: E731
    print(f"   {n} VFs in under {TARGET_TOTAL_S} s:  model {fmt_s(model_tot)} {ok(t['model_2048_under_0.5s'])};"
          f"  mount {fmt_s(mount_tot)} {ok(t['mount_2048_under_0.5s'])}")
    print(f"   under 20 KiB per function:  daemon RSS "
          f"{'-' if d is None else f'{d / 1024:.1f} KiB'} {ok(t['daemon_rss_per_vf_under_20KiB'])};  "
          f"model (tracemalloc) {mem['traced_bytes_per_vf'] / 1024:.1f} KiB {ok(t['model_traced_per_vf_under_20KiB'])}")
    print(f"   linear in VFs:  model {cm['model']['last_pf_over_first_pf']:.2f} {ok(t['model_linear'])};  "
          f"mount {cm['mount']['last_pf_over_first_pf']:.2f} {ok(t['mount_linear'])}")


def print_profiles(rep: dict) -> None:
    for key, title in (("profile_model", "cProfile, model only: sriov.configure on every PF"),
                       ("profile_daemon", "cProfile, the daemon (`python -m cProfile -m vfakefs mount -f`): "
                                          "its whole life, mount, one enable per PF, umount")):
        p = rep.get(key)
        if not p:
            continue
        print(f"\n{title} (total {p['total_s']:.3f} s)")
        if "writes_s_under_profile" in p:
            print("   enable writes under the profiler (ms): "
                  + " ".join(f"{v * 1e3:.1f}" for v in p["writes_s_under_profile"]))
        for k in ("tottime", "cumulative"):
            print(f"-- by {k}" + (" (vfakefs/{model,sysfs,fuse} only)" if k == "cumulative"
                                          and key == "profile_daemon" else "") + ":")
            print(p[k].replace(str(REPO) + "/", ""))


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", type=int, default=0, help="CPU for the daemon and this script (0)")
    ap.add_argument("--repeats", type=int, default=3, help="model-only and tmpfs repeats; median (3)")
    ap.add_argument("--mount-repeats", type=int, default=3,
                    help="enable/disable cycles of the 63 VFs through the mount (3)")
    ap.add_argument("--pfs", type=int, default=8, help="PFs in the generated topology (8)")
    ap.add_argument("--vfs-per-pf", type=int, default=256, help="VFs per PF (256)")
    ap.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                    help="cProfile the model-only path: when a target is missed (auto)")
    ap.add_argument("--no-profile-daemon", action="store_true",
                    help="do not profile the daemon when the mount path misses a target")
    ap.add_argument("--json", metavar="FILE", help="also write results as JSON")
    ap.add_argument("--_model-mem", dest="model_mem", metavar="TOML", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.repeats < 1 or a.mount_repeats < 1 or a.pfs < 1 or not 1 <= a.vfs_per_pf <= 0xFFFF:
        ap.error("counts must be >= 1 (and VFs per PF <= 65535)")
    return a


def report_failure(script: str, exc: BaseException, work: Path) -> None:
    """What went wrong, and the tail of every daemon log the run left in work."""
    warn(f"{script}: {exc!r}")
    for log in sorted(work.glob("mount-*.log")):
        text = log.read_text(errors="replace").strip()
        if text:
            warn(f"--- {log.name}:\n{text[-2000:]}")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def daemon_profile(a, work: Path, topo: str, pf_names: list[str]) -> dict:
    out = work / "daemon.prof"
    mnt = Mount(work / "mnt-prof", topo, a.cpu, work / "mount-prof.log", profile_out=out)
    try:
        mnt.mount()
        t = []
        for pf in pf_names:
            t.append(write_attr(numvfs_path(mnt.mnt, pf), b"%d\n" % a.vfs_per_pf)["write_s"])
    finally:
        mnt.umount()
    if not out.exists():
        raise RuntimeError("the profiled daemon wrote no profile")
    p = _top(pstats.Stats(str(out)), 20, cumulative_only=r"vfakefs/(model|sysfs|fuse)/")
    p["writes_s_under_profile"] = t
    return p


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.model_mem:
        return _model_mem_main(a.model_mem, a.vfs_per_pf)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    os.sched_setaffinity(0, {a.cpu})
    if os.geteuid() != 0:
        print("sriov_scale.py needs root (tmpfs and FUSE mounts)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="vfakefs-sriov-"))
    tmp = work / "tmpfs"
    rep: dict = {"config": {k: v for k, v in vars(a).items() if k != "model_mem"},
                 "python": sys.version.split()[0], "cpu": a.cpu,
                 "targets_def": {"total_s": TARGET_TOTAL_S, "bytes_per_vf": TARGET_BYTES_PER_VF,
                                 "linear_tolerance": LINEAR_TOLERANCE}}
    code = 0
    try:
        mount_tmpfs(tmp)
        seed_section(a, work, tmp, rep)
        scale_section(a, work, tmp, rep)
        analyse(a, rep)
        print_report(a, rep)
        missed = not all(rep["targets"].values())
        topo = rep["scale_topology"]["file"]
        if a.profile == "always" or (a.profile == "auto" and missed):
            rep["profile_model"] = profile_model(topo, a.vfs_per_pf)
        mount_missed = not (rep["targets"]["mount_2048_under_0.5s"] and rep["targets"]["mount_linear"])
        if mount_missed and not a.no_profile_daemon:
            rep["profile_daemon"] = daemon_profile(a, work, topo, rep["scale_topology"]["pfs"])
        print_profiles(rep)
    except BaseException as exc:   # noqa: BLE001 - report, clean up, exit non-zero
        report_failure("sriov_scale.py", exc, work)
        code = 1
    finally:
        for step in (lambda: umount_tmpfs(tmp), lambda: cleanup_workdir(work)):
            try:
                step()
            except BaseException as exc:   # noqa: BLE001 - go on cleaning up
                warn(f"cleanup step failed: {exc!r}")
    if a.json:
        rep["figures"] = scale_figures(a, rep, rep.setdefault("figures_errors", []))
        with open(a.json, "w") as f:
            json.dump(rep, f, indent=2, sort_keys=True, default=str)
        print(f"\nJSON written to {a.json}")
    return code


if __name__ == "__main__":
    sys.exit(main())
