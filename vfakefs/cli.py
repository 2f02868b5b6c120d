"""The command line: vfakefs mount | umount | presets (thin over the rest)."""
from __future__ import annotations

import argparse
import errno
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from vfakefs.model import topology
from vfakefs.model.errors import TopologyError
from vfakefs.model.host import Host

DEFAULT_TOPOLOGY = "seed-vtd"


def _state_dir() -> Path:
    for base in ("/run/vfakefs", "/tmp/vfakefs-%d" % os.getuid()):
        try:
            os.makedirs(base, exist_ok=True)
            return Path(base)
        except OSError:
            continue
    raise SystemExit("vfakefs: no writable state directory")


def _pidfile(mnt: str) -> Path:
    return _state_dir() / (os.path.realpath(mnt).strip("/").replace("/", "_") + ".pid")


def _mount_type(mnt: str) -> str | None:
    """The filesystem type mounted exactly at mnt, per /proc/self/mounts."""
    real = os.path.realpath(mnt)
    found = None
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[1].encode().decode("unicode_escape") == real:
                found = parts[2]
    return found


def _unmount(mnt: str) -> bool:
    for cmd in (["umount", mnt], ["fusermount3", "-u", mnt], ["umount", "-l", mnt]):
        try:
            if subprocess.run(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL).returncode == 0:
                return True
        except FileNotFoundError:
            continue
    return False


def _prepare_mountpoint(mnt: str) -> None:
    # listdir, not stat: the kernel may still answer a stat of a dead mount from its cache
    try:
        os.listdir(mnt)
    except OSError as e:
        if e.errno == errno.ENOTCONN:   # a daemon was killed: recover its mountpoint
            _unmount(mnt)
            os.listdir(mnt)
        else:
            raise SystemExit(f"vfakefs: mountpoint {mnt}: {e.strerror}")
    kind = _mount_type(mnt)
    if kind is not None and kind.startswith("fuse"):
        raise SystemExit(f"vfakefs: {mnt} is already mounted ({kind}); `vfakefs umount {mnt}` first")
    if not os.path.isdir(mnt):
        raise SystemExit(f"vfakefs: mountpoint {mnt} is not a directory")


def cmd_mount(args) -> int:
    _prepare_mountpoint(args.mountpoint)
    try:
        host = Host(topology.load(args.topology))
    except TopologyError as e:
        print(f"vfakefs: {e}", file=sys.stderr)
        return 2
    from vfakefs import engine
    from vfakefs.fuse.mount import serve
    from vfakefs.fuse.ops import SysfsOps
    from vfakefs.sysfs.tree import View

    def start(ready):
        view = View(host)
        ops = SysfsOps(view.root(), lambda: host.machine.generation)
        host.subscribe(ops.publish)
        serve(ops, args.mountpoint, ready=ready,
              background=lambda nursery: nursery.start_soon(engine.run, host))

    if args.foreground:
        logging.basicConfig(level=logging.INFO, format="vfakefs: %(message)s")
        _pidfile(args.mountpoint).write_text(f"{os.getpid()}\n")
        start(None)
        return 0
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(r)
        os.setsid()
        log = _state_dir() / (Path(_pidfile(args.mountpoint)).stem + ".log")
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        logging.basicConfig(level=logging.INFO, format="vfakefs: %(message)s")
        code = 0
        try:
            start(lambda: os.write(w, b"ok\n"))
        except BaseException as e:  # noqa: BLE001 - reported to the waiting parent
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
        _pidfile(args.mountpoint).write_text(f"{pid}\n")
        return 0
    os.waitpid(pid, 0)
    print(f"vfakefs: mount failed: {answer.decode().removeprefix('error: ').strip() or 'daemon exited'}",
          file=sys.stderr)
    return 1


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for init to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmd_umount(args) -> int:
    pidfile = _pidfile(args.mountpoint)
    pid = int(pidfile.read_text()) if pidfile.exists() else None
    if _mount_type(args.mountpoint) is None and pid is None:
        print(f"vfakefs: {args.mountpoint} is not mounted", file=sys.stderr)
        return 1
    ok = _unmount(args.mountpoint)
    if pid is not None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.005)
        pidfile.unlink(missing_ok=True)
    if not ok:
        print(f"vfakefs: could not unmount {args.mountpoint}", file=sys.stderr)
        return 1
    return 0


def _namespace_script(mnt: str, stage: str) -> str:
    """Shell lines that, inside a fresh private mount namespace, put the mount's
    trees over /sys, /dev/vfio and /dev/kmsg. Where the host has no /dev/vfio the
    namespace gets its own /dev (a tmpfs with every host entry bind-mounted back),
    so nothing is ever created in the host's /dev."""
    real = os.path.realpath(mnt)
    lines = ["set -e", "mount --make-rprivate /", f"mount --rbind {real}/sys /sys"]
    if os.path.isdir(f"{real}/dev/vfio") and not os.path.isdir("/dev/vfio"):
        lines += [
            f"mount --rbind /dev {stage}",
            "mount -t tmpfs -o mode=755,nosuid vfakefs-dev /dev",
            f"for e in {stage}/* {stage}/.[!.]*; do",
            '  [ -e "$e" ] || [ -L "$e" ] || continue; n=/dev/${e##*/}',
            '  if [ -L "$e" ]; then cp -P "$e" "$n"',
            '  elif [ -d "$e" ]; then mkdir "$n"; mount --rbind "$e" "$n"',
            '  else touch "$n"; mount --bind "$e" "$n"; fi',
            "done",
            "mkdir /dev/vfio",
            f"umount -l {stage}",
        ]
    if os.path.isdir(f"{real}/dev/vfio"):
        lines.append(f"mount --bind {real}/dev/vfio /dev/vfio")
    if os.path.exists(f"{real}/dev/kmsg"):
        lines.append(f"mount --bind {real}/dev/kmsg /dev/kmsg")
    return "\n".join(lines)


def cmd_run(args) -> int:
    """Run a command where /sys is the simulated machine: a private mount namespace
    made by unshare(1), so the host's real /sys is never touched."""
    mnt = args.mnt
    if _mount_type(mnt) is None:
        print(f"vfakefs: {mnt} is not mounted (vfakefs mount {mnt} first)", file=sys.stderr)
        return 1
    cmd = [c for c in args.command if c != "--"][:1] + args.command[1:] if args.command else []
    if args.command and args.command[0] == "--":
        cmd = args.command[1:]
    cmd = cmd or [os.environ.get("SHELL", "/bin/bash")]
    stage = _state_dir() / "ns-stage"
    stage.mkdir(exist_ok=True)
    script = _namespace_script(mnt, str(stage)) + '\nexec "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "vfakefs-run",
                           *cmd]).returncode


def cmd_presets(args) -> int:
    for name, desc in topology.presets().items():
        print(f"{name:12} {desc}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vfakefs", description="mount a simulated PCI/IOMMU/SR-IOV machine")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mount", help="mount a simulated machine")
    m.add_argument("--topology", "-t", default=DEFAULT_TOPOLOGY, help="preset name or TOML file")
    m.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground")
    m.add_argument("mountpoint")
    m.set_defaults(func=cmd_mount)
    u = sub.add_parser("umount", help="unmount and stop the daemon")
    u.add_argument("mountpoint")
    u.set_defaults(func=cmd_umount)
    sub.add_parser("presets", help="list the built-in topologies").set_defaults(func=cmd_presets)
    r = sub.add_parser("run", help="run a command with the mount over /sys in a private mount namespace")
    r.add_argument("--mnt", default=os.environ.get("VFAKEFS_MNT", "mnt"), help="the vfakefs mount (default ./mnt)")
    r.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments (after --)")
    r.set_defaults(func=cmd_run)
    sh = sub.add_parser("shell", help="an interactive shell with the mount over /sys")
    sh.add_argument("--mnt", default=os.environ.get("VFAKEFS_MNT", "mnt"))
    sh.set_defaults(func=cmd_run, command=[])
    args = p.parse_args(argv)
    return args.func(args)
