"""Timelines: a scenario file (TOML) lists timed steps that act on the machine while
a user's program runs (sriov_numvfs 0 -> N -> 0 -> M, remove and rescan, a fault
storm, a link going down, any vfakefs control). fuse/timeline.py runs them.

The format, one `[[step]]` table per step, in time order:

    name = "SR-IOV churn"                 # optional: shown in the status and the log

    [[step]]
    at = "500ms"                          # simulated time since the scenario started
    write = "/sys/class/net/eth0/device/sriov_numvfs"
    value = 4                             # written as `echo 4 > FILE` writes it

    [[step]]
    at = "2s"
    control = "carrier"                   # = write "/sys/kernel/debug/vfakefs/carrier"
    value = ["eth0 0", "eth0 1"]          # one value a run, in turn: a flapping link
    every = "250ms"                       # runs at 2 s, 2.25 s, ... (count: values' number
    count = 8                             # when not given)

    [[step]]
    at = "3s"
    write = "/sys/class/net/eth0/device/sriov_numvfs"
    value = 2
    expect = "EBUSY"                      # this write must fail so (VFs are enabled)
    on_error = "stop"                     # a failure ends the scenario (default: go on)

Fields of a step:
- `at` (required): when, in simulated seconds after the start: a number of seconds
  (0.5) or a string with a unit: "250us", "500ms", "2s", "1.5min". Steps are listed
  in time order (`at` never decreases); repeats of different steps interleave by time,
  runs due at the same time go in file order. Time is the engine's clock (it runs
  about as fast as real time, slower when the machine is loaded): time 0 is the
  engine's first tick after the start, and a run comes at the first tick (10 ms)
  at or after its time, never early.
- exactly one of `write` (an absolute path of the simulated machine: /sys/..., /dev/...)
  or `control` (the name of a file of MNT/sys/kernel/debug/vfakefs/: dma, traffic,
  carrier, faults, hotplug, ...).
- `value` (required): a string or an integer, or a list of them (run k writes item
  k mod len). It is written in one write(2) with a newline added, as `echo` does: at
  most 4096 bytes, one page as every sysfs store.
- `every` and `count`: the step runs `count` times, `every` apart (a duration as
  `at`). count is 1..1000000; with a list of values it defaults to the list's length.
- `expect`: an errno name (EBUSY, EINVAL, ...): the write must fail with it; success
  or another errno is then the step's failure.
- `on_error`: "continue" (default) or "stop": what a failed run does to the scenario.
- `note`: free text, for the reader.

A mistake in a file is reported as `FILE: step N: FIELD: what is wrong` before
anything runs."""
from __future__ import annotations

import heapq
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from vfakefs.model import userfile
from vfakefs.model.errors import errno_named

CONTROL_DIR = "/sys/kernel/debug/vfakefs"
WRITE_MAX = 4096            # a sysfs store sees one page
MAX_COUNT = 1_000_000       # runs of one step
MAX_TIME = 7 * 24 * 3600.0  # a week of simulated time: anything later is a typo
MIN_EVERY = 1e-6            # one microsecond
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|min)?\s*")
_CONTROL = re.compile(r"[a-z0-9_]+")
TOP = {"name", "description", "step"}
FIELDS = {"at", "write", "control", "value", "every", "count", "expect", "on_error", "note"}


class ScenarioError(Exception):
    """FILE: step N: FIELD: message (where the mistake is, then what it is)."""

    def __init__(self, source: str, where: str, message: str):
        super().__init__(f"{source}: {where}: {message}" if where else f"{source}: {message}")
        self.source, self.where, self.message = source, where, message


@dataclass(frozen=True)
class Step:
    number: int                  # 1-based, as counted in the file
    at: float
    path: str                    # the file written, absolute in the machine
    control: str | None          # its control name, when the step named one
    values: tuple[str, ...]
    every: float = 0.0
    count: int = 1
    expect: int | None = None    # the errno the write must fail with
    stop_on_error: bool = False
    note: str = ""

    def time(self, k: int) -> float:
        return self.at + k * self.every

    def value(self, k: int) -> str:
        return self.values[k % len(self.values)]

    def describe(self) -> str:
        return f"control {self.control}" if self.control else f"write {self.path}"


@dataclass(frozen=True)
class Scenario:
    source: str
    name: str
    steps: tuple[Step, ...]
    description: str = ""

    @property
    def runs(self) -> int:
        return sum(s.count for s in self.steps)

    @property
    def end(self) -> float:
        return max(s.time(s.count - 1) for s in self.steps)

    def timeline(self):
        """(time, step, k) of every run in time order; runs at the same time in file order."""
        def runs(s: Step):
            return ((s.time(k), s.number, k) for k in range(s.count))
        by_number = {s.number: s for s in self.steps}
        for t, n, k in heapq.merge(*(runs(s) for s in self.steps)):
            yield t, by_number[n], k


def duration(value) -> float | None:
    """Seconds: a number, or a string "<number>[us|ms|s|min]" (seconds without a unit)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION.fullmatch(value) if isinstance(value, str) else None
    return None if m is None else float(m.group(1)) * _UNITS[m.group(2) or "s"]


def load(path: str | Path) -> Scenario:
    try:
        data = userfile.read_bytes(path)
    except OSError as e:
        raise ScenarioError(str(path), "", e.strerror or str(e)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(str(path), "", f"not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start})") from None
    return parse(text, str(path))


def parse(text: str, source: str = "<scenario>") -> Scenario:
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(source, "", f"not valid TOML: {e}") from None

    def err(where: str, msg: str) -> ScenarioError:
        return ScenarioError(source, where, msg)

    bad = sorted(set(d) - TOP)
    if bad:
        raise err(bad[0], f"unknown key (known at the top: {', '.join(sorted(TOP))}; steps are [[step]] tables)")
    for key in ("name", "description"):
        if not isinstance(d.get(key, ""), str):
            raise err(key, f"{d[key]!r} is not a string")
    tables = d.get("step")
    if not isinstance(tables, list) or not tables:
        raise err("step", "no steps: a scenario lists its steps as [[step]] tables")
    steps: list[Step] = []
    for i, t in enumerate(tables, 1):
        s = _step(lambda field, msg, i=i: err(f"step {i}: {field}" if field else f"step {i}", msg), i, t)
        if steps and s.at < steps[-1].at:
            raise err(f"step {i}: at", f"{s.at:g} s is before step {i - 1}'s {steps[-1].at:g} s "
                                       "(list the steps in time order)")
        steps.append(s)
    return Scenario(source, d.get("name", "") or Path(source).stem, tuple(steps), d.get("description", ""))


def _step(err, number: int, t) -> Step:
    if not isinstance(t, dict):
        raise err("", f"{t!r} is not a table ([[step]])")
    bad = sorted(set(t) - FIELDS)
    if bad:
        raise err(bad[0], f"unknown field (known: {', '.join(sorted(FIELDS))})")
    if "at" not in t:
        raise err("at", "missing: when the step runs (e.g. at = \"500ms\")")
    at = _time(err, "at", t["at"], 0.0)
    if ("write" in t) == ("control" in t):
        raise err("write", "a step has exactly one of write (a file's path) or control (a control's name)")
    control = t.get("control")
    if control is not None:
        if not isinstance(control, str) or not _CONTROL.fullmatch(control):
            raise err("control", f"{control!r} is not a control's name (dma, traffic, carrier, ...)")
        path = f"{CONTROL_DIR}/{control}"
    else:
        path = t["write"]
        if not isinstance(path, str) or not path.startswith("/"):
            raise err("write", f"{path!r} is not an absolute path (e.g. \"/sys/bus/pci/rescan\")")
        if "\0" in path or any(len(part.encode()) > 255 for part in path.split("/")):
            raise err("write", f"{path[:64]!r} is not a valid path")
    if "value" not in t:
        raise err("value", "missing: what the step writes")
    raw = t["value"]
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise err("value", "an empty list: give at least one value")
    values = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise err("value", f"{v!r} is not a string or an integer")
        text = str(v)
        if not text.endswith("\n"):
            text += "\n"     # as echo writes it
        if len(text.encode()) > WRITE_MAX:
            raise err("value", f"{len(text.encode())} bytes: one write to a sysfs file takes at most {WRITE_MAX}")
        values.append(text)
    count = t.get("count", len(values) if isinstance(raw, list) else 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise err("count", f"{count!r} is not a number of runs 1..{MAX_COUNT}")
    every = 0.0
    if "every" in t:
        every = _time(err, "every", t["every"], MIN_EVERY)
        if "count" not in t and count == 1:
            raise err("count", "missing: a repeated step (every) says how many times it runs")
    elif count > 1:
        raise err("every", f"missing: the step runs {count} times: say how far apart (e.g. every = \"100ms\")")
    if at + (count - 1) * every > MAX_TIME:
        raise err("count", f"the last run would be at {at + (count - 1) * every:g} s, past a week")
    expect = t.get("expect")
    if expect is not None:
        code = errno_named(expect)
        if code is None:
            raise err("expect", f"{expect!r} is not an errno name (EBUSY, EINVAL, ENODEV, ...)")
        expect = code
    on_error = t.get("on_error", "continue")
    if on_error not in ("continue", "stop"):
        raise err("on_error", f"{on_error!r} is not continue or stop")
    note = t.get("note", "")
    if not isinstance(note, str):
        raise err("note", f"{note!r} is not a string")
    return Step(number, at, path, control, tuple(values), every, count, expect, on_error == "stop", note)


def _time(err, field: str, value, least: float) -> float:
    t = duration(value)
    if t is None:
        raise err(field, f"{value!r} is not a duration (seconds, or e.g. \"250us\", \"500ms\", \"2s\", \"1min\")")
    if t != t or not least <= t <= MAX_TIME:    # NaN, inf, negative, nought for every
        raise err(field, f"{value!r} is outside {least:g} s .. a week")
    return t
