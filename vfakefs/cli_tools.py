"""The commands that look at or act on a machine from outside, through its files (or, for
record, a sysfs): draw | top | scenario | hotplug | record | sriov. Each cmd_<name> beside the
others; add_parsers() declares their arguments for cli.main()."""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import threading
from pathlib import Path

from vfakefs.fuse.state import FSTYPE, mount_type

WAIT_POLL = 0.1       # seconds between two looks at a scenario `vfakefs scenario --wait` follows
SRIOV_POLL = 0.1      # seconds between two counts of a PF's virtfn links while `vfakefs sriov` writes


def _output_format(text: str) -> str:
    if Path(text).suffix.lstrip(".").lower() not in ("svg", "png", "dot"):
        raise argparse.ArgumentTypeError(f"{text}: unknown format (use .svg, .png or .dot)")
    return text


def cmd_draw(args) -> int:
    """The mount's PCI tree, IOMMU groups and NUMA nodes as a picture (draw.py, Graphviz)."""
    from vfakefs import draw
    try:
        draw.render(args.mountpoint, args.output)
    except (draw.DrawError, OSError) as e:
        print(f"vfakefs: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_top(args) -> int:
    """A live view of the mounted machine, per function (top.py), from the mount's files."""
    from vfakefs import top
    try:
        return top.run(args.mountpoint, args.delay, args.iterations, args.batch, args.sort,
                       set(args.device) if args.device else None)
    except top.TopError as e:
        print(f"vfakefs top: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


def _integer(low: int, what: str):
    """An argparse type: an integer >= low, named what in argparse's refusal."""
    def parse(text: str) -> int:
        v = int(text)
        if v < low:
            raise ValueError(text)
        return v
    parse.__name__ = what
    return parse


def _top_args(p) -> None:
    from vfakefs import top

    def positive(text: str) -> float:
        v = float(text)
        if not v > 0 or v == float("inf"):
            raise ValueError(text)
        return v
    positive.__name__ = "number of seconds"

    def bdfs(text: str) -> list[str]:
        return [top.parse_bdf(b) for b in text.split(",") if b]
    bdfs.__name__ = "PCI address"
    p.add_argument("-d", "--delay", type=positive, default=2.0, help="seconds between frames (default 2)")
    p.add_argument("-n", "--iterations", type=_integer(1, "iteration count"), help="stop after this many frames")
    p.add_argument("-b", "--batch", action="store_true", help="plain text frames to stdout, no terminal control")
    p.add_argument("-o", "--sort", choices=top.SORT_KEYS, default="dma", help="sort key (default dma)")
    p.add_argument("-p", "--device", type=bdfs, action="extend", metavar="BDF[,BDF...]",
                   help="only these functions (repeatable; 03:00.0 means 0000:03:00.0)")
    p.add_argument("mountpoint")
    p.set_defaults(func=cmd_top)


def cmd_hotplug(args) -> int:
    """Plug a card into a pciehp slot of a mount, pull one out, or list the slots (the
    mount's `hotplug` control, through client.py)."""
    from vfakefs.client import Controls
    c = Controls(args.mountpoint)
    try:
        if args.action == "add":
            c.hotplug_add(args.slot, args.card)
        elif args.action == "remove":
            c.hotplug_remove(args.target)
        else:
            for name, rest in c.hotplug_slots().items():
                print(f"{name} {rest}")
    except OSError as e:
        why = ""
        with contextlib.suppress(OSError):
            last = [line for line in c.dmesg().splitlines() if "vfakefs: hotplug: " in line]
            why = f" ({last[-1].split('vfakefs: hotplug: ', 1)[1]})" if last and e.errno != errno.ENOENT else ""
        print(f"vfakefs: hotplug: {e.strerror}{why}", file=sys.stderr)
        return 1
    return 0


def cmd_record(args) -> int:
    """A machine's sysfs (default the host's /sys, read only) as a topology file (record/)."""
    from vfakefs import record
    from vfakefs.progress import Progress
    try:
        rec = record.record(args.sysfs, progress=Progress("vfakefs record: reading PCI functions"))
    except (record.RecordError, OSError) as e:
        print(f"vfakefs record: {e}", file=sys.stderr)
        return 1
    for note in rec.notes:
        print(f"vfakefs record: approximated: {note}", file=sys.stderr)
    if args.output in (None, "-"):
        sys.stdout.write(rec.text)
    else:
        Path(args.output).write_text(rec.text)
        print(f"vfakefs record: {rec.devices} devices written to {args.output}", file=sys.stderr)
    return 0


def cmd_scenario(args) -> int:
    """Start a scenario on a mount (the scenario control), stop it, or show its state;
    --wait follows it to its end with a progress line: 0 when every run did what it should."""
    import time

    from vfakefs.client import Controls
    from vfakefs.model import scenario
    from vfakefs.progress import Progress
    mnt = args.mountpoint
    if mount_type(mnt) != FSTYPE:
        print(f"vfakefs: {mnt} is not a vfakefs mount", file=sys.stderr)
        return 1
    c = Controls(mnt)
    try:
        if args.stop:
            c.scenario_stop()
        if args.file:
            try:
                scenario.load(args.file)     # every mistake, with its step and field, before the daemon sees it
            except scenario.ScenarioError as e:
                print(f"vfakefs: {e}", file=sys.stderr)
                return 2
            c.scenario_start(args.file)
        st = c.scenario_status()
    except OSError as e:
        why = [line for line in c.dmesg().splitlines() if "vfakefs: scenario: " in line][-1:]
        print(f"vfakefs: scenario: {e.strerror}" + (f": {why[0].split('vfakefs: scenario: ', 1)[1]}" if why else ""),
              file=sys.stderr)
        return 1
    if not args.wait:
        if not args.file and not args.stop:
            print(c.scenario_text(), end="")
        return 0
    total = int(st.get("runs", "0/0").split("/")[1])
    p = Progress(f"scenario {st.get('name', '')}", total=total)
    while st["state"] == "running":
        p.update(int(st["runs"].split("/")[0]), st.get("next", ""))
        time.sleep(WAIT_POLL)
        st = c.scenario_status()
    p.update(int(st.get("runs", "0/0").split("/")[0]))
    p.done(st["state"] + (f" ({st['why']})" if st.get("why") else "") + f", {st.get('failures', 0)} failed")
    for line in st.get("failed", []):
        print(f"vfakefs: scenario: {line}", file=sys.stderr)
    return 0 if st["state"] == "done" and not st.get("failures") else 1


def _sriov_device(mnt: str, name: str) -> str | None:
    """DEVICE as a PCI address under MNT (0000:03:00.0, or 03:00.0), or an interface name
    under MNT/sys/class/net (its `device` link): the function's address, or None."""
    devices = Path(mnt, "sys/bus/pci/devices")
    if "/" not in name and name not in (".", ".."):
        for bdf in (name, f"0000:{name}"):
            if ":" in bdf and (devices / bdf).is_dir():
                return bdf
        link = Path(mnt, "sys/class/net", name, "device")
        if link.is_symlink():
            bdf = Path(os.readlink(link)).name
            return bdf if (devices / bdf).is_dir() else None
    return None


def _virtfns(pf: Path) -> int:
    try:
        return sum(1 for name in os.listdir(pf) if name.startswith("virtfn"))
    except OSError:
        return 0


class _Done:
    """How many VFs an enable has added (or a disable removed) so far, for the progress
    line, with one lookup a look: VFs come and go from virtfn0 up (sriov_add_vfs,
    sriov_del_vfs), so virtfn<i> tells whether the first i+1 are done; the step doubles
    while it is and halves when not. (A listing of the PF's directory, growing under the
    enable, or a bisection would cost many requests a look, each waiting its turn.)"""

    def __init__(self, pf: Path, total: int, adding: bool):
        self.pf, self.total, self.adding = pf, total, adding
        self.k, self.step = 0, max(1, total // 20)    # a twentieth first: a look costs a request

    def __call__(self) -> int:
        i = min(self.k + self.step, self.total) - 1
        if i >= self.k:
            if os.path.lexists(self.pf / f"virtfn{i}") == self.adding:
                self.k, self.step = i + 1, self.step * 2
            else:
                self.step = max(1, self.step // 2)
        return self.k


def _write_numvfs(path: Path, n: int, label: str, count, total: int) -> int:
    """One write(2) of n to sriov_numvfs from a thread of its own, while this one counts
    (count() -> VFs done) for the progress line: 0 or the write's errno."""
    result: list[int] = []

    def write():
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"%d\n" % n)
            finally:
                os.close(fd)
            result.append(0)
        except OSError as e:
            result.append(e.errno)
    from vfakefs.progress import Progress
    p = Progress(label, total=total)
    t = threading.Thread(target=write, daemon=True)
    t.start()
    while t.is_alive():
        p.update(count())
        t.join(SRIOV_POLL)
    if result[0]:
        p.done(f"failed: {os.strerror(result[0])}")
    else:
        p.update(total)        # the write answers once every VF is there (or gone)
        p.done()
    return result[0]


def cmd_sriov(args) -> int:
    """Set a PF's number of VFs as a careful script does (0 first when another non-zero count
    is set, then N, one write each), with a progress line counting its virtfn links."""
    mnt, n = args.mountpoint, args.count
    if mount_type(mnt) != FSTYPE:
        print(f"vfakefs: {mnt} is not a vfakefs mount", file=sys.stderr)
        return 2
    bdf = _sriov_device(mnt, args.device)
    if bdf is None:
        print(f"vfakefs: sriov: no PCI device or network interface {args.device!r} in {mnt}", file=sys.stderr)
        return 2
    pf = Path(mnt, "sys/bus/pci/devices", bdf)
    numvfs = pf / "sriov_numvfs"
    try:
        old = int(numvfs.read_text())
    except FileNotFoundError:
        print(f"vfakefs: sriov: {bdf} has no SR-IOV capability (no sriov_numvfs)", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"vfakefs: sriov: {bdf}: sriov_numvfs: {getattr(e, 'strerror', e)}", file=sys.stderr)
        return 1
    try:
        total = int((pf / "sriov_totalvfs").read_text())
    except (OSError, ValueError):
        total = n
    # 0 first when another count is set (else EBUSY), unless N is refused anyway (ERANGE
    # comes first in sriov_numvfs_store): a refused N then changes nothing
    steps = ([0] if old and n and old != n and n <= total else []) + [n]
    try:
        for k in steps:
            before = _virtfns(pf) if k == 0 else 0
            if k == 0:
                err = _write_numvfs(numvfs, 0, f"vfakefs sriov: {bdf}: removing VFs",
                                    _Done(pf, before, adding=False), before)
            else:
                err = _write_numvfs(numvfs, k, f"vfakefs sriov: {bdf}: adding VFs", _Done(pf, k, adding=True), k)
            if err:
                print(f"vfakefs: sriov: {bdf}: writing {k} to sriov_numvfs: {os.strerror(err)} "
                      f"({errno.errorcode.get(err, err)})", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        return 130
    print(f"{bdf}: {_virtfns(pf)} VFs")
    return 0


def add_parsers(sub) -> None:
    d = sub.add_parser("draw", help="draw a mount's PCI tree, IOMMU groups and NUMA nodes (Graphviz)")
    d.add_argument("--output", "-o", required=True, type=_output_format,
                   help="FILE.svg, FILE.png or FILE.dot (the extension picks the format)")
    d.add_argument("mountpoint")
    d.set_defaults(func=cmd_draw)
    _top_args(sub.add_parser("top", help="a live per-device view of a mount (DMA, IOTLB/ATC hits, faults, irqs)"))
    sc = sub.add_parser("scenario", help="run a scenario (TOML file of timed steps) on a mount, stop it, "
                                         "or show its state")
    sc.add_argument("--wait", "-w", action="store_true", help="follow it to its end (exit 1 if a step failed)")
    sc.add_argument("--stop", action="store_true", help="stop the running scenario (before starting FILE)")
    sc.add_argument("mountpoint")
    sc.add_argument("file", nargs="?", help="the scenario file (none: show the state)")
    sc.set_defaults(func=cmd_scenario)
    hp = sub.add_parser("hotplug", help="plug a card (a TOML file of [[device]] tables) into a pciehp slot, pull one "
                                        "out without warning, or list the slots")
    hp.add_argument("mountpoint")
    hp_sub = hp.add_subparsers(dest="action")
    hp_add = hp_sub.add_parser("add", help="plug a card into a free slot")
    hp_add.add_argument("slot", help="the slot's name or its port's BDF")
    hp_add.add_argument("card", help="the card's TOML file")
    hp_rm = hp_sub.add_parser("remove", help="pull the card out (surprise removal)")
    hp_rm.add_argument("target", help="the slot's name, its port's BDF or a function on the card")
    hp.set_defaults(func=cmd_hotplug)
    rc = sub.add_parser("record", help="record a machine's /sys/bus/pci (read only) as a topology file")
    rc.add_argument("--output", "-o", help="the topology file to write (default: standard output)")
    rc.add_argument("--sysfs", default="/sys", help="the sysfs to read (default /sys; a mount's MNT/sys)")
    rc.set_defaults(func=cmd_record)
    sr = sub.add_parser("sriov", help="set a PF's number of VFs (0 first if another count is set), "
                                      "showing them appear")
    sr.add_argument("mountpoint")
    sr.add_argument("device", help="the PF: its PCI address (0000:03:00.0 or 03:00.0) or a network interface")
    sr.add_argument("count", type=_integer(0, "number of VFs"), help="the number of VFs (0 disables SR-IOV)")
    sr.set_defaults(func=cmd_sriov)
