#!/usr/bin/env python3
"""One table of every figure `make bench` measured, beside its baseline and target.

Reads the JSON each bench script wrote with `--json DIR/NAME.json` (the "figures"
list of bench/figures.py) and prints the machine (date, kernel, CPU model and
count, from /proc/cpuinfo) and a Markdown table, ready to paste into the README:
figure, value, baseline (what it is), ratio, target, PASS or MISS. A script
whose JSON is missing (it failed, or does not exist in this checkout) or that
skipped a part gets a line saying so; the other figures are still printed.

    .venv/bin/python bench/summary.py [DIR]        (DIR: bench/results)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# the Makefile's order: JSON name -> the script that writes it
EXPECTED = {
    "read_rate": "read_rate",
    "read_rate_cache": "read_rate --cache",
    "mount_ready": "mount_ready",
    "whole_machine": "whole_machine",
    "sriov_scale": "sriov_scale",
    "walk_under_writes": "walk_under_writes",
    "translate": "translate",
    "latency_under_traffic": "latency_under_traffic",
    "held_write": "held_write",
    "sriov_cycles_memory": "sriov_cycles_memory",
    "vfio": "vfio",
    "netns_vfs": "netns_vfs",
    "request_cost": "request_cost",
}


def machine() -> dict:
    models, count = [], 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key.strip() == "processor":
                    count += 1
                elif key.strip() == "model name":
                    models.append(val.strip())
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(HERE), "log", "-1", "--format=%h %cs"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "kernel": platform.release(),
            "cpu_model": ", ".join(sorted(set(models))) or platform.machine(), "cpus": count or os.cpu_count(),
            "python": platform.python_version(), "commit": commit}


def fmt_value(v, unit: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if unit == "s":
        return f"{v * 1e3:.1f} ms" if abs(v) < 1 else f"{v:.2f} s"
    if unit in ("ops/s", "/s"):
        return f"{v / 1e6:.1f} M/s" if abs(v) >= 1e6 else f"{v:,.0f}/s"
    if abs(v) >= 100:
        num = f"{v:,.0f}"
    elif abs(v) >= 10 or v == int(v):
        num = f"{v:.1f}".rstrip("0").rstrip(".")
    else:
        num = f"{v:.3g}"
    return f"{num} {unit}".rstrip()


def fmt_ratio(r) -> str:
    if r is None:
        return "-"
    return f"{r:.3g}" if abs(r) < 100 else f"{r:,.0f}"


def verdict(ok) -> str:
    return "" if ok is None else ("PASS" if ok else "MISS")


def load(path: Path) -> tuple[dict | None, str | None]:
    try:
        with open(path) as f:
            return json.load(f), None
    except FileNotFoundError:
        return None, "no JSON: the script did not run, or failed"
    except (OSError, ValueError) as exc:
        return None, f"unreadable JSON: {exc}"


def mount_ready_figures(data: dict) -> list[dict]:
    """bench/mount_ready.py's JSON, written before it wrote a "figures" list."""
    from figures import figure
    return [figure(f"`vfakefs mount` to a ready mount ({data.get('topology', '?')}), median",
                   statistics.median(data["ready_s"]), "s", baseline=statistics.median(data["baseline_s"]),
                   baseline_what="python -c 'import trio, pyfuse3'", target=("ratio", "<=", data["target"]))]


# scripts whose JSON has no "figures" list: how to make one from what it has
ADAPTERS = {"mount_ready": mount_ready_figures}


def rows_of(name: str, label: str, data: dict | None, why: str | None) -> tuple[list[list[str]], list[str]]:
    notes = []
    if data is None:
        return [], [f"{label}: {why}"]
    if "figures" not in data and name in ADAPTERS:
        try:
            data = dict(data, figures=ADAPTERS[name](data))
        except (KeyError, TypeError, ValueError, statistics.StatisticsError) as exc:
            notes.append(f"{label}: its JSON could not be read as figures: {exc!r}")
    if data.get("skipped"):
        notes.append(f"{label}: skipped: {data['skipped']}")
    figs = data.get("figures")
    if figs is None:
        notes.append(f"{label}: its JSON has no figures (an older script?)")
        figs = []
    elif not figs and not data.get("skipped"):
        notes.append(f"{label}: no figures")
    for e in data.get("figures_errors") or []:
        notes.append(f"{label}: figure left out: {e}")
    rows = []
    for f in figs:
        unit = f.get("unit", "")
        base = "-"
        if f.get("baseline") is not None:
            base = fmt_value(f["baseline"], unit)
            if f.get("baseline_what"):
                base += f" ({f['baseline_what']})"
        rows.append([label, f.get("what", "?"), fmt_value(f.get("value"), unit), base,
                     fmt_ratio(f.get("ratio")), f.get("target") or "", verdict(f.get("ok"))])
    return rows, notes


def table(rows: list[list[str]]) -> list[str]:
    head = ["script", "figure", "value", "baseline (same run)", "ratio", "target", ""]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    right = {2, 4}

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    sep = "| " + " | ".join(("-" * (w - 1) + ":") if i in right else "-" * w for i, w in enumerate(widths)) + " |"
    return [line(head), sep] + [line(r) for r in rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", type=Path, default=HERE / "results")
    a = ap.parse_args(argv)
    names = {k: v for k, v in EXPECTED.items() if k != "mount_ready" or (HERE / "mount_ready.py").exists()}
    extra = sorted(p.stem for p in a.dir.glob("*.json") if p.stem not in names) if a.dir.is_dir() else []
    rows, notes = [], []
    for name in list(names) + extra:
        data, why = load(a.dir / f"{name}.json")
        r, n = rows_of(name, names.get(name, name), data, why)
        rows += r
        notes += n
    m = machine()
    print(f"\nvfakefs benchmarks, {m['date']}: kernel {m['kernel']}, {m['cpus']} x {m['cpu_model']}, "
          f"Python {m['python']}, commit {m['commit'] or '?'}; everything pinned to one CPU, "
          f"every baseline measured in the same run\n")
    if rows:
        print("\n".join(table(rows)))
    else:
        print("(no figures)")
    verdicts = [r[-1] for r in rows if r[-1]]
    print(f"\n{len(rows)} figures, {len(verdicts)} with a target: {verdicts.count('PASS')} PASS, "
          f"{verdicts.count('MISS')} MISS")
    for n in notes:
        print(f"note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
