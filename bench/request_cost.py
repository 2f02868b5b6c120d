#!/usr/bin/env python3
"""What a FUSE request costs the daemon, counted: instructions (callgrind) and syscalls
(strace -c) per request, for pyfuse3's session loop against a server's own code.

Each daemon runs in the foreground pinned to one CPU, once under
`valgrind --tool=callgrind --instr-atstart=no` (instrumentation switched on, zeroed and
dumped with callgrind_control around the reads) and once under `strace -c -f -p`
(attached around the reads). The reads are python's open(p, "rb", buffering=0)
.read(4096) + close of a 7-byte attribute, after a warm-up: GETATTR OPEN READ RELEASE
in strict mode, OPEN RELEASE in cached mode (read_rate.py's docstring; for vfakefs the
`requests` control counts them). Counts barely move with the machine's load, unlike
times: decide on them, confirm with read_rate.py.

Servers: `minimal` is bench/pyfuse3_minimal.py (the ceiling: pyfuse3 + trio and a
dict lookup), `minimal-cache` its --keep-cache twin, `vfakefs` and `vfakefs-cache`
`vfakefs mount -f [--cache]` of seed-vtd. --python runs the daemons with other
interpreters (e.g. two venvs: stock and patched pyfuse3) in the same run:

    taskset -c 0 .venv/bin/python bench/request_cost.py [--servers minimal,vfakefs]
        [--python A=/path/bin/python --python B=...] [--reads N] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from read_rate import Requests, end_processes, mounted_at  # noqa: E402
from figures import figure  # noqa: E402

VF_PATH = "sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0/vendor"   # seed-vtd's 0000:03:00.0
SERVERS = ("minimal", "minimal-cache", "vfakefs", "vfakefs-cache")
PER_READ = {"minimal": 4, "minimal-cache": 2}   # GETATTR OPEN READ RELEASE; OPEN RELEASE


def daemon_cmd(python: str, server: str, mnt: Path) -> tuple[list[str], Path]:
    """The foreground daemon's command line and the file a read reads."""
    if server.startswith("minimal"):
        from vfakefs.fuse.files import MAX_TASKS
        cache = ["--keep-cache"] if server.endswith("cache") else []
        return ([python, str(REPO / "bench" / "pyfuse3_minimal.py"), str(mnt),
                 "--max-tasks", str(MAX_TASKS), *cache], mnt / "vendor")
    cache = ["--cache"] if server.endswith("cache") else []
    return [python, "-m", "vfakefs", "mount", "-f", *cache, "-t", "seed-vtd", str(mnt)], mnt / VF_PATH


def reads(d: "Daemon", n: int) -> None:
    for _ in range(n):
        with open(d.path, "rb", buffering=0) as f:
            f.read(4096)


def lspcis(d: "Daemon", n: int) -> None:
    """`lspci -nn` of the mount, n times: every kind of request a tree walk sends
    (LOOKUP READLINK OPENDIR READDIRPLUS GETATTR OPEN READ RELEASE)."""
    for _ in range(n):
        subprocess.run(["lspci", "-A", "linux-sysfs", "-O", f"sysfs.path={d.mnt}/sys/bus/pci", "-nn"],
                       check=True, stdout=subprocess.DEVNULL)


OPS = {"read": reads, "lspci": lspcis}


class Daemon:
    def __init__(self, python: str, server: str, cpu: int, wrap: list[str], work: Path):
        self.mnt = Path(tempfile.mkdtemp(dir=work))
        cmd, self.path = daemon_cmd(python, server, self.mnt)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.log = open(work / f"{self.mnt.name}.log", "wb")
        self.proc = subprocess.Popen(["taskset", "-c", str(cpu), *wrap, *cmd], cwd=REPO, env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 600
        while not (mounted_at(self.mnt) and self.path.exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{server} did not mount: see {self.log.name}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                end_processes([self.proc.pid])
        if mounted_at(self.mnt):
            subprocess.run(["umount", "-l", str(self.mnt)])
        self.log.close()
        self.mnt.rmdir()


def requests_per_read(d: Daemon, server: str, n: int, op=reads) -> float:
    if server in PER_READ and op is reads:
        return PER_READ[server]
    req = Requests(d.mnt)
    before = req.read()
    op(d, n)
    return sum(req.per_op(before, req.read(), n).values())


def instructions(python: str, server: str, cpu: int, n: int, work: Path, op=reads) -> tuple[float, float]:
    """(instructions per read, requests per read) under callgrind."""
    out = work / "callgrind.out"
    d = Daemon(python, server, cpu, ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                     f"--callgrind-out-file={out}"], work)
    try:
        op(d, 200 if op is reads else 1)
        per_read = requests_per_read(d, server, 100 if op is reads else 1, op)
        ctl = lambda *a: subprocess.run(["callgrind_control", *a, str(d.proc.pid)], check=True,  # noqa: E731
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctl("-i", "on")
        op(d, 50 if op is reads else 1)
        ctl("-z")
        op(d, n)
        ctl("-d")
        ctl("-i", "off")
    finally:
        d.stop()
    dumps = sorted(work.glob("callgrind.out.*"), key=lambda p: p.stat().st_mtime)
    m = re.search(r"^summary: (\d+)", dumps[-1].read_text(errors="replace"), re.M)
    for p in work.glob("callgrind.out*"):
        p.unlink()
    return int(m[1]) / n, per_read


def syscalls(python: str, server: str, cpu: int, n: int, work: Path, op=reads) -> dict[str, float]:
    """Syscalls per read by name, strace -c -f attached around n reads."""
    d = Daemon(python, server, cpu, [], work)
    out = work / "strace.out"
    try:
        op(d, 200 if op is reads else 1)
        st = subprocess.Popen(["strace", "-c", "-f", "-o", str(out), "-p", str(d.proc.pid)],
                              stderr=subprocess.DEVNULL)
        time.sleep(1.0)   # attached to every thread
        op(d, n)
        st.send_signal(signal.SIGINT)
        st.wait(timeout=60)
    finally:
        d.stop()
    calls = {}
    for line in out.read_text().splitlines():
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            calls[f[-1]] = int(f[3])
    out.unlink()
    return {k: v / n for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default="minimal,vfakefs", help=f"comma-separated, of {', '.join(SERVERS)}")
    ap.add_argument("--python", action="append", metavar="NAME=PATH",
                    help="a daemon interpreter (repeatable; default: this one)")
    ap.add_argument("--reads", type=int, default=1000, help="operations counted (1000)")
    ap.add_argument("--op", choices=sorted(OPS), default="read",
                    help="read: open+read(4096)+close of one attribute; lspci: `lspci -nn` (vfakefs only)")
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--no-strace", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)
    pythons = dict(p.split("=", 1) for p in a.python) if a.python else {"this": sys.executable}
    rows = []
    with tempfile.TemporaryDirectory(prefix="request_cost.") as tmp:
        for server in a.servers.split(","):
            for name, py in pythons.items():
                ir, per_read = instructions(py, server, a.cpu, a.reads, Path(tmp), OPS[a.op])
                sc = {} if a.no_strace else syscalls(py, server, a.cpu, a.reads, Path(tmp), OPS[a.op])
                row = {"server": server, "python": name, "requests_per_read": per_read,
                       "instructions_per_request": ir / per_read,
                       "syscalls_per_request": sum(sc.values()) / per_read,
                       "syscalls": {k: round(v / per_read, 3) for k, v in sc.items()}}
                rows.append(row)
                top = " ".join(f"{k} {v:.2f}" for k, v in list(row["syscalls"].items())[:6])
                print(f"{server:<14} {name:<8} {per_read:6.1f} req/{a.op}  "
                      f"{row['instructions_per_request'] / 1e3:7.1f} k instr/req  "
                      f"{row['syscalls_per_request']:5.2f} syscalls/req ({top})", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"op": a.op, "count": a.reads, "rows": rows,
                                            "figures": cost_figures(rows, a.op)}, indent=1))
    return 0


def cost_figures(rows: list[dict], op: str) -> list[dict]:
    """Each server's instructions and system calls per request, the minimal server's the baseline."""
    base = {r["python"]: r for r in rows if r["server"] == "minimal"}
    out = []
    for r in rows:
        if r["server"] == "minimal":
            continue
        b = base.get(r["python"])
        what = f"{r['server']}, {op} ({r['requests_per_read']:.0f} requests)"
        out.append(figure(f"instructions per request, {what}", r["instructions_per_request"], "instr",
                          baseline=b and b["instructions_per_request"], baseline_what="minimal pyfuse3"))
        if r["syscalls"]:
            out.append(figure(f"system calls per request, {what}", r["syscalls_per_request"], "",
                              baseline=b and b["syscalls_per_request"], baseline_what="minimal pyfuse3"))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
