#!/usr/bin/env python3
"""Whole-machine walks: `lspci -nn` and `ls -lR` over every function of 8 PFs x 256 VFs.

Everything in one run, this script, the daemon and every program it starts pinned
to one CPU (DESIGN.md, "Performance notes"), each figure beside its baseline of
the same run:
 1. bench/sriov_scale.py's generated topology (a host bridge, --pfs root ports with
    ACS, an ixgbe PF under each with --vfs-per-pf VFs: 2,065 functions at the
    defaults), mounted (`vfakefs mount -t TOML MNT`, and `--cache` when
    `vfakefs mount --help` lists it), every PF's VFs enabled through the mount.
 2. For each mode and each command, on a fresh mount (so the first walk finds the
    kernel's caches empty): the command --walks times, the first walk and the
    second reported apart. The commands:
      lspci       lspci -A linux-sysfs -O sysfs.path=MNT/sys/bus/pci -O hwdb.disable=1
                  -i tests/reference/pci.ids -nn     (names pinned as the tests pin them,
                                                      tests/fidelity/capture.py)
      ls_bus      ls -lR MNT/sys/bus/pci/devices/    (2,065 symlinks: lstat, readlink each)
      ls_devices  ls -lR MNT/sys/devices/            (the whole tree: ~130,000 files)
    With the `requests` control (MNT/sys/kernel/debug/vfakefs/requests: FUSE requests
    by opcode), the requests each walk cost, per function (the control's own read,
    measured beside it, taken off).
 3. The baseline: a tmpfs copy of the same tree (sys/devices and sys/bus, made with
    bench/read_rate.py's copy_tree, from the first mount after its walks), the same
    commands over it; lspci's output over the copy is compared with the mount's.
 4. The floor: bench/pyfuse3_tree.py, a minimal pyfuse3 + trio server that reads the
    copy into dicts at start and answers every request with a dict lookup (strict
    twin: st_size 4096, direct_io; cached twin, --keep-cache: the content's length,
    keep_cache; the kernel caches vfakefs asks for), mounted over the copy for each
    mode and command as vfakefs is (pinned, a fresh mount per command), the same
    walks, and its request counts (it serves them at the control's path). Its lspci
    output is compared with the copy's too; vfakefs / minimal is what vfakefs's own
    code costs.

Every mount is undone in `finally`. Run as root (tmpfs and FUSE mounts):

    taskset -c 0 .venv/bin/python bench/whole_machine.py [--pfs 8] [--vfs-per-pf 256] [--no-minimal] [--json FILE]
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import figure, write as write_figures  # noqa: E402
from read_rate import (cleanup_workdir, copy_tree, end_processes, mount_has_option, mounted_at,  # noqa: E402
                       umount_tmpfs, warn)
from sriov_scale import (Mount, _raise_interrupt, numvfs_path, report_failure, scale_topology,  # noqa: E402
                         sriov_pfs, write_attr)

REPO = Path(__file__).resolve().parent.parent
PCI_IDS = REPO / "tests" / "reference" / "pci.ids"
MINIMAL = Path(__file__).resolve().parent / "pyfuse3_tree.py"
MINIMAL_WHAT = "minimal pyfuse3 over the same tree"
REQUESTS = "sys/kernel/debug/vfakefs/requests"
REQUESTS_PATH = [REQUESTS]      # --requests

COMMANDS = {
    # name: (what, argv for a root)
    "lspci": ("lspci -nn", lambda root: [
        "lspci", "-A", "linux-sysfs", "-O", f"sysfs.path={root}/sys/bus/pci", "-O", "hwdb.disable=1",
        "-i", str(PCI_IDS), "-nn"]),
    "ls_bus": ("ls -lR MNT/sys/bus/pci/devices/", lambda root: ["ls", "-lR", f"{root}/sys/bus/pci/devices/"]),
    "ls_devices": ("ls -lR MNT/sys/devices/", lambda root: ["ls", "-lR", f"{root}/sys/devices/"]),
}

# issue 13, at 8 PFs x 256 VFs (2,065 functions), the first walk of a fresh mount. The
# `ls -lR` target is the tree lspci walks, bus/pci/devices/ (what sriov_scale.py's
# `ls -R` walked): ls -lR of all of sys/devices (~130,000 files) takes seconds on tmpfs.
TARGETS_S = {("lspci", "strict"): 1.5, ("lspci", "cached"): 1.0, ("ls_bus", "cached"): 1.0}


def parse_counts(text: str) -> dict[str, int]:
    """The `requests` control's counts, whatever its layout: `NAME N` lines or
    `NAME=N` words (prefixed by the line's first word when that is no count)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        words = line.replace(":", " ").split()
        if len(words) == 2 and re.fullmatch(r"\d+", words[1]):
            out[words[0]] = int(words[1])
            continue
        head = words[0] if words and "=" not in words[0] else ""
        for w in words:
            k, eq, v = w.partition("=")
            if eq and re.fullmatch(r"\d+", v):
                out[f"{head} {k}".strip()] = int(v)
    return out


def read_requests(root: Path) -> dict[str, int] | None:
    try:
        return parse_counts((root / REQUESTS_PATH[0]).read_text())
    except OSError:
        return None


def delta(a: dict, b: dict, minus: dict | None = None) -> dict[str, int]:
    d = {k: b.get(k, 0) - a.get(k, 0) - (minus or {}).get(k, 0) for k in set(a) | set(b)}
    return {k: v for k, v in sorted(d.items()) if v}


def walk(root: Path, cmd: str, out: Path, counted: bool) -> dict:
    """One run of the command, timed; its stdout to out; the requests it cost."""
    before = own = None
    if counted:
        r0 = read_requests(root)
        before = read_requests(root)
        own = delta(r0, before) if r0 is not None and before is not None else None
    with open(out, "wb") as f:
        t0 = time.perf_counter()
        r = subprocess.run(COMMANDS[cmd][1](root), stdout=f, stderr=subprocess.PIPE, timeout=1200)
        took = time.perf_counter() - t0
    res = {"s": took, "rc": r.returncode, "stderr_lines": len(r.stderr.splitlines()),
           "stderr_head": r.stderr.decode(errors="replace").splitlines()[:3],
           "stdout_lines": out.read_bytes().count(b"\n")}
    if before is not None:
        after = read_requests(root)
        if after is not None:
            res["requests"] = delta(before, after, own)
    return res


def mounted_walks(a, work: Path, topo: Path, pfs: list[str], mode: str, cmd: str, n_functions: int,
                  copy_to: Path | None) -> dict:
    """A fresh mount, every VF enabled, the command --walks times; then the copy."""
    mnt = Mount(work / f"mnt-{mode}-{cmd}", str(topo), a.cpu, work / f"mount-{mode}-{cmd}.log")
    if mode == "cached":
        mnt.mount_args = ["--cache"]
    res: dict = {}
    try:
        res["mount_s"] = mnt.mount()
        res["enable_s"] = [write_attr(numvfs_path(mnt.mnt, pf), b"%d\n" % a.vfs_per_pf)["write_s"] for pf in pfs]
        listed = len(os.listdir(mnt.mnt / "sys/bus/pci/devices"))
        if listed != n_functions:
            raise RuntimeError(f"{listed} functions listed after enabling, {n_functions} expected")
        counted = read_requests(mnt.mnt) is not None
        res["walks"] = [walk(mnt.mnt, cmd, work / f"out-{mode}-{cmd}-{i}", counted) for i in range(a.walks)]
        if copy_to is not None:
            stats = {k: 0 for k in ("dirs", "files", "links", "bytes", "write_only_skipped",
                                    "other_skipped", "errors")}
            t0 = time.perf_counter()
            (copy_to / "sys").mkdir()
            for part in ("devices", "bus"):
                copy_tree(mnt.mnt / "sys" / part, copy_to / "sys" / part, stats)
            stats["seconds"] = time.perf_counter() - t0
            stats.pop("error_paths", None)
            res["copy"] = stats
    finally:
        mnt.umount()
    return res


def minimal_walks(a, work: Path, tree: Path, pfs: list[str], mode: str, cmd: str, n_functions: int) -> dict:
    """bench/pyfuse3_tree.py over the copy, a fresh mount, the command --walks times."""
    from vfakefs.fuse.files import MAX_TASKS
    mnt, log = work / f"min-{mode}-{cmd}", work / f"min-{mode}-{cmd}.log"
    mnt.mkdir()
    argv = ["taskset", "-c", str(a.cpu), sys.executable, str(MINIMAL), str(tree), str(mnt), "--max-tasks",
            str(MAX_TASKS), "--requests", REQUESTS_PATH[0], *(["--keep-cache"] if mode == "cached" else [])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    res: dict = {}
    try:
        t0, deadline = time.perf_counter(), time.monotonic() + 120
        while not mounted_at(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("pyfuse3_tree.py did not mount: " + log.read_text(errors="replace")[-2000:])
            time.sleep(0.01)
        res["mount_s"] = time.perf_counter() - t0   # reading the whole copy first
        # as mounted_walks: the paths its enabling walked (the PFs' links), then this listing
        for pf in pfs:
            os.stat(numvfs_path(mnt, pf))
        listed = len(os.listdir(mnt / "sys/bus/pci/devices"))
        if listed != n_functions:
            raise RuntimeError(f"{listed} functions listed by the minimal server, {n_functions} expected")
        counted = read_requests(mnt) is not None
        res["walks"] = [walk(mnt, cmd, work / f"out-min-{mode}-{cmd}-{i}", counted) for i in range(a.walks)]
    finally:
        proc.send_signal(signal.SIGTERM)   # it unmounts, then exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            end_processes([proc.pid])
        if mounted_at(mnt):
            warn(f"pyfuse3_tree.py left {mnt} mounted; fusermount3 -u -z")
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], timeout=30)
        if not mounted_at(mnt):
            mnt.rmdir()
    return res


def run(a, work: Path, rep: dict) -> None:
    from vfakefs.model import topology
    topo = work / "whole-machine.toml"
    topo.write_text(scale_topology(a.pfs, a.vfs_per_pf))
    m = topology.load(str(topo))
    pfs = [pf.name for pf in sriov_pfs(m)]
    n_functions = len(m.functions) + a.pfs * a.vfs_per_pf
    modes = ["strict"]
    if not a.no_cache:
        if mount_has_option("--cache"):
            modes.append("cached")
        else:
            rep["cached_skipped"] = "`vfakefs mount` has no --cache option"
    rep.update(functions=n_functions, pfs=pfs, modes=modes, commands=a.commands,
               requests_control=None)
    tmp = work / "tmpfs"
    tmp.mkdir()
    # ~60 files a function, a page of tmpfs each: 2,065 functions need more than
    # read_rate.py's mount_tmpfs (512m) holds
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4g,mode=0755", "vfakefs-bench", str(tmp)], check=True)
    try:
        copy_to = None if a.no_baseline else tmp
        for mode in modes:
            for cmd in a.commands:
                r = mounted_walks(a, work, topo, pfs, mode, cmd, n_functions, copy_to)
                rep.setdefault("mounts", {}).setdefault(mode, {})[cmd] = r
                if "copy" in r:
                    rep["tmpfs_copy"] = r.pop("copy")
                    copy_to = None
                if any("requests" in w for w in r["walks"]):
                    rep["requests_control"] = REQUESTS_PATH[0]
        if not a.no_baseline and not a.no_minimal:
            try:
                for mode in modes:
                    for cmd in a.commands:
                        rep.setdefault("minimal", {}).setdefault(mode, {})[cmd] = minimal_walks(
                            a, work, tmp, pfs, mode, cmd, n_functions)
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                rep["minimal_failed"] = f"{mode} {cmd}: {exc!r}"   # vfakefs's figures stand without it
        if not a.no_baseline:
            rep["tmpfs"] = {cmd: [walk(tmp, cmd, work / f"out-tmpfs-{cmd}-{i}", False) for i in range(a.walks)]
                            for cmd in a.commands}
            if "lspci" in a.commands:
                copy = (work / "out-tmpfs-lspci-0").read_bytes()
                rep["lspci_same_output"] = {f"{mode} walk {i + 1}":
                                            (work / f"out-{mode}-lspci-{i}").read_bytes() == copy
                                            for mode in modes for i in range(a.walks)}
                if "minimal" in rep and "minimal_failed" not in rep:
                    rep["lspci_same_output_minimal"] = {
                        f"{mode} walk {i + 1}": (work / f"out-min-{mode}-lspci-{i}").read_bytes() == copy
                        for mode in modes for i in range(a.walks)}
    finally:
        umount_tmpfs(tmp)


def second(walks: list[dict]) -> float | None:
    """The later walks: the second, or the median of the second and after."""
    later = [w["s"] for w in walks[1:]]
    return statistics.median(later) if later else None


def per_function(w: dict, n: int) -> float | None:
    """All requests of a walk per function (the control's own total, if it has one)."""
    if "requests" not in w:
        return None
    r = w["requests"]
    total = [v for k, v in r.items() if k.split()[-1].lower() in ("total", "all")]
    return (total[0] if total else sum(r.values())) / n


def whole_figures(a, rep: dict) -> list[dict]:
    figs = []
    n = rep["functions"]
    issue = a.pfs == 8 and a.vfs_per_pf == 256
    base, floor = rep.get("tmpfs", {}), rep.get("minimal", {})
    on_tmpfs = "tmpfs copy, same command"
    on_floor = "minimal pyfuse3, same tree and command"
    for mode, cmds in rep.get("mounts", {}).items():
        for cmd, r in cmds.items():
            what, ws, tw = COMMANDS[cmd][0], r["walks"], base.get(cmd)
            mw = floor.get(mode, {}).get(cmd, {}).get("walks")
            limit = TARGETS_S.get((cmd, mode)) if issue else None
            figs.append(figure(f"{what}, {n:,} functions, {mode}, first walk", ws[0]["s"], "s",
                               baseline=tw[0]["s"] if tw else None, baseline_what=on_tmpfs if tw else None,
                               target=("value", "<", limit) if limit else None))
            if len(ws) > 1:
                figs.append(figure(f"{what}, {n:,} functions, {mode}, second walk", second(ws), "s",
                                   baseline=second(tw) if tw else None, baseline_what=on_tmpfs if tw else None))
            # the floor: its time beside tmpfs's, and vfakefs's beside it (the ratio is vfakefs's own code)
            for walk_name, pick in (("first", lambda w: w[0]["s"]), ("second", second)):
                if not mw or (walk_name == "second" and len(ws) < 2):
                    continue
                figs.append(figure(f"{what}, {n:,} functions, {mode}, {walk_name} walk: {MINIMAL_WHAT}", pick(mw),
                                   "s", baseline=pick(tw) if tw else None, baseline_what=on_tmpfs if tw else None))
                figs.append(figure(f"{what}, {n:,} functions, {mode}, {walk_name} walk: vfakefs against "
                                   "minimal pyfuse3", pick(ws), "s", baseline=pick(mw), baseline_what=on_floor))
            for i, w in enumerate(ws[:2]):
                v = per_function(w, n)
                if v is not None:
                    figs.append(figure(f"{what}, {mode}, {('first', 'second')[i]} walk: FUSE requests per function",
                                       v, "req"))
            for i, w in enumerate((mw or [])[:2]):
                v = per_function(w, n)
                if v is not None:
                    figs.append(figure(f"{what}, {mode}, {('first', 'second')[i]} walk: FUSE requests per function, "
                                       f"{MINIMAL_WHAT}", v, "req"))
    return figs


def fmt(v: float | None) -> str:
    return "-" if v is None else (f"{v * 1e3:.0f} ms" if v < 1 else f"{v:.2f} s")


def print_report(a, rep: dict) -> None:
    n = rep["functions"]
    print(f"whole machine: {a.pfs} PFs x {a.vfs_per_pf} VFs = {n:,} functions; this script, the daemon and "
          f"every command pinned to CPU {a.cpu}; a fresh mount per mode and command, every VF enabled")
    if rep.get("cached_skipped"):
        print(f"cached mode skipped: {rep['cached_skipped']}")
    c = rep.get("tmpfs_copy")
    if c:
        print(f"tmpfs copy (sys/devices, sys/bus): {c['files']:,} files, {c['links']:,} links, {c['dirs']:,} dirs, "
              f"{c['errors']} unreadable, {c['write_only_skipped']} write-only skipped, in {c['seconds']:.1f} s")
    print(f"requests control: {rep['requests_control'] or 'absent (no request counts)'}")
    if rep.get("minimal_failed"):
        print(f"minimal pyfuse3 server (bench/pyfuse3_tree.py) FAILED at {rep['minimal_failed']}")
    head = (f"{'command':<34}{'mode':<8}{'first':>9}{'second':>9}{'tmpfs 1st':>11}{'tmpfs 2nd':>11}"
            f"{'1st/tmpfs':>10}{'req/fn 1st':>11}{'2nd':>7}  rc, lines")
    print("\n" + head)
    print("-" * len(head))
    base, floor = rep.get("tmpfs", {}), rep.get("minimal", {})
    for mode, cmds in rep.get("mounts", {}).items():
        for cmd, r in cmds.items():
            tw, m = base.get(cmd), floor.get(mode, {}).get(cmd)
            print_row(COMMANDS[cmd][0], mode, r["walks"], tw, n)
            print(f"    mount {fmt(r['mount_s'])}, enabling {fmt(sum(r['enable_s']))}")
            if m:
                print_row("  minimal pyfuse3, same tree", mode, m["walks"], tw, n)
                ws, mw = r["walks"], m["walks"]
                print(f"    mount (reading the copy) {fmt(m['mount_s'])}; vfakefs / minimal: "
                      f"first walk {ws[0]['s'] / mw[0]['s']:.2f}"
                      + (f", second {second(ws) / second(mw):.2f}" if len(ws) > 1 else ""))
    for key, what in (("lspci_same_output", "the mount"), ("lspci_same_output_minimal", "the minimal pyfuse3 server")):
        same = rep.get(key, {})
        if same:
            print(f"\nlspci -nn over {what}, every walk, against over the tmpfs copy: "
                  + ("the same output" if all(same.values()) else
                     "DIFFERENT output in " + ", ".join(k for k, v in same.items() if not v)))


def print_row(label: str, mode: str, ws: list[dict], tw: list[dict] | None, n: int) -> None:
    """One server's walks of one command: its times beside tmpfs's, its requests per function."""
    ratio = ws[0]["s"] / tw[0]["s"] if tw else None
    rq = [per_function(w, n) for w in ws[:2]] + [None]
    print(f"{label:<34}{mode:<8}{fmt(ws[0]['s']):>9}{fmt(second(ws)):>9}"
          f"{fmt(tw[0]['s'] if tw else None):>11}{fmt(second(tw) if tw else None):>11}"
          + (f"{ratio:>10.1f}" if ratio else f"{'-':>10}")
          + "".join(f"{v:>{w}.1f}" if v is not None else f"{'-':>{w}}" for v, w in zip(rq, (11, 7)))
          + f"  {ws[0]['rc']}, {ws[0]['stdout_lines']:,}")
    for w in ws[:1]:
        if w["stderr_lines"]:
            print(f"    stderr ({w['stderr_lines']} lines): {' | '.join(w['stderr_head'])}")
    if "requests" in ws[0]:
        print("    first walk's requests: " + (", ".join(f"{k} {v:,}" for k, v in ws[0]["requests"].items())
                                              or "none counted"))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", type=int, default=0, help="CPU for everything (0)")
    ap.add_argument("--pfs", type=int, default=8, help="PFs in the generated topology (8)")
    ap.add_argument("--vfs-per-pf", type=int, default=256, help="VFs per PF (256)")
    ap.add_argument("--walks", type=int, default=2, help="walks per mount: the first, then the later ones (2)")
    ap.add_argument("--commands", nargs="+", choices=list(COMMANDS), default=list(COMMANDS))
    ap.add_argument("--no-cache", action="store_true", help="strict mode only")
    ap.add_argument("--no-baseline", action="store_true",
                    help="no tmpfs copy and no walks over it (nor over the minimal server)")
    ap.add_argument("--no-minimal", action="store_true",
                    help="no walks over the minimal pyfuse3 server (bench/pyfuse3_tree.py)")
    ap.add_argument("--requests", default=REQUESTS, metavar="PATH",
                    help=f"the request-count control, relative to the mount ({REQUESTS})")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON (bench/figures.py)")
    a = ap.parse_args(argv)
    REQUESTS_PATH[0] = a.requests.lstrip("/")
    if a.walks < 1 or a.pfs < 1 or a.vfs_per_pf < 1:
        ap.error("counts must be >= 1")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    os.sched_setaffinity(0, {a.cpu})
    if os.geteuid() != 0:
        print("whole_machine.py needs root (tmpfs and FUSE mounts)", file=sys.stderr)
        return 2
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    work = Path(tempfile.mkdtemp(prefix="vfakefs-whole-"))
    rep: dict = {"config": vars(a), "cpu": a.cpu}
    code = 0
    try:
        run(a, work, rep)
        print_report(a, rep)
    except BaseException as exc:   # noqa: BLE001 - report, clean up, exit non-zero
        report_failure("whole_machine.py", exc, work)
        code = 1
    finally:
        try:
            cleanup_workdir(work)
        except BaseException as exc:   # noqa: BLE001 - go on
            warn(f"cleanup failed: {exc!r}")
    if a.json:
        figs = whole_figures(a, rep) if code == 0 else []
        write_figures(a.json, "whole_machine.py", figs, report=rep,
                      **({"skipped": "the run failed"} if code else {}))
    return code


if __name__ == "__main__":
    sys.exit(main())
