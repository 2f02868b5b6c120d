"""Stores carried out in steps (fuse/stepping.py) on a model Machine, no mount: between two
slices of an SR-IOV enable a reader's requests run and see the VFs added so far, while
sriov_numvfs still shows 0; the writer's write answers once all are there. One step per
slice (STEP_SLICE 0), and trio runs the writer and the reader in turn at each checkpoint,
so what the reader sees does not depend on timing."""
from __future__ import annotations

import trio

from vfakefs.fuse import stepping
from vfakefs.fuse.timeline import write_file
from vfakefs.sysfs.tree import View

from tests.test_timeline import PF, Daemon

N = 63


async def test_a_reader_sees_the_vfs_appear_between_the_steps_of_an_enable(monkeypatch):
    monkeypatch.setattr(stepping, "STEP_SLICE", 0.0)
    d = Daemon()
    ino = d.ops.ino_of("sys/" + View(d.host).device_path(d.m.lookup(PF)))
    seen, done = [], []

    async def writer():
        await write_file(d.ops, f"/sys/bus/pci/devices/{PF}/sriov_numvfs", f"{N}\n")
        done.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        while not done:
            await trio.sleep(0)
            await d.ops.opendir(ino, None)          # what `ls` asks first: the listing as it is now
            names = d.ops.listing(ino)
            seen.append((sum(1 for k in names if k.startswith("virtfn")), d.numvfs()))
    partial = [k for k, shown in seen if 0 < k < N]
    assert partial and all(shown == 0 for k, shown in seen if k < N)
    assert [k for k, _ in seen] == sorted(k for k, _ in seen)          # only ever more
    assert d.numvfs() == N and not d.ops.batches and not d.m.faults.busy
    d.m.check()


async def test_a_disable_in_steps_shows_the_vfs_going_and_the_old_count_until_done(monkeypatch):
    monkeypatch.setattr(stepping, "STEP_SLICE", 0.0)
    d = Daemon()
    await write_file(d.ops, f"/sys/bus/pci/devices/{PF}/sriov_numvfs", f"{N}\n")
    ino = d.ops.ino_of("sys/" + View(d.host).device_path(d.m.lookup(PF)))
    seen, done = [], []

    async def writer():
        await write_file(d.ops, f"/sys/bus/pci/devices/{PF}/sriov_numvfs", "0\n")
        done.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        while not done:
            await trio.sleep(0)
            await d.ops.opendir(ino, None)
            seen.append((sum(1 for k in d.ops.listing(ino) if k.startswith("virtfn")), d.numvfs()))
    assert any(0 < k < N and shown == N for k, shown in seen)
    assert d.numvfs() == 0 and not d.ops.batches
    d.m.check()
