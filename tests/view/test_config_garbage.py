"""Whatever root writes to config space, every attribute stays readable (issue 8).

The kernel reads capability offsets once, at probe (pdev->pcie_cap, msi_cap,
msix_cap, acs_cap, the SR-IOV capability's fields in struct pci_sriov), so
clearing the capabilities pointer or overwriting a capability changes only the
attributes whose show() reads config space live, at those cached offsets:
current/max_link_speed/width (pcie_capability_read_*) and
secondary/subordinate_bus_number (pci_read_config_byte).
"""
import errno

import pytest

from vfakefs.model.errors import SysfsError
from vfakefs.model.pci import config as C
from vfakefs.model.pci.pci import LINK_SPEEDS
from vfakefs.sysfs import devices, pci_sysfs
from vfakefs.sysfs.nodes import Bound, Dir

LIVE = {"config", "current_link_speed", "current_link_width", "max_link_speed", "max_link_width",
        "secondary_bus_number", "subordinate_bus_number"}


def snapshot(node, prefix="") -> dict:
    """name -> show() text or errno, for every readable attribute below a device
    directory (its power/, link/, net/ ... too, not its child devices)."""
    out = {}
    for name, child in node.entries().items():
        if isinstance(child, Dir):
            if ":" in name:          # a child function (0000:01:00.0) or port service: not this device
                continue
            out.update(snapshot(child, f"{prefix}{name}/"))
        elif name == "runtime_active_time":
            continue                    # a clock
        elif isinstance(child, Bound) and not child.binary and not child.stream and child.decl.show:
            try:
                out[prefix + name] = child.decl.show(child.obj)
            except SysfsError as e:
                out[prefix + name] = e.errno
    return out


def devdir(view, f) -> Dir:
    return Dir(lambda: devices.device_entries(view, f))


def garbage(size: int) -> bytes:
    return bytes((i * 37 + 11) & 0xFF for i in range(size))


def expected_live(dev, name: str, pcie_pos) -> str:
    cfg = dev.config
    if name == "secondary_bus_number":
        return "%u\n" % cfg.r8(0x19)
    if name == "subordinate_bus_number":
        return "%u\n" % cfg.r8(0x1A)
    lnkcap, lnksta = cfg.r32(pcie_pos + 0x0C), cfg.r16(pcie_pos + 0x12)
    reg = lnksta if name.startswith("current") else lnkcap
    if name.endswith("speed"):
        return LINK_SPEEDS.get(reg & 0xF, "Unknown") + "\n"
    return "%u\n" % ((reg >> 4) & 0x3F)


@pytest.mark.parametrize("preset", ["seed", "qemu"])
def test_every_attribute_survives_garbage_over_the_whole_config_space(request, preset):
    view = request.getfixturevalue(preset)
    m = view.m
    before = {}
    for f in list(m.functions):
        before[f.name] = (snapshot(devdir(view, f)), f.config.find_cap(C.CAP_PCIE))
    for f in list(m.functions):
        # through the config file's own write: what `dd of=config` does as root
        assert pci_sysfs.config_write(f, 0, garbage(f.config.size)) == f.config.size
    assert all(f.config.find_cap(C.CAP_PCIE) != pos for f in m.functions
               for pos in [before[f.name][1]] if pos is not None)   # the garbage did move the lists
    for f in list(m.functions):
        after = snapshot(devdir(view, f))
        old, pcie_pos = before[f.name]
        assert after.keys() == old.keys(), f.name
        for name, text in after.items():
            # EIO only where the kernel always answers it (power/autosuspend_delay_ms)
            assert text != errno.EIO or old[name] == errno.EIO, f"{f.name}/{name}: EIO"
            if name in LIVE:
                assert text == expected_live(f, name, pcie_pos), f"{f.name}/{name}"
            else:
                assert text == old[name], f"{f.name}/{name}: {old[name]!r} -> {text!r}"


def test_clearing_the_capabilities_pointer_keeps_the_link_attributes(qemu):
    """printf '\\x00' | dd of=config bs=1 seek=52 conv=notrunc, as the issue did."""
    f = next(x for x in qemu.m.functions if x.name == "0000:02:00.0")
    d = devdir(qemu, f)
    before = snapshot(d)
    assert pci_sysfs.config_write(f, 0x34, b"\x00") == 1
    assert f.config.find_cap(C.CAP_PCIE) is None
    after = snapshot(d)
    assert after == before
    assert after["current_link_speed"] == "2.5 GT/s PCIe\n" and after["max_link_width"] == "1\n"
