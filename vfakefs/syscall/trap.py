"""`vfakefs run`'s side: start the program with the filter installed and its listener
in the daemon's hands, so /dev/vfio/* and VFIO's ioctls reach the simulated kernel.
No privilege is needed for the filter itself (no_new_privs), and nothing in the
program changes: static binaries, forks and threads inherit the filter."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys

from vfakefs.syscall import seccomp

HELLO, READY = b"listener\n", b"ok\n"


def _attach(sockpath: str, netns: bool = False) -> None:
    """In the child, before exec: die with the parent, install the filter, hand the
    listener to the daemon and wait until it holds it (a trapped call before that
    would wait for nobody)."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getppid()
    libc.prctl(seccomp.PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)                            # the parent died before PDEATHSIG was set
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sockpath)
        fd_base = seccomp.netlink_fd_base()
        listener = seccomp.install_filter(fd_base)
        # the hello says whether to fill our network namespace (netns.py) and where the
        # uevent sockets' fds go (uevent_sock.py)
        words = [HELLO.rstrip(b"\n")] + ([b"netns"] if netns else []) + [b"%d" % fd_base]
        socket.send_fds(s, [b" ".join(words) + b"\n"], [listener])
        os.close(listener)
        if s.recv(16) != READY:
            raise ConnectionError("the daemon did not take the listener")


def run(argv: list[str], sockpath: str | None, prepare=None, netns: bool = False) -> int:
    """Run argv, trapped when sockpath names the daemon's socket (else plainly), after
    prepare() in the child (the mount namespace, and a network namespace when netns: the
    daemon fills it before the program runs); its exit status as a shell reports it
    (128 + signal; 127 when it could not be started)."""
    pid = os.fork()
    if pid == 0:
        try:
            if prepare is not None:
                prepare()
            if sockpath is not None:
                _attach(sockpath, netns)
            try:
                os.execvp(argv[0], argv)
            except OSError as e:
                print(f"vfakefs: run: {argv[0]}: {e.strerror}", file=sys.stderr)
        except BaseException as e:  # noqa: BLE001 - the child must never return into the caller
            print(f"vfakefs: run: {e}", file=sys.stderr)
        os._exit(127)
    # like system(3): the terminal's ^C and ^\ are for the program, not for us
    old = [signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)]
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGQUIT, old[1])
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
