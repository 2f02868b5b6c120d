#!/usr/bin/env python3
"""Structural writes against a walked tree, and walkers against structural writes.

Measured in one run, daemon and this script (and every program it starts) pinned
to one CPU (DESIGN.md, "Performance notes"), printed as ratios:

 1. Cost of one structural write (write(2) of "0" then "4" to a PF's
    sriov_numvfs: 4 VFs go and come back), median of --writes, on a fresh mount
    (the kernel has seen only the path to the PF), then after a full
    `ls -lR MNT/sys` (the kernel holds every entry): ratio after / before.
 2. `ls -lR MNT/sys` and `find MNT/sys`, idle, then while --writers bash loops
    toggle sriov_numvfs on the two PFs (an EBUSY from a PF another writer just
    enabled is part of the load): ratio loaded / idle; and the toggles the
    writers made meanwhile per second, beside one writer's rate alone (readers
    must not be served by starving the writers).

`--repo DIR` runs the daemon from another checkout (an exported older commit,
to compare before and after in one run). Every mount is undone in `finally`.
Run as root:

    taskset -c 0 .venv/bin/python bench/walk_under_writes.py [--writers 16] [--repo DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import figure, write as write_figures  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PRESET = "seed-vtd"
PFS = ("0000:03:00.0", "0000:03:00.1")


def vfakefs(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfakefs", *args], cwd=repo, capture_output=True, text=True,
                          timeout=120)


def write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def write_cost(numvfs: Path, n: int) -> float:
    """Median seconds of one structural write (each toggle is two)."""
    times = []
    for _ in range(n):
        for text in ("0\n", "4\n"):
            t = time.perf_counter()
            write(numvfs, text)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", type=int, default=16)
    ap.add_argument("--writes", type=int, default=20, help="toggles timed for the write cost")
    ap.add_argument("--walks", type=int, default=3, help="walks timed, idle and loaded (median)")
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout the daemon runs from")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON (bench/figures.py)")
    a = ap.parse_args(argv)
    if os.sched_getaffinity(0) != {0}:
        print("warning: not pinned; run under `taskset -c 0`", file=sys.stderr)
    mnt = Path(tempfile.mkdtemp(prefix="vfakefs-walk-"))
    writers: list[subprocess.Popen] = []
    try:
        r = vfakefs(a.repo, "mount", "-t", PRESET, str(mnt))
        if r.returncode:
            print(r.stderr, file=sys.stderr)
            return 1
        devs = mnt / "sys/bus/pci/devices"
        numvfs = devs / PFS[0] / "sriov_numvfs"
        write(numvfs, "4\n")
        before = write_cost(numvfs, a.writes)
        walk = timed(["ls", "-lR", str(mnt / "sys")])
        after = write_cost(numvfs, a.writes)
        idle_ls = statistics.median(timed(["ls", "-lR", str(mnt / "sys")]) for _ in range(a.walks))
        idle_find = statistics.median(timed(["find", str(mnt / "sys")]) for _ in range(a.walks))
        counts = Path(tempfile.mkdtemp(prefix="vfakefs-walk-counts-"))
        for i in range(a.writers):
            f = devs / PFS[i % 2] / "sriov_numvfs"
            # each writer counts its toggles and says how many on SIGTERM (after the write
            # it is in): the writers' throughput while walkers run, so that readers are not
            # served by starving the writers
            writers.append(subprocess.Popen(
                ["bash", "-c", f"n=0; trap 'echo $n > {counts}/{i}; exit' TERM; "
                               f"while :; do echo 0 > {f}; echo 4 > {f}; n=$((n+1)); done"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        t_busy = time.perf_counter()
        busy_ls = statistics.median(timed(["ls", "-lR", str(mnt / "sys")]) for _ in range(a.walks))
        busy_find = statistics.median(timed(["find", str(mnt / "sys")]) for _ in range(a.walks))
        t_busy = time.perf_counter() - t_busy + 0.5
        for p in writers:
            p.terminate()
        for p in writers:
            p.wait()
        toggles = sum(int((counts / str(i)).read_text() or 0) for i in range(a.writers)
                      if (counts / str(i)).exists())
        for c in counts.iterdir():
            c.unlink()
        counts.rmdir()
        print(f"daemon from {a.repo} ({PRESET}, one CPU)")
        print(f"structural write: {before * 1e3:7.2f} ms fresh, {after * 1e3:7.2f} ms after a full walk "
              f"({walk:.2f} s): ratio {after / before:6.1f}")
        print(f"ls -lR sys:       {idle_ls:7.2f} s idle, {busy_ls:7.2f} s under {a.writers} writers: "
              f"ratio {busy_ls / idle_ls:6.1f}")
        print(f"find sys:         {idle_find:7.2f} s idle, {busy_find:7.2f} s under {a.writers} writers: "
              f"ratio {busy_find / idle_find:6.1f}")
        print(f"writers:          {toggles} toggles in {t_busy:.1f} s under walks ({toggles / t_busy:.0f}/s; "
              f"one writer alone: {0.5 / after:.0f}/s)")
        if a.json:
            write_figures(a.json, "walk_under_writes.py", [
                figure("structural write after a full ls -lR", after * 1e3, "ms", baseline=before * 1e3,
                       baseline_what="on a fresh mount"),
                figure(f"ls -lR MNT/sys under {a.writers} writers", busy_ls, "s", baseline=idle_ls,
                       baseline_what="idle"),
                figure(f"find MNT/sys under {a.writers} writers", busy_find, "s", baseline=idle_find,
                       baseline_what="idle")])
        return 0
    finally:
        for p in writers:
            p.kill()
        for p in writers:
            p.wait()
        vfakefs(a.repo, "umount", str(mnt))
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)])
        try:
            mnt.rmdir()
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
