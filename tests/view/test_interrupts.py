"""vfakefs's debugfs `interrupts` (vfakefs/sysfs/interrupts.py): /proc/interrupts' format
for the functions' MSI/MSI-X irqs, what it leaves out, the counts and the PIN line."""
from __future__ import annotations

from vfakefs.model import posted, topology
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.vfio import msihandler
from vfakefs.sysfs.interrupts import interrupts_show
from tests.model.test_vfio_device import MSIX, TRIGGER_EVENTFD, TRIGGER_NONE, Counter, vfio_open


def test_format_and_counts():
    m = topology.load("seed-vtd")
    lines = interrupts_show(m).splitlines()
    # header: prec (3) + 8 spaces, then CPU%-8d per CPU
    assert lines[0] == "           CPU0       CPU1       "
    assert lines[1] == "126:          0          0  IR-PCI-MSI-0000:01:00.0   0-edge      nvkm"
    assert lines[-1] == "PIN:          0          0   Posted-interrupt notification event"
    dev = m.by_bdf[Bdf.from_str("0000:03:00.0")]
    r = msihandler.raise_vector(m, dev, 2)[1]
    assert f"134:          0          1  IR-PCI-MSIX-0000:03:00.0   2-edge      eth0" in interrupts_show(m)
    assert r.cpus == (1,)


def test_vfio_vectors_show_once_requested_and_go():
    m = topology.load("seed-vtd")
    nic = vfio_open(m, "0000:03:00.1")
    nic.set_irqs(MSIX, 0, 2, TRIGGER_EVENTFD, [Counter(), Counter()])
    text = interrupts_show(m)
    assert "135:          0          0  IR-PCI-MSIX-0000:03:00.1   0-edge      vfio-msix[0](0000:03:00.1)\n" in text
    nic.set_irqs(MSIX, 0, 0, TRIGGER_NONE)
    assert "vfio-msix" not in interrupts_show(m)


def test_posted_delivery_counts_on_pin_not_on_the_irq():
    m = topology.load("seed-vtd")
    m.dmar[0].cap |= 1 << 59
    dev = m.by_bdf[Bdf.from_str("0000:03:00.0")]
    posted.posted_command(m, "0000:03:00.0 vector 0 pda=0x9000 vcpu_vector=0x31 ndst=1")
    msihandler.raise_vector(m, dev, 0)
    text = interrupts_show(m)
    assert "132:          0          0  IR-PCI-MSIX-0000:03:00.0   0-edge      eth0-TxRx-0\n" in text
    assert text.endswith("PIN:          0          1   Posted-interrupt notification event\n")
