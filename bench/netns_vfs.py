#!/usr/bin/env python3
"""What `vfakefs run`'s network namespace costs a large SR-IOV write: one PF (ixgbe)
with 2,048 VFs (ixgbevf, a netdev each), `echo 2048` and `echo 0` to its sriov_numvfs
written outside any namespace (the model alone), then inside `vfakefs run` (the write
answers once the namespace shows the 2,048 links: syscall/netns.py), in the same run;
printed as seconds and as the ratio inside/outside. Also the time a `vfakefs run -- true`
takes with the 2,048 VFs enabled (a namespace filled with 2,049 links, then torn down).

    .venv/bin/python bench/netns_vfs.py [--vfs N] [--repeats N] [--json FILE]

Run as root (FUSE mount, network namespaces); every mount is undone in `finally`."""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import figure, write as write_figures  # noqa: E402

# the tests' topology (one ixgbe PF with 2,048 VFs); --vfs sets its total_vfs
TOPOLOGY = Path(__file__).resolve().parents[1] / "tests/mount/topologies/one-pf-2048-vfs.toml"
VFAKEFS = [sys.executable, "-m", "vfakefs"]
SCRIPT = "s=$(date +%s.%N); echo {n} > {f}; e=$(date +%s.%N); echo \"$e - $s\" | bc"


def timed_write(mnt: Path, n: int, inside: bool) -> float:
    f = "/sys/class/net/eth0/device/sriov_numvfs"
    if inside:
        out = subprocess.run(VFAKEFS + ["run", "--mnt", str(mnt), "--", "bash", "-c", SCRIPT.format(n=n, f=f)],
                             capture_output=True, text=True, check=True).stdout
        return float(out)
    t = time.perf_counter()
    (mnt / f.lstrip("/")).write_text(f"{n}\n")
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--vfs", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON (bench/figures.py)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        topo, mnt = Path(tmp) / "t.toml", Path(tmp) / "mnt"
        topo.write_text(re.sub(r"total_vfs = \d+", f"total_vfs = {args.vfs}", TOPOLOGY.read_text()))
        mnt.mkdir()
        subprocess.run(VFAKEFS + ["mount", "-t", str(topo), str(mnt)], check=True)
        try:
            runs = []
            for r in range(args.repeats):
                res = {}
                for inside in (False, True):
                    res[inside] = (timed_write(mnt, args.vfs, inside), timed_write(mnt, 0, inside))
                (on0, off0), (on1, off1) = res[False], res[True]
                runs.append((on0, off0, on1, off1))
                print(f"#{r} enable {args.vfs}: outside {on0:.2f} s, inside {on1:.2f} s (x{on1 / on0:.2f});"
                      f" disable: outside {off0:.2f} s, inside {off1:.2f} s (x{off1 / off0:.2f})")
            (mnt / "sys/class/net/eth0/device/sriov_numvfs").write_text(f"{args.vfs}\n")
            t = time.perf_counter()
            subprocess.run(VFAKEFS + ["run", "--mnt", str(mnt), "--", "true"], check=True)
            run_s = time.perf_counter() - t
            print(f"vfakefs run -- true with {args.vfs + 1} links: {run_s:.2f} s")
            if args.json:
                med = [statistics.median(r[i] for r in runs) for i in range(4)]
                write_figures(args.json, "netns_vfs.py", [
                    figure(f"echo {args.vfs} > sriov_numvfs inside `vfakefs run`, median", med[2], "s",
                           baseline=med[0], baseline_what="outside any namespace"),
                    figure("echo 0 > sriov_numvfs inside `vfakefs run`, median", med[3], "s",
                           baseline=med[1], baseline_what="outside any namespace"),
                    figure(f"vfakefs run -- true with {args.vfs + 1} links", run_s, "s")], runs=runs)
        finally:
            subprocess.run(VFAKEFS + ["umount", "--lazy", str(mnt)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
