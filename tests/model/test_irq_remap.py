"""Interrupt remapping: IRTE fields, boot allocation, MSI delivery and its faults."""

import pytest
from hypothesis import given, strategies as st

from vfakefs.model.intel import irq_boot
from vfakefs.model import topology
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.intel.irq_remap import IrqRemapTable, msi_sid
from vfakefs.model.intel.irte import (INTR_REMAP_TABLE_ENTRIES, MANAGED_IRQ_SHUTDOWN_VECTOR, SVT_VERIFY_BUS,
                                SVT_VERIFY_SID, Irte, dest_cpus, irte_dest)


@pytest.fixture
def m():
    m = topology.load("qemu-ref")
    m.irq_remap = irq_boot.build(m)
    return m


def ir(m) -> IrqRemapTable:
    return m.irq_remap


def fn(m, name):
    return m.by_bdf[Bdf.from_str(name)]


def ir_log(m) -> list[str]:
    return [r.text for r in m.kmsg.records if "INTR-REMAP" in r.text or "handling fault" in r.text]


# --- IRTE encode/decode ---------------------------------------------------------------------------------
u = st.integers
remapped = st.builds(Irte, present=st.booleans(), fpd=st.booleans(), dm=u(0, 1), rh=u(0, 1), tm=u(0, 1),
                     dlm=u(0, 7), avail=u(0, 15), vector=u(0, 255), dest_id=u(0, 2**32 - 1),
                     sid=u(0, 0xFFFF), sq=u(0, 3), svt=u(0, 3))
posted = st.builds(Irte, present=st.booleans(), fpd=st.booleans(), avail=u(0, 15), im=st.just(True),
                   urg=st.booleans(), vector=u(0, 255), pda=u(0, 2**58 - 1).map(lambda a: a << 6),
                   sid=u(0, 0xFFFF), sq=u(0, 3), svt=u(0, 3))


@given(st.one_of(remapped, posted))
def test_irte_round_trip(e):
    lo, hi = e.encode()
    assert 0 <= lo < 2**64 and 0 <= hi < 2**64
    assert Irte.decode(lo, hi) == e


@given(remapped)
def test_irte_field_positions(e):
    lo, hi = e.encode()
    assert lo & 1 == e.present and lo >> 15 & 1 == 0 and lo >> 16 & 0xFF == e.vector
    assert lo >> 32 == e.dest_id and lo >> 5 & 7 == e.dlm and lo >> 2 & 1 == e.dm
    assert hi & 0xFFFF == e.sid and hi >> 16 & 3 == e.sq and hi >> 18 & 3 == e.svt and hi >> 20 == 0


@given(posted)
def test_posted_field_positions(e):
    lo, hi = e.encode()
    assert lo >> 15 & 1 and lo >> 14 & 1 == e.urg
    assert (lo >> 38) << 6 == e.pda & 0xFFFFFFFF and hi >> 32 == e.pda >> 32


def test_capture_entry_decodes():
    e = Irte.decode(0x00000200002A000D, 0x000000000004FF00)
    assert (e.present, e.dm, e.rh, e.tm, e.dlm, e.vector, e.xapic_dest) == (True, 1, 1, 0, 0, 0x2A, 0x02)
    assert (e.sid, e.sq, e.svt) == (0xFF00, 0, SVT_VERIFY_SID)
    assert irte_dest(1, x2apic=False) == 0x200 and irte_dest(17, x2apic=True) == 1 << 16 | 2


# --- boot allocation ----------------------------------------------------------------------------------------
def test_boot_layout_without_recorded_vectors():
    m = topology.load("qemu-ref")
    m.recorded = {}                       # the topology's [recorded.irq] ignored: all computed
    t = irq_boot.build(m)
    sids = {int(i): t[i].sid for i in t.present()}
    assert all(sids[i] == 0xFF00 for i in (0, 1, 3, 8, 11))            # started legacy pins
    assert [sids[i] for i in (16, 18, 20, 21, 22, 23)] == [0x10, 0x18, 0x20, 0x300, 0x400, 0x408]
    for f in m.functions:
        assert len(t.indices(f)) == len(f.msi_irqs)
        for i in t.indices(f):
            assert t[i].sid == f.bdf.rid and t[i].svt == SVT_VERIFY_SID
    e1000e = [t[i] for i in t.indices(fn(m, "02:00.0"))]
    assert {(e.vector, e.xapic_dest) for e in e1000e} == {(MANAGED_IRQ_SHUTDOWN_VECTOR, 1)}
    nvme = [t[i] for i in t.indices(fn(m, "01:00.0"))[1:]]
    assert [e.xapic_dest for e in nvme] == [1, 2]                       # managed: one queue per CPU


def test_alloc_free_for_bind_unbind(m):
    t, dev = ir(m), fn(m, "02:00.0")
    old = t.indices(dev)
    t.free_msi(dev)
    assert all(not t[i].present for i in old) and t.indices(dev) == []
    new = t.alloc_msi(dev, 3, requested=True)
    assert new == old                                                   # lowest free again
    assert all(t[i].vector != MANAGED_IRQ_SHUTDOWN_VECTOR for i in new)


def test_multi_msi_is_an_aligned_block(m):
    t, dev = ir(m), fn(m, "03:00.0")
    t.free_msi(dev)
    base = t.alloc_msi(dev, 3, "msi")[0]
    assert base % 4 == 0 and t.bitmap[base:base + 4].all()
    addr, data = t.dev_message(dev, 2)
    assert t.deliver_msi(dev, addr, data).index == base + 2
    t.free_msi(dev)
    assert not t.bitmap[base:base + 4].any()


def test_request_irqs_moves_off_shutdown_vector(m):
    t, dev = ir(m), fn(m, "02:00.0")
    t.request_irqs(dev)
    assert all(t[i].vector not in (MANAGED_IRQ_SHUTDOWN_VECTOR,) for i in t.indices(dev))


# --- delivery ---------------------------------------------------------------------------------------------
def test_delivery_counts_per_vector_cpu_and_device(m):
    t, dev = ir(m), fn(m, "05:00.0")
    for n in (0, 1, 1):
        r = t.deliver_msi(dev, *t.dev_message(dev, n))
        assert r.delivered and not r.posted
    assert t.deliveries[0x25, 0] == 1 and t.deliveries[0x26, 1] == 2
    assert t.by_device[dev.bdf.rid] == 3 and r.vector == 0x26 and r.cpu == 1
    assert ir_log(m) == []


def test_essay_source_id_case(m):
    """0:3:0 sending with 0:4:0's handle is blocked (0x26) and logged as dmar_fault does."""
    t = ir(m)
    addr, data = t.dev_message(fn(m, "00:04.0"))
    r = t.deliver_msi("0000:00:03.0", addr, data)
    assert r.blocked and r.reason == 0x26 and r.index == 20
    assert ir_log(m) == [
        "DMAR: DRHD: handling fault status reg 2",
        "DMAR: [INTR-REMAP] Request device [00:03.0] fault index 0x14 [fault reason 0x26] "
        "Blocked an interrupt request due to source-id verification failure"]
    assert m.kmsg.records[-1].level == 3
    assert t.by_device[Bdf.from_str("00:03.0").rid] == 0


@pytest.mark.parametrize("case, reason", [
    ("rsvd_request", 0x20), ("index", 0x21), ("not_present", 0x22), ("rsvd_irte", 0x24), ("compat", 0x25)])
def test_fault_reasons(m, case, reason):
    t, dev = ir(m), fn(m, "01:00.0")
    addr, data = t.dev_message(dev)
    if case == "rsvd_request":
        data |= 0x10000
    elif case == "index":
        t.size = 64
        addr, data = t.msi_message(63, 5)
    elif case == "not_present":
        addr, data = t.msi_message(100)
    elif case == "rsvd_irte":
        t.lo[24] |= 1 << 12
    elif case == "compat":
        addr, data = 0xFEE01000, 0x22
    r = t.deliver_msi(dev, addr, data)
    assert r.reason == reason and t.faults[-1].reason == reason
    assert f"[fault reason 0x{reason:02x}]" in ir_log(m)[-1] and ir_log(m)[-1].startswith(
        "DMAR: [INTR-REMAP] Request device [01:00.0] fault index 0x")


def test_compat_format_passes_when_not_blocked(m):
    t = ir(m)
    t.compat_blocked = False
    r = t.deliver_msi("01:00.0", 0xFEE02004, 0x41)                     # logical, dest 0x02: cpu 1
    assert r.delivered and (r.vector, r.cpus) == (0x41, (1,))


def test_fpd_suppresses_qualified_faults_only(m):
    t, dev = ir(m), fn(m, "01:00.0")
    t.write(24, Irte.decode(int(t.lo[24]) | 2, int(t.hi[24])))         # FPD
    addr, data = t.msi_message(24)
    assert t.deliver_msi("02:00.0", addr, data).reason == 0x26
    assert ir_log(m) == [] and t.faults == []
    assert t.deliver_msi(dev, addr, data).delivered


def test_index_bit_15_and_subhandle(m):
    t = ir(m)
    addr, data = t.msi_message(0x8000 + 3)
    assert addr & 0x4 and (addr >> 5) & 0x7FFF == 3
    t.write(0x8003, Irte(present=True, vector=0x50, dest_id=irte_dest(0, False), dm=1, sid=0x100, svt=1))
    assert t.deliver_msi("01:00.0", addr, data).vector == 0x50
    base_addr, _ = t.msi_message(0x8000)
    assert t.deliver_msi("01:00.0", base_addr, 3).index == 0x8003      # SHV: handle + subhandle
    assert t.deliver_msi("01:00.0", base_addr & ~0x8, 3).index == 0x8000   # SHV clear: subhandle ignored


# --- source-id: SQ masking and SVT 2 bus ranges -----------------------------------------------------------
@pytest.mark.parametrize("sq, other_fn, ok", [
    (0, 1, False), (1, 4, True), (1, 1, False), (2, 6, True), (2, 1, False), (3, 7, True)])
def test_sq_masks_function_bits(sq, other_fn, ok):
    e = Irte(present=True, sid=0x0100, sq=sq, svt=SVT_VERIFY_SID)
    assert IrqRemapTable.source_ok(e, 0x0100)
    assert IrqRemapTable.source_ok(e, 0x0100 | other_fn) == ok
    assert not IrqRemapTable.source_ok(e, 0x0200)


def test_svt2_bus_range(m):
    t = ir(m)
    index = t.alloc_irte()
    t.write(index, Irte(present=True, dm=1, rh=1, vector=0x60, dest_id=irte_dest(0, False),
                        sid=0x0709, svt=SVT_VERIFY_BUS))
    addr, data = t.msi_message(index)
    for bus, ok in ((6, False), (7, True), (8, True), (9, True), (10, False)):
        r = t.deliver_msi(bus << 8 | 0x28, addr, data)
        assert r.delivered == ok, bus
    assert [f.reason for f in t.faults] == [0x26, 0x26]


def test_msi_sid_behind_pcie_to_pci_bridge():
    m = topology.from_text("""
[[device]]
bdf = "0000:00:00.0"
kind = "host_bridge"
vendor = 0x8086
device = 0x29c0
class = 0x060000
[[device]]
bdf = "0000:00:1e.0"
kind = "pcie_pci_bridge"
vendor = 0x1b36
device = 0x000e
class = 0x060400
[[device]]
bdf = "0000:01:03.0"
parent = "0000:00:1e.0"
kind = "pci_endpoint"
vendor = 0x8086
device = 0x100e
class = 0x020000
""", "t.toml")
    dev = m.by_bdf[Bdf.from_str("01:03.0")]
    assert msi_sid(dev) == (SVT_VERIFY_BUS, 0, 0x0101)
    t = IrqRemapTable(m.dmar[0] if m.dmar else None, kmsg=m.kmsg)
    [index] = t.alloc_msi(dev, 1, "msi")
    addr, data = t.msi_message(index)
    assert t.deliver_msi(0x0100, addr, data).delivered                 # the bridge's alias RID
    assert t.deliver_msi(0x0200, addr, data).reason == 0x26


# --- posted interrupts ------------------------------------------------------------------------------------
def test_table_size():
    t = IrqRemapTable()
    assert t.lo.shape == t.hi.shape == (INTR_REMAP_TABLE_ENTRIES,) and t.size == INTR_REMAP_TABLE_ENTRIES


def test_alloc_msi_programs_each_entry_as_prepare_irte_and_free_gives_its_vectors_back(m):
    """alloc_msi writes each entry's words itself (no Irte per vector): present, logical
    destination mode, redirection hint, the vector and CPU (the shutdown vector on CPU 0
    while parked), the function's SID; free_msi gives back only vectors it really took."""
    t, dev = ir(m), fn(m, "02:00.0")
    t.free_msi(dev)
    used = [set(u) for u in t.matrix.used]
    svt, sq, sid = msi_sid(dev)

    def expect(vector, cpu):
        return Irte(present=True, dm=1, rh=1, vector=vector, dest_id=irte_dest(cpu, t.x2apic),
                    sid=sid, sq=sq, svt=svt)
    parked = t.alloc_msi(dev, 2, requested=False)
    assert [t[i] for i in parked] == [expect(MANAGED_IRQ_SHUTDOWN_VECTOR, 0)] * 2
    taken = t.alloc_msi(dev, 3, requested=True)
    got = [t[i] for i in taken]
    assert all(e.vector != MANAGED_IRQ_SHUTDOWN_VECTOR for e in got)
    assert got == [expect(e.vector, dest_cpus(e, t.x2apic)[0]) for e in got]
    assert sum(len(u) for u in t.matrix.used) == sum(len(u) for u in used) + 3
    managed = t.alloc_msi(dev, 2, requested=False, managed_from=0)
    assert [t[i].xapic_dest for i in managed] == [1, 2]                  # one per CPU
    t.free_msi(dev)
    assert [set(u) for u in t.matrix.used] == used                      # parked ones held none
    assert not any(t[i].present for i in parked + taken + managed)
    assert not t.bitmap[parked + taken + managed].any()


@given(st.lists(st.booleans(), min_size=0, max_size=40), u(1, 6), u(0, 40))
def test_alloc_singles_are_alloc_irte_one_at_a_time(taken, n, lowest):
    """_alloc_singles(n) (an MSI-X function's entries, taken at once when the lowest free
    entries are free together) takes what n alloc_irte(1) would, holes and all, and leaves
    the same bitmap and lowest-free hint."""
    def table():
        t = IrqRemapTable()
        t._bitmap[:len(taken)] = bytes(taken)
        t._lowest_free = min(lowest, len(taken), next((i for i, b in enumerate(taken) if not b), len(taken)))
        return t
    a, b = table(), table()
    assert a._alloc_singles(n) == [b.alloc_irte(1) for _ in range(n)]
    assert a._bitmap == b._bitmap and a._lowest_free == b._lowest_free
