"""IOMMU group formation against what the real kernel did (reference/README.md)."""
from vfakefs.model import topology


def groups(m):
    return {f.name: f.group.id for f in m.functions}


def test_qemu_ref_groups_match_the_captured_kernel():
    assert groups(topology.load("qemu-ref")) == {
        "0000:00:00.0": 0, "0000:00:02.0": 1, "0000:00:03.0": 2, "0000:00:04.0": 3, "0000:00:05.0": 4,
        "0000:00:1f.0": 5, "0000:00:1f.2": 5, "0000:00:1f.3": 5, "0000:01:00.0": 6, "0000:02:00.0": 7,
        "0000:03:00.0": 8, "0000:04:00.0": 9, "0000:04:01.0": 10, "0000:05:00.0": 9, "0000:06:00.0": 10}


def test_qemu_ref_boot_log_adds_devices_in_probe_order():
    m = topology.load("qemu-ref")
    lines = [r.text for r in m.kmsg.records if "Adding to iommu group" in r.text]
    assert lines[0] == "pci 0000:00:00.0: Adding to iommu group 0"
    assert lines[-1] == "pci 0000:06:00.0: Adding to iommu group 10"
    assert len(lines) == 15


def test_seed_vtd_acs_rules():
    g = groups(topology.load("seed-vtd"))
    assert g["0000:01:00.0"] == g["0000:01:00.1"] == 42          # pinned, multifunction without ACS
    assert g["0000:03:00.0"] != g["0000:03:00.1"]                 # PFs with ACS are isolated
    # root port and switch without ACS: everything below shares the root port's group
    assert g["0000:06:00.0"] == g["0000:07:00.0"] == g["0000:05:00.0"] == g["0000:00:1d.0"]
    # ACS on the root port and the downstream ports: each endpoint on its own
    assert len({g["0000:0a:00.0"], g["0000:0b:00.0"], g["0000:09:00.0"], g["0000:09:01.0"]}) == 4
    assert 42 not in {v for k, v in g.items() if not k.startswith("0000:01:")}


def test_pcie_to_pci_bridge_aliases_everything_behind_it():
    m = topology.from_text("""
[[device]]
bdf = "0000:00:00.0"
kind = "host_bridge"
vendor = 0x8086
device = 0x29c0
class = 0x060000
[[device]]
bdf = "0000:00:1e.0"
kind = "root_port"
vendor = 0x8086
device = 0x244e
class = 0x060400
acs = true
[[device]]
bdf = "0000:01:00.0"
parent = "0000:00:1e.0"
kind = "pcie_pci_bridge"
vendor = 0x1b21
device = 0x1080
class = 0x060400
[[device]]
bdf = "0000:02:00.0"
parent = "0000:01:00.0"
kind = "pci_endpoint"
vendor = 0x8086
device = 0x100e
class = 0x020000
[[device]]
bdf = "0000:02:01.0"
parent = "0000:01:00.0"
kind = "pci_endpoint"
vendor = 0x8086
device = 0x100e
class = 0x020000
""")
    g = groups(m)
    assert g["0000:02:00.0"] == g["0000:02:01.0"] == g["0000:01:00.0"]
    assert g["0000:00:1e.0"] != g["0000:01:00.0"]


def test_default_domain_follows_the_command_line():
    m = topology.load("qemu-ref")   # caching mode: strict, so DMA rather than DMA-FQ
    assert {g.default_domain for g in m.groups.by_id.values()} == {"DMA"}
    assert topology.load("seed-vtd").groups.by_id[42].default_domain == "DMA-FQ"
    assert m.domains_used() == 13   # as the capture's intel-iommu/domains_used
