"""Parse a reference capture (tests/reference/kernel-6.1/capture-*.txt).

A capture is text a real kernel printed under QEMU. Sections start with a
`### name` line (between `####...` rules). Inside a section:

    $ cmd                 a command, then its output (stdout and stderr
    ...                   merged, stdout was a terminal), then `[rc=N]`
    [rc=N]                (a few commands, e.g. readlink, show no rc line)
    [kmsg] [  1.23] text  kernel messages the previous item caused

and blocks the capture script generated itself, which this module turns into
equivalent shell checks (each becomes its own Item with a bash `script`):

    -rw-r--r-- 4096 /sys/x             `stat -c '%A %s %n' /sys/x`
    --- stat -c '%A %s %n' of every entry (links shown with readlink)
      LINK lrwxrwxrwx name -> target   stat -c %A + readlink of DIR/name
      DIR  drwxr-xr-x 0 name           stat -c '%A %s' of DIR/name
    LINK name -> target                readlink of DIR/name (bridge dumps)
    --- contents of readable regular attribute files
      == name (mode):                  mode from stat -c %A, then `cat`
      content... [rc=N]                (`: not readable (write-only)` when
                                       the mode has no r bit; cat still runs)
    == power/async (mode): text|       one line: mode, $(cat 2>&1), '|'
    == /abs/path: text                 one line: $(cat 2>&1)
    == name (mode size): text          one line: stat -c '%A %s', $(cat)
    == secondary_bus_number: A subordinate_bus_number: B
    (no physfn link)                   DEV/physfn is not a symlink (any name)
    virtfn0 -> ../BDF group=N          readlink PF/virtfn0 and its iommu_group
    readlink output + "  (readlink -f: P)"   readlink, then readlink -f
    --- every device: vendor device ...      a loop over /sys/bus/pci/devices
    --- config read as root via raw syscalls / resource0 read attempt (raw)
      open(...) = 3 / read(...) = N / total=N    `sysfsio rawread PATH BUFSIZE`
    VF1=... VF2=...                    a note (script variables); not checked
    --- text / ----- write test: ...   comments, attached to the next item

Paths in scripts are the capture's own (/sys/..., /dev/...); the replay
rewrites them to the mount. `sysfsio` and `dmesg` in scripts are the helper
in sysfsio.py (the replay defines them as shell functions).

Writes (`echo X > /sys/...    # (bash)`, `# (busybox sh)`, `sysfsio write`)
are parsed as Items of kind "write". Every item after the first write of the
capture has `after_write=True`: its expected output shows the state the writes
left, so a read-only replay of a fresh mount skips it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

# The captures travel with the tests (tests/reference/README.md says how they were made).
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference" / "kernel-6.1"
DEFAULT_CAPTURE = REFERENCE_DIR / "capture-stock-intel_iommu_on.txt"

# lspci names devices from these arguments' sources alone, whatever the host has: the pci.ids
# the captures' lspci read (a newer one renames devices), never udev's hwdb (with udev
# installed it names subsystems pci.ids leaves as "Device", e.g. "QEMU PCIe Root port").
# Its "Kernel modules:" lines come from the host's modules.alias and cannot be pinned:
# the tests compare lspci output without them.
PCI_IDS = REFERENCE_DIR.parent / "pci.ids"
LSPCI_NAMES = ("-O", "hwdb.disable=1", "-i", str(PCI_IDS))

MODE = r"[-dlcbpsD][-rwxsStT]{9}"
RC_RE = re.compile(r"^\[rc=(-?\d+)\]$")
STAT_RE = re.compile(rf"^({MODE}) (\d+) (/\S+)$")
LINK_MODE_RE = re.compile(rf"^LINK ({MODE}) (\S+) -> (.*)$")
LINK_RE = re.compile(r"^LINK (\S+) -> (.*)$")
DIR_RE = re.compile(rf"^DIR  ({MODE}) (\d+) (\S+)$")
ATTR_BLOCK_RE = re.compile(rf"^== (\S+) \(({MODE})\):$")
ATTR_WO_RE = re.compile(rf"^== (\S+) \(({MODE})\): not readable \(write-only\)$")
ATTR_SIZE_RE = re.compile(rf"^== (\S+) \(({MODE}) (\d+)\): (.*)$")
ATTR_LINE_RE = re.compile(rf"^== (\S+) \(({MODE})\): (.*)$")
ABS_LINE_RE = re.compile(r"^== (/\S+): (.*)$")
BUSNR_RE = re.compile(r"^== secondary_bus_number: (\S*) subordinate_bus_number: (\S*)$")
OPEN_RE = re.compile(r'^open\("([^"]*)", (O_RDONLY|O_WRONLY|O_RDWR)\) = ')
READ_RE = re.compile(r"^read\(\d+, buf, (\d+)\) = ")
ASUSER_RE = re.compile(r"^sysfsio asuser (\d+) (\d+) ")
SHELL_TAG_RE = re.compile(r"^(.*?)\s+# \((bash|busybox sh)\)$")
WRITE_REDIRECT_RE = re.compile(r"(?<![0-9&<>])>>?\s*\S")
NO_LINK_RE = re.compile(r"^\(no (\S+) link\)$")
VIRTFN_RE = re.compile(r"^(virtfn\d+) -> (\S+) group=(\S*)$")
LS_DIR_RE = re.compile(r"^ls -la (/\S+)/(?:$|\s*[|;])")
NOTE_RE = re.compile(r"^[A-Z][A-Z0-9_]*=\S*( [A-Z][A-Z0-9_]*=\S*)*$")

# Lines that always start something new: an rc-less command's output ends there.
STRONG_STARTS = ("$ ", "### ", "####", "--- ", "----- ", "[kmsg] ", "== ", "=====")


@dataclass
class Item:
    section: str
    lineno: int  # 1-based line of the item's first line in the capture
    kind: str  # command write stat link dir attr attr-line attr-size abs-line
    # bus-numbers readlink no-link virtfn raw-read every-device note unparsed
    display: str  # the capture's command, or the generated line it checks
    script: str  # bash, with the capture's paths; "" when not replayable
    expected: list[str]
    rc: int | None = None  # None: the capture shows no rc for this item
    kmsg: list[str] = field(default_factory=list)
    comment: str | None = None  # nearest preceding "--- ..." line
    shell: str | None = None  # writes: "bash" or "busybox sh"
    after_write: bool = False
    volatile: bool = False  # expected numbers are time-dependent

    @property
    def readonly(self) -> bool:
        return self.kind != "write"

    @property
    def replayable(self) -> bool:
        return bool(self.script) and self.kind not in ("note", "unparsed")


@dataclass
class Section:
    name: str
    lineno: int
    items: list[Item] = field(default_factory=list)


@dataclass
class Capture:
    path: Path
    sections: list[Section]

    def section(self, name: str) -> Section:
        for s in self.sections:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sections]


def q(s: str) -> str:
    """Shell-quote a capture path. The replay later rewrites /sys and /dev
    paths over the whole script, inside quotes too."""
    return shlex.quote(s)


def is_write(cmd: str) -> bool:
    return cmd.startswith("sysfsio write ") or bool(WRITE_REDIRECT_RE.search(_strip_quoted(cmd)))


def _strip_quoted(cmd: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "''", cmd)


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


class _Parser:
    def __init__(self, path: Path, lines: list[str]):
        self.path = path
        self.lines = lines
        self.i = 0
        self.sections: list[Section] = []
        self.sec: Section | None = None
        self.comment: str | None = None
        self.seen_write = False
        self.cur_dir: str | None = None  # dir of the last `ls -la DIR/`
        self.last_readlink: str | None = None  # path of the last readlink
        self.asuser: tuple[int, int] | None = None  # last `sysfsio asuser U G`
        self.dev_dir: str | None = None  # the device of a `device dump: BDF` section

    # -- helpers --------------------------------------------------------
    def peek(self) -> str | None:
        return self.lines[self.i] if self.i < len(self.lines) else None

    def add(self, kind: str, display: str, script: str, expected: list[str],
            rc: int | None, lineno: int, **kw) -> Item:
        assert self.sec is not None
        item = Item(section=self.sec.name, lineno=lineno, kind=kind, display=display,
                    script=script, expected=expected, rc=rc, comment=self.comment,
                    after_write=self.seen_write, **kw)
        if kind == "write" and "/sys/kernel/debug/" not in display:
            # debugfs knobs (perf counters) leave the device state alone
            self.seen_write = True
        self.sec.items.append(item)
        return item

    def take_rc(self) -> int | None:
        line = self.peek()
        if line is not None and (m := RC_RE.match(line)):
            self.i += 1
            return int(m.group(1))
        return None

    def take_until_rc(self) -> tuple[list[str], int | None]:
        """Lines up to and including `[rc=N]`; stops before a strong start."""
        out: list[str] = []
        while (line := self.peek()) is not None:
            if m := RC_RE.match(line):
                self.i += 1
                return out, int(m.group(1))
            if line.startswith(STRONG_STARTS):
                break
            out.append(line)
            self.i += 1
        while out and out[-1] == "":
            out.pop()
        return out, None

    # -- main loop ------------------------------------------------------
    def run(self) -> list[Section]:
        while (line := self.peek()) is not None:
            lineno = self.i + 1
            if line.startswith("#####") or line.startswith("====="):
                self.i += 1
            elif line.startswith("### "):
                self.i += 1
                self.sec = Section(line[4:].strip(), lineno)
                self.sections.append(self.sec)
                self.comment = None
                self.cur_dir = None
                self.last_readlink = None
                m = re.match(r"device dump: (\S+)$", self.sec.name)
                self.dev_dir = f"/sys/bus/pci/devices/{m.group(1)}" if m else None
            elif self.sec is None or line == "":
                self.i += 1
            elif line.startswith("$ "):
                self.command(line[2:], lineno)
            elif line.startswith("[kmsg] "):
                self.i += 1
                if self.sec.items:
                    self.sec.items[-1].kmsg.append(line[len("[kmsg] "):])
            elif line.startswith("--- every device:"):
                self.i += 1
                self.every_device(line, lineno)
            elif line.startswith("--- ") or line.startswith("----- "):
                self.i += 1
                if line.startswith("--- "):
                    self.comment = line[4:]
                    if "config read as uid" not in line:
                        self.asuser = None
            elif line.startswith("open("):
                self.raw_read(lineno)
            else:
                self.i += 1
                self.generated(line, lineno)
        return self.sections

    # -- `$ cmd` ----------------------------------------------------------
    def command(self, cmd: str, lineno: int) -> None:
        self.i += 1
        self.out_start = self.i
        shell = None
        if m := SHELL_TAG_RE.match(cmd):
            cmd, shell = m.group(1), m.group(2)
        out, rc = self.take_until_rc()
        if m := LS_DIR_RE.match(cmd):
            self.cur_dir = m.group(1)
        try:
            self._command(cmd, shell, out, rc, lineno)
        finally:
            if LS_DIR_RE.match(cmd):
                self.comment = None  # a new directory: the last "--- " header is over

    def _command(self, cmd: str, shell: str | None, out: list[str], rc: int | None,
                 lineno: int) -> None:
        if m := ASUSER_RE.match(cmd):
            self.asuser = (int(m.group(1)), int(m.group(2)))
        if is_write(cmd):
            script = cmd if shell != "busybox sh" else f"busybox sh -c {q(cmd)}"
            self.add("write", cmd, script, out, rc, lineno, shell=shell or "bash")
            return
        if cmd.startswith("readlink ") and len(cmd.split()) == 2:
            path = cmd.split()[1]
            self.last_readlink = path
            if rc is None:
                # readlink [+ "  (readlink -f: P)"]; whatever follows is generated.
                keep = out[:1]
                if len(out) > 1 and out[1].startswith("  (readlink -f: "):
                    keep.append(out[1])
                self.i = self.out_start + len(keep)  # the main loop reads the rest
                script = f"readlink {q(path)}"
                if len(keep) == 2:
                    script += f' && echo "  (readlink -f: $(readlink -f {q(path)}))"'
                self.add("readlink", cmd, script, keep, None, lineno)
                return
        volatile = cmd.rstrip().endswith("runtime_active_time")
        self.add("command", cmd, cmd, out, rc, lineno, volatile=volatile)

    # -- `--- every device:` ------------------------------------------------
    def every_device(self, header: str, lineno: int) -> None:
        rows: list[str] = []
        while (line := self.peek()) is not None and re.match(r"^[0-9a-f]{4}:[0-9a-f]{2}:", line):
            rows.append(line)
            self.i += 1
        script = (
            "for d in /sys/bus/pci/devices/*; do "
            'drv=; [ -L "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")"); '
            'grp=; [ -L "$d/iommu_group" ] && grp=$(basename "$(readlink "$d/iommu_group")"); '
            'echo "$(basename "$d") $(cat "$d/vendor") $(cat "$d/device") $(cat "$d/class")'
            ' $(cat "$d/subsystem_vendor") $(cat "$d/subsystem_device") $(cat "$d/revision")'
            ' driver=$drv group=$grp"; done'
        )
        self.add("every-device", header, script, rows, None, lineno)

    # -- open(...) / read(...) / total=N -----------------------------------
    def raw_read(self, lineno: int) -> None:
        out: list[str] = []
        while (line := self.peek()) is not None and (
                line.startswith(("open(", "read(", "write(", "close(", "total="))):
            out.append(line)
            self.i += 1
        rc = self.take_rc()
        path = OPEN_RE.match(out[0]).group(1) if OPEN_RE.match(out[0]) else ""
        bufsize = next((m.group(1) for l in out if (m := READ_RE.match(l))), "4096")
        script = f"sysfsio rawread {q(path)} {bufsize}"
        if self.asuser is not None:
            script = f"sysfsio asuser {self.asuser[0]} {self.asuser[1]} {script}"
        self.add("raw-read", f"(raw read) {path}", script, out, rc, lineno)

    # -- lines the capture script generated ---------------------------------
    def generated(self, line: str, lineno: int) -> None:
        d = self.cur_dir
        if m := STAT_RE.match(line):
            self.add("stat", line, f"stat -c '%A %s %n' {q(m.group(3))}", [line], None, lineno)
        elif (m := LINK_MODE_RE.match(line)) and d:
            p = _join(d, m.group(2))
            self.add("link", line,
                     f"printf 'LINK %s %s -> %s\\n' \"$(stat -c %A {q(p)})\" {q(m.group(2))} "
                     f"\"$(readlink {q(p)})\"", [line], None, lineno)
        elif (m := LINK_RE.match(line)) and d:
            p = _join(d, m.group(1))
            self.add("link", line,
                     f"printf 'LINK %s -> %s\\n' {q(m.group(1))} \"$(readlink {q(p)})\"",
                     [line], None, lineno)
        elif (m := DIR_RE.match(line)) and d:
            p = _join(d, m.group(3))
            self.add("dir", line,
                     f"printf 'DIR  %s %s\\n' \"$(stat -c '%A %s' {q(p)})\" {q(m.group(3))}",
                     [line], None, lineno)
        elif (m := ATTR_WO_RE.match(line) or ATTR_BLOCK_RE.match(line)) and d:
            name = m.group(1)
            p = _join(d, name)
            out, rc = self.take_until_rc()
            script = (
                f"m=$(stat -c %A {q(p)}); case $m in ?r*) echo \"== {name} ($m):\";; "
                f"*) echo \"== {name} ($m): not readable (write-only)\";; esac; cat {q(p)}"
            )
            self.add("attr", line, script, [line] + out, rc, lineno)
        elif m := BUSNR_RE.match(line):
            if not d:
                return self.unparsed(line, lineno)
            script = (
                "printf '== secondary_bus_number: %s subordinate_bus_number: %s\\n' "
                f"\"$(cat {q(_join(d, 'secondary_bus_number'))} 2>&1)\" "
                f"\"$(cat {q(_join(d, 'subordinate_bus_number'))} 2>&1)\""
            )
            self.add("bus-numbers", line, script, [line], None, lineno)
        elif (m := ATTR_SIZE_RE.match(line)) and d:
            p = _join(d, m.group(1))
            script = (f"printf '== %s (%s): %s\\n' {q(m.group(1))} \"$(stat -c '%A %s' {q(p)})\" "
                      f"\"$(cat {q(p)} 2>&1)\"")
            self.add("attr-size", line, script, [line], None, lineno)
        elif (m := ATTR_LINE_RE.match(line)) and d:
            # `== rel (mode): $(cat)|`; multi-line contents end at the line with '|'.
            lines = [line]
            while not lines[-1].endswith("|") and (nxt := self.peek()) is not None \
                    and not nxt.startswith(STRONG_STARTS):
                lines.append(nxt)
                self.i += 1
            rel = m.group(1)
            first = rel.split("/")[0]
            base = d.rsplit("/", 1)[0] if "/" in rel and d.rsplit("/", 1)[-1] == first else d
            p = _join(base, rel)
            script = (f"printf '== %s (%s): %s|\\n' {q(rel)} \"$(stat -c %A {q(p)})\" "
                      f"\"$(cat {q(p)} 2>&1)\"")
            self.add("attr-line", line, script, lines, None, lineno,
                     volatile=rel.endswith("runtime_active_time"))
        elif m := ABS_LINE_RE.match(line):
            p = m.group(1)
            self.add("abs-line", line, f"printf '== %s: %s\\n' {q(p)} \"$(cat {q(p)} 2>&1)\"",
                     [line], None, lineno)
        elif (m := NO_LINK_RE.match(line)) and (self.dev_dir or self.last_readlink):
            dev = self.dev_dir or self.last_readlink.rsplit("/", 1)[0]
            p = _join(dev, m.group(1))
            self.add("no-link", line, f"[ -L {q(p)} ] || echo {q(line)}", [line], None, lineno)
        elif (m := VIRTFN_RE.match(line)) and d:
            p = _join(d, m.group(1))
            script = (f"printf '%s -> %s group=%s\\n' {q(m.group(1))} \"$(readlink {q(p)})\" "
                      f"\"$(basename \"$(readlink {q(p + '/iommu_group')})\")\"")
            self.add("virtfn", line, script, [line], None, lineno)
        elif NOTE_RE.match(line):
            self.add("note", line, "", [line], None, lineno)
        else:
            self.unparsed(line, lineno)

    def unparsed(self, line: str, lineno: int) -> None:
        self.add("unparsed", line, "", [line], None, lineno)


def parse_text(text: str, path: Path | str = "<capture>") -> Capture:
    lines = text.splitlines()
    return Capture(Path(path), _Parser(Path(path), lines).run())


def parse(path: Path | str = DEFAULT_CAPTURE) -> Capture:
    path = Path(path)
    return parse_text(path.read_text(errors="replace"), path)


if __name__ == "__main__":  # a summary: python -m tests.fidelity.capture [FILE]
    import sys
    from collections import Counter

    cap = parse(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_CAPTURE)
    for s in cap.sections:
        kinds = Counter(i.kind for i in s.items)
        ro = sum(1 for i in s.items if i.readonly and not i.after_write and i.replayable)
        print(f"{s.lineno:6d} {s.name:40s} items={len(s.items):4d} "
              f"read-only-before-writes={ro:4d} {dict(kinds)}")
        for i in s.items:
            if i.kind == "unparsed":
                print(f"       unparsed line {i.lineno}: {i.display}")
