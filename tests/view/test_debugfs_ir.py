"""debugfs's ir_translation_struct (vfakefs/sysfs/debugfs_ir.py) of the interrupt remapping
table: against the reference capture, and its remapped/posted sections."""

from vfakefs.model import topology
from vfakefs.model.intel import irq_boot
from vfakefs.sysfs.debugfs_ir import ir_translation_struct_show
from tests.fidelity.capture import REFERENCE_DIR
from tests.model.test_irq_remap import fn, ir, m  # noqa: F401 (m is the fixture)

CAPTURE = REFERENCE_DIR / "capture-dbgkernel-intel_iommu_on.txt"


def test_qemu_ref_table_is_the_capture(m):
    """Entries, sources and blocks computed; the vectors and CPUs are the capture's, recorded
    in qemu-ref.toml's [recorded.irq] (test_boot.py: without it they are computed)."""
    lines = CAPTURE.read_text().splitlines()
    start = lines.index("$ cat /sys/kernel/debug/iommu/intel/ir_translation_struct") + 1
    end = lines.index("[rc=0]", start)
    assert ir_translation_struct_show(m).splitlines() == lines[start:end]


def test_show_takes_machine_table_or_list(m):
    assert ir_translation_struct_show(m) == ir_translation_struct_show(ir(m)) == ir_translation_struct_show([ir(m)])


def test_posted_delivery_sets_pir_and_notifies_once(m):
    t, dev = ir(m), fn(m, "06:00.0")
    m.dmar[0].cap |= 1 << 59                                            # CAP.PI
    index = t.indices(dev)[1]
    desc = t.set_posted(index, 0x12345640, 0x31, ndst=1)
    e = t[index]
    assert e.im and e.pda == 0x12345640 and e.sid == dev.bdf.rid
    addr, data = t.dev_message(dev, 1)
    r1, r2 = t.deliver_msi(dev, addr, data), t.deliver_msi(dev, addr, data)
    assert r1.posted and r1.notified and r2.posted and not r2.notified
    assert desc.pir == 1 << 0x31 and desc.posted == 2 and desc.notifications == 1
    assert t.by_device[dev.bdf.rid] == 2 and sum(t.deliveries.values()) == 0
    m.dmar[0].cap &= ~(1 << 59)
    assert t.deliver_msi(dev, addr, data).reason == 0x24                # IM=1 without CAP.PI is reserved
    m.dmar[0].cap |= 1 << 59
    text = ir_translation_struct_show(m)
    assert f" {index:<5d} 06:00.0" not in text.split("****")[0]        # posted rows leave the remapped list
    t.clear_posted(index)
    assert not t[index].im and t.deliver_msi(dev, addr, data).vector == 0x28


def test_posted_section_when_cap_pi():
    m = topology.load("qemu-ref")
    m.dmar[0].cap |= 1 << 59
    t = irq_boot.build(m)
    t.set_posted(33, 0x1_2345_6780, 0x41)
    text = ir_translation_struct_show(t)
    posted = text.split("****\n\n")[1]
    assert posted.splitlines() == [
        "Posted Interrupt supported on IOMMU: dmar0", " IR table address:200000",
        " Entry SrcID   PDA_high PDA_low  Vct IRTE_high\t\tIRTE_low",
        " 33    01:00.0 00000001 23456780 41  %016x\t%016x" % (int(t.hi[33]), int(t.lo[33])), ""]
    assert int(t.lo[33]) >> 38 << 6 == 0x23456780


def test_ir_disabled_text():
    m = topology.load("qemu-ref")
    t = irq_boot.build(m)
    t.enabled = False
    assert ir_translation_struct_show(t) == (
        "Remapped Interrupt supported on IOMMU: dmar0\nInterrupt Remapping is not enabled\n\n****\n\n")
