#!/usr/bin/env python3
"""What the kernel's caches of symlink targets and listings save: FUSE requests per
opcode and wall time of whole-machine walks, with the caches off and on, in one run.

The caches (FUSE_CAP_CACHE_SYMLINKS, FOPEN_CACHE_DIR) need the pyfuse3 the Makefile
builds (patches/); VFAKEFS_KERNEL_CACHES=0 turns them off, so both columns come from
the same build. Each round mounts the topology afresh (pinned like the reader), enables
every PF's VFs (--vfs), and times the steps in order: a first and a second `lspci -nn`,
`lspci -nnk`, a first and a second `ls -lR` of sys, and `ls -lL` of every
bus/pci/devices/X/ (a path through a link per file). Requests are counted in the
daemon, per handler called (a small wrapper around SysfsOps: `--serve`).

    taskset -c 0 .venv/bin/python bench/kernel_caches.py [--rounds 4] [--vfs 63]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HANDLERS = ("lookup", "getattr", "readlink", "opendir", "readdir", "releasedir", "open", "read",
            "release", "write", "setattr", "statfs", "forget")


# ---------------------------------------------------------------- the daemon (--serve)

def serve(counts_path: str, argv: list[str]) -> int:
    """`vfakefs mount -f` with every handler counted; touching COUNTS.req writes the
    counts since the last one to COUNTS (json)."""
    import functools
    from vfakefs.cli import main
    from vfakefs.fuse.ops import SysfsOps
    counts: Counter = Counter()
    for name in HANDLERS:
        def wrap(f=getattr(SysfsOps, name), name=name):
            @functools.wraps(f)
            async def counted(self, *a, **k):
                counts[name] += 1
                return await f(self, *a, **k)
            return counted
        setattr(SysfsOps, name, wrap())

    def answer():
        req = counts_path + ".req"
        while True:
            time.sleep(0.005)
            if os.path.exists(req):
                snap = dict(counts)
                counts.clear()
                Path(counts_path + ".tmp").write_text(json.dumps(snap))
                os.rename(counts_path + ".tmp", counts_path)
                os.unlink(req)
    threading.Thread(target=answer, daemon=True).start()
    return main(["mount", "-f", *argv])


# ---------------------------------------------------------------- the reader

def snapshot(counts_path: str) -> dict:
    Path(counts_path).unlink(missing_ok=True)
    Path(counts_path + ".req").touch()
    while os.path.exists(counts_path + ".req"):
        time.sleep(0.002)
    return json.loads(Path(counts_path).read_text())


def steps(mnt: Path) -> list[tuple[str, list[str]]]:
    pci = mnt / "sys/bus/pci"
    lspci = ["lspci", "-A", "linux-sysfs", "-O", f"sysfs.path={pci}"]
    return [("lspci -nn, first", lspci + ["-nn"]),
            ("lspci -nn, again", lspci + ["-nn"]),
            ("lspci -nnk", lspci + ["-nnk"]),
            ("ls -lR sys, first", ["ls", "-lR", str(mnt / "sys")]),
            ("ls -lR sys, again", ["ls", "-lR", str(mnt / "sys")]),
            ("ls -lL bus/pci/devices/*/", ["bash", "-c", f"ls -lL {pci}/devices/*/"])]


def one_round(topology: str, vfs: int, caches: bool, cpu: int, work: Path) -> dict:
    mnt, counts = work / "mnt", str(work / "counts.json")
    mnt.mkdir(exist_ok=True)
    env = dict(os.environ, VFAKEFS_KERNEL_CACHES="1" if caches else "0")
    daemon = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, __file__, "--serve", counts,
                               "-t", topology, str(mnt)], cwd=REPO, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {}
    try:
        deadline = time.monotonic() + 60
        while not (mnt / "sys/bus/pci/devices").exists():
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit("the mount did not come up")
            time.sleep(0.05)
        devices = mnt / "sys/bus/pci/devices"
        for d in sorted(devices.iterdir()):
            total = d / "sriov_totalvfs"
            if total.exists() and not (d / "physfn").exists():
                (d / "sriov_numvfs").write_text(str(min(vfs, int(total.read_text()))))
        functions = len(os.listdir(devices))
        snapshot(counts)
        for name, cmd in steps(mnt):
            t0 = time.perf_counter()
            subprocess.run(["taskset", "-c", str(cpu), *cmd], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
            out[name] = (time.perf_counter() - t0, snapshot(counts))
        out["functions"] = functions
    finally:
        subprocess.run([sys.executable, "-m", "vfakefs", "umount", str(mnt)], cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        daemon.wait(60)
    return out


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        return serve(sys.argv[2], sys.argv[3:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topology", default="seed-vtd")
    ap.add_argument("--vfs", type=int, default=63, help="VFs enabled on every PF (63)")
    ap.add_argument("--rounds", type=int, default=4, help="fresh mounts per setting, interleaved (4)")
    ap.add_argument("--cpu", type=int, default=0)
    a = ap.parse_args()
    import pyfuse3
    from vfakefs.fuse.ops import SysfsOps, symlink_cache_safe
    if not hasattr(pyfuse3.FileInfo, "cache_readdir"):
        print("stock pyfuse3: no kernel caches to compare (make venv builds the patched one)")
    elif not symlink_cache_safe():
        print(f"kernel {os.uname().release}: symlinks stay uncached (before 6.14); listings compared")
    del SysfsOps
    runs: dict[bool, list[dict]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="vfakefs-kcache-") as tmp:
        for i in range(a.rounds):
            # alternate which goes first: the round after an unmount runs slower here
            for caches in ((False, True) if i % 2 == 0 else (True, False)):
                runs[caches].append(one_round(a.topology, a.vfs, caches, a.cpu, Path(tmp)))
    print(f"{a.topology}, {runs[True][0]['functions']} functions ({a.vfs} VFs per PF), CPU {a.cpu}, "
          f"{a.rounds} fresh mounts per setting: wall ms median [min-max], requests per opcode")
    print(f"{'step':28s} {'caches off':>22s} {'caches on':>22s} {'on/off':>7s}  requests off -> on")
    for name, _ in steps(Path("/")):
        cells, meds = [], []
        for caches in (False, True):
            ts = [r[name][0] * 1000 for r in runs[caches]]
            meds.append(statistics.median(ts))
            cells.append(f"{meds[-1]:7.0f} [{min(ts):.0f}-{max(ts):.0f}]")
        off, on = runs[False][0][name][1], runs[True][0][name][1]
        reqs = " ".join(f"{k} {off.get(k, 0)}->{on.get(k, 0)}" for k in HANDLERS
                        if off.get(k, 0) or on.get(k, 0))
        print(f"{name:28s} {cells[0]:>22s} {cells[1]:>22s} {meds[1] / meds[0]:7.2f}  "
              f"total {sum(off.values())}->{sum(on.values())}: {reqs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
