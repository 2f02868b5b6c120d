#!/usr/bin/env python3
"""Attribute reads through the mount while a write is held (model/faults.py) against the
same mount with nothing held, in one run: a held store must cost the other files nothing.

What it does:
 1. Mounts seed-vtd in the foreground (`python -m vfakefs mount -f -t seed-vtd MNT`, this
    process its parent), daemon and this process pinned to one CPU (DESIGN.md,
    "Performance notes": placement decides the figures).
 2. Rounds, alternating: idle, then held: a rule `0000:03:00.0 sriov_numvfs delay=3600`
    and a background `echo 4 > .../sriov_numvfs` that waits in write(2) for the whole round
    (the round starts once the rule shows the hit), released after the round by the
    `reset` control. In each round, --reads times: open + read + close of a 7-byte
    attribute (0000:03:00.1/vendor), timed one by one.
 3. Prints, per arm: reads, p50, p90, p99 in microseconds, and the ratios held/idle.

    .venv/bin/python bench/held_write.py [--reads N] [--rounds R] [--cpu C] [--json FILE]
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
PF = "0000:03:00.0"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON (bench/figures.py)")
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    with tempfile.TemporaryDirectory() as tmp:
        mnt = Path(tmp) / "mnt"
        mnt.mkdir()
        daemon = subprocess.Popen([sys.executable, "-m", "vfakefs", "mount", "-f", "-t", "seed-vtd", str(mnt)],
                                  cwd=REPO, stdin=subprocess.DEVNULL)
        try:
            vendor = mnt / "sys/bus/pci/devices/0000:03:00.1/vendor"
            while not vendor.exists():
                if daemon.poll() is not None:
                    raise SystemExit("vfakefs: the daemon exited")
                time.sleep(0.05)
            faults = mnt / "sys/kernel/debug/vfakefs/faults"
            arms = {"idle": [], "held": []}
            for _ in range(args.rounds):
                for arm in arms:
                    writer = None
                    if arm == "held":
                        faults.write_text(f"{PF} sriov_numvfs delay=3600")
                        writer = subprocess.Popen(["bash", "-c", f"echo 4 > {mnt}/sys/bus/pci/devices/{PF}/sriov_numvfs"],
                                                  stderr=subprocess.DEVNULL)
                        while "hits=1" not in faults.read_text():
                            time.sleep(0.01)
                    for _ in range(args.reads):
                        t0 = time.perf_counter_ns()
                        fd = os.open(vendor, os.O_RDONLY)
                        os.read(fd, 4096)
                        os.close(fd)
                        arms[arm].append((time.perf_counter_ns() - t0) / 1000)
                    if writer is not None:
                        assert writer.poll() is None, "the write was not held for the whole round"
                        (mnt / "sys/kernel/debug/vfakefs/reset").write_text("1")
                        writer.wait(60)
            for arm, xs in arms.items():
                print(f"{arm:5} reads={len(xs)} p50={pct(xs, .5):.0f}us p90={pct(xs, .9):.0f}us "
                      f"p99={pct(xs, .99):.0f}us mean={statistics.mean(xs):.0f}us")
            for p in (.5, .9, .99):
                print(f"held/idle p{int(p * 100)}: {pct(arms['held'], p) / pct(arms['idle'], p):.2f}")
            if args.json:
                write_figures(args.json, "held_write.py", [
                    figure(f"7 B attribute read while a write is held, p{int(p * 100)}", pct(arms["held"], p),
                           "us", baseline=pct(arms["idle"], p), baseline_what="nothing held")
                    for p in (.5, .9, .99)])
        finally:
            subprocess.run([sys.executable, "-m", "vfakefs", "umount", "--lazy", str(mnt)], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            daemon.wait(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
