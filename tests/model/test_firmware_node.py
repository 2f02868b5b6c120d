"""The ACPI companions (firmware_node) of qemu-ref follow QEMU's DSDT and the kernel's naming:
a described device's node sits below its bridge's node, names are unique machine-wide
(device:NN counts every _HID-less node), every function in an acpiphp slot has one (the slot
exists because the DSDT describes it), and the reference's links are reproduced."""
from __future__ import annotations

import re
from pathlib import Path

from vfakefs.model import topology

REF = Path(__file__).resolve().parents[1] / "reference/kernel-6.1/capture-stock-intel_iommu_on.txt"
ROOT = "LNXSYSTM:00/LNXSYBUS:00/PNP0A08:00"


def reference_links() -> dict[str, str]:
    """bdf -> firmware_node target the reference's device listings show."""
    out, dev = {}, None
    for line in REF.read_text().splitlines():
        m = re.match(r"\$ ls -la /sys/bus/pci/devices/(\S+?)/?$", line)
        if m:
            dev = m.group(1)
        m = re.search(r"firmware_node -> (?:\.\./)+(LNXSYSTM\S+)", line)
        if m and dev:
            out.setdefault(dev, m.group(1))
    return out


def test_reference_links_are_reproduced():
    m = topology.load("qemu-ref")
    ref = reference_links()
    assert len(ref) >= 8
    for bdf, node in ref.items():
        assert m.lookup(bdf).firmware_node == node, bdf


def test_companions_nest_like_the_pci_tree_and_names_are_unique():
    m = topology.load("qemu-ref")
    names = []
    for f in m.functions:
        if f.firmware_node is None:
            continue
        parent = f.parent.firmware_node if f.parent is not None else ROOT
        assert parent is not None, f"{f.name}: described, but its bridge is not"
        head, _, name = f.firmware_node.rpartition("/")
        assert head == parent and re.fullmatch(r"device:[0-9a-f]{2}", name), f.name
        names.append(name)
    assert len(names) == len(set(names)), sorted(names)


def test_every_function_in_an_acpiphp_slot_has_a_companion_under_a_switch_too():
    m = topology.load("qemu-ref")
    in_slots = [f for f in m.functions for s in m.slots if s.module == "acpiphp" and s.holds(f)]
    assert {f.name for f in in_slots} >= {"0000:05:00.0", "0000:06:00.0"}     # below the XIO3130
    assert all(f.firmware_node for f in in_slots)
