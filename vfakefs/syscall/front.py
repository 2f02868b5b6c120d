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


async def bind(path: str):
    """A listening socket at path (a killed daemon's left there is replaced), only ours to use."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    await sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(BACKLOG)
    return sock


class SyscallFront:
    def __init__(self, host, sockpath: str):
        self.host, self.sockpath = host, sockpath
        self.server = None                 # the server.SyscallServer, once a program has connected

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        sock = await bind(self.sockpath)
        task_status.started()
        try:
            await trio.lowlevel.wait_readable(sock)      # a connection waits to be accepted
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.sockpath)
            raise
        from vfakefs.syscall.server import SyscallServer
        self.server = SyscallServer(self.host, self.sockpath)
        await self.server.serve_on(sock)

    async def catch_up(self) -> None:
        if self.server is not None:
            await self.server.catch_up()

    async def settle(self) -> None:
        if self.server is not None:
            await self.server.settle()
