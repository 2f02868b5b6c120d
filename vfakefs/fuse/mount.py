"""Running the FUSE session: init, the trio main loop, signals, clean unmount."""
from __future__ import annotations

import signal

import pyfuse3
import trio

from vfakefs.fuse.ops import MAX_TASKS, SysfsOps

MOUNT_OPTIONS = {"fsname=vfakefs", "subtype=vfakefs", "allow_other", "default_permissions", "nodev", "nosuid"}


def serve(ops: SysfsOps, mountpoint: str, ready=None, background=None) -> None:
    """Mount, call ready() once the kernel can send requests, serve until unmounted
    or SIGTERM/SIGINT, then unmount. background(nursery) starts engine tasks."""
    pyfuse3.init(ops, mountpoint, set(MOUNT_OPTIONS))
    try:
        trio.run(_main, ready, background)
    finally:
        pyfuse3.close(unmount=True)


async def _main(ready, background) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_signals, nursery)
        if background is not None:
            background(nursery)
        if ready is not None:
            ready()
        await pyfuse3.main(max_tasks=MAX_TASKS)   # blocked /dev/kmsg reads hold workers
        nursery.cancel_scope.cancel()


async def _signals(nursery) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for _ in signals:
            pyfuse3.terminate()
            return
