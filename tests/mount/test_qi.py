"""The invalidation queue through a real mount: what boot queued, and what `traffic stop`
queues, read with `cat` from iommu/intel/invalidation_queue in the debug kernel's format;
the stream's IOVA space comes back and is reused (domain_translation_struct)."""
from __future__ import annotations

import re

from tests.conftest import sh

VF = "sys/kernel/debug/vfakefs"
INTEL = "sys/kernel/debug/iommu/intel"
E1000E = "0000:02:00.0"
ROW = re.compile(r"^ *(\d+)\t([0-9a-f]{16})\t([0-9a-f]{16})\t([0-9a-f]{16})$")
WAIT = "0000000200000025"


def queue(mnt) -> tuple[int, int, list[tuple[str, str, str]]]:
    """(head, tail, rows) of `cat invalidation_queue`."""
    out = sh(f"cat {mnt.path / INTEL / 'invalidation_queue'}")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    m = re.fullmatch(r" Base: 0x[0-9a-f]+\tHead: (\d+)\tTail: (\d+)", lines[1])
    rows = [ROW.match(x) for x in lines[3:-2]]
    assert m and len(rows) == 256 and all(rows)
    return int(m[1]), int(m[2]), [(r[2], r[3], r[4]) for r in rows]


def did_of(mnt, bdf: str) -> int:
    for line in (mnt.path / INTEL / "dmar_translation_struct").read_text().splitlines():
        if line.startswith(bdf[5:] + "\t"):
            return int(line.split("\t")[2].split(":")[0], 16) >> 8 & 0xFFFF
    raise AssertionError(f"{bdf} has no context entry")


def test_boot_queue_as_the_debug_kernel_prints_it(mount_preset):
    mnt = mount_preset("seed-vtd")
    head, tail, rows = queue(mnt)
    assert head == tail
    descs = [qw0 for qw0, _, _ in rows[0:tail:2]]
    waits = rows[1:tail:2]
    assert descs[0] == "0000000000000004"                        # global interrupt entry cache
    assert descs[-2:] == ["0000000000000011", "00000000000000d2"]  # global context cache, global IOTLB
    assert all(re.fullmatch(r"0000[0-9a-f]{4}00000014", d) for d in descs[1:-2])   # each boot IRTE
    assert all(qw0 == WAIT and st == "0" * 16 for qw0, _, st in waits)
    assert rows[tail:] == [("0" * 16,) * 3] * (256 - tail)        # nothing else yet


def test_traffic_stop_queues_its_unmap_and_the_iova_is_reused(mount_preset):
    """qemu-ref's groups are strict (DMA) and its unit is in caching mode: start's map and
    stop's unmap each queue a page-selective IOTLB invalidation of the buffer (6.1: no IH)."""
    mnt = mount_preset("qemu-ref")
    t, dom = mnt.path / VF / "traffic", mnt.path / INTEL / "domain_translation_struct"
    did = did_of(mnt, E1000E)
    psi = (f"{did << 16 | 0xF2:016x}", "00000000ffffc002")   # IOTLB, page-selective, DW DR; 4 pages
    for cycle in range(3):
        _, tail, _ = queue(mnt)
        r = sh(f"echo 'start {E1000E} rate=1 ws=16384' > {t} && grep -A5 '^Device {E1000E}' {dom} && "
               f"echo 'stop {E1000E}' > {t}")
        assert r.returncode == 0, r.stderr
        assert [x.split(" |")[0] for x in r.stdout.splitlines()[2:6]] == \
            ["0x00000000ffffc", "0x00000000ffffd", "0x00000000ffffe", "0x00000000fffff"]   # the same IOVA
        head, new_tail, rows = queue(mnt)
        assert head == new_tail == (tail + 4) % 256
        assert rows[tail][:2] == psi and rows[(tail + 2) % 256][:2] == psi     # map (caching mode), unmap
        assert rows[(tail + 1) % 256][0] == rows[(tail + 3) % 256][0] == WAIT
    assert f"Device {E1000E}" in mnt.read(dom) and mnt.read(t) == ""


def test_dma_fq_stop_is_flushed_by_the_flush_queue(mount_preset):
    """seed-vtd's groups are DMA-FQ: stop queues no page-selective invalidation; the flush
    queue's timer (10 ms of the engine's time) queues one domain-selective IOTLB flush, and
    after it the stream's IOVA range is handed out again."""
    mnt = mount_preset("seed-vtd")
    t, dom = mnt.path / VF / "traffic", mnt.path / INTEL / E1000E / "domain_translation_struct"
    did = did_of(mnt, E1000E)
    for cycle in range(2):
        _, tail, _ = queue(mnt)
        r = sh(f"echo 'start {E1000E} rate=1 ws=16384' > {t} && cut -d' ' -f1 {dom} | tail -n +3 && "
               f"echo 'stop {E1000E}' > {t}")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["0x00000000ffffc", "0x00000000ffffd", "0x00000000ffffe", "0x00000000fffff"]
        for _ in range(500):                      # the engine runs the timer; wait for its flush
            head, new_tail, rows = queue(mnt)
            if new_tail != tail:
                break
        assert head == new_tail == (tail + 2) % 256
        assert rows[tail] == (f"{did << 16 | 0xE2:016x}", "0" * 16, "0" * 16) and rows[tail + 1][0] == WAIT
        assert mnt.read(dom).splitlines()[2:] == [] and mnt.read(t) == ""


def test_group_type_write_queues_the_context_flushes(mount_preset):
    """`echo DMA > .../iommu_groups/6/type` (00:1f.4, no driver): the context entry of the
    old domain is cleared with a device-selective context-cache flush and a domain-selective
    IOTLB flush of its DID, each with its wait; not caching mode, so nothing for the new one."""
    mnt = mount_preset("seed-vtd")
    old = did_of(mnt, "0000:00:1f.4")
    _, tail, _ = queue(mnt)
    r = sh(f"echo DMA > {mnt.path / 'sys/kernel/iommu_groups/6/type'} && cat {mnt.path / 'sys/kernel/iommu_groups/6/type'}")
    assert r.returncode == 0 and r.stdout == "DMA\n", r.stderr
    head, new_tail, rows = queue(mnt)
    assert head == new_tail == (tail + 4) % 256
    assert [row[0] for row in rows[tail:tail + 4]] == [
        f"{0x00FC << 32 | old << 16 | 0x31:016x}", WAIT, f"{old << 16 | 0xE2:016x}", WAIT]
    assert did_of(mnt, "0000:00:1f.4") != old
