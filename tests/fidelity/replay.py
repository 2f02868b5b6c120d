"""Replay a reference capture against a vfakefs mount: its reads, and with
--writes its write scenarios.

    python -m tests.fidelity.replay MNT [--capture FILE] [--section NAME]... [-v]
    python -m tests.fidelity.replay MNT --writes [-v]     (MNT freshly mounted)

Each item of a covered section (capture.py turns the capture's commands and
script-generated blocks into bash scripts) runs through bash with real
programs (ls, cat, readlink, stat, hexdump, lspci), its paths rewritten to the
mount:

    /sys/...    -> $MNT/sys/...          /dev/...  -> $MNT/dev/...
    lspci ARGS  -> lspci -A linux-sysfs -O sysfs.path=$MNT/sys/bus/pci
                   -O hwdb.disable=1 -i tests/reference/pci.ids ARGS
                   (-A linux-sysfs: never fall back to the host's /proc/bus/pci)
    ls ARGS     -> ls -C ARGS when ARGS has no -l/-1: the capture's stdout was
                   a terminal (80 columns), so plain `ls` printed columns
    sysfsio ... -> tests/fidelity/sysfsio.py (asuser drops to uid/gid 65534
                   with no supplementary groups, as the C helper did)
    dmesg       -> sysfsio.py kmsg $MNT/dev/kmsg (formatted like dmesg)

stdout and stderr are merged, as on the capture's console; LC_ALL=C (the
capture sorts upper case first), COLUMNS=80.

An item matches when all its normalised lines are equal, its `[rc=N]`
included when the capture shows one. Normalisation, applied to both sides:

  * the mount prefix is removed from the actual output ($MNT/sys -> /sys,
    also inside quotes such as cat: '$MNT/sys/...': Permission denied);
  * `ls -l` date/time columns become <date>;
  * dmesg / [kmsg] timestamps `[   1.234567]` become [<time>];
  * power/runtime_active_time values become <ms>.
  Rule for the last three: a value is masked only if it is time-dependent,
  i.e. it differs between the stock and the iommu=pt captures for no reason
  but the clock (diff the two: only ls dates, dmesg times and
  runtime_active_time differ). msi_irqs IRQ numbers (37 38 39...) are the same
  in both boots, so they are compared; `ptp` is only listed, never read.
  * lspci's "\tKernel modules: ..." lines, and its "lspci: Unable to load
    libkmod resources" warning, are dropped: lspci takes modules from the
    host's /lib/modules/$(uname -r)/modules.alias, not from the mount.

Read-only replay (the default): items the capture shows after its first
(non-debugfs) write are not replayed, their output depends on the writes; so
the SR-IOV section contributes only its reads before the first write and
`device dump: 0000:01:00.1` (taken with two VFs enabled) none. Reads do not
change state, so any mount will do, and the order does not matter.

Write replay (`--writes`, replay(..., writes=True)): the stateful sections
(STATEFUL_SECTIONS: the SR-IOV enable/disable with every bad write, then the
VF's dump and the rest of the write scenarios that the capture files under
`device dump: 0000:01:00.1`) are replayed whole, reads and writes, one item
after another in capture order against ONE mount, which must be fresh (the
`qemu-ref` preset just mounted): writes change its state and the reads after
them must see it. Other sections keep the read-only replay. Writes run as the
capture ran them:

    echo 'x' > FILE   # (bash)         bash -c "echo 'x' > FILE"  (bash's error
                                       wording, `bash: line 1: echo: write
                                       error: ...`, is compared exactly)
    echo 'x' > FILE   # (busybox sh)   busybox sh -c "echo 'x' > FILE"; not
                                       replayed (and noted) when busybox is
                                       not installed
    sysfsio write FILE 'text'          the helper in sysfsio.py

Every item runs as `bash -c SCRIPT` with nothing before SCRIPT (sysfsio and
dmesg reach it as exported bash functions), so bash numbers its lines as the
capture's did.

Kernel messages: an item's `[kmsg]` lines are compared only when the mount has
a `dev/kmsg` file; the records that appear there while the item runs (read
without blocking from one descriptor opened before the stateful replay) are
formatted like dmesg and appended, as `[kmsg] [<time>] text`, to the item's
output on both sides. Without `dev/kmsg`, the report counts them as "kmsg not
compared". Messages a kernel prints later (an asynchronous probe's failure)
are attached in the capture to whatever command ran when they appeared, and
are compared the same way.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import capture as cap_mod
from .capture import Capture, Item
from .sysfsio import format_records

# Sections whose read-only items the replay covers by default (fnmatch).
# Not covered: "system" (the host's uname/proc), "IOMMU debugfs" (the stock
# kernel has none), "full dmesg" (whole boot log), and the writes.
DEFAULT_SECTIONS = [
    "lspci",
    "sysfs bus/pci layout",
    "device dump: *",
    "IOMMU",
    "class/net, class/nvme, /dev",
    "SR-IOV on PF *",
]

# Sections a write replay runs whole (reads and writes, in capture order, on one
# fresh mount). Together they are one scenario: the VF's dump section starts
# with the two VFs the SR-IOV section enabled, and goes on with every bad
# write, disable, the parse tests, vfio-pci and the PF-unbound cases.
STATEFUL_SECTIONS = [
    "SR-IOV on PF *",
    "device dump: 0000:01:00.1",
]

SYSFSIO = Path(__file__).resolve().with_name("sysfsio.py")
SAFE_MNT_RE = re.compile(r"^/[A-Za-z0-9_./-]+$")
PATH_RE = re.compile(r"(?<![\w.$/-])/(sys|dev)(?=/|$|[\s'\"*)])(?!/null\b)")
LSPCI_RE = re.compile(r"(^|[|;&(]\s*)lspci(?=\s|$)")
LS_RE = re.compile(r"(^|[|;&]\s*)ls((?:\s[^|;&]*)?)(?=$|[|;&])")
LS_DATE_RE = re.compile(
    r"^([-dlcbpsD][-rwxsStT]{9}[.+@]?\s+\d+\s+\S+\s+\S+\s+(?:\d+,\s*)?\d+ )"
    r"[A-Z][a-z]{2} [ \d]\d (?: \d{4}|\d\d:\d\d) ")
KMSG_TS_RE = re.compile(r"^((?:\[kmsg\] )?)\[\s*\d+\.\d+\]")
KMOD_RE = re.compile(r"^(\tKernel modules: |lspci: Unable to load libkmod resources)")
VOLATILE_RE = re.compile(r"(?<=\): )\d+(?=\|$)|^\d+$")

# The helpers a script may call, as exported bash functions (not a prelude in
# the script: bash's messages name the script's line, `bash: line 1: ...`).
FUNCTIONS = {
    "sysfsio": '() {  "$VFAKEFS_PY" "$VFAKEFS_SYSFSIO" "$@"\n}',
    "dmesg": '() {  "$VFAKEFS_PY" "$VFAKEFS_SYSFSIO" kmsg "$VFAKEFS_MNT/dev/kmsg"\n}',
}


class UnsafeScript(Exception):
    """A rewritten script still names a path outside the mount."""


def rewrite(script: str, mnt: str) -> str:
    """The capture's script, pointed at the mount."""
    if not SAFE_MNT_RE.match(mnt):
        # the mount path is inserted unquoted, and GNU tools quote paths with
        # ':' or spaces in messages, which would change the stripped output
        raise ValueError(f"mount path must match {SAFE_MNT_RE.pattern}: {mnt!r}")
    out = PATH_RE.sub(lambda m: mnt + m.group(0), script)
    lspci = shlex.join(["lspci", "-A", "linux-sysfs", "-O", f"sysfs.path={mnt}/sys/bus/pci",
                        *cap_mod.LSPCI_NAMES])
    out = LSPCI_RE.sub(lambda m: m.group(1) + lspci, out)

    def ls(m: re.Match) -> str:
        args = m.group(2) or ""
        if re.search(r"(^|\s)-\w*[l1C]", args):
            return m.group(0)
        return f"{m.group(1)}ls -C{args}"

    out = LS_RE.sub(ls, out)
    rest = out.replace(mnt + "/sys", "").replace(mnt + "/dev", "").replace("/dev/null", "")
    if re.search(r"(?<![\w.$-])/(sys|dev)(/|\b)", rest):
        raise UnsafeScript(out)
    return out


def normalise(lines: list[str], item: Item) -> list[str]:
    out = []
    for line in lines:
        if KMOD_RE.match(line):
            continue
        line = LS_DATE_RE.sub(r"\1<date> ", line)
        line = KMSG_TS_RE.sub(r"\1[<time>]", line)
        if item.volatile:
            line = VOLATILE_RE.sub("<ms>", line)
        out.append(line)
    return out


def strip_mnt(text: str, mnts: list[str]) -> str:
    for m in mnts:
        text = text.replace(m + "/", "/").replace(m, "/")
    return text


@dataclass
class ItemResult:
    item: Item
    command: str  # the rewritten script
    expected: list[str]  # normalised
    actual: list[str]  # normalised
    error: str | None = None
    # "compared" (the [kmsg] lines are part of expected/actual), "not compared"
    # (the item has [kmsg] lines but the mount has no dev/kmsg), or None
    kmsg: str | None = None

    @property
    def matched(self) -> bool:
        return self.error is None and self.expected == self.actual

    def diff(self, context: int = 2, limit: int | None = 40) -> str:
        lines = list(difflib.unified_diff(self.expected, self.actual, "capture", "vfakefs",
                                          lineterm="", n=context))
        if self.error:
            lines.insert(0, f"error: {self.error}")
        if limit is not None and len(lines) > limit:
            lines = lines[:limit] + [f"... ({len(lines) - limit} more diff lines)"]
        return "\n".join(lines)


@dataclass
class SectionResult:
    name: str
    results: list[ItemResult] = field(default_factory=list)
    skipped_writes: int = 0
    skipped_after_write: int = 0
    skipped_other: int = 0
    skipped_busybox: int = 0  # busybox sh writes, busybox not installed
    stateful: bool = False  # replayed whole, writes included, in order

    @property
    def kmsg_not_compared(self) -> int:
        return sum(r.kmsg == "not compared" for r in self.results)

    @property
    def kmsg_compared(self) -> int:
        return sum(r.kmsg == "compared" for r in self.results)

    @property
    def writes(self) -> int:
        return sum(not r.item.readonly for r in self.results)

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def matched(self) -> int:
        return sum(r.matched for r in self.results)

    @property
    def fraction(self) -> float | None:
        return self.matched / self.total if self.total else None

    @property
    def mismatches(self) -> list[ItemResult]:
        return [r for r in self.results if not r.matched]

    def find(self, display: str) -> ItemResult:
        for r in self.results:
            if r.item.display == display:
                return r
        raise KeyError(f"{self.name}: no item {display!r}")


@dataclass
class Report:
    mnt: str
    capture: Path
    sections: list[SectionResult]
    notes: list[str] = field(default_factory=list)

    def section(self, name: str) -> SectionResult:
        for s in self.sections:
            if s.name == name:
                return s
        raise KeyError(name)

    def format(self, verbose: bool = False, mismatches: int = 3) -> str:
        out = [f"fidelity replay: {self.capture.name} against {self.mnt}"]
        out += [f"  note: {n}" for n in self.notes]
        width = max([len(s.name) for s in self.sections] + [7])
        out.append(f"  {'section':{width}}  matched/total  fraction  (not replayed)")
        tm = tt = 0
        for s in self.sections:
            frac = "    -" if s.fraction is None else f"{s.fraction:8.3f}"
            skipped = []
            if s.skipped_writes:
                skipped.append(f"{s.skipped_writes} writes")
            if s.skipped_after_write:
                skipped.append(f"{s.skipped_after_write} after writes")
            if s.skipped_other:
                skipped.append(f"{s.skipped_other} notes/unparsed")
            if s.skipped_busybox:
                skipped.append(f"{s.skipped_busybox} busybox sh writes")
            extra = ""
            if s.stateful:
                extra = f"  [with writes: {s.writes} of them"
                if s.kmsg_compared:
                    extra += f"; kmsg compared for {s.kmsg_compared} items"
                if s.kmsg_not_compared:
                    extra += f"; kmsg not compared for {s.kmsg_not_compared} items"
                extra += "]"
            out.append(f"  {s.name:{width}}  {s.matched:5d}/{s.total:<5d}    {frac}"
                       + (f"  ({', '.join(skipped)})" if skipped else "") + extra)
            tm += s.matched
            tt += s.total
        if tt:
            out.append(f"  {'TOTAL':{width}}  {tm:5d}/{tt:<5d}    {tm / tt:8.3f}")
        for s in self.sections:
            bad = s.mismatches
            if not bad:
                continue
            shown = bad if verbose else bad[:mismatches]
            out.append("")
            out.append(f"=== {s.name}: {len(bad)} mismatches"
                       + ("" if verbose or len(bad) <= mismatches else f", first {mismatches}:"))
            for r in shown:
                out.append(f"--- line {r.item.lineno}: {r.item.display}")
                if verbose:
                    out.append(f"    ran: {r.command}")
                out.append(r.diff(limit=None if verbose else 40))
        return "\n".join(out)


def select(capture: Capture, patterns: list[str] | None = None) -> list[str]:
    pats = patterns or DEFAULT_SECTIONS
    return [n for n in capture.names if any(fnmatch.fnmatchcase(n, p) for p in pats)]


class KmsgReader:
    """The records that appear in MNT/dev/kmsg, item by item: one descriptor
    opened (O_NONBLOCK) before the stateful replay, drained after each item.
    Works with a /dev/kmsg-style file (one record per read, EAGAIN at the end)
    and with a plain file that grows."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:  # /dev/kmsg: SEEK_END skips to after the last record
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.drain()

    def drain(self) -> list[str]:
        chunks: list[bytes] = []
        for _ in range(100000):
            try:
                data = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:  # records overwritten: go on
                    continue
                raise
            if not data:
                break
            chunks.append(data if data.endswith(b"\n") else data + b"\n")
        return format_records(b"".join(chunks).decode(errors="replace"))

    def close(self) -> None:
        os.close(self.fd)


def _env(mnt: str) -> dict[str, str]:
    env = dict(os.environ, LC_ALL="C", COLUMNS="80", VFAKEFS_PY=sys.executable,
               VFAKEFS_SYSFSIO=str(SYSFSIO), VFAKEFS_MNT=mnt)
    for name, body in FUNCTIONS.items():
        env[f"BASH_FUNC_{name}%%"] = body
    env.pop("LANG", None)
    env.pop("LS_COLORS", None)
    return env


def argv_for(item: Item, script: str) -> list[str]:
    """How the capture ran the item: bash -c SCRIPT, or busybox sh -c CMD for
    the `# (busybox sh)` writes (capture.py wrote their script as
    `busybox sh -c 'CMD'`; it is run here without bash in between)."""
    if item.kind == "write" and item.shell == "busybox sh":
        parts = shlex.split(script)
        if parts[:3] == ["busybox", "sh", "-c"] and len(parts) == 4:
            return parts
    return ["bash", "-c", script]


def run_item(item: Item, mnt: str, timeout: float = 30.0,
             kmsg: KmsgReader | None = None) -> ItemResult:
    """Run one item. With `kmsg`, the records the item caused are compared
    with its [kmsg] lines (timestamps masked)."""
    mnts = sorted({mnt, os.path.realpath(mnt)}, key=len, reverse=True)
    expected = list(item.expected)
    if item.rc is not None:
        expected.append(f"[rc={item.rc}]")
    kmsg_state = None
    if kmsg is not None:
        expected += [f"[kmsg] {k}" for k in item.kmsg]
        kmsg_state = "compared"
        kmsg.drain()  # whatever came in between belongs to no item
    elif item.kmsg:
        kmsg_state = "not compared"
    expected = normalise(expected, item)
    try:
        script = rewrite(item.script, mnt)
    except (UnsafeScript, ValueError) as e:
        return ItemResult(item, "", expected, [], error=f"not run: {type(e).__name__}: {e}",
                          kmsg=kmsg_state)
    argv = argv_for(item, script)
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=_env(mnt), timeout=timeout, cwd="/")
    except subprocess.TimeoutExpired as e:
        actual = strip_mnt((e.stdout or b"").decode(errors="replace"), mnts).splitlines()
        return ItemResult(item, script, expected, normalise(actual, item),
                          error=f"timed out after {timeout}s", kmsg=kmsg_state)
    actual = strip_mnt(proc.stdout.decode(errors="replace"), mnts).splitlines()
    if item.rc is not None:
        actual.append(f"[rc={proc.returncode}]")
    if kmsg is not None:
        actual += [f"[kmsg] {k}" for k in kmsg.drain()]
    return ItemResult(item, script, expected, normalise(actual, item), kmsg=kmsg_state)


def environment_notes(writes: bool = False) -> list[str]:
    notes = []
    for prog in ("bash", "ls", "cat", "readlink", "stat", "hexdump", "lspci"):
        if not shutil.which(prog):
            notes.append(f"{prog} is not installed: its items fail"
                         + (" (hexdump: apt-get install bsdextrautils)" if prog == "hexdump" else ""))
    if shutil.which("lspci"):
        v = subprocess.run(["lspci", "--version"], capture_output=True, text=True).stdout.strip()
        if "3.9.0" not in v:
            notes.append(f"{v} (the capture used 3.9.0)")
    if os.geteuid() != 0:
        notes.append("not root: `sysfsio asuser` items cannot drop to uid 65534 and fail")
    if writes and not shutil.which("busybox"):
        notes.append("busybox is not installed: the `# (busybox sh)` writes are not replayed "
                     "(apt-get install busybox)")
    return notes


def is_stateful(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in STATEFUL_SECTIONS)


def replay(mnt: str | os.PathLike, capture: Capture | str | os.PathLike | None = None,
           sections: list[str] | None = None, timeout: float = 30.0,
           writes: bool = False) -> Report:
    """Replay the selected sections. With writes=True the stateful sections are
    replayed whole, in capture order, on this mount: it must be fresh."""
    mnt = os.path.abspath(str(mnt)).rstrip("/")
    if capture is None:
        capture = cap_mod.parse()
    elif not isinstance(capture, Capture):
        capture = cap_mod.parse(capture)
    kmsg_path = os.path.join(mnt, "dev", "kmsg")
    kmsg: KmsgReader | None = None
    notes = environment_notes(writes)
    has_busybox = shutil.which("busybox") is not None
    results = []
    try:
        for name in select(capture, sections):
            stateful = writes and is_stateful(name)
            sr = SectionResult(name, stateful=stateful)
            if stateful and kmsg is None and os.path.exists(kmsg_path):
                kmsg = KmsgReader(kmsg_path)
            for item in capture.section(name).items:
                if not item.replayable:
                    sr.skipped_other += 1
                elif stateful:
                    if item.kind == "write" and item.shell == "busybox sh" and not has_busybox:
                        sr.skipped_busybox += 1
                    else:
                        sr.results.append(run_item(item, mnt, timeout, kmsg))
                elif not item.readonly:
                    sr.skipped_writes += 1
                elif item.after_write:
                    sr.skipped_after_write += 1
                else:
                    sr.results.append(run_item(item, mnt, timeout))
            results.append(sr)
    finally:
        if kmsg is not None:
            kmsg.close()
    chain = [n for n in capture.names if is_stateful(n)]
    chosen = [r.name for r in results if r.stateful]
    if chosen and chosen != chain[:len(chosen)]:
        notes.append(f"stateful sections {chosen} replayed without the ones before them "
                     f"({chain}): they do not start in the capture's state")
    if writes and not os.path.exists(kmsg_path):
        notes.append("no dev/kmsg in the mount: [kmsg] lines not compared")
    return Report(mnt, capture.path, results, notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fidelity.replay",
                                 description="Replay a kernel capture against a mount.")
    ap.add_argument("mnt", help="the vfakefs mountpoint (holds sys/ and dev/)")
    ap.add_argument("--capture", default=str(cap_mod.DEFAULT_CAPTURE),
                    help="capture file (default: %(default)s)")
    ap.add_argument("--section", action="append", metavar="NAME",
                    help="section name or fnmatch pattern; repeatable "
                         f"(default: {', '.join(DEFAULT_SECTIONS)})")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="show every mismatch in full, with the command that ran")
    ap.add_argument("-n", "--mismatches", type=int, default=3,
                    help="mismatches shown per section without -v (default 3)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per item")
    ap.add_argument("--writes", action="store_true",
                    help="replay the stateful sections whole, writes included "
                         f"({', '.join(STATEFUL_SECTIONS)}); changes the mount's state, "
                         "so use a freshly mounted qemu-ref")
    args = ap.parse_args(argv)
    if not os.path.isdir(os.path.join(args.mnt, "sys")):
        print(f"warning: {args.mnt}/sys does not exist; is vfakefs mounted there?",
              file=sys.stderr)
    capture = cap_mod.parse(args.capture)
    if args.section and not select(capture, args.section):
        ap.error(f"no section matches {args.section}; sections: {capture.names}")
    report = replay(args.mnt, capture, args.section, args.timeout, writes=args.writes)
    print(report.format(verbose=args.verbose, mismatches=args.mismatches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
