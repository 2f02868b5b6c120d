"""The command line: vfakefs mount | umount | presets | run | shell | draw | top | scenario | hotplug | record
(thin over the rest)."""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import os
import subprocess
import sys
from pathlib import Path

from vfakefs import presets
from vfakefs.fuse import state
from vfakefs.fuse.state import FSTYPE, sock_path, top_mount

HOST_NET_HELP = ("keep the host's network (its interfaces, routes, internet access) instead of a namespace "
                 "whose interfaces and routes are the simulated machine's")
UMOUNT_WAIT = 30      # seconds an unmounted daemon has to exit (a safety net: it takes milliseconds)
WAIT_POLL = 0.1       # seconds between two looks at a scenario `vfakefs scenario --wait` follows
MNT_DETACH = 2        # umount2(2)'s lazy flag, <sys/mount.h>


def _state_dir() -> Path:
    for base in ("/run/vfakefs", "/tmp/vfakefs-%d" % os.getuid()):
        try:
            os.makedirs(base, exist_ok=True)
            return Path(base)
        except OSError:
            continue
    raise SystemExit("vfakefs: no writable state directory")


def _state_name(mnt: str) -> str:
    return os.path.realpath(mnt).strip("/").replace("/", "_")


def _pidfile(mnt: str) -> Path:
    return _state_dir() / (_state_name(mnt) + ".pid")


def _logfile(mnt: str) -> Path:
    return _state_dir() / (_state_name(mnt) + ".log")


def _sockfile(mnt: str) -> Path:
    """Where the daemon takes `vfakefs run`'s seccomp listeners (syscall/server.py)."""
    return sock_path(_pidfile(mnt))


def _mount_type(mnt: str) -> str | None:
    """The filesystem type mounted on top at mnt, per /proc/self/mountinfo."""
    top = top_mount(os.path.realpath(mnt))
    return top[0] if top else None


def _umount2(mnt: str, lazy: bool = False) -> int | None:
    """Unmount mnt as umount(8) does: None, or the errno (EBUSY: files are open on
    it). lazy detaches it at once; the kernel drops it when the last file closes.
    Without the privilege, fusermount3 (setuid) unmounts the user's own mount."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(mnt), MNT_DETACH if lazy else 0) == 0:
        return None
    err = ctypes.get_errno()
    if err != errno.EPERM:
        return err
    try:
        r = subprocess.run(["fusermount3", "-u", *(["-z"] if lazy else []), mnt], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        return err
    if r.returncode == 0:
        return None
    return errno.EBUSY if "busy" in r.stderr else err


def _prepare_mountpoint(mnt: str) -> None:
    # listdir, not stat: the kernel may still answer a stat of a dead mount from its cache
    try:
        os.listdir(mnt)
    except OSError as e:
        if e.errno == errno.ENOTCONN:   # a daemon was killed: recover its mountpoint
            _umount2(mnt, lazy=True)
            os.listdir(mnt)
        else:
            raise SystemExit(f"vfakefs: mountpoint {mnt}: {e.strerror}")
    kind = _mount_type(mnt)
    if kind is not None and kind.startswith("fuse"):
        raise SystemExit(f"vfakefs: {mnt} is already mounted ({kind}); `vfakefs umount {mnt}` first")
    if not os.path.isdir(mnt):
        raise SystemExit(f"vfakefs: mountpoint {mnt} is not a directory")


def cmd_mount(args) -> int:
    # the model, the view and FUSE are imported by the commands that use them, so that
    # `umount` and `run` start in a fraction of the time
    from vfakefs.model import topology
    from vfakefs.model.errors import TopologyError
    from vfakefs.model.host import Host
    from vfakefs.model.scenario import ScenarioError
    _prepare_mountpoint(args.mountpoint)
    try:
        host = Host(topology.load(args.topology))
    except TopologyError as e:
        print(f"vfakefs: {e}", file=sys.stderr)
        return 2
    from vfakefs import engine
    from vfakefs.fuse.mount import serve
    from vfakefs.fuse.ops import SysfsOps
    from vfakefs.fuse.timeline import Timeline
    from vfakefs.syscall.server import SyscallServer
    from vfakefs.sysfs.tree import View
    try:
        scenario = _mount_scenario(args.scenario, host) if args.scenario else None
    except ScenarioError as e:
        print(f"vfakefs: {e}", file=sys.stderr)
        return 2

    sock = str(_sockfile(args.mountpoint))     # now: realpath stats the mountpoint, ours once mounted
    server = SyscallServer(host, sock)

    def start(ready):
        view = View(host)
        ops = SysfsOps(view.root(), lambda: host.machine.generation, view.dirty)
        ops.settle = server.settle      # a write answers once `vfakefs run`'s networks show it
        ops.catch_up = server.catch_up  # and an open sees what their programs did to their links
        host.subscribe(ops.publish)
        host.scenario = timeline = Timeline(host, ops)   # the scenario control's runner

        def background(nursery):
            nursery.start_soon(engine.run, host)
            nursery.start_soon(server.serve)
            timeline.nursery = nursery
            if scenario is not None:    # --scenario: from the mount on (simulated time 0)
                timeline.start(scenario)

        serve(ops, args.mountpoint, ready=ready, background=background)

    if args.foreground:
        with state.daemon_state(_pidfile(args.mountpoint), None) as written:
            start(written)
        return 0
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(r)
        os.setsid()
        code = 0
        try:
            with state.daemon_state(_pidfile(args.mountpoint), _logfile(args.mountpoint)) as written:
                # the pidfile is written before the caller returns: `vfakefs umount` finds it
                start(lambda: (written(), os.write(w, b"ok\n")))
        except BaseException as e:  # noqa: BLE001 - reported to the waiting parent (and logged)
            with contextlib.suppress(OSError):   # EPIPE: it failed after the parent had returned
                os.write(w, f"error: {e}\n".encode())
            code = 1
        os._exit(code)
    os.close(w)
    answer = b""
    while chunk := os.read(r, 4096):
        answer += chunk
        if answer.endswith(b"\n"):
            break
    os.close(r)
    if answer.startswith(b"ok"):
        return 0
    os.waitpid(pid, 0)
    print(f"vfakefs: mount failed: {answer.decode().removeprefix('error: ').strip() or 'daemon exited'}",
          file=sys.stderr)
    return 1


def _mount_scenario(path: str, host):
    """`mount --scenario FILE`: the file loaded and checked against the machine (its controls)
    before anything is mounted: a ScenarioError says where the mistake is."""
    from vfakefs.fuse.ops import SysfsOps
    from vfakefs.fuse.timeline import check
    from vfakefs.model import scenario
    from vfakefs.sysfs.tree import View
    sc = scenario.load(path)
    view = View(host)
    check(SysfsOps(view.root(), lambda: host.machine.generation, view.dirty), sc)
    return sc


def cmd_scenario(args) -> int:
    """Start a scenario on a mount (the scenario control), stop it, or show its state;
    --wait follows it to its end with a progress line: 0 when every run did what it should."""
    import time

    from vfakefs.client import Controls
    from vfakefs.model import scenario
    from vfakefs.progress import Progress
    mnt = args.mountpoint
    if _mount_type(mnt) != FSTYPE:
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


def cmd_umount(args) -> int:
    """umount(8)'s answers: a busy mount stays mounted and served (unless --lazy); a
    daemon that already exited cleanly left nothing to unmount; a killed one's mount is
    recovered. Waits for the daemon to exit when the unmount has taken effect."""
    mnt = args.mountpoint
    pidfile, logfile = _pidfile(mnt), _logfile(mnt)
    pid = state.daemon_pid(pidfile)
    kind = _mount_type(mnt)
    if kind != FSTYPE:
        if kind is not None:
            print(f"vfakefs: {mnt} is not a vfakefs mount ({kind})", file=sys.stderr)
        elif pid is not None:
            print(f"vfakefs: {mnt} is not mounted (detached with --lazy; its daemon, pid {pid}, "
                  "exits when the last file open on it is closed)", file=sys.stderr)
        else:
            state.forget(pidfile, logfile)   # a killed daemon's leftovers, if any
            print(f"vfakefs: {mnt} is not mounted", file=sys.stderr)
        return 1
    err = _umount2(mnt)
    if err == errno.EBUSY and (args.lazy or pid is None):
        # --lazy, or nobody serves it any more (the daemon was killed): detach now
        err = _umount2(mnt, lazy=True)
        if err is None and pid is not None:
            print(f"vfakefs: {mnt} was busy: detached; its daemon (pid {pid}) exits when the last "
                  "file open on it is closed", file=sys.stderr)
            return 0
    if err == errno.EBUSY:
        print(f"vfakefs: {mnt}: target is busy (files are open on it); close them, "
              f"or `vfakefs umount --lazy {mnt}`", file=sys.stderr)
        return 1
    if err is not None:
        print(f"vfakefs: could not unmount {mnt}: {os.strerror(err)}", file=sys.stderr)
        return 1
    if pid is not None and not state.wait_exit(pid, UMOUNT_WAIT):
        print(f"vfakefs: {mnt} is unmounted, but its daemon (pid {pid}) has not exited", file=sys.stderr)
        return 1
    state.forget(pidfile, logfile)   # only a killed daemon leaves them
    return 0


def cmd_run(args) -> int:
    """Run a command where /sys is the simulated machine: a private mount namespace
    (namespace.py), so the host's real /sys is never touched, and a network namespace
    whose interfaces are the simulated netdevs (syscall/netns.py; --host-net: the
    host's); with the daemon's socket there, under the seccomp filter whose calls the
    daemon answers (VFIO). With --topology: a fresh machine of its own, mounted for the
    command's lifetime (a temporary mountpoint, unmounted when the command ends)."""
    if getattr(args, "topology", None):
        return _run_on_fresh_machine(args)
    mnt = args.mnt
    if _mount_type(mnt) is None:
        print(f"vfakefs: {mnt} is not mounted (vfakefs mount {mnt} first)", file=sys.stderr)
        return 1
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    cmd = cmd or [os.environ.get("SHELL", "/bin/bash")]
    stage = _state_dir() / "ns-stage"
    stage.mkdir(exist_ok=True)
    from vfakefs import namespace
    from vfakefs.syscall import trap
    sock = _sockfile(mnt)
    return trap.run(cmd, str(sock) if sock.exists() else None,
                    prepare=lambda: namespace.enter(mnt, str(stage), args.host_net), netns=not args.host_net)


def _run_on_fresh_machine(args) -> int:
    """`vfakefs run -t T -- CMD`: vfakefs mount, run, vfakefs umount; each step a
    command of its own, so a failing mount reports as `vfakefs mount` does."""
    import tempfile
    mnt = tempfile.mkdtemp(prefix="vfakefs-run-")
    vfakefs = [sys.executable, "-m", "vfakefs"]
    try:
        rc = subprocess.run([*vfakefs, "mount", "-t", args.topology, mnt]).returncode
        if rc != 0:
            return rc
        os.environ["VFAKEFS_MNT"] = mnt      # the command's `vfakefs draw`, `vfakefs run` find it
        try:
            return cmd_run(argparse.Namespace(mnt=mnt, topology=None, host_net=args.host_net,
                                              command=args.command))
        finally:
            # --lazy: a background process the command left behind does not keep it mounted
            subprocess.run([*vfakefs, "umount", "--lazy", mnt])
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(mnt)


def cmd_presets(args) -> int:
    from vfakefs.model import topology
    for name, desc in topology.presets().items():
        print(f"{name:12} {desc}")
    return 0


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


def _top_args(p) -> None:
    from vfakefs import top

    def positive(text: str) -> float:
        v = float(text)
        if not v > 0 or v == float("inf"):
            raise ValueError(text)
        return v
    positive.__name__ = "number of seconds"

    def count(text: str) -> int:
        v = int(text)
        if v < 1:
            raise ValueError(text)
        return v
    count.__name__ = "iteration count"

    def bdfs(text: str) -> list[str]:
        return [top.parse_bdf(b) for b in text.split(",") if b]
    bdfs.__name__ = "PCI address"
    p.add_argument("-d", "--delay", type=positive, default=2.0, help="seconds between frames (default 2)")
    p.add_argument("-n", "--iterations", type=count, help="stop after this many frames")
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vfakefs", description="mount a simulated PCI/IOMMU/SR-IOV machine")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mount", help="mount a simulated machine")
    m.add_argument("--topology", "-t", default=presets.DEFAULT, help="preset name or TOML file")
    m.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground")
    m.add_argument("--scenario", "-s", metavar="FILE", help="run this scenario's timed steps from the mount on")
    m.add_argument("mountpoint")
    m.set_defaults(func=cmd_mount)
    u = sub.add_parser("umount", help="unmount and stop the daemon (fails while files are open on it)")
    u.add_argument("--lazy", "-l", action="store_true",
                   help="if files are open on it, detach it now; the daemon exits when the last one is closed")
    u.add_argument("mountpoint")
    u.set_defaults(func=cmd_umount)
    sub.add_parser("presets", help="list the built-in topologies").set_defaults(func=cmd_presets)
    r = sub.add_parser("run", help="run a command with the mount over /sys in a private mount namespace, "
                                            "with the simulated machine's network interfaces")
    r.add_argument("--mnt", default=os.environ.get("VFAKEFS_MNT", "mnt"), help="the vfakefs mount (default ./mnt)")
    r.add_argument("--host-net", action="store_true", help=HOST_NET_HELP)
    r.add_argument("--topology", "-t", metavar="NAME|FILE",
                   help="instead of --mnt: a fresh machine (preset name or TOML file) mounted for the "
                        "command's lifetime")
    r.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments (after --)")
    r.set_defaults(func=cmd_run)
    sh = sub.add_parser("shell", help="an interactive shell with the mount over /sys (as run)")
    sh.add_argument("--mnt", default=os.environ.get("VFAKEFS_MNT", "mnt"))
    sh.add_argument("--host-net", action="store_true", help=HOST_NET_HELP)
    sh.set_defaults(func=cmd_run, command=[])
    d = sub.add_parser("draw", help="draw a mount's PCI tree, IOMMU groups and NUMA nodes (Graphviz)")
    d.add_argument("--output", "-o", required=True, help="FILE.svg, FILE.png or FILE.dot (the extension picks the format)")
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
    args = p.parse_args(argv)
    if args.cmd == "draw" and Path(args.output).suffix.lstrip(".").lower() not in ("svg", "png", "dot"):
        d.error(f"{args.output}: unknown format (use .svg, .png or .dot)")
    return args.func(args)
