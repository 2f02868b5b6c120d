"""The vectors drivers take at probe (model/base/irqs.py), their irq numbers and IRTEs,
what unbinding and SR-IOV do to them, the posted-interrupt descriptor in host memory,
and the vector space running out."""
from __future__ import annotations

import errno

import pytest

from vfakefs.model import posted, ram, topology
from vfakefs.model.base import binding, irqs
from vfakefs.model.errors import SysfsError
from vfakefs.model.intel.irte import MANAGED_IRQ_SHUTDOWN_VECTOR, PostedDescriptor
from vfakefs.model.pci import sriov
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.vfio import msihandler


def fn(m, bdf):
    return m.by_bdf[Bdf.from_str(bdf if bdf.count(":") == 2 else "0000:" + bdf)]


@pytest.fixture
def m():
    return topology.load("seed-vtd")


@pytest.mark.parametrize("cpus,ixgbe,igb,nvme", [
    (1, 2, 3, 2),            # ixgbe 1 TxRx + other; igb link + rx + tx; nvme admin + 1
    (2, 3, 5, 3),
    (4, 5, 5, 5),            # igb: 4 RSS queues on an I210 are paired: link + 4 TxRx
    (8, 9, 5, 9),
    (64, 64, 5, 33),         # ixgbe: 63 queues + other, at most the 64 table entries; nvme: 33 entries
])
def test_counts_follow_the_cpus(m, cpus, ixgbe, igb, nvme):
    m.nr_cpus = cpus
    assert len(irqs.plan(m, fn(m, "03:00.0"), m.drivers["ixgbe"]).names) == ixgbe
    assert len(irqs.plan(m, fn(m, "02:00.0"), m.drivers["igb"]).names) == igb
    assert len(irqs.plan(m, fn(m, "06:00.0"), m.drivers["nvme"]).names) == nvme
    assert irqs.plan(m, fn(m, "01:00.0"), m.drivers["nouveau"]) == irqs.Plan("msi", ("nvkm",))
    assert irqs.plan(m, fn(m, "01:00.1"), m.drivers["snd_hda_intel"]) is None      # NVIDIA: AZX_DCAPS_NO_MSI


def test_igb_names_at_four_cpus_are_pairs(m):
    m.nr_cpus = 4
    assert irqs.plan(m, fn(m, "02:00.0"), m.drivers["igb"]).names == (
        "eth2", "eth2-TxRx-0", "eth2-TxRx-1", "eth2-TxRx-2", "eth2-TxRx-3")


def test_nothing_without_a_driver_that_takes_vectors(m):
    assert irqs.plan(m, fn(m, "00:01.0"), m.drivers["pcieport"]) is None
    assert irqs.plan(m, fn(m, "03:00.0"), m.drivers["vfio-pci"]) is None
    assert fn(m, "00:1f.4").msi_irqs == []


def test_qemu_ref_keeps_what_it_declares():
    q = topology.load("qemu-ref")
    assert all(not f.msi_names for f in q.functions)
    assert fn(q, "01:00.0").msi_irqs == [(31, "msix"), (33, "msix"), (35, "msix")]


def test_unbind_frees_everything_and_rebind_takes_the_same(m):
    dev, t = fn(m, "03:00.1"), m.irq_remap
    before = (list(dev.msi_irqs), list(dev.msi_names), t.indices(dev), dev.config.bytes[:256])
    binding.unbind(m, m.drivers["ixgbe"], dev.name)
    assert dev.msi_irqs == [] and dev.msi_names == [] and t.indices(dev) == []
    assert not any(int(t.hi[i]) & 0xFFFF == dev.bdf.rid and int(t.lo[i]) & 1 for i in t.present())
    with pytest.raises(SysfsError) as e:
        msihandler.raise_vector(m, dev, 0)
    assert e.value.errno == errno.EINVAL
    binding.bind(m, m.drivers["ixgbe"], dev.name)
    assert (list(dev.msi_irqs), list(dev.msi_names), t.indices(dev), dev.config.bytes[:256]) == before
    m.check()


def test_msi_device_unbind_gives_back_its_intx_irq(m):
    gpu = fn(m, "01:00.0")
    assert gpu.irq == 126 and gpu.intx_irq == 16
    binding.unbind(m, m.drivers["nouveau"], gpu.name)
    assert gpu.irq == 16 and gpu.intx_irq is None and not gpu.config.r16(gpu.caps[0x05] + 2) & 1
    binding.bind(m, m.drivers["nouveau"], gpu.name)
    assert gpu.irq == 126 and gpu.msi_irqs == [(126, "msi")]


def test_rebinding_nvme_takes_admin_then_managed_vectors(m):
    dev, t = fn(m, "06:00.0"), m.irq_remap
    binding.unbind(m, m.drivers["nvme"], dev.name)
    binding.bind(m, m.drivers["nvme"], dev.name)
    owners = [t.owners[i] for i in t.indices(dev)]
    assert [o.managed for o in owners] == [False, True, True]
    assert [t[i].vector != MANAGED_IRQ_SHUTDOWN_VECTOR for i in t.indices(dev)] == [True, True, True]


def test_irq_numbers_reuse_the_lowest_free(m):
    a, b = fn(m, "03:00.0"), fn(m, "03:00.1")
    binding.unbind(m, m.drivers["ixgbe"], a.name)
    binding.unbind(m, m.drivers["ixgbe"], b.name)
    binding.bind(m, m.drivers["ixgbe"], b.name)
    assert [i for i, _ in b.msi_irqs] == [132, 133, 134]
    binding.bind(m, m.drivers["ixgbe"], a.name)
    assert [i for i, _ in a.msi_irqs] == [135, 136, 137]


def test_vfs_take_theirs_and_give_them_back(m):
    pf, t = fn(m, "03:00.0"), m.irq_remap
    present = len(t.present())
    sriov.configure(m, pf, 4)
    vfs = [f for f in m.functions if f.physfn is pf]
    assert [len(f.msi_irqs) for f in vfs] == [3] * 4                  # 2 RSS queues + other, the 3 entries
    assert vfs[0].msi_names == [f"{vfs[0].netdevs[0].name}-TxRx-0", f"{vfs[0].netdevs[0].name}-TxRx-1",
                                vfs[0].netdevs[0].name]
    assert len(t.present()) == present + 12
    sriov.configure(m, pf, 0)
    assert len(t.present()) == present
    m.check()


def test_vector_space_exhausted_leaves_irqs_parked_and_vfio_gets_enospc(m):
    t, dev = m.irq_remap, fn(m, "03:00.1")
    binding.unbind(m, m.drivers["ixgbe"], dev.name)
    for c in range(len(t.matrix.used)):
        t.matrix.used[c].update(range(0x21, 0xEC))
    binding.bind(m, m.drivers["ixgbe"], dev.name)                     # probe succeeds; request_irq fails
    assert [t[i].vector for i in t.indices(dev)] == [MANAGED_IRQ_SHUTDOWN_VECTOR] * 3
    with pytest.raises(SysfsError) as e:
        t.request_irq(t.indices(dev)[0], lambda: None)
    assert e.value.errno == errno.ENOSPC and t.indices(dev)[0] not in t.handlers


# --- posted interrupts ---------------------------------------------------------------------------------
def test_descriptor_layout():
    d = PostedDescriptor(ndst=3, nv=0xF2, pir=1 << 0x31 | 1 << 255, on=True, sn=True)
    raw = d.to_bytes(x2apic=True)
    word = int.from_bytes(raw, "little")
    assert len(raw) == 64 and word >> 256 & 1 and word >> 257 & 1
    assert word >> 264 & 0xFF == 0xF2 and word >> 288 & 0xFFFFFFFF == 3 and word & (1 << 256) - 1 == d.pir
    assert int.from_bytes(d.to_bytes(x2apic=False), "little") >> 288 & 0xFFFFFFFF == 3 << 8   # xAPIC: 8-bit id
    back = PostedDescriptor()
    back.load(raw)
    assert (back.ndst, back.nv, back.pir, back.on, back.sn) == (3, 0xF2, d.pir, True, True)


def test_posting_writes_the_descriptor_in_host_memory(m):
    m.dmar[0].cap |= 1 << 59
    t, dev = m.irq_remap, fn(m, "03:00.0")
    posted.posted_command(m, "0000:03:00.0 vector 1 pda=0x7f000040 vcpu_vector=0x45 ndst=1")
    word = int.from_bytes(ram.read(m, 0x7F000040, 64), "little")
    assert word >> 264 & 0xFF == 0xF2 and word >> 288 == 1 and word & ((1 << 258) - 1) == 0
    r = msihandler.raise_vector(m, dev, 1)[1]
    assert r.posted and r.notified and t.notifications == {1: 1}
    word = int.from_bytes(ram.read(m, 0x7F000040, 64), "little")
    assert word >> 0x45 & 1 and word >> 256 & 1
    # the vCPU side takes the interrupt: clears ON and the PIR bit in memory; the next one notifies again
    ram.write(m, 0x7F000040, (word & ~(1 << 256 | 1 << 0x45)).to_bytes(64, "little"))
    assert msihandler.raise_vector(m, dev, 1)[1].notified and t.notifications == {1: 2}
    # SN suppresses notification for a non-urgent entry
    word = int.from_bytes(ram.read(m, 0x7F000040, 64), "little") & ~(1 << 256) | 1 << 257
    ram.write(m, 0x7F000040, word.to_bytes(64, "little"))
    r = msihandler.raise_vector(m, dev, 1)[1]
    assert r.posted and not r.notified and t.notifications == {1: 2}
    posted.posted_command(m, "0000:03:00.0 vector 1 remapped")
    assert not t[t.indices(dev)[1]].im and msihandler.raise_vector(m, dev, 1)[1].delivered


def test_urgent_notifies_through_sn(m):
    m.dmar[0].cap |= 1 << 59
    dev = fn(m, "03:00.0")
    ram.write(m, 0x5000, (1 << 257).to_bytes(64, "little"))                    # SN already set
    posted.posted_command(m, "0000:03:00.0 vector 0 pda=0x5000 vcpu_vector=0x20 urgent")
    assert msihandler.raise_vector(m, dev, 0)[1].notified


def test_posting_without_cap_pi_changes_nothing(m):
    t = m.irq_remap
    lo, hi = t.lo.copy(), t.hi.copy()
    with pytest.raises(SysfsError) as e:
        posted.posted_command(m, "0000:03:00.0 vector 0 pda=0x5000 vcpu_vector=0x20")
    assert e.value.errno == errno.EINVAL and (t.lo == lo).all() and (t.hi == hi).all()
    assert m.kmsg.text().splitlines()[-1].endswith(
        "vfakefs: posted: dmar0 has no posted-interrupt support (CAP.PI clear)")


# --- vfio-pci ------------------------------------------------------------------------------------------
def test_vfio_program_vectors_appear_and_go(m):
    """On vfio-pci a device has none; SET_IRQS enabling MSI-X takes irq numbers (msi_irqs/)
    and IRTEs apart from every host driver's, named vfio-msix[n](bdf) (vfio_msi_set_vector_signal)."""
    from tests.model.test_vfio_device import MSIX, TRIGGER_EVENTFD, TRIGGER_NONE, Counter, vfio_open
    t = m.irq_remap
    host = {i for f in m.functions if f.bdf != Bdf.from_str("0000:03:00.1") for i in t.indices(f)}
    nic = vfio_open(m, "0000:03:00.1")
    dev = nic.dev
    assert dev.msi_irqs == [] and t.indices(dev) == []
    nic.set_irqs(MSIX, 0, 2, TRIGGER_EVENTFD, [Counter(), Counter()])
    assert dev.msi_irqs == [(135, "msix"), (136, "msix")] and not set(t.indices(dev)) & host
    assert dev.msi_names == ["vfio-msix[0](0000:03:00.1)", "vfio-msix[1](0000:03:00.1)"]
    nic.set_irqs(MSIX, 0, 0, TRIGGER_NONE)
    assert dev.msi_irqs == [] and dev.msi_names == [] and t.indices(dev) == []
    m.check()
