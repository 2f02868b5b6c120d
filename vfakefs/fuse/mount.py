"""Running the FUSE session: init, the trio main loop, signals, clean unmount."""
from __future__ import annotations

import os
import signal

import pyfuse3
import trio

from vfakefs.fuse.files import MAX_TASKS
from vfakefs.fuse.ops import SysfsOps
from vfakefs.fuse.state import top_mount

MOUNT_OPTIONS = {"fsname=vfakefs", "subtype=vfakefs", "allow_other", "default_permissions", "nodev", "nosuid"}


def serve(ops: SysfsOps, mountpoint: str, ready=None, background=None) -> None:
    """Mount, call ready() once the kernel can send requests, serve until unmounted
    or SIGTERM/SIGINT/SIGHUP, then unmount. background(nursery) starts engine tasks."""
    real = os.path.realpath(mountpoint)   # before the mount: realpath stats every component
    pyfuse3.init(ops, mountpoint, set(MOUNT_OPTIONS))
    # the FUSE connection's device: every mount of it shows this in mountinfo
    ours = top_mount(real)
    try:
        trio.run(_main, ops, ready, background)
    finally:
        # Unmount (lazily, as libfuse does as root) only while our own mount is on top
        # at the path: after `vfakefs umount --lazy` and a new mount there, a signal to
        # this daemon must not take the new mount away. A mount already gone (umount,
        # or the last open file of a lazy unmount closed) aborts the connection, and
        # libfuse then unmounts nothing either.
        pyfuse3.close(unmount=ours is not None and top_mount(real) == ours)


async def _main(ops, ready, background) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_signals, ops)
        if background is not None:
            background(nursery)
        if ready is not None:
            ready()
        await pyfuse3.main(max_tasks=MAX_TASKS)   # blocked /dev/kmsg reads hold workers
        nursery.cancel_scope.cancel()


async def _signals(ops) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for _ in signals:
            ops.shutdown()            # pyfuse3.main returns once every request is answered
            pyfuse3.terminate()
            return
