"""Isolation between DMA domains, as properties: whatever is mapped where, a
device's DMA never lands on a page mapped only in another domain, and every
access to an IOVA its own domain has not mapped faults (translate() and
translate_batch() alike, cold and warm IOTLB); and the vectorised walk answers as the
per-address one does on any table, broken entries included."""
from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from vfakefs.model.iommu import iommu
from vfakefs.model import topology
from vfakefs.model.intel.dmar import DmarUnit
from vfakefs.model.intel.pagetable import ADDR, LEVEL_SHIFT, PS, R, W
from tests.model.clock import fq_timer


KB4, MB2, GB1 = 1 << 12, 1 << 21, 1 << 30

# devices of six different groups on seed-vtd
DEVICES = ["0000:02:00.0", "0000:03:00.0", "0000:03:00.1", "0000:0a:00.0", "0000:0b:00.0", "0000:01:00.0"]

# VTD_EXAMPLES=300 for a longer hunt (about 10 s); the default keeps the suite quick
SETTINGS = settings(max_examples=int(os.environ.get("VTD_EXAMPLES", "25")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def lookup(ranges, iova):
    """ranges: (iova, size, hpa, prot) -> (hpa, prot) of iova, or None."""
    for start, size, hpa, prot in ranges:
        if start <= iova < start + size:
            return hpa + iova - start, prot
    return None


def probes_for(all_ranges, rng):
    """Every range's first and last byte, one byte either side, and random bytes inside."""
    out = set()
    for ranges in all_ranges:
        for start, size, _, _ in ranges:
            out |= {start, start + size - 1, start + size, max(start - 1, 0)}
            out |= {start + int(rng.integers(0, size)) for _ in range(3)}
    return sorted(out)


def check_isolation(u, rids, all_ranges, probes):
    """For each rid: translate and translate_batch of every probe, read and write,
    twice (the second time from a warm IOTLB)."""
    arr = np.array(probes, dtype=np.uint64)
    for rid, own in zip(rids, all_ranges):
        others = [r for o in all_ranges if o is not own for r in o]
        for write in (False, True):
            for _ in range(2):
                h, reason = u.translate_batch(rid, arr, write)
                for i, iova in enumerate(probes):
                    want = lookup(own, iova)
                    t = u.translate(rid, iova, 1, write)
                    u.frcd = [None] * u.nfr
                    u.fsts = 0
                    if want is not None and want[1] & (W if write else R):
                        assert t.fault is None and t.hpa == want[0], (hex(rid), hex(iova), t)
                        assert int(reason[i]) == 0 and int(h[i]) == want[0], (hex(rid), hex(iova))
                    elif want is not None:
                        # mapped here without the permission: always the permission fault
                        # (VT-d 7.1.3: 0x05 write, 0x06 read), never the page, IOTLB or not
                        perm = 0x05 if write else 0x06
                        assert t.fault is not None and t.fault.reason == perm and t.hpa is None, \
                            (hex(rid), hex(iova), write, t)
                        assert int(reason[i]) == perm, (hex(rid), hex(iova), write, int(reason[i]))
                    else:
                        assert t.fault is not None and t.hpa is None, (hex(rid), hex(iova), t)
                        assert int(reason[i]) != 0, (hex(rid), hex(iova))
                        assert int(reason[i]) == t.fault.reason
                    # never a page that only another domain maps
                    for hpa in (t.hpa, int(h[i]) if reason[i] == 0 else None):
                        if hpa is not None:
                            mine = any(hp <= hpa < hp + sz for _, sz, hp, _ in own)
                            theirs = any(hp <= hpa < hp + sz for _, sz, hp, _ in others)
                            assert mine or not theirs, (hex(rid), hex(iova), hex(hpa))


# ----------------------------------------------------------------- through the DMA API
@st.composite
def dma_ops(draw):
    ops = []
    for _ in range(draw(st.integers(1, 14))):
        dev = draw(st.sampled_from(range(len(DEVICES))))
        if ops and draw(st.booleans()) and draw(st.booleans()):
            ops.append(("unmap", dev, draw(st.integers(0, 100))))
        else:
            size = draw(st.sampled_from([1, 4096, 5000, 8192, 3 * 4096, 65536, 300_000, MB2]))
            ops.append(("map", dev, size, draw(st.booleans())))
    return ops


@SETTINGS
@given(dma_ops(), st.integers(0, 2**32 - 1))
def test_dma_api_mappings_stay_in_their_domain(ops, seed):
    m = topology.load("seed-vtd")
    u = m.dmar[0]
    devs = [m.lookup(b) for b in DEVICES]
    assert len({d.group.domain.did for d in devs}) == len(devs)
    live = [dict() for _ in devs]                                # iova -> (iova, size, hpa, prot)
    for op in ops:
        if op[0] == "map":
            _, i, size, write = op
            iova = iommu.dma_map(m, devs[i], size, write)
            hpa, sz, prot = devs[i].group.domain.mappings[iova]
            live[i][iova] = (iova, sz, hpa, prot)
        else:
            _, i, k = op
            if live[i]:
                iova = sorted(live[i])[k % len(live[i])]
                iommu.dma_unmap(m, devs[i], iova)
                del live[i][iova]
    m.check()
    fq_timer(m)             # DMA-FQ: the flush queue's timer flushes what was unmapped
    all_ranges = [list(d.values()) for d in live]
    rng = np.random.default_rng(seed)
    probes = probes_for(all_ranges, rng) + [0xDEAD_B000, 0x1_0000_0000, (1 << 48) - 1, 1 << 48]
    check_isolation(u, [d.bdf.rid for d in devs], all_ranges, probes)
    # dma_unmap every other mapping while the IOTLB holds them: none answers again once the
    # flush queue has flushed (DMA-FQ defers the IOTLB flush by up to 10 ms)
    for i, dev in enumerate(devs):
        for iova in sorted(live[i])[::2]:
            iommu.dma_unmap(m, dev, iova)
            del live[i][iova]
    fq_timer(m)
    check_isolation(u, [d.bdf.rid for d in devs], [list(d.values()) for d in live], probes)


# ----------------------------------------------------------------- direct page-table maps
@st.composite
def table_layouts(draw):
    """Per domain, non-overlapping (iova, size, prot) with 4 KiB / 2 MiB / 1 GiB alignment."""
    n = draw(st.integers(2, 4))
    layouts = []
    for _ in range(n):
        ranges, cursor = [], draw(st.integers(0, 64)) * MB2
        for _ in range(draw(st.integers(1, 5))):
            align = draw(st.sampled_from([KB4, KB4, MB2, GB1]))
            cursor = (cursor + align - 1) & ~(align - 1)
            cursor += draw(st.integers(0, 3)) * align
            pages = draw(st.integers(1, 3)) if align == GB1 else draw(st.integers(1, 600))
            size = pages * (align if align == GB1 else KB4)
            if cursor + size >= 1 << 48:
                break
            ranges.append((cursor, size, align, draw(st.sampled_from([R, R | W, W]))))
            cursor += size
        layouts.append(ranges)
    return layouts


def leaf_span(table, iova):
    """The size of the leaf (4 KiB, 2 MiB or 1 GiB) a walk of iova ends on."""
    return 1 << LEVEL_SHIFT[table.levels - len(table.entries(iova)) + 1]


@SETTINGS
@given(table_layouts(), st.integers(0, 2**32 - 1), st.integers(0, 2**16), st.integers(0, 1000),
       st.integers(0, 1000))
def test_page_table_maps_stay_in_their_domain(layouts, seed, pick, lo, hi):
    u = DmarUnit(0)                                              # seed-vtd's CAP: 4-level, 2M+1G
    rids = [0x0100 + 8 * i for i in range(len(layouts))]
    host = 1 << 40
    all_ranges = []
    for rid, layout in zip(rids, layouts):
        dom = u.new_domain("DMA")
        u.set_context(rid, dom)
        ranges = []
        for iova, size, align, prot in layout:
            host = (host + align - 1) & ~(align - 1)             # disjoint host memory per range
            dom.table.map(iova, host, size, prot)
            ranges.append((iova, size, host, prot))
            host += size + align
        all_ranges.append(ranges)
    rng = np.random.default_rng(seed)
    probes = probes_for(all_ranges, rng)
    check_isolation(u, rids, all_ranges, probes)

    # Unmap part of one range, as intel_iommu_unmap does: whole leaves (a superpage
    # goes entirely), then a page-selective invalidation of what went. Every page of
    # it was just cached; from now on each one faults, none answers from the IOTLB.
    d = pick % len(rids)
    if not all_ranges[d]:
        return
    k = (pick // len(rids)) % len(all_ranges[d])
    iova, size, hpa, prot = all_ranges[d][k]
    pages = size >> 12
    a, b = sorted((lo * pages // 1001, hi * pages // 1001))
    start, end = iova + (a << 12), iova + ((b + 1) << 12)
    dom = u.domains[(u.context(rids[d])[1] >> 8) & 0xFFFF]
    start &= ~(leaf_span(dom.table, start) - 1)                 # widened to leaf boundaries
    end = (end - 1 | leaf_span(dom.table, end - 1) - 1) + 1
    gone = sorted({start, end - 4096, start + (end - start) // 2 & ~0xFFF}
                  | {start + int(rng.integers(0, (end - start) >> 12)) * 4096 for _ in range(16)})
    for write in (False, True):                                  # every probed page cached, R and W
        u.translate_batch(rids[d], np.array(gone, dtype=np.uint64), write)
    assert dom.table.unmap(start, end - start) == end - start
    u.invalidate_pages(dom.did, start, end - start)
    rest = [r for r in ((iova, start - iova), (end, iova + size - end)) if r[1] > 0]
    all_ranges[d] = all_ranges[d][:k] + [(s, n, hpa + s - iova, prot) for s, n in rest] + all_ranges[d][k + 1:]
    edges = [max(start - 1, 0), start, end - 1, end]
    check_isolation(u, rids, all_ranges, sorted(set(probes + gone + edges)))


# ----------------------------------------------------------------- the two walks agree
# what a corrupted entry becomes: a reserved address bit (51:HAW), a superpage bit where
# the level has none or a table was, no permission, W taken away, a table pointer below
# the unit's memory or beyond it
BREAK = [lambda e: e | 1 << 50, lambda e: e | PS, lambda e: e & ~(R | W), lambda e: e & ~W,
         lambda e: (e & ~ADDR) | 0x1000, lambda e: (e & ~ADDR) | 1 << 46]


def entry_addrs(table, iova):
    """The addresses of the entries a walk of iova reads, top level first."""
    out, at = [], table.pgd
    for lv in range(table.levels, 0, -1):
        if not table.mem.owns(at):                   # (a pointer broken before)
            break
        a = at + 8 * ((iova >> LEVEL_SHIFT[lv]) & 511)
        e = table.mem.read(a)
        out.append(a)
        if not e & (R | W) or lv == 1 or e & PS:
            break
        at = e & ADDR
    return out


@SETTINGS
@given(table_layouts(), st.integers(0, 2**32 - 1), st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 7),
       st.sampled_from(range(len(BREAK)))), max_size=6))
def test_the_batched_walk_answers_as_the_per_address_walk_on_broken_tables(layouts, seed, breaks):
    """translate_batch (walk.py: a short way for levels where every lane is plain, the general
    checks where any is not) against translate() on each IOVA alone: the same address or the
    same fault reason, read and write, from a cold IOTLB and again from the one it filled."""
    u = DmarUnit(0)
    dom = u.new_domain("DMA")
    rid = 0x0100
    u.set_context(rid, dom)
    host, ranges = 1 << 40, []
    for iova, size, align, prot in layouts[0]:
        host = (host + align - 1) & ~(align - 1)
        dom.table.map(iova, host, size, prot)
        ranges.append((iova, size))
        host += size + align
    rng = np.random.default_rng(seed)
    probes = probes_for([[(a, n, 0, 0) for a, n in ranges]], rng)
    for which, level, how in breaks:                  # entries on the walks of the probes
        addrs = entry_addrs(dom.table, probes[which % len(probes)])
        if addrs:
            a = addrs[min(level, len(addrs) - 1)]
            u.mem.write(a, BREAK[how](u.mem.read(a)))
    arr = np.array(probes + probes[::3], dtype=np.uint64)   # some pages twice in one batch
    for write in (False, True):
        for _ in range(2):
            h, reason = u.translate_batch(rid, arr, write)
            for i, iova in enumerate(arr.tolist()):
                t = u.translate(rid, iova, 1, write)
                u.frcd, u.fsts = [None] * u.nfr, 0
                if t.fault is None:
                    assert int(reason[i]) == 0 and int(h[i]) == t.hpa, (hex(iova), write, hex(t.hpa))
                else:
                    assert int(reason[i]) == t.fault.reason, (hex(iova), write, int(reason[i]), t.fault.reason)
