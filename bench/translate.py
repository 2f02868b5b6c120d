#!/usr/bin/env python3
"""VT-d translation benchmark: DmarUnit.translate_batch (numpy, IOTLB first,
one gather per level for the misses) against the per-address walk,
DmarUnit.translate() in a Python loop, measured side by side in one run.

Equal work: both arms translate the SAME sequence of --n IOVAs, each run starting
from the SAME IOTLB contents (restored from one snapshot before every run), and
each arm's IOTLB hit fraction over its measured run is printed beside its rate.
The cases are chosen so that the hits cannot differ between the arms:
  cold   every IOVA is on a page of its own (--n distinct pages, mapped), IOTLB
         empty: every translation is a compulsory miss and walks 4 levels
  warm   a working set exactly the IOTLB's size (its pages map to distinct
         slots), loaded by one pass beforehand: every translation hits
A row whose two hit fractions differ is marked UNEQUAL (the ratio is then not a
like-for-like figure). Why the cases are these: translate_batch looks a whole
chunk (walk.CHUNK = 16,384 IOVAs) up in the IOTLB before it fills it, so with a
working set larger than the IOTLB its hits are not those of one-at-a-time
translation (a sequential pass over 16,384 pages with 4,096 entries: about 25%
batched, 0% one at a time); --mixed adds those cases, marked, for reference.

Setup: a DmarUnit with seed-vtd's CAP (48-bit, 4-level), one DMA domain, one
requester ID, 4 KiB pages mapped with an hpa that is not 2 MiB aligned (so every
page is a level-1 leaf and a walk reads 4 entries).

Cases: pattern sequential (page after page, wrapping; byte 0x80 of each) or
random (a random page, or for cold a random order of the distinct pages, and a
random byte offset) x IOTLB 4096 or 65536 entries x cold or warm.

The ATC arm (--atc-n, printed after the table): a device with ATS enabled (its context
entry TT Device-TLB, an ATC of intel/atc.py's size) against the IOMMU alone, over the SAME
--atc-n DMAs on a working set of exactly the ATC's pages (consecutive: no conflicts), both
warm (the ATC, and the IOTLB, loaded by one pass): DMAs per second answered by the
device's ATC (atc.translate_batch / atc.translate) against the IOTLB lookup of the unit
(translate_batch / translate), batched and one at a time, with each arm's hit fraction.

Pin it (DESIGN.md, "Performance notes"):

    taskset -c 0 .venv/bin/python bench/translate.py [--n N] [--repeat N] [--mixed] [--json FILE]

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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from vfakefs.model.intel import atc as atc_mod  # noqa: E402
from vfakefs.model.intel.dmar import DmarUnit  # noqa: E402
from vfakefs.model.intel.pagetable import R, W  # noqa: E402
from figures import figure  # noqa: E402

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


def sequence(kind: str, state: str, n: int, pages: int, rng) -> np.ndarray:
    """n IOVAs: cold, one per distinct page (pages == n); warm, over the working set."""
    if kind == "sequential":
        page = np.arange(n, dtype=np.uint64) % np.uint64(pages)
        off = np.full(n, 0x80, dtype=np.uint64)
    else:
        page = (rng.permutation(n).astype(np.uint64) if state == "cold"
                else rng.integers(0, pages, n, dtype=np.uint64))
        off = rng.integers(0, 4096, n, dtype=np.uint64)
    return np.uint64(IOVA_BASE) + (page << np.uint64(12)) + off


def best_of(fn, repeat: int, setup=None) -> float:
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(u: DmarUnit, snapshot, run, repeat: int) -> tuple[float, float]:
    """(best seconds, IOTLB hit fraction of one run), the IOTLB restored to
    snapshot before every run (untimed) so each run, and each arm, starts alike."""
    did = next(iter(u.domains))
    tlb = u.iotlb

    def restore():
        tlb.tags[:], tlb.data[:] = snapshot

    restore()
    h0, m0 = tlb.hits[did], tlb.misses[did]
    run()
    hits, misses = tlb.hits[did] - h0, tlb.misses[did] - m0
    return best_of(run, repeat, restore), hits / max(1, hits + misses)


def case(kind: str, entries: int, state: str, n: int, repeat: int, rng) -> dict:
    pages = n if state == "cold" else entries if state == "warm" else 4 * entries
    u = make_unit(entries, pages)
    iovas = sequence(kind, state, n, pages, rng)
    if state != "cold":              # warm and mixed: one pass over the working set first
        u.translate_batch(RID, np.uint64(IOVA_BASE) + (np.arange(pages, dtype=np.uint64) << np.uint64(12)))
    snapshot = (u.iotlb.tags.copy(), u.iotlb.data.copy())
    expect = np.uint64(HPA_BASE) + (iovas - np.uint64(IOVA_BASE))
    h, r = u.translate_batch(RID, iovas, False)
    assert not r.any() and (h == expect).all(), "translate_batch answered wrongly"
    lst = [int(x) for x in iovas]
    tr = u.translate
    assert all(tr(RID, a).hpa == HPA_BASE + a - IOVA_BASE for a in lst[:1000]), "translate answered wrongly"

    def loop():
        for a in lst:
            tr(RID, a)

    tb, hit_b = measure(u, snapshot, lambda: u.translate_batch(RID, iovas, False), repeat)
    tl, hit_l = measure(u, snapshot, loop, max(1, repeat - 1))
    return {"pattern": kind, "iotlb_entries": entries, "state": state, "pages": pages,
            "batch_per_s": n / tb, "loop_per_s": n / tl, "ratio": tl / tb,
            "batch_hit_fraction": hit_b, "loop_hit_fraction": hit_l,
            "equal_work": abs(hit_b - hit_l) < 0.005, "batch_seconds": tb, "loop_seconds": tl}


def atc_case(n: int, repeat: int, rng) -> list[dict]:
    """The ATC arm: the same DMAs answered by the device's warm ATC, and by the unit's warm IOTLB."""
    pages = atc_mod.ATC_ENTRIES
    u = DmarUnit(0, cap=SEED_CAP, ecap=0xF050DE, iotlb_entries=4096)
    dom = u.new_domain("DMA")
    u.ats_rids.add(RID)                                  # ats_supported: the context says Device-TLB
    u.set_context(RID, dom)
    dom.table.map(IOVA_BASE, HPA_BASE, pages << 12, R | W)
    atc = u.atcs[RID] = atc_mod.Atc()
    iovas = np.uint64(IOVA_BASE) + (rng.integers(0, pages, n, dtype=np.uint64) << np.uint64(12)) + \
        rng.integers(0, 4096, n, dtype=np.uint64)
    every = np.uint64(IOVA_BASE) + (np.arange(pages, dtype=np.uint64) << np.uint64(12))
    atc_mod.translate_batch(u, RID, every, False)       # warm: the ATC and the IOTLB hold every page
    expect = np.uint64(HPA_BASE) + (iovas - np.uint64(IOVA_BASE))
    h, r = atc_mod.translate_batch(u, RID, iovas, False)
    h2, r2 = u.translate_batch(RID, iovas, False)
    assert not r.any() and not r2.any() and (h == expect).all() and (h2 == expect).all(), "wrong answers"
    lst = [int(x) for x in iovas]
    did = dom.did
    rows = []
    for how, via_atc, via_unit, reps in (
            ("batched", lambda: atc_mod.translate_batch(u, RID, iovas, False),
             lambda: u.translate_batch(RID, iovas, False), repeat),
            ("one at a time", lambda: [atc_mod.translate(u, RID, a) for a in lst],
             lambda: [u.translate(RID, a) for a in lst], max(1, repeat - 1))):
        a0, m0 = atc.hits, atc.misses
        t_atc = best_of(via_atc, reps)
        atc_hit = (atc.hits - a0) / max(1, atc.hits - a0 + atc.misses - m0)
        i0, j0 = u.iotlb.hits[did], u.iotlb.misses[did]
        t_unit = best_of(via_unit, reps)
        iotlb_hit = (u.iotlb.hits[did] - i0) / max(1, u.iotlb.hits[did] - i0 + u.iotlb.misses[did] - j0)
        rows.append({"how": how, "pages": pages, "atc_per_s": n / t_atc, "iotlb_per_s": n / t_unit,
                     "atc_hit_fraction": atc_hit, "iotlb_hit_fraction": iotlb_hit, "ratio": t_unit / t_atc})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="IOVAs each arm translates (the same sequence)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N (the per-address arm: N-1)")
    ap.add_argument("--mixed", action="store_true",
                    help="also a working set 4x the IOTLB, where the arms' hits differ (reference only)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--atc-n", type=int, default=200_000, help="DMAs of the ATC arm (0: skip it)")
    ap.add_argument("--json", metavar="FILE", help="also write results as JSON")
    a = ap.parse_args(argv)

    rng = np.random.default_rng(a.seed)
    states = ("cold", "warm", "mixed") if a.mixed else ("cold", "warm")
    rows = [case(kind, entries, state, a.n, a.repeat, rng)
            for kind in ("sequential", "random") for entries in (4096, 65536) for state in states]

    cpu = os.sched_getaffinity(0)
    print(f"translate_batch vs translate() one at a time, both over the same {a.n:,} IOVAs from the "
          f"same IOTLB contents; 4-level tables, best of {a.repeat} (per-address: {max(1, a.repeat - 1)}); "
          f"CPUs {sorted(cpu)}")
    print("cold: a distinct page per IOVA, IOTLB empty (all walk); warm: working set = IOTLB size, "
          "loaded (all hit); mixed: working set 4x the IOTLB, warm")
    hdr = (f"{'pattern':<11}{'IOTLB':>7} {'state':<6}{'pages':>8}{'hits batched':>14}{'hits 1-by-1':>13}"
           f"{'batched /s':>13}{'per-address /s':>16}{'ratio':>8}  targets")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        ok = ("ok" if r["batch_per_s"] >= TARGET_RATE else "RATE") + \
             ("/ok" if r["ratio"] >= TARGET_RATIO else "/RATIO")
        if not r["equal_work"]:
            ok += "  UNEQUAL hits: not like for like"
        print(f"{r['pattern']:<11}{r['iotlb_entries']:>7} {r['state']:<6}{r['pages']:>8,}"
              f"{r['batch_hit_fraction']:>14.1%}{r['loop_hit_fraction']:>13.1%}"
              f"{r['batch_per_s']:>13,.0f}{r['loop_per_s']:>16,.0f}{r['ratio']:>7.0f}x  {ok}")
    equal = [r for r in rows if r["state"] != "mixed"]
    if equal:
        worst = min(equal, key=lambda r: r["batch_per_s"])
        print(f"\ncold and warm rows: slowest batched {worst['pattern']} / {worst['iotlb_entries']} / "
              f"{worst['state']}: {worst['batch_per_s'] / 1e6:.1f} M/s (target {TARGET_RATE / 1e6:.0f} M/s); "
              f"lowest ratio {min(r['ratio'] for r in equal):.0f}x (target {TARGET_RATIO:.0f}x)")
    atc_rows = atc_case(a.atc_n, a.repeat, rng) if a.atc_n else []
    if atc_rows:
        print(f"\nATC arm: {a.atc_n:,} DMAs at random offsets over {atc_rows[0]['pages']} pages (the ATC's "
              f"size), both warm, the same DMAs in each arm")
        hdr = f"{'':<15}{'ATC hits':>10}{'device ATC /s':>16}{'IOTLB hits':>12}{'IOMMU (IOTLB) /s':>18}{'ratio':>8}"
        print(hdr)
        print("-" * len(hdr))
        for r in atc_rows:
            print(f"{r['how']:<15}{r['atc_hit_fraction']:>10.1%}{r['atc_per_s']:>16,.0f}"
                  f"{r['iotlb_hit_fraction']:>12.1%}{r['iotlb_per_s']:>18,.0f}{r['ratio']:>7.1f}x")
    report = {"n": a.n, "repeat": a.repeat, "cpus": sorted(cpu), "atc": atc_rows,
              "targets": {"batch_per_s": TARGET_RATE, "ratio": TARGET_RATIO}, "rows": rows,
              "met": all(r["batch_per_s"] >= TARGET_RATE and r["ratio"] >= TARGET_RATIO for r in equal)}
    report["figures"] = [
        figure(f"translate_batch, {r['pattern']}, IOTLB {r['iotlb_entries']}, {r['state']}",
               r["batch_per_s"], "/s", baseline=r["loop_per_s"], baseline_what="translate() one at a time",
               target=[("value", ">=", TARGET_RATE), ("ratio", ">=", TARGET_RATIO)]
               if r["equal_work"] and r["state"] != "mixed" else None) for r in rows] + [
        figure(f"ATC arm, {r['how']}: DMAs through the device's ATC", r["atc_per_s"], "/s",
               baseline=r["iotlb_per_s"], baseline_what="through the IOMMU's IOTLB") for r in atc_rows]
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
        print(f"\nJSON written to {a.json}")
    return 0 if all(r["equal_work"] for r in rows if r["state"] != "mixed") else 1


if __name__ == "__main__":
    sys.exit(main())
