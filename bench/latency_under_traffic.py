#!/usr/bin/env python3
"""Latency of attribute reads through the mount while the engine runs simulated
traffic at the highest allowed rate, against the same mount idle, in one run.

What it does:
 1. Mounts seed-vtd in the foreground (`taskset -c CPU python -m vfakefs mount -f
    -t seed-vtd MNT`, this process its parent), and pins itself to the same CPU
    (DESIGN.md, "Performance notes": placement decides the figures).
 2. Rounds, alternating: idle (no stream), then traffic (two streams, 03:00.0 and
    03:00.1, at rate=1000000 ws=1073741824 pattern=random, started through
    MNT/sys/kernel/debug/vfakefs/traffic and stopped after the round). In each
    round, --reads times: open + read + close of a 7-byte attribute
    (0000:03:00.0/vendor), timed one by one, and every 100th read a `dma`
    request (write + read back on one fd) timed as well.
 3. Prints, per arm: reads, p50, p90, p99, p99.9 and max in microseconds, the
    ratios traffic/idle, the requests the streams issued per second of wall time,
    and the `behind=` each stream reported.

--src DIR runs the daemon from another checkout (PYTHONPATH=DIR), to compare a
tree before a change; a daemon that dies (the engine raising) is reported.

    taskset -c 0 .venv/bin/python bench/latency_under_traffic.py [--reads N] [--rounds R] [--json FILE]
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import figure, write as write_figures  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STREAMS = ("0000:03:00.0", "0000:03:00.1")
START = "start {} rate=1000000 ws=1073741824 pattern=random"


def mount(mnt: Path, cpu: int, src: Path, log) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-m", "vfakefs", "mount", "-f",
                             "-t", "seed-vtd", str(mnt)], cwd=src, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while not (mnt / "sys/bus/pci/devices").is_dir():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the mount did not come up (exit {proc.poll()})")
        time.sleep(0.05)
    return proc


def unmount(mnt: Path, proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)


def timed_reads(path: Path, n: int, dma: Path, out: list, dma_out: list) -> None:
    for i in range(n):
        t0 = time.perf_counter_ns()
        fd = os.open(path, os.O_RDONLY)
        os.read(fd, 4096)
        os.close(fd)
        out.append((time.perf_counter_ns() - t0) / 1000)
        if i % 100 == 0:
            t0 = time.perf_counter_ns()
            fd = os.open(dma, os.O_RDWR)
            os.write(fd, f"{STREAMS[0]} read 0x80001000 64\n".encode())
            os.pread(fd, 4096, 0)
            os.close(fd)
            dma_out.append((time.perf_counter_ns() - t0) / 1000)


def pct(xs: list, p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def row(name: str, xs: list) -> str:
    return (f"{name:<22} {len(xs):>7} {pct(xs, 50):>9.0f} {pct(xs, 90):>9.0f} {pct(xs, 99):>9.0f} "
            f"{pct(xs, 99.9):>9.0f} {max(xs):>10.0f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reads", type=int, default=5000, help="timed reads per round")
    ap.add_argument("--rounds", type=int, default=3, help="idle/traffic round pairs")
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--src", type=Path, default=REPO, help="the checkout the daemon runs from")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON (bench/figures.py)")
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    with tempfile.TemporaryDirectory(prefix="vfakefs-bench-") as tmp:
        mnt = Path(tmp) / "mnt"
        mnt.mkdir()
        log = open(Path(tmp) / "daemon.log", "w+")
        proc = mount(mnt, args.cpu, args.src.resolve(), log)
        ctl = mnt / "sys/kernel/debug/vfakefs"
        attr = mnt / "sys/bus/pci/devices" / STREAMS[0] / "vendor"
        idle, busy, idle_dma, busy_dma = [], [], [], []
        issued, wall, behind = 0, 0.0, []
        try:
            timed_reads(attr, 500, ctl / "dma", [], [])                   # warm up
            for _ in range(args.rounds):
                timed_reads(attr, args.reads, ctl / "dma", idle, idle_dma)
                for bdf in STREAMS:
                    (ctl / "traffic").write_text(START.format(bdf) + "\n")
                t0 = time.monotonic()
                timed_reads(attr, args.reads, ctl / "dma", busy, busy_dma)
                wall += time.monotonic() - t0
                lines = (ctl / "traffic").read_text().splitlines()
                issued += sum(int(w.split("=")[1]) for ln in lines for w in ln.split() if w.startswith("requests="))
                behind += [int(w.split("=")[1]) for ln in lines for w in ln.split() if w.startswith("behind=")]
                (ctl / "traffic").write_text("stop all\n")
        except OSError as e:
            print(f"the mount failed during the run: {e}; daemon exit status {proc.poll()}")
            log.seek(0)
            print(log.read()[-3000:])
            return 1
        finally:
            unmount(mnt, proc)
    print(f"daemon from {args.src}, pinned with the reader to CPU {args.cpu}; "
          f"{args.rounds} rounds of {args.reads} reads per arm")
    print(f"{'arm (microseconds)':<22} {'n':>7} {'p50':>9} {'p90':>9} {'p99':>9} {'p99.9':>9} {'max':>10}")
    print(row("read, idle", idle))
    print(row("read, traffic", busy))
    print(row("dma request, idle", idle_dma))
    print(row("dma request, traffic", busy_dma))
    print("ratios traffic/idle: " + ", ".join(
        f"{p}: {pct(busy, float(p[1:])) / pct(idle, float(p[1:])):.2f}" for p in ("p50", "p90", "p99", "p99.9"))
        + f", max: {max(busy) / max(idle):.2f}; reads/s {len(idle) / (sum(idle) / 1e6):.0f} idle, "
          f"{len(busy) / (sum(busy) / 1e6):.0f} under traffic")
    print(f"simulated requests issued: {issued} in {wall:.2f} s of wall time ({issued / wall:,.0f}/s for "
          f"{len(STREAMS)} streams asking 1,000,000/s each of simulated time); behind= at the round ends: {behind}")
    if args.json:
        figs = [figure(f"7 B attribute read under 2 streams of traffic, {p}", pct(busy, float(p[1:])), "us",
                       baseline=pct(idle, float(p[1:])), baseline_what="the same mount idle")
                for p in ("p50", "p99")]
        figs.append(figure("`dma` request under traffic, p50", pct(busy_dma, 50), "us",
                           baseline=pct(idle_dma, 50), baseline_what="the same mount idle"))
        figs.append(figure("simulated requests issued per second of wall time", issued / wall, "/s"))
        write_figures(args.json, "latency_under_traffic.py", figs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
