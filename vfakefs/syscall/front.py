"""The daemon's Unix socket for `vfakefs run`, bound at the mount, and the server behind
it (server.py: seccomp listeners, VFIO, netlink, network namespaces) made when the first
program connects: its modules, and the model's VFIO and traffic modules they import,
stay off the mount path. Until then no program is trapped, so there is nothing to
answer, nothing to catch up with and nothing to settle."""
from __future__ import annotations

import contextlib
import os
import socket

import trio

BACKLOG = 16


def bind(path: str):
    """A listening trio socket at path (a killed daemon's left there is replaced), only
    ours to use. Bound at once, without a checkpoint: the daemon does it before the mount
    answers, so that a `vfakefs run` started the moment `vfakefs mount` returns finds it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(BACKLOG)
    return trio.socket.from_stdlib_socket(sock)


class SyscallFront:
    def __init__(self, host, sockpath: str):
        self.host, self.sockpath = host, sockpath
        self.server = None                 # the server.SyscallServer, once a program has connected
        self.sock = None
        self.on_server = None              # called with the server once it is made

    def listen(self) -> None:
        """Bind the socket now (in the daemon, before the mount answers)."""
        self.sock = bind(self.sockpath)

    async def serve(self) -> None:
        sock = self.sock if self.sock is not None else bind(self.sockpath)
        try:
            await trio.lowlevel.wait_readable(sock)      # a connection waits to be accepted
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.sockpath)
            raise
        from vfakefs.syscall.server import SyscallServer
        self.server = SyscallServer(self.host, self.sockpath)
        if self.on_server is not None:
            self.on_server(self.server)
        await self.server.serve_on(sock)
