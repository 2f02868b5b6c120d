#!/usr/bin/env python3
"""Memory over SR-IOV enable/disable cycles with the VT-d tables made, through a mount.

What it does: mounts seed-vtd in the foreground (`taskset -c CPU python -m vfakefs
mount -f -t seed-vtd MNT`), makes the remapping unit's tables exist (one `dma`
request through MNT/sys/kernel/debug/vfakefs/dma: the tables are made on first
use), then writes "63" and "0" to 0000:03:00.0/sriov_numvfs --cycles times,
printing the daemon's VmRSS (from /proc/PID/status) after 1, 10, 100, ... cycles,
and the growth per cycle between the first and the last sample. --no-tables skips
the dma request (the tables are then never made: the flat baseline). --src DIR runs
the daemon from another checkout (PYTHONPATH=DIR), to compare a tree before a change.

    taskset -c 0 .venv/bin/python bench/sriov_cycles_memory.py [--cycles 600] [--no-tables] [--json FILE]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_under_traffic import REPO, mount, unmount   # noqa: E402
from figures import figure, write as write_figures  # noqa: E402

PF = "0000:03:00.0"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=600)
    ap.add_argument("--no-tables", action="store_true")
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--src", type=Path, default=REPO)
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON (bench/figures.py)")
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    marks = {1, 10, 50, 100, 200, 300, 400, 500, 600, args.cycles}
    with tempfile.TemporaryDirectory(prefix="vfakefs-bench-") as tmp:
        mnt = Path(tmp) / "mnt"
        mnt.mkdir()
        log = open(Path(tmp) / "daemon.log", "w+")
        proc = mount(mnt, args.cpu, args.src.resolve(), log)
        try:
            numvfs = mnt / "sys/bus/pci/devices" / PF / "sriov_numvfs"
            if not args.no_tables:
                fd = os.open(mnt / "sys/kernel/debug/vfakefs/dma", os.O_RDWR)
                os.write(fd, f"{PF} read 0x1000 4\n".encode())
                os.close(fd)
            print(f"daemon from {args.src}; tables {'not made' if args.no_tables else 'made'}; "
                  f"start: VmRSS {rss_mb(proc.pid):.1f} MB")
            t0, samples = time.monotonic(), []
            for i in range(1, args.cycles + 1):
                for text in (b"63\n", b"0\n"):
                    fd = os.open(numvfs, os.O_WRONLY)
                    os.write(fd, text)
                    os.close(fd)
                if i in marks:
                    samples.append((i, rss_mb(proc.pid)))
                    print(f"after {i:>4} cycles: VmRSS {samples[-1][1]:6.1f} MB  ({time.monotonic() - t0:.0f} s)",
                          flush=True)
            (c0, r0), (c1, r1) = samples[0], samples[-1]
            if c1 > c0:
                print(f"growth from cycle {c0} to {c1}: {(r1 - r0) / (c1 - c0) * 1024:.1f} KiB per cycle")
            if args.json:
                tables = "no tables" if args.no_tables else "VT-d tables made"
                figs = [figure(f"daemon VmRSS after {c1} cycles of 63/0 VFs ({tables})", r1, "MB",
                               baseline=r0, baseline_what=f"after {c0} cycle(s)")]
                if c1 > c0:
                    figs.append(figure(f"VmRSS growth per cycle, cycles {c0}..{c1}",
                                       (r1 - r0) / (c1 - c0) * 1024, "KiB"))
                write_figures(args.json, "sriov_cycles_memory.py", figs, samples=samples)
        finally:
            unmount(mnt, proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
