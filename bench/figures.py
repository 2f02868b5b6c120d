"""The figures a bench script reports, in the one shape bench/summary.py prints.

Every script's `--json FILE` writes a JSON object with a "figures" list (beside
whatever detail the script keeps under its other keys). A figure is

    {"what": str, "value": float|None, "unit": str,
     "baseline": float|None, "baseline_what": str|None,   # measured in the same run
     "ratio": float|None,                                 # value / baseline
     "target": str|None, "ok": bool|None}                 # None: no target

A target is given as (on, op, limit) or a list of them (all must hold), where `on`
is "value", "ratio" or "diff" (value - baseline) and op one of < <= > >=; it is
kept as text ("< 1.5 s", "ratio >= 0.25") with its verdict in "ok". A script that
cannot run a part (a missing option of the daemon) writes "skipped": why.
"""
from __future__ import annotations

import json
import operator
import os
import time
from typing import Callable, Iterable

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _spec_text(spec, unit: str) -> str:
    on, op, limit = spec
    num = f"{limit / 1e6:g} M" if abs(limit) >= 1e6 else f"{limit:g} "
    if on == "value":
        return f"{op} {num}{unit}".rstrip()
    if on == "diff":
        return f"diff {op} {num}{unit}".rstrip()
    return f"ratio {op} {limit:g}"


def figure(what: str, value: float | None, unit: str, *, baseline: float | None = None,
           baseline_what: str | None = None, ratio: float | bool | None = None, target=None) -> dict:
    """ratio defaults to value / baseline; False: none (the value is a ratio itself)."""
    if ratio is False:
        ratio = None
    elif ratio is None and value is not None and baseline:
        ratio = value / baseline
    specs = [] if target is None else ([target] if isinstance(target[0], str) else list(target))
    ok = None
    if specs and value is not None:
        got = {"value": value, "ratio": ratio,
               "diff": None if baseline is None else value - baseline}
        ok = all(got[on] is not None and OPS[op](got[on], limit) for on, op, limit in specs)
    return {"what": what, "value": value, "unit": unit, "baseline": baseline,
            "baseline_what": baseline_what, "ratio": ratio,
            "target": " and ".join(_spec_text(s, unit) for s in specs) or None, "ok": ok}


def collect(builders: Iterable[Callable[[], dict | list[dict]]], errors: list[str] | None = None) -> list[dict]:
    """Each builder makes one figure (or a list) from a report; one whose keys are
    missing (a script changed, a part not run) is left out, noted in errors."""
    out: list[dict] = []
    for b in builders:
        try:
            f = b()
        except (KeyError, IndexError, TypeError, ZeroDivisionError, ValueError) as exc:
            if errors is not None:
                errors.append(f"{getattr(b, '__name__', 'figure')}: {exc!r}")
            continue
        out.extend(f if isinstance(f, list) else [f])
    return out


def write(path: str, script: str, figures: list[dict], **detail) -> None:
    """The JSON of a script that keeps no report of its own."""
    with open(path, "w") as f:
        json.dump({"script": script, "figures": figures, **detail}, f, indent=2, sort_keys=True,
                  default=str)
    print(f"\nJSON written to {path}")


def wait_ready(mnt, timeout: float = 30.0) -> None:
    """Until a vfakefs mount at mnt answers (its sys/bus/pci/devices stats): the scripts
    that time a mount count from the command's start to here."""
    probe = os.path.join(mnt, "sys", "bus", "pci", "devices")
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.stat(probe)
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{probe} not ready {timeout:.0f} s after the mount returned: {e}") from e
            time.sleep(0.001)
