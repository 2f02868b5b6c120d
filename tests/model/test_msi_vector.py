"""A device raising its programmed MSI/MSI-X vectors (no mount): the `msi` control's
`<bdf> vector <n>` form and the raw `<bdf> <address> <data>` form through interrupt
remapping, and the eventfd a VFIO program registered (SET_IRQS) becoming readable."""
from __future__ import annotations

import errno
import os

import pytest

from vfakefs.model import controls, topology
from vfakefs.model.errors import SysfsError
from vfakefs.model.pci.msi import vector_message
from vfakefs.model.vfio import type1
from vfakefs.model.vfio.container import VfioContainer
from vfakefs.model.vfio.device import VfioPciDevice
from vfakefs.model.vfio.group import VfioGroup
from vfakefs.model.vfio.intrs import VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE
from vfakefs.model.vfio.memory import BytesMemory
from tests.model.vfio_machine import group42_machine, to_vfio

GPU, AUDIO, NIC = "0000:01:00.0", "0000:01:00.1", "0000:02:00.0"
MSI, MSIX = 1, 2
CONFIG = 7 << 40
TRIGGER_EVENTFD = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD
TRIGGER_NONE = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE
SID_FAIL = "Blocked an interrupt request due to source-id verification failure"


class EventFd:
    """The program's eventfd as the adapter hands it over: signal() adds one."""

    def __init__(self):
        self.fd = os.eventfd(0, os.EFD_NONBLOCK)

    def signal(self):
        os.eventfd_write(self.fd, 1)

    def count(self) -> int:
        try:
            return os.eventfd_read(self.fd)
        except BlockingIOError:
            return 0

    def close(self):
        os.close(self.fd)


@pytest.fixture
def efds():
    made = []

    def make(n=1):
        made.extend(EventFd() for _ in range(n))
        return made[-n:]

    yield make
    for e in made:
        e.close()


def bus_master(vd, on=True):
    cmd = int.from_bytes(vd.read(CONFIG | 4, 2), "little")
    vd.write(CONFIG | 4, (cmd | 0x4 if on else cmd & ~0x4).to_bytes(2, "little"))


@pytest.fixture
def m():
    m = group42_machine()
    return m


@pytest.fixture
def gpu(m):
    """The essay: group 42 in a TYPE1 container, the GPU's device fd, bus mastering on."""
    c = VfioContainer(m, memory=BytesMemory(0x7F00_0000_0000, 1 << 20))
    g = VfioGroup.open(m, 42)
    g.set_container(c)
    c.set_iommu(type1.VFIO_TYPE1_IOMMU)
    vd = g.get_device_fd(GPU)
    bus_master(vd)
    return vd


def rejected(m, text: str, why: str) -> None:
    with pytest.raises(SysfsError) as e:
        controls.msi(m, text)
    assert e.value.errno == errno.EINVAL
    assert m.kmsg.records[-1].text == f"vfakefs: msi: {why}"


def test_vector_signals_the_eventfd_the_program_registered(m, gpu, efds):
    (efd,) = efds()
    gpu.set_irqs(MSI, 0, 1, TRIGGER_EVENTFD, [efd])
    (index,) = m.irq_remap.indices(gpu.dev)
    e = m.irq_remap[index]
    answer = controls.msi(m, f"{GPU} vector 0")
    assert answer.startswith(f"{GPU}: index {index:#x}: delivered vector {e.vector:#04x} to cpu ")
    assert efd.count() == 1
    # the raw form with the message in the capability: the same answer, the same eventfd
    msg = vector_message(gpu.dev, 0, m.irq_remap)
    assert msg.address >> 4 & 1 and (msg.address >> 5 & 0x7FFF) == index    # remappable, handle = IRTE
    assert controls.msi(m, f"{GPU} {msg.address:#x} {msg.data}") == answer
    assert efd.count() == 1


def test_another_requester_with_the_message_is_blocked(m, gpu, efds):
    (efd,) = efds()
    gpu.set_irqs(MSI, 0, 1, TRIGGER_EVENTFD, [efd])
    msg = vector_message(gpu.dev, 0, m.irq_remap)
    (index,) = m.irq_remap.indices(gpu.dev)
    assert controls.msi(m, f"{AUDIO} {msg.address:#x} {msg.data}") == \
        f"{AUDIO}: index {index:#x}: blocked: [fault reason 0x26] {SID_FAIL}\n"
    assert efd.count() == 0
    assert f"[INTR-REMAP] Request device [01:00.1] fault index {index:#x}" in m.kmsg.text()


def test_vector_not_enabled_is_einval_and_signals_nothing(m, gpu, efds):
    rejected(m, f"{GPU} vector 0", f"{GPU} has neither MSI nor MSI-X enabled")   # before SET_IRQS
    (efd,) = efds()
    gpu.set_irqs(MSI, 0, 1, TRIGGER_EVENTFD, [efd])
    rejected(m, f"{GPU} vector 1", f"vector 1 is not enabled: {GPU} has 1 MSI vector enabled")
    rejected(m, f"{GPU} vector 2048", "vector 2048 is outside 0..2047")
    rejected(m, f"{GPU} vector one", "vector 'one' is not a number")
    rejected(m, f"{GPU} vector", "expected '<bdf> <address> <data>' or '<bdf> vector <n>'")
    assert efd.count() == 0
    gpu.close()                                     # the device fd's release disables MSI
    rejected(m, f"{GPU} vector 0", f"{GPU} has neither MSI nor MSI-X enabled")
    assert efd.count() == 0


def test_no_bus_mastering_nothing_is_sent(m, gpu, efds):
    (efd,) = efds()
    gpu.set_irqs(MSI, 0, 1, TRIGGER_EVENTFD, [efd])
    bus_master(gpu, False)
    deliveries = sum(m.irq_remap.deliveries.values())
    assert controls.msi(m, f"{GPU} vector 0") == f"{GPU}: vector 0: not issued (bus mastering disabled)\n"
    assert efd.count() == 0 and sum(m.irq_remap.deliveries.values()) == deliveries


def test_a_deassigned_eventfd_is_not_signalled(m, gpu, efds):
    (efd,) = efds()
    gpu.set_irqs(MSI, 0, 1, TRIGGER_EVENTFD, [efd])
    gpu.set_irqs(MSI, 0, 1, TRIGGER_EVENTFD, [-1])  # free_irq: the IRTE parked on the shutdown vector
    assert controls.msi(m, f"{GPU} vector 0").endswith(": delivered vector 0xef to cpu 0\n")
    assert efd.count() == 0
    (again,) = efds()
    gpu.set_irqs(MSI, 0, 1, TRIGGER_EVENTFD, [again])
    controls.msi(m, f"{GPU} vector 0")
    assert (efd.count(), again.count()) == (0, 1)


def test_msix_vectors_and_the_function_mask(m, efds):
    """MSI-X: each vector its own IRTE and table entry; entries SET_IRQS did not program
    cannot be raised; with the function masked the device holds its messages back."""
    to_vfio(m, NIC)
    nic = VfioPciDevice(m, m.lookup(NIC), None)     # a bare device fd, as test_vfio_device.py opens it
    bus_master(nic)
    fds = efds(3)
    nic.set_irqs(MSIX, 0, 3, TRIGGER_EVENTFD, fds)
    idx = m.irq_remap.indices(nic.dev)
    assert controls.msi(m, f"{NIC} vector 2").startswith(f"{NIC}: index {idx[2]:#x}: delivered vector ")
    assert [e.count() for e in fds] == [0, 0, 1]
    size = (nic.dev.config.r16(nic.dev.caps[0x11] + 2) & 0x7FF) + 1
    rejected(m, f"{NIC} vector 3", f"vector 3 is not enabled: {NIC}'s MSI-X table entry 3 was never programmed")
    rejected(m, f"{NIC} vector {size}", f"vector {size} is past {NIC}'s MSI-X table ({size} entries)")
    pos = nic.dev.caps[0x11]
    nic.dev.config.w16(pos + 2, nic.dev.config.r16(pos + 2) | 0x4000)
    assert controls.msi(m, f"{NIC} vector 0") == f"{NIC}: vector 0: not issued (MSI-X function masked)\n"
    assert [e.count() for e in fds] == [0, 0, 0]


def test_kernel_driver_vectors_are_delivered_without_an_eventfd():
    """A function a kernel driver owns: its MSI-X table holds the messages of the IRTEs the
    driver allocated; they are delivered (no program to signal)."""
    m = topology.load("qemu-ref")
    nvme = m.lookup("0000:01:00.0")
    idx = m.irq_remap.indices(nvme)
    for n, index in enumerate(idx):
        e = m.irq_remap[index]
        assert controls.msi(m, f"{nvme.name} vector {n}").startswith(
            f"{nvme.name}: index {index:#x}: delivered vector {e.vector:#04x} to cpu ")
    assert m.irq_remap.handlers == {}


def test_without_interrupt_remapping_the_vector_reaches_its_eventfd(efds):
    """allow_unsafe_interrupts on a machine without remapping: vfio-pci programs
    compatibility-format messages, which go straight to their CPU vector; the program's
    eventfd for that vector is signalled."""
    m = group42_machine()
    m.interrupt_remapping, m.irq_remap_args, m.irq_remap = False, None, None
    c = VfioContainer(m, allow_unsafe_interrupts=True)
    g = VfioGroup.open(m, 42)
    g.set_container(c)
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    vd = g.get_device_fd(GPU)
    bus_master(vd)
    (efd,) = efds()
    vd.set_irqs(MSI, 0, 1, TRIGGER_EVENTFD, [efd])
    assert controls.msi(m, f"{GPU} vector 0") == f"{GPU}: delivered without remapping (vector 0x21)\n"
    assert efd.count() == 1
    rejected(m, f"{GPU} vector 1", f"vector 1 is not enabled: {GPU} has 1 MSI vector enabled")
    assert efd.count() == 0
