"""pci_match_device() (binding.match): an id naming any device (PCI_ANY_ID) matches every
device of its vendor; an id naming one device only that one."""
from vfakefs.model import topology
from vfakefs.model.base import binding
from vfakefs.model.base.drivers import ANY, Driver, PciDeviceId


def test_any_device_id_matches_every_device_of_its_vendor():
    m = topology.load("seed-vtd")
    dev = next(f for f in m.functions if f.vendor == 0x8086 and f.kind == "endpoint")
    any_dev = Driver("anydev", None, [PciDeviceId(0x8086, ANY)])
    one_dev = Driver("onedev", None, [PciDeviceId(0x8086, dev.device)])
    other = Driver("other", None, [PciDeviceId(0x8086, dev.device ^ 1), PciDeviceId(0x1AF4, ANY)])
    assert binding.match(any_dev, dev) and binding.match(one_dev, dev)
    assert not binding.match(other, dev)
    # an override-only id (vfio-pci's) counts only under driver_override
    ov = Driver("ov", None, [PciDeviceId(ANY, ANY, override_only=True)])
    assert not binding.match(ov, dev)
    dev.driver_override = "ov"
    assert binding.match(ov, dev)
