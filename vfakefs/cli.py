"""The command line: vfakefs mount | umount | presets | run | shell, and (cli_tools.py) the commands
that look at or act on a machine from outside: draw | top | scenario | hotplug | record."""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import gc
import os
import subprocess
import sys
from pathlib import Path

from vfakefs import cli_tools, presets
from vfakefs.fuse import state
from vfakefs.fuse.state import FSTYPE, sock_path

HOST_NET_HELP = ("keep the host's network (its interfaces, routes, internet access) instead of a namespace "
                 "whose interfaces and routes are the simulated machine's")
UMOUNT_WAIT = 30      # seconds an unmounted daemon has to exit (a safety net: it takes milliseconds)
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
    kind = state.mount_type(mnt)
    if kind is not None and kind.startswith("fuse"):
        raise SystemExit(f"vfakefs: {mnt} is already mounted ({kind}); `vfakefs umount {mnt}` first")
    if not os.path.isdir(mnt):
        raise SystemExit(f"vfakefs: mountpoint {mnt} is not a directory")


def cmd_mount(args) -> int:
    # the model, the view and FUSE are imported by the commands that use them, so that
    # `umount` and `run` start in a fraction of the time. No cyclic garbage collection while
    # they are imported and the machine boots: nearly all they make lives as long as the
    # daemon, and the collector's passes over it would cost a tenth of the start; the
    # daemon collects as usual (start())
    gc.disable()
    from vfakefs.model import topology
    from vfakefs.model.errors import TopologyError
    from vfakefs.model.host import Host
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
    from vfakefs.syscall.front import SyscallFront
    from vfakefs.sysfs.tree import View
    scenario = None
    if args.scenario:
        from vfakefs.model.scenario import ScenarioError
        try:
            scenario = _mount_scenario(args.scenario, host)
        except ScenarioError as e:
            print(f"vfakefs: {e}", file=sys.stderr)
            return 2

    sock = str(_sockfile(args.mountpoint))     # now: realpath stats the mountpoint, ours once mounted
    server = SyscallFront(host, sock)     # the syscall server, made when `vfakefs run` first connects

    def start(ready):
        # what the start made is set aside (frozen) for good: it lives as long as the daemon
        # (a boot device removed later is not collected if it holds cycles: bounded by the
        # boot machine), so full collections go through only what came after. The young
        # generation holds 100,000 objects, not 700: an enable of 256 VFs leaves ~7,600 tracked
        # objects behind, and the collector's passes over them were a third of what the
        # mount adds to the model (2,048 VFs through the mount: 337-368 ms with the defaults
        # and the boot unfrozen, 257-266 ms at 20,000); at 100,000 the temporaries of an
        # enable mostly die before a pass, and repeated cycles of the model alone stay at
        # ~118 ms an enable instead of climbing to ~150 (a pass over young objects scattered
        # in the memory the last disable freed costs 10-20 ms)
        gc.freeze()
        gc.set_threshold(100_000, 10, 10)
        gc.enable()
        view = View(host)
        ops = SysfsOps(view.root(), lambda: host.machine.generation, view.dirty, cache=args.cache)
        def connected(s):
            ops.settle = s.settle       # a write answers once `vfakefs run`'s networks show it
            ops.catch_up = s.catch_up   # and an open sees what their programs did to their links
        # (until a program connects there is nothing to settle or catch up with, and the
        # requests skip both: an await less on every open and write)
        server.on_server = connected
        host.subscribe(ops.publish)
        if args.cache:   # a netdev's state (mtu, flags, carrier) set from `vfakefs run`'s networks
            host.subscribe_net(lambda nd: ops.pages.sweep_soon())
        host.scenario = timeline = Timeline(host, ops)   # the scenario control's runner
        host.requests = ops.requests    # the requests control shows the counts

        server.listen()   # bound before the mount answers: `vfakefs run` may connect at once

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
        # the daemon serves the mount; this process has nothing left to clean up, and the
        # interpreter's teardown of the modules and the machine it loaded would cost more
        # CPU than booting the machine did: out at once, once what it printed is out
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
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


def cmd_umount(args) -> int:
    """umount(8)'s answers: a busy mount stays mounted and served (unless --lazy); a
    daemon that already exited cleanly left nothing to unmount; a killed one's mount is
    recovered. Waits for the daemon to exit when the unmount has taken effect."""
    mnt = args.mountpoint
    pidfile, logfile = _pidfile(mnt), _logfile(mnt)
    pid = state.daemon_pid(pidfile)
    kind = state.mount_type(mnt)
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
    if state.mount_type(mnt) is None:
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vfakefs", description="mount a simulated PCI/IOMMU/SR-IOV machine")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mount", help="mount a simulated machine")
    m.add_argument("--topology", "-t", default=presets.DEFAULT, help="preset name or TOML file")
    m.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground")
    m.add_argument("--scenario", "-s", metavar="FILE", help="run this scenario's timed steps from the mount on")
    m.add_argument("--cache", action="store_true",
                   help="serve attributes through the page cache: stat shows their content's length, not 4096")
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
    cli_tools.add_parsers(sub)
    args = p.parse_args(argv)
    return args.func(args)
