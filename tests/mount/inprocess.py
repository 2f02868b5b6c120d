"""A view served by FUSE inside the test's own trio loop, so that a test can change the
Machine directly, as the engine does, and read the mount with real programs."""
from __future__ import annotations

import os
import subprocess
from contextlib import asynccontextmanager

import pyfuse3
import trio

from vfakefs.fuse.mount import MOUNT_OPTIONS


@asynccontextmanager
async def served(ops, mnt):
    """ops mounted at mnt while the block runs; unmounted whatever happens."""
    pyfuse3.init(ops, str(mnt), set(MOUNT_OPTIONS))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pyfuse3.main)
            try:
                yield
            finally:
                pyfuse3.terminate()
    finally:
        pyfuse3.close(unmount=True)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)])


async def sh(script: str) -> str:
    """A bash script's stdout and stderr (the loop serves the mount meanwhile)."""
    r = await trio.run_process(["bash", "-c", script], capture_stdout=True, capture_stderr=True, check=False)
    return r.stdout.decode() + r.stderr.decode()
