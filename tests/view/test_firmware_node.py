"""The host bridge's ACPI companion: /sys/devices/pci0000:00/firmware_node points at the
PNP0A08 node the root bus's own companions sit under (reference: `ls -la
/sys/devices/pci0000:00/` shows `firmware_node -> ../LNXSYSTM:00/LNXSYBUS:00/PNP0A08:00`);
a machine whose topology describes no ACPI nodes has none."""
from vfakefs.sysfs.nodes import Link

from tests.view.test_view import walk


def test_root_bus_has_its_firmware_node(qemu, seed):
    root = walk(qemu, "sys/devices/pci0000:00").entries()
    assert root["firmware_node"] == Link("../LNXSYSTM:00/LNXSYBUS:00/PNP0A08:00")
    assert "PNP0A08:00" in walk(qemu, "sys/devices/LNXSYSTM:00/LNXSYBUS:00").entries()
    assert "firmware_node" not in walk(seed, "sys/devices/pci0000:00").entries()
