"""/proc/iomem's tree (kernel/resource.c r_show): format, nesting by the PCI hierarchy,
VF BARs inside their PF's IOV BAR while the VFs exist, drivers' claims while bound,
addresses zeroed for a reader without CAP_SYS_ADMIN."""
from __future__ import annotations

import re

from vfakefs.model import iomem, topology
from vfakefs.model.base import binding
from vfakefs.model.pci import sriov

LINE = re.compile(r"^((?:  )*)([0-9a-f]{8,})-([0-9a-f]{8,}) : (.+)$")


def parse(text: str) -> list[tuple[int, int, int, str]]:
    """(depth, start, end, name) per line; every line must be r_show's form."""
    out = []
    for line in text.splitlines():
        mt = LINE.match(line)
        assert mt, line
        out.append((len(mt[1]) // 2, int(mt[2], 16), int(mt[3], 16), mt[4]))
    return out


def parent_of(rows, i):
    depth = rows[i][0]
    return next((rows[j] for j in range(i - 1, -1, -1) if rows[j][0] == depth - 1), None)


def test_format_and_nesting_qemu_ref():
    m = topology.load("qemu-ref")
    rows = parse(iomem.show(m, True))
    names = [r[3] for r in rows]
    assert rows[0] == (0, 0, 0xFFF, "Reserved")                 # trim_bios_range: page 0 is the BIOS's
    assert rows[1] == (0, 0x1000, 0x9FBFF, "System RAM")
    assert (0, 0x100000, 0x3FFD0FFF, "System RAM") in rows
    assert (0, 0xC0000000, 0xFEBFFFFF, "PCI Bus 0000:00") in rows
    assert (0, 0x100000000, 0x8FFFFFFFF, "PCI Bus 0000:00") in rows   # wider than 8 digits as it needs
    assert (0, 0xFED90000, 0xFED90FFF, "dmar0") in rows
    # the ECAM region inserted over the e820 entry reserving it (insert_resource)
    i = rows.index((0, 0xB0000000, 0xBFFFFFFF, "PCI MMCONFIG 0000 [bus 00-ff]"))
    assert rows[i + 1] == (1, 0xB0000000, 0xBFFFFFFF, "Reserved")
    # every child lies in its parent; siblings climb
    for i, (depth, s, e, _) in enumerate(rows):
        p = parent_of(rows, i)
        if depth:
            assert p[1] <= s and e <= p[2], rows[i]
    # a BAR below its bridge's window, the driver's claim below the BAR
    i = rows.index((2, 0xFDE40000, 0xFDE5FFFF, "0000:02:00.0"))
    assert parent_of(rows, i) == (1, 0xFDE00000, 0xFDFFFFFF, "PCI Bus 0000:02")
    assert rows[i + 1] == (3, 0xFDE40000, 0xFDE5FFFF, "e1000e")
    # the switch: bus 03 > 04 > 06 > the NVMe's BAR; an empty window still shows
    i = rows.index((4, 0xFDA00000, 0xFDA03FFF, "0000:06:00.0"))
    assert [parent_of(rows, i)[3], rows[i + 1][3]] == ["PCI Bus 0000:06", "nvme"]
    assert (1, 0xFE800000, 0xFE9FFFFF, "PCI Bus 0000:02") in rows
    assert names.count("0000:00:1f.2") == 1                     # its I/O BAR is /proc/ioports'


def test_vf_bars_come_and_go_with_the_vfs():
    m = topology.load("qemu-ref")
    pf = m.lookup("0000:01:00.0")
    iov = (2, 0xFE004000, 0xFE013FFF, "0000:01:00.0")
    rows = parse(iomem.show(m, True))
    assert iov in rows and rows[rows.index(iov) + 1][0] <= 2    # the IOV BAR, empty
    sriov.configure(m, pf, 2)
    rows = parse(iomem.show(m, True))
    i = rows.index(iov)
    assert rows[i + 1:i + 5] == [(3, 0xFE004000, 0xFE007FFF, "0000:01:00.1"), (4, 0xFE004000, 0xFE007FFF, "nvme"),
                                 (3, 0xFE008000, 0xFE00BFFF, "0000:01:00.2"), (4, 0xFE008000, 0xFE00BFFF, "nvme")]
    sriov.configure(m, pf, 0)
    assert not any(r[3] in ("0000:01:00.1", "0000:01:00.2") for r in parse(iomem.show(m, True)))


def test_claim_goes_with_the_driver():
    m = topology.load("qemu-ref")
    dev = m.lookup("0000:02:00.0")
    binding.unbind(m, m.drivers["e1000e"], dev.name)
    rows = parse(iomem.show(m, True))
    assert "e1000e" not in [r[3] for r in rows] and (2, 0xFDE40000, 0xFDE5FFFF, "0000:02:00.0") in rows
    binding.bind(m, m.drivers["e1000e"], dev.name)
    assert [r[3] for r in parse(iomem.show(m, True))].count("e1000e") == 3   # its three memory BARs


def test_removed_function_leaves_the_tree_and_its_window_stays():
    m = topology.load("qemu-ref")
    m.remove_function(m.lookup("0000:06:00.0"))
    rows = parse(iomem.show(m, True))
    assert not any(r[3] == "0000:06:00.0" for r in rows)
    assert (3, 0xFDA00000, 0xFDBFFFFF, "PCI Bus 0000:06") in rows


def test_addresses_are_zero_without_cap_sys_admin():
    m = topology.load("seed-vtd")
    root, user = iomem.show(m, True), iomem.show(m, False)
    assert [line.split(" : ", 1)[1] for line in root.splitlines()] == \
        [line.split(" : ", 1)[1] for line in user.splitlines()]
    assert {line.split(" : ")[0].strip() for line in user.splitlines()} == {"00000000-00000000"}
    assert "ixgbe" in user and "PCI Bus 0000:03" in user
