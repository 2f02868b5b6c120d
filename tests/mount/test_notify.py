"""The FORGETs a structural write costs (fuse/notify.py): each notification that drops a
directory the kernel walked evicts the inodes it held below it, and each eviction queues a
FORGET. The write's loop waits for its notifications without serving while they progress,
so the kernel hands those FORGETs over in a few batches, not about one per notification."""
from __future__ import annotations

import subprocess

from vfakefs.client import Controls

PF = "sys/bus/pci/devices/0000:03:00.0"
VFS = 63


def test_a_disable_after_a_walk_costs_a_few_forgets_not_one_per_vf(mount_preset):
    m = mount_preset("seed-vtd")
    c = Controls(m.path)
    (m.path / PF / "sriov_numvfs").write_text(f"{VFS}\n")
    vfs = sorted(p.name for p in (m.path / PF).iterdir() if p.name.startswith("virtfn"))
    assert len(vfs) == VFS
    # the kernel holds each VF's directory and what `ls -lL` looked up in it
    r = subprocess.run(["ls", "-lL", *(f"{m.path / PF}/{vf}/" for vf in vfs)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    before = c.requests()
    (m.path / PF / "sriov_numvfs").write_text("0\n")
    assert not [p for p in (m.path / PF).iterdir() if p.name.startswith("virtfn")]
    c.requests()
    after = c.requests()   # the kernel reads out FORGETs before other requests: all in by now
    forgets = after["forget"] - before["forget"]
    # the inodes below each VF went: one BATCH_FORGET here (with the loop serving while the
    # thread notified, 54-101: about one per VF)
    assert 0 < forgets <= VFS // 4, forgets
