"""The uevent files of the kobjects other than PCI functions, netdevs and drivers (a
pci_bus, a PCIe port service, a virtio device, the IOMMU): what they show, and that a
write announces that very kobject (model/uevent.Kobj)."""
from __future__ import annotations

import errno

import pytest

from tests.view.test_binding import expect_error, ok, resolve, show

VIRTIO = "sys/bus/pci/devices/0000:05:00.0"        # qemu-ref's modern virtio-net 1af4:1041


def last(view):
    return view.m.uevents.events[-1]


@pytest.mark.parametrize("path, devpath, subsystem", [
    ("sys/class/net/lo/uevent", "/devices/virtual/net/lo", "net"),
    ("sys/class/pci_bus/0000:00/uevent", "/devices/pci0000:00/pci_bus/0000:00", "pci_bus"),
    ("sys/devices/virtual/iommu/dmar0/uevent", "/devices/virtual/iommu/dmar0", "iommu"),
])
def test_a_write_announces_the_kobject_itself(qemu, path, devpath, subsystem):
    seq = qemu.m.uevents.seqnum
    ok(qemu, path, "change\n")
    ev = last(qemu)
    assert (ev.seqnum, ev.action, ev.devpath, ev.subsystem) == (seq + 1, "change", devpath, subsystem)
    assert show(qemu, path) == ("INTERFACE=lo\nIFINDEX=1\n" if "lo" in path else "")
    expect_error(qemu, path, "chnage\n", errno.EINVAL)
    assert qemu.m.uevents.seqnum == seq + 1


def test_a_bridges_bus_and_a_port_service(qemu):
    bridge = next(f for f in qemu.m.functions if f.is_bridge and f.driver is not None)
    here = qemu.device_path(bridge)
    bus = "%04x:%02x" % (bridge.bdf.domain, bridge.secondary)
    ok(qemu, f"sys/{here}/pci_bus/{bus}/uevent", "add")
    assert (last(qemu).devpath, last(qemu).subsystem) == (f"/{here}/pci_bus/{bus}", "pci_bus")
    svc = next(n for n in resolve(qemu, f"sys/{here}").entries() if n.startswith(bridge.name + ":pcie"))
    ok(qemu, f"sys/{here}/{svc}/uevent", "change")
    assert (last(qemu).devpath, last(qemu).subsystem) == (f"/{here}/{svc}", "pci_express")


def test_the_virtio_device_shows_its_driver_and_modalias_and_announces_itself(qemu):
    vdir = next(n for n in resolve(qemu, VIRTIO).entries() if n.startswith("virtio"))
    path = f"{VIRTIO}/{vdir}/uevent"
    # virtio_uevent: virtio-pci's modern id 0x1041 - 0x1040 = 1, vendor its subsystem vendor
    assert show(qemu, path) == "DRIVER=virtio_net\nMODALIAS=virtio:d00000001v00001AF4\n"
    ok(qemu, path, "change")
    ev = last(qemu)
    dev = qemu.m.lookup("0000:05:00.0")
    assert (ev.devpath, ev.subsystem, ev.get("DRIVER"), ev.get("SYNTH_UUID")) == (
        "/" + qemu.device_path(dev) + f"/{vdir}", "virtio", "virtio_net", "0")


def test_the_host_bridge_announces_nothing(qemu):
    # pci0000:00 has no bus and no class: dev_uevent_filter drops its events, the write succeeds
    seq = qemu.m.uevents.seqnum
    ok(qemu, "sys/devices/pci0000:00/uevent", "change")
    assert qemu.m.uevents.seqnum == seq
    expect_error(qemu, "sys/devices/pci0000:00/uevent", "nope", errno.EINVAL)
