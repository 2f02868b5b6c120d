"""`remove` then `rescan` makes a new device, as the kernel does: pci_stop_and_remove_bus_device()
frees the struct pci_dev and pci_rescan_bus() allocates a fresh one from what the hardware
answers. What lived in struct pci_dev / struct device (driver_override, enable_cnt, the sysfs
knobs, SR-IOV's drivers_autoprobe) starts over; what the hardware and firmware hold (config
space as software left it, numa node, ACPI companion, slot) stays."""
from __future__ import annotations

from vfakefs.model import topology
from vfakefs.model.base import binding
from vfakefs.model.pci import sriov

PF = "0000:03:00.0"          # seed-vtd: an ixgbe PF with SR-IOV below root port 00:1c.0


def same(a, b) -> bool:
    """Identity without pytest printing the whole object graph on failure."""
    return a is b


def test_override_is_gone_after_remove_and_rescan_and_the_default_driver_binds():
    m = topology.load("seed-vtd")
    dev = m.lookup(PF)
    ixgbe = dev.driver
    binding.unbind(m, ixgbe, PF)
    dev.driver_override = "vfio-pci"
    binding.drivers_probe(m, PF)
    assert dev.driver.name == "vfio-pci"
    m.remove_function(dev)
    assert m.lookup(PF) is None
    m.rescan()
    new = m.lookup(PF)
    assert not same(new, dev)                              # a new struct pci_dev
    assert new.driver_override is None and same(new.driver, ixgbe)
    assert [id(f) for f in ixgbe.devices if f.name == PF] == [id(new)]
    m.check()


def test_rescan_resets_struct_pci_dev_state_and_keeps_what_the_hardware_holds():
    m = topology.load("seed-vtd")
    dev = m.lookup(PF)
    binding.unbind(m, dev.driver, PF)
    dev.driver_override = "none-such"                      # keeps it unbound while we set knobs
    m.pci_enable(dev, 1)
    dev.d3cold_allowed, dev.broken_parity = 0, 1
    dev.reset_methods = ("bus",)
    dev.rom_attr_enabled, dev.async_suspend, dev.runtime_auto = True, False, True
    dev.sriov.drivers_autoprobe = 0
    dev.sriov.driver_max_vfs = 2
    m.config_write(dev, 0x3C, b"\x0b")                      # Interrupt Line: software's, kept by hardware
    numa, fw, bars = dev.numa_node, dev.firmware_node, list(dev.bars)
    m.remove_function(dev)
    m.rescan()
    new = m.lookup(PF)
    assert not same(new, dev) and not same(new.sriov, dev.sriov) and same(new.sriov.pf, new)
    # bound again by its default driver: the driver's own probe set enable_cnt to 1
    assert new.driver is not None and new.driver.name == "ixgbe" and new.enable_cnt == 1
    assert (new.d3cold_allowed, new.broken_parity) == (1, 0)
    assert new.reset_methods == new.reset_supported == dev.reset_supported
    assert (new.rom_attr_enabled, new.async_suspend, new.runtime_auto) == (False, True, False)
    assert new.sriov.drivers_autoprobe == 1 and new.sriov.total_vfs == new.sriov.hw_total_vfs
    assert new.config.r8(0x3C) == 0x0B
    assert (new.numa_node, new.firmware_node, new.bars) == (numa, fw, bars)
    m.check()


def test_rescan_below_a_removed_bridge_makes_new_children_under_the_new_bridge():
    m = topology.load("qemu-ref")
    port = m.lookup("0000:00:04.0")                        # root port above the switch
    below = [f for f in m.functions if f.name > "0000:03"]
    slots = [s for s in m.slots if s.port in below]
    assert [s.name for s in slots] == ["0-3", "0-4"]       # the downstream ports' hotplug slots
    m.remove_function(port)
    m.rescan()
    assert not same(m.lookup(port.name), port)
    for f in below:
        g = m.lookup(f.name)
        assert not same(g, f) and same(g.parent, m.lookup(f.parent.name))
    assert all(same(s.port, m.lookup(s.port.name)) for s in slots)
    m.check()


def test_vfs_made_after_rescan_hang_off_the_new_pf():
    m = topology.load("seed-vtd")
    dev = m.lookup(PF)
    sriov.enable(m, dev, 2)
    m.remove_function(dev)
    m.rescan()
    new = m.lookup(PF)
    assert new.sriov.num_vfs == 0                          # pci_disable_sriov ran at remove
    sriov.enable(m, new, 1)
    vf = new.sriov.vfs[0]
    assert same(vf.physfn, new) and same(m.lookup(vf.name), vf)
    m.check()


def test_rescan_leaves_pme_and_msi_off_and_memory_decoding_as_it_was():
    """pci_msi_init/pci_msix_init of the new pci_dev turn MSI-X off; pci_stop_dev's pci_pme_active(false)
    touches only PME-capable functions."""
    m = topology.load("qemu-ref")
    dev = m.lookup("0000:02:00.0")                         # e1000e: PME-capable, MSI-X
    binding.unbind(m, dev.driver, dev.name)
    dev.driver_override = "none-such"
    pm, msix = dev.caps[0x01], dev.caps[0x11]
    m.config_write(dev, pm + 4, (dev.config.r16(pm + 4) | 0x0100).to_bytes(2, "little"))      # PME_En
    m.config_write(dev, msix + 2, (dev.config.r16(msix + 2) | 0x8000).to_bytes(2, "little"))  # MSI-X Enable
    cmd = dev.config.r16(0x04)
    assert cmd & 0x2 and not cmd & 0x4                     # memory on, bus master off after unbind
    m.remove_function(dev)
    m.rescan()
    new = m.lookup("0000:02:00.0")
    assert new.driver.name == "e1000e"                    # the override went with the old pci_dev
    binding.unbind(m, new.driver, new.name)
    assert not new.config.r16(msix + 2) & 0x8000
    # its PMC claims no PME support, so pci_pme_active() returned early: PME_En stays as written
    assert new.pme_support == 0 and new.config.r16(pm + 4) & 0x0100
    assert new.config.r16(0x04) & 0x2
    m.check()
