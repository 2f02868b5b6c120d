#!/usr/bin/env python3
"""VT-d translation benchmark: DmarUnit.translate_batch (numpy, IOTLB first,
one gather per level for the misses) against the per-address walk,
DmarUnit.translate() in a Python loop, measured side by side in one run.

Setup: a DmarUnit with seed-vtd's CAP (48-bit, 4-level), one DMA domain, one
requester ID, a working set of 4 KiB pages mapped with an hpa that is not
2 MiB aligned (so every page is a level-1 leaf and a walk reads 4 entries).

Cases, each over a batch of --batch IOVAs (default 1,000,000):
  pattern  sequential (page after page through the working set, wrapping) or
           random (uniform page of the working set, random byte offset)
  iotlb    4096 or 65536 entries (`iommu_entries` / Iotlb(entries))
  state    cold: invalidate_global() before the batch (every IOVA walks)
           warm: the same batch run once beforehand (hits where the IOTLB holds it)
The per-address walk is translate() over --loop IOVAs (default 100,000) of the
same pattern, cold and warm, extrapolated to a rate.

Pin it (DESIGN.md, "Performance notes"):

    taskset -c 0 .venv/bin/python bench/translate.py [--batch N] [--loop N] [--pages N] [--json FILE]

Targets: >= 20 M translations/s batched, and >= 10x the per-address walk.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from vfakefs.model.intel.dmar import DmarUnit  # noqa: E402
from vfakefs.model.intel.pagetable import R, W  # noqa: E402

SEED_CAP = 0xD2078C406F0462
RID = 0x0200
IOVA_BASE = 0x10_0000_0000          # 64 GiB: L4 index 0, L3 index 64
HPA_BASE = 0x2_0000_1000            # 4 KiB aligned only: no superpages
TARGET_RATE = 20e6
TARGET_RATIO = 10.0


def make_unit(entries: int, pages: int) -> DmarUnit:
    u = DmarUnit(0, cap=SEED_CAP, iotlb_entries=entries)
    dom = u.new_domain("DMA")
    u.set_context(RID, dom)
    dom.table.map(IOVA_BASE, HPA_BASE, pages << 12, R | W)
    return u


def pattern(kind: str, n: int, pages: int, rng) -> np.ndarray:
    if kind == "sequential":
        page = np.arange(n, dtype=np.uint64) % np.uint64(pages)
        off = np.full(n, 0x80, dtype=np.uint64)
    else:
        page = rng.integers(0, pages, n, dtype=np.uint64)
        off = rng.integers(0, 4096, n, dtype=np.uint64)
    return np.uint64(IOVA_BASE) + (page << np.uint64(12)) + off


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run_batch(u: DmarUnit, iovas: np.ndarray, warm: bool, repeat: int) -> tuple[float, float]:
    """(seconds for the batch, IOTLB hit fraction of the measured batch)."""
    did = next(iter(u.domains))
    expect = np.uint64(HPA_BASE) + (iovas - np.uint64(IOVA_BASE))

    def once():
        if not warm:
            u.iotlb.invalidate_global()
        return u.translate_batch(RID, iovas, False)

    if warm:
        u.translate_batch(RID, iovas, False)
    h, r = once()
    assert not r.any() and (h == expect).all(), "translate_batch answered wrongly"
    hits0, miss0 = u.iotlb.hits[did], u.iotlb.misses[did]
    if warm:
        u.translate_batch(RID, iovas, False)
    else:
        once()
    hit_frac = (u.iotlb.hits[did] - hits0) / max(1, (u.iotlb.hits[did] - hits0) + (u.iotlb.misses[did] - miss0))
    return best_of(once, repeat), hit_frac


def run_loop(u: DmarUnit, iovas: np.ndarray, warm: bool, repeat: int) -> float:
    lst = [int(x) for x in iovas]
    tr = u.translate

    def once():
        if not warm:
            u.iotlb.invalidate_global()
        for a in lst:
            tr(RID, a)

    if warm:
        once()
    t = tr(RID, lst[0])
    assert t.hpa == HPA_BASE + lst[0] - IOVA_BASE
    return best_of(once, repeat)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=1_000_000, help="IOVAs per translate_batch call")
    ap.add_argument("--loop", type=int, default=100_000, help="IOVAs for the per-address translate() loop")
    ap.add_argument("--pages", type=int, default=16384, help="working set in 4 KiB pages (default 64 MiB)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", metavar="FILE", help="also write results as JSON")
    a = ap.parse_args(argv)

    rng = np.random.default_rng(a.seed)
    rows = []
    for kind in ("sequential", "random"):
        big = pattern(kind, a.batch, a.pages, rng)
        small = big[:a.loop]
        for entries in (4096, 65536):
            for warm in (False, True):
                u = make_unit(entries, a.pages)
                tb, hit = run_batch(u, big, warm, a.repeat)
                u = make_unit(entries, a.pages)
                tl = run_loop(u, small, warm, max(1, a.repeat - 1))
                rate_b, rate_l = a.batch / tb, a.loop / tl
                rows.append({"pattern": kind, "iotlb_entries": entries, "state": "warm" if warm else "cold",
                             "batch_per_s": rate_b, "loop_per_s": rate_l, "ratio": rate_b / rate_l,
                             "batch_hit_fraction": hit, "batch_seconds": tb, "loop_seconds": tl})

    cpu = os.sched_getaffinity(0)
    print(f"translate_batch of {a.batch:,} IOVAs vs translate() x {a.loop:,} (extrapolated); "
          f"working set {a.pages:,} pages ({a.pages * 4 // 1024} MiB), 4-level, best of {a.repeat}; "
          f"CPUs {sorted(cpu)}")
    hdr = f"{'pattern':<11}{'IOTLB':>7} {'state':<5}{'hits':>7}{'batched /s':>15}{'per-address /s':>16}{'ratio':>8}  targets"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        ok = ("ok" if r["batch_per_s"] >= TARGET_RATE else "RATE") + \
             ("/ok" if r["ratio"] >= TARGET_RATIO else "/RATIO")
        print(f"{r['pattern']:<11}{r['iotlb_entries']:>7} {r['state']:<5}{r['batch_hit_fraction']:>7.0%}"
              f"{r['batch_per_s']:>15,.0f}{r['loop_per_s']:>16,.0f}{r['ratio']:>7.0f}x  {ok}")
    worst = min(rows, key=lambda r: r["batch_per_s"])
    print(f"\nslowest batched case: {worst['pattern']} / {worst['iotlb_entries']} / {worst['state']}: "
          f"{worst['batch_per_s'] / 1e6:.1f} M/s (target {TARGET_RATE / 1e6:.0f} M/s); "
          f"lowest ratio {min(r['ratio'] for r in rows):.0f}x (target {TARGET_RATIO:.0f}x)")
    report = {"batch": a.batch, "loop": a.loop, "pages": a.pages, "repeat": a.repeat, "cpus": sorted(cpu),
              "targets": {"batch_per_s": TARGET_RATE, "ratio": TARGET_RATIO}, "rows": rows,
              "met": all(r["batch_per_s"] >= TARGET_RATE and r["ratio"] >= TARGET_RATIO for r in rows)}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
        print(f"\nJSON written to {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
