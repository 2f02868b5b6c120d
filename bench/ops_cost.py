#!/usr/bin/env python3
"""vfakefs's own cost per FUSE request, without the kernel, pyfuse3's C side or trio.

The daemon's handlers (fuse/ops.py) are called in this process exactly as pyfuse3
calls them for `open()+read(4096)+close` of a 7-byte attribute (GETATTR OPEN READ
RELEASE: see read_rate.py's docstring for where each comes from), over the tree the
daemon serves (`vfakefs mount`'s Host, View and SysfsOps, with its SyscallServer's
catch_up). None of them suspends on an idle machine, so each coroutine is driven by
one send(None), no event loop. The same four requests to the handlers of
bench/pyfuse3_minimal.py (a dict lookup, a slice) are the floor: the printed
ratio is what vfakefs's own code costs per request beside that floor, and the
difference in microseconds is what it adds to each request's ~20-60 us round trip.
Medians of interleaved rounds, pinned to one CPU:

    taskset -c 0 .venv/bin/python bench/ops_cost.py [--ops N] [--topology T]

On a loaded machine these times move by half; instruction counts do not. The
deterministic figure: the daemon under `valgrind --tool=callgrind --instr-atstart=no`,
`callgrind_control -i on`, then `-z` and `-d` around 2,000 reads (Ir per read). For
open(buffering=0)+read+close, 2026-12: a minimal pyfuse3 server 645k instructions
(543k with max_tasks=1; the same 645k at 99 and 16448), vfakefs before issue 13
742-771k, after 717-727k; in pyfuse3's request coroutines alone (what engine ticks
do not touch) 111k, 166k and 144k. Those were stock pyfuse3's session loop (two
scheduler passes per request); bench/request_cost.py automates the count per request,
and with the loop of patches/ (3.5.0+vfakefs2, before its burst reads) the minimal server's request went from
130k to 62k instructions, vfakefs's from 146k to 71k.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PATH = "sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0/vendor"   # seed-vtd's 0000:03:00.0
LINK = "sys/bus/pci/devices/0000:03:00.0"


def run(coro):
    """A handler's coroutine that does not suspend: its result."""
    try:
        coro.send(None)
    except StopIteration as e:
        return e.value
    raise RuntimeError("the handler suspended")


def lookup_path(ops, path: str) -> int:
    import pyfuse3
    ino = pyfuse3.ROOT_INODE
    for name in path.split("/"):
        ino = run(ops.lookup(ino, os.fsencode(name), None)).st_ino
    return ino


def vfakefs_ops(topology: str):
    from vfakefs.fuse.ops import SysfsOps
    from vfakefs.model import topology as topo
    from vfakefs.model.host import Host
    from vfakefs.syscall.server import SyscallServer
    from vfakefs.sysfs.tree import View
    host = Host(topo.load(topology))
    view = View(host)
    ops = SysfsOps(view.root(), lambda: host.machine.generation, view.dirty)
    server = SyscallServer(host, "/nonexistent/ops_cost.sock")   # never served: catch_up only
    ops.settle, ops.catch_up = server.settle, server.catch_up
    host.requests = ops.requests
    return ops


def cycle(ops, ino: int, link: int | None, n: int, ctx) -> float:
    """n times the requests of one open()+read+close (READLINK first when link): seconds."""
    getattr_, open_, read, release, readlink = ops.getattr, ops.open, ops.read, ops.release, ops.readlink
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            if link is not None:
                run(readlink(link, ctx))
            run(getattr_(ino, ctx))
            fi = run(open_(ino, os.O_RDONLY, ctx))
            run(read(fi.fh, 0, 4096))
            run(release(fi.fh))
        return time.perf_counter() - t0
    finally:
        gc.enable()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=50000, help="open+read+close cycles per round (50000)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds, median reported (5)")
    ap.add_argument("--topology", default="seed-vtd")
    a = ap.parse_args(argv)
    import pyfuse3_minimal
    ctx = SimpleNamespace(uid=0, gid=0, pid=os.getpid(), umask=0o022)
    vf = vfakefs_ops(a.topology)
    ino = lookup_path(vf, PATH)
    link = lookup_path(vf, LINK)
    assert run(vf.read(run(vf.open(ino, os.O_RDONLY, ctx)).fh, 0, 4096)) == b"0x8086\n"
    mini = pyfuse3_minimal.Minimal()
    mino = run(mini.lookup(1, pyfuse3_minimal.NAME, ctx)).st_ino
    rows = {"minimal": [], "vfakefs": [], "vfakefs via link": []}
    for _ in range(a.rounds):
        rows["minimal"].append(cycle(mini, mino, None, a.ops, ctx) / (4 * a.ops))
        rows["vfakefs"].append(cycle(vf, ino, None, a.ops, ctx) / (4 * a.ops))
        rows["vfakefs via link"].append(cycle(vf, ino, link, a.ops, ctx) / (5 * a.ops))
    floor = statistics.median(rows["minimal"])
    print(f"handler time per request, open()+read+close of {PATH} ({a.ops} cycles, median of {a.rounds}):")
    for name, v in rows.items():
        m = statistics.median(v)
        print(f"  {name:<18} {m * 1e6:6.2f} us  ({min(v) * 1e6:.2f}-{max(v) * 1e6:.2f})  "
              f"x{m / floor:5.2f} the minimal server's  +{(m - floor) * 1e6:5.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
