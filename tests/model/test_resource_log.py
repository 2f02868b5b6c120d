"""The kernel log's PCI resource lines and drivers' banners, against the reference boot and
write logs where the machine is the reference's (qemu-ref), and against the kernel's rules
elsewhere: enumeration (BARs, ROM, VF BARs, quirks, bridge windows), assignment, rescan,
probe and remove lines. Timestamps are normalised away; the order is the kernel's."""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from vfakefs.model import topology
from vfakefs.model.base import binding
from vfakefs.model.errors import TopologyError
from vfakefs.model.pci import quirks, resource_log, sriov
from tests.fidelity.capture import REFERENCE_DIR

PRESETS = Path(str(resources.files("vfakefs.presets")))
# the PCI core's lines (not the generic x86 boot chatter around them: MMCONFIG, ACPI, ...)
PCI = re.compile(r"^(pci |pci_bus |PCI host bridge|PCI: |ACPI: PCI Root Bridge|acpiphp: |BIOS-)")
STAMP = re.compile(r"^\[\s*\d+\.\d+\] ")


def ref_lines(name: str) -> list[str]:
    return [STAMP.sub("", line) for line in (REFERENCE_DIR / name).read_text().splitlines()]


def full_dmesg() -> list[str]:
    text = (REFERENCE_DIR / "capture-stock-intel_iommu_on.txt").read_text()
    return [STAMP.sub("", line) for line in text.split("### full dmesg", 1)[1].splitlines() if STAMP.match(line)]


def texts(m, since: int = 0) -> list[str]:
    return [r.text for r in m.kmsg.records[since:]]


def preset_text(name: str) -> str:
    return (PRESETS / f"{name}.toml").read_text()


# --- boot ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("log", ["boot-stock-intel_iommu_on.log", "boot-stock-intel_iommu_on-pt.log"])
def test_qemu_ref_boot_pci_lines_are_the_references(log):
    """e820 map, host bridge, every BAR/ROM/VF BAR as the firmware left it, the ICH9 LPC quirk,
    acpiphp's slots, each bridge after its bus (6.1), then assignment: the `assigned` lines of
    what SeaBIOS left (I/O windows, the IOV BAR), every bridge programmed, every bus's
    resources, and the cache line size; in the reference's order, line for line."""
    text = preset_text("qemu-ref")
    if log.endswith("-pt.log"):
        text = re.sub(r'(?m)^cmdline = "(.*)"$', r'cmdline = "\1 iommu=pt"', text)
    m = topology.from_text(text, "qemu-ref", PRESETS)
    assert [t for t in texts(m) if PCI.match(t)] == [t for t in ref_lines(log) if PCI.match(t)]


def test_qemu_ref_boot_driver_lines_are_the_references():
    """The modules loaded at boot: nvme's controllers (queues once both are up), e1000e's
    banner and five probe lines, e1000's (the vfio core's banner is not modelled)."""
    drivers = re.compile(r"^(nvme|e1000e?)[ :]")
    m = topology.load("qemu-ref")
    want = [t for t in full_dmesg() if drivers.match(t)]
    want = want[:want.index("e1000 0000:00:05.0 eth1: Intel(R) PRO/1000 Network Connection") + 1]
    assert [t for t in texts(m) if drivers.match(t)] == want
    # and after the port services, which come before them
    t = texts(m)
    assert t.index("pcieport 0000:00:04.0: AER: enabled with IRQ 27") < t.index("nvme nvme0: pci function 0000:01:00.0")
    assert [x for x in t if x.startswith("pcieport")] == [x for x in ref_lines("boot-stock-intel_iommu_on.log")
                                                          if x.startswith("pcieport")]


def test_boot_timestamps_climb():
    for name in ("qemu-ref", "seed-vtd"):
        usec = [r.usec for r in topology.load(name).kmsg.records]
        assert all(a < b for a, b in zip(usec, usec[1:]))


def test_6_12_names_a_bridge_and_its_windows_at_its_setup():
    """6.8+ pci_read_bridge_windows(): right after the bridge's own lines, before its bus's."""
    m = topology.load("seed-vtd")
    t = texts(m)
    i = t.index("pci 0000:00:1c.0: [8086:a110] type 01 class 0x060400 PCIe Root Port")
    assert t[i + 1] == "pci 0000:00:1c.0: PCI bridge to [bus 03]"
    assert t[i + 2].startswith("pci 0000:00:1c.0:   bridge window [mem 0x")
    assert t.index("pci 0000:00:1c.0: PCI bridge to [bus 03]") < t.index(
        "pci 0000:03:00.0: [8086:1528] type 00 class 0x020000 PCIe Endpoint")
    # a firmware that assigned everything: no realloc, no `assigned` line at boot
    assert not any(x.endswith(": assigned") or "max bus depth" in x for x in t)
    # the IOV BARs as assigned, 63 VFs' worth
    assert any(re.fullmatch(r"pci 0000:03:00\.0: VF BAR 0 \[mem 0x[0-9a-f]+-0x[0-9a-f]+ 64bit pref\]: "
                            r"contains BAR 0 for 63 VFs", x) for x in t)


def test_unassigned_iov_bar_turns_on_realloc_and_is_assigned():
    """pci_realloc_detect(): an IOV BAR at 0 turns reallocation on (the `max bus depth` line)."""
    text = preset_text("seed-vtd").replace('[[device]]', '[firmware.unassigned]\n"0000:03:00.1" = ["VF BAR 3"]\n\n'
                                           '[[device]]', 1)
    m = topology.from_text(text, "seed", PRESETS)
    t = texts(m)
    assert "pci_bus 0000:00: max bus depth: 3 pci_try_num: 4" in t   # 00:1d.4 > 08 > 09 > 0a..0c
    vf_bar3 = m.lookup("0000:03:00.1").sriov.iov_resources()[3]
    assert "pci 0000:03:00.1: VF BAR 3 [mem 0x00000000-0x00003fff 64bit pref]" in t
    assert f"pci 0000:03:00.1: VF BAR 3 {resource_log.res(vf_bar3)}: assigned" in t


@pytest.mark.parametrize("table, where", [
    ('[firmware]\ne820 = [[0, 10, "ram"]]\n', "firmware.e820"),
    ('[firmware]\ne820 = [[10, 0, "usable"]]\n', "firmware.e820"),
    ('[firmware]\npci_windows = [[0, 10]]\n', "firmware.pci_windows"),
    ('[firmware]\nbios = 1\n', "firmware"),
    ('[firmware]\nmmconfig = 0x80001000\n', "firmware.mmconfig"),
    ('[firmware]\nbios_year = "2019"\n', "firmware.bios_year"),
    ('[firmware.unassigned]\n"0000:77:00.0" = ["BAR 0"]\n', "firmware.unassigned.0000:77:00.0"),
    ('[firmware.unassigned]\n"0000:03:00.0" = ["BAR 9"]\n', "firmware.unassigned.0000:03:00.0"),
])
def test_bad_firmware_declarations_name_the_field(table, where):
    text = preset_text("seed-vtd").replace("[[device]]", table + "\n[[device]]", 1)
    with pytest.raises(TopologyError) as e:
        topology.from_text(text, "bad.toml", PRESETS)
    assert where in str(e.value)


def test_ich_lpc_quirk_reads_the_functions_own_registers():
    m = topology.load("qemu-ref")
    lpc = m.lookup("0000:00:1f.0")
    assert quirks.header(lpc) == ["quirk: [io  0x0600-0x067f] claimed by ICH6 ACPI/GPIO/TCO"]
    lpc.config.w32(0x48, 0x0501)            # GPIOBASE 0x500, enabled in GPIO_CNTL
    lpc.config.w8(0x4C, 0x10)
    lpc.config.w32(0x84, 0x00FC0A01)        # generic decode 1: 0xa00, mask 0xff
    assert quirks.header(lpc)[1:] == ["quirk: [io  0x0500-0x053f] claimed by ICH6 GPIO",
                                      "ICH7 LPC Generic IO decode 1 PIO at 0a00 (mask 00ff)"]
    lpc.config.w8(0x44, 0)                  # ACPI decode off: no claim
    assert "ICH6 ACPI/GPIO/TCO" not in " ".join(quirks.header(lpc))
    assert quirks.header(m.lookup("0000:00:1f.3")) == []


def test_pm_lines_follow_the_pmc_register():
    m = topology.load("qemu-ref")
    f = m.lookup("0000:02:00.0")
    pos = f.caps.get(0x01)
    assert pos is not None
    f.config.w16(pos + 2, (f.config.r16(pos + 2) & 0x7FF) | 0x600 | (0b11001 << 11))
    assert resource_log._pm_lines(f) == ["supports D1 D2", "PME# supported from D0 D3hot D3cold"]


# --- rescan, bind, unbind ------------------------------------------------------------------------
def test_qemu_ref_unbind_bind_remove_rescan_are_the_references():
    """The capture's e1000e session: unbind (removed PHC), bind (five lines), remove, rescan
    (the function's BARs and ROM, its group, the `assigned` lines by alignment, the probe)."""
    ref = full_dmesg()
    start = ref.index("e1000e 0000:02:00.0 eth0: removed PHC")
    want = [t for t in ref[start:] if not t.startswith("iommu:")]
    m = topology.load("qemu-ref")
    n = len(m.kmsg.records)
    dev, e1000e = m.lookup("0000:02:00.0"), m.drivers["e1000e"]
    binding.unbind(m, e1000e, dev.name)
    binding.bind(m, e1000e, dev.name)
    m.remove_function(dev)
    m.rescan()
    assert texts(m, n) == want


def test_rescan_of_a_pf_shows_its_assigned_iov_bar_and_assigns_it():
    m = topology.load("qemu-ref")
    pf = m.lookup("0000:01:00.0")
    m.remove_function(pf)
    n = len(m.kmsg.records)
    m.rescan()
    t = texts(m, n)
    assert "pci 0000:01:00.0: VF BAR 0 [mem 0xfe004000-0xfe007fff 64bit]" in t     # as the kernel left it
    assert "pci 0000:01:00.0: VF BAR 0 [mem 0xfe004000-0xfe013fff 64bit]: contains BAR 0 for 4 VFs" in t
    # the BAR (16K) before the IOV BAR (one VF's 16K: same alignment, resource order)
    assert t.index("pci 0000:01:00.0: BAR 0 [mem 0xfe000000-0xfe003fff 64bit]: assigned") < \
        t.index("pci 0000:01:00.0: VF BAR 0 [mem 0xfe004000-0xfe013fff 64bit]: assigned")
    assert not any("PCI bridge to" in x for x in t)      # the enabled port above is not reprogrammed


def test_rescanned_bridge_is_named_after_its_bus_and_programmed():
    m = topology.load("qemu-ref")
    m.remove_function(m.lookup("0000:04:01.0"))
    n = len(m.kmsg.records)
    m.rescan()
    t = texts(m, n)
    assert t.index("pci 0000:06:00.0: [1b36:0010] type 00 class 0x010802") < \
        t.index("pci 0000:04:01.0: PCI bridge to [bus 06]")
    assert "pci 0000:04:01.0: bridge window [io  0x3000-0x3fff]: assigned" in t
    assert t.count("pci 0000:04:01.0: PCI bridge to [bus 06]") == 2   # read at the scan, then programmed


def test_vfs_print_only_their_setup_line():
    m = topology.load("seed-vtd")
    pf = m.lookup("0000:03:00.0")
    n = len(m.kmsg.records)
    sriov.configure(m, pf, 1)
    t = texts(m, n)
    assert t[0] == "pci 0000:03:10.0: [8086:1515] type 00 class 0x020000 PCIe Endpoint"
    assert not any("BAR" in x for x in t)
    assert t[-3:] == ["ixgbevf 0000:03:10.0: %s" % pf.sriov.vfs[0].netdevs[0].mac, "ixgbevf 0000:03:10.0: MAC: 2",
                      "ixgbevf 0000:03:10.0: Intel(R) X540 Virtual Function"]


def test_seed_ixgbe_and_igb_banners_follow_the_machine():
    m = topology.load("seed-vtd")
    t = texts(m)
    assert "ixgbe 0000:03:00.0: 32.000 Gb/s available PCIe bandwidth (5.0 GT/s PCIe x8 link)" in t
    assert "ixgbe 0000:03:00.0: Multiqueue Enabled: Rx Queue count = 2, Tx Queue count = 2 XDP Queue count = 0" in t
    igb = m.lookup("0000:02:00.0")
    assert f"igb 0000:02:00.0: {igb.netdevs[0].name}: (PCIe:2.5Gb/s:Width x1) {igb.netdevs[0].mac}" in t
    n = len(m.kmsg.records)
    binding.unbind(m, m.drivers["ixgbe"], "0000:03:00.1")
    assert texts(m, n) == ["ixgbe 0000:03:00.1: complete"]


def test_bandwidth_limited_by_an_upstream_link():
    """pcie_print_link_status(): the narrowest link on the way up is named."""
    from vfakefs.model.base import probe_log
    m = topology.load("seed-vtd")
    dev = m.lookup("0000:03:00.0")
    port = dev.parent
    lnksta = port.pcie_cap + 0x12
    port.config.w16(lnksta, (port.config.r16(lnksta) & ~0x3FF) | 0x1 | (4 << 4))   # 2.5 GT/s x4
    assert probe_log.bandwidth(dev) == ("8.000 Gb/s available PCIe bandwidth, limited by 2.5 GT/s PCIe x4 link "
                                        "at 0000:00:1c.0 (capable of 32.000 Gb/s with 5.0 GT/s PCIe x8 link)")


def test_a_driver_bound_to_a_device_it_does_not_list_still_prints():
    """driver_override onto a device missing from the driver's board table: enum values 0."""
    m = topology.load("seed-vtd")
    dev = m.lookup("0000:0b:00.0")
    binding.unbind(m, dev.driver, dev.name)
    dev.driver_override = "e1000e"
    n = len(m.kmsg.records)
    binding.bind(m, m.drivers["e1000e"], dev.name)
    assert texts(m, n)[-1].endswith(": MAC: 0, PHY: 0, PBA No: 000000-000")


def test_rescan_assigns_what_it_found_even_when_the_view_looked_before():
    """The view lists children between the remove and the rescan (a cached index): the
    assignment still sees the functions the rescan is adding."""
    m = topology.load("qemu-ref")
    m.remove_function(m.lookup("0000:02:00.0"))
    for f in [None] + list(m.functions):
        m.children(f)
    n = len(m.kmsg.records)
    m.rescan()
    assert "pci 0000:02:00.0: ROM [mem 0xfde00000-0xfde3ffff pref]: assigned" in texts(m, n)


def test_ecam_lines_follow_the_firmware_and_the_kernel_version():
    """6.12 says ECAM (6.8's rename) and "reserved as E820 entry"; without an e820 entry
    covering the region there is no `reserved` line."""
    t = texts(topology.load("seed-vtd"))
    assert t[t.index("PCI: ECAM [mem 0x80000000-0x8fffffff] (base 0x80000000) for domain 0000 [bus 00-ff]") + 1:][:2] == \
        ["PCI: ECAM [mem 0x80000000-0x8fffffff] reserved as E820 entry", "PCI: Using configuration type 1 for base access"]
    text = preset_text("seed-vtd").replace("[[device]]", "[firmware]\nmmconfig = 0xe0000000\n\n[[device]]", 1)
    t = texts(topology.from_text(text, "seed", PRESETS))
    assert "PCI: ECAM [mem 0xe0000000-0xefffffff] (base 0xe0000000) for domain 0000 [bus 00-ff]" in t
    assert not any("reserved as E820" in x for x in t)


def test_a_2023_bios_makes_the_kernel_ignore_e820_for_host_bridge_windows():
    text = preset_text("seed-vtd").replace("[[device]]", "[firmware]\nbios_year = 2023\n\n[[device]]", 1)
    t = texts(topology.from_text(text, "seed", PRESETS))
    assert "PCI: Ignoring E820 reservations for host bridge windows" in t
    assert "PCI: Using E820 reservations for host bridge windows" in texts(topology.load("seed-vtd"))
