"""A machine's facts come from its topology and the kernel's rules, never from its name:
the DMAR boot lines follow what the topology declares (DRHD, RMRR, ATSR, the ACPI table),
the boot clock follows the documented model (recorded anchors, else a fixed per-line cost),
recorded data lives in the topology file, and domains_used is the DID allocator's count."""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from vfakefs.model import topology
from vfakefs.model.base import binding
from vfakefs.model.errors import TopologyError
from vfakefs.model.intel import irq_boot
from vfakefs.model.iommu import iommu
from vfakefs.model.pci import sriov

PRESETS = Path(str(resources.files("vfakefs.presets")))
SRC = Path(topology.__file__).parent.parent


def preset_text(name: str) -> str:
    return (PRESETS / f"{name}.toml").read_text()


def lines(m) -> list[str]:
    return [r.text for r in m.kmsg.records]


def boot_part(m) -> list:
    """The records boot_log() made: up to the VT-d banner."""
    out = []
    for r in m.kmsg.records:
        out.append(r)
        if r.text == "DMAR: Intel(R) Virtualization Technology for Directed I/O":
            break
    return out


def with_rmrr(text: str, bdf: str, *ranges: tuple[int, int]) -> str:
    spec = "rmrr = [" + ", ".join("[%#x, %#x]" % r for r in ranges) + "]\n"
    return text.replace(f'bdf = "{bdf}"\n', f'bdf = "{bdf}"\n{spec}', 1)


# --- no branch on a preset's name ---------------------------------------------------------------
def test_no_code_names_a_preset():
    """Only the default's declaration names a preset; model and views never branch on one."""
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if p.relative_to(SRC) != Path("presets/__init__.py") and re.search(r"[\"'](qemu-ref|seed-vtd)[\"']", p.read_text())]
    assert offenders == []


def test_a_renamed_qemu_ref_boots_the_same():
    """The recorded vectors and boot clock belong to the topology file, not to the name."""
    a = topology.load("qemu-ref")
    b = topology.from_text(preset_text("qemu-ref").replace('name = "qemu-ref"', 'name = "elsewhere"'),
                           "renamed", PRESETS)
    assert [(r.usec, r.text) for r in a.kmsg.records] == [(r.usec, r.text) for r in b.kmsg.records]
    ta, tb = irq_boot.build(a), irq_boot.build(b)
    assert (ta.lo == tb.lo).all() and (ta.hi == tb.hi).all()


def test_without_recorded_section_vectors_are_computed():
    text = re.sub(r"(?ms)^\[recorded\.irq\].*?(?=^\[\[device\]\])", "", preset_text("qemu-ref"))
    m = topology.from_text(text, "qemu-ref without [recorded.irq]", PRESETS)
    assert "irq" not in m.recorded
    t = irq_boot.build(m)
    rec = irq_boot.build(topology.load("qemu-ref"))
    # the same entries for the same sources (in bus order, not the recorded probe order)
    assert sorted(t[i].sid for i in t.present()) == sorted(rec[i].sid for i in rec.present())
    assert {(t[i].sid, t[i].vector, t[i].dest_id) for i in t.present()} != \
        {(rec[i].sid, rec[i].vector, rec[i].dest_id) for i in rec.present()}
    # the matrix rules: each started irq on the CPU with fewer vectors, the lowest free vector
    used = [sorted(t.matrix.used[c]) for c in range(2)]
    assert abs(len(used[0]) - len(used[1])) <= 1
    assert all(v == list(range(0x21, 0x21 + len(v))) for v in used)


def test_seed_vtd_vectors_are_computed():
    m = topology.load("seed-vtd")
    assert m.recorded == {}
    t = irq_boot.build(m, x2apic=True)
    # the started legacy pins, then each driver's vectors (base/irqs.py) at 2 CPUs: nouveau's
    # MSI, igb 5 (link + 2 rx + 2 tx), ixgbe 3 per port (2 TxRx + other), nvme 3 each (admin + 2)
    assert len(t.present()) == 5 + 1 + 5 + 2 * 3 + 4 * 3
    assert [str(i) for i in t.present()] == [str(i) for i in m.irq_remap.present()]   # as boot built it
    used = [sorted(t.matrix.used[c]) for c in range(m.nr_cpus)]
    assert all(v == list(range(0x21, 0x21 + len(v))) for v in used)


# --- the DMAR boot lines follow the topology ----------------------------------------------------
def test_seed_vtd_acpi_table_is_its_own():
    text = lines(topology.load("seed-vtd"))
    acpi = [t for t in text if t.startswith("ACPI: DMAR")]
    # one DRHD (INCLUDE_PCI_ALL) with IOAPIC and HPET scopes: 48 + 16 + 8 + 8 bytes, and an
    # ATSR (8) with one device scope for root port 00:1d.4 (6 + one path entry of 2)
    assert acpi == ["ACPI: DMAR 0x000000008B0E4B38 000060 (v01 INTEL  EDK2     00000002      01000013)"]
    assert "ACPI: Reserving DMAR table memory at [mem 0x8b0e4b38-0x8b0e4b97]" in text
    assert "DMAR: DRHD base: 0x000000fed90000 flags: 0x1" in text
    # dmar_table_print_dmar_entry() prints the ATSR's flags after the DRHD; "No ATSR found" is gone
    assert text.index("DMAR: ATSR flags: 0x0") == text.index("DMAR: DRHD base: 0x000000fed90000 flags: 0x1") + 2
    assert "DMAR: No ATSR found" not in text
    assert "DMAR-IR: IOAPIC id 2 under DRHD base  0xfed90000 IOMMU 0" in text
    assert not any("BOCHS" in t for t in text)


def test_qemu_ref_acpi_table_length_is_computed():
    """QEMU lists the 8 root-bus functions (no INCLUDE_PCI_ALL): 48 + 16 + 8 + 8 * 8 = 0x88."""
    m = topology.load("qemu-ref")
    assert "ACPI: DMAR 0x000000003FFE2632 000088 (v01 BOCHS  BXPC     00000001 BXPC 00000001)" in lines(m)


def test_declared_rmrrs_are_printed_and_no_rmrr_line_goes():
    text = with_rmrr(preset_text("seed-vtd"), "0000:02:00.0", (0x8A8D8000, 0x8A8F7FFF), (0x8D000000, 0x8F7FFFFF))
    text = with_rmrr(text, "0000:00:1f.4", (0x8A8D8000, 0x8A8F7FFF))      # shared: one structure
    m = topology.from_text(text, "seed with RMRRs", PRESETS)
    got = lines(m)
    assert "DMAR: No RMRR found" not in got
    rmrr = [t for t in got if t.startswith("DMAR: RMRR")]
    assert rmrr == ["DMAR: RMRR base: 0x0000008a8d8000 end: 0x0000008a8f7fff",
                    "DMAR: RMRR base: 0x0000008d000000 end: 0x0000008f7fffff"]
    # parsed in table order: after the DRHD and its unit, before DMAR-IR
    assert got.index("DMAR: dmar0: reg_base_addr fed90000 ver 1:0 cap d2078c406f0462 ecap f050de") \
        < got.index(rmrr[0]) < got.index("DMAR-IR: IOAPIC id 2 under DRHD base  0xfed90000 IOMMU 0")
    assert "DMAR: No SATC found" in got
    # 0x60 (with the ATSR) + two RMRRs of 24 bytes: the first with two device scopes (one hop, two hops)
    assert any(t.startswith("ACPI: DMAR 0x000000008B0E4B38 %06X " % (0x60 + 24 + 8 + 10 + 24 + 10)) for t in got)


def test_declared_atsr_is_printed_and_no_atsr_line_goes():
    text = preset_text("seed-vtd").replace('atsr = [{ flags = 0, ports = ["0000:00:1d.4"] }]\n',
                                           "atsr = [{ flags = 0x1 }]\n", 1)
    got = lines(topology.from_text(text, "seed with ATSR", PRESETS))
    assert "DMAR: ATSR flags: 0x1" in got and "DMAR: No ATSR found" not in got
    assert "DMAR: No RMRR found" in got


def test_topology_without_acpi_section_gets_the_default_firmware():
    text = re.sub(r"(?ms)^\[acpi\.dmar\].*?(?=^\[\[device\]\])", "", preset_text("seed-vtd"))
    got = lines(topology.from_text(text, "seed without [acpi.dmar]", PRESETS))
    assert "ACPI: DMAR 0x000000008C5A2A58 000050 (v01 INTEL  EDK2     00000002      01000013)" in got


# --- the boot clock -----------------------------------------------------------------------------
def test_boot_clock_without_recorded_anchors_is_the_per_line_cost():
    recs = boot_part(topology.load("seed-vtd"))
    assert recs[0].usec == 0
    assert [b.usec - a.usec for a, b in zip(recs, recs[1:])] == [317] * (len(recs) - 1)


def test_boot_clock_with_recorded_anchors():
    m = topology.load("qemu-ref")
    at = {r.text: r.usec for r in m.kmsg.records}
    assert at["Kernel command line: " + m.cmdline] == m.recorded["boot_clock"]["cmdline"] == 112_493
    assert at["DMAR: Host address width 39"] == 327_583
    assert at["DMAR: No RMRR found"] == 1_730_303
    assert at["DMAR: No ATSR found"] == 1_730_303 + 317
    usec = [r.usec for r in m.kmsg.records]
    assert all(a < b for a, b in zip(usec, usec[1:]))


# --- bad topology input: one line naming file and field ------------------------------------------
@pytest.mark.parametrize("old, new, where", [
    ("hpet = true\n", "hpet = true\noem = \"X\"\n", "acpi.dmar"),
    ("oem_revision = 2\n", "oem_revision = \"2\"\n", "acpi.dmar.oem_revision"),
    ('atsr = [{ flags = 0, ports = ["0000:00:1d.4"] }]', "atsr = [1]", "acpi.dmar.atsr"),
    ('ports = ["0000:00:1d.4"]', 'ports = ["0000:00:1d.7"]', "acpi.dmar.atsr.ports"),
    ('ports = ["0000:00:1d.4"]', 'ports = ["0000:0c:00.0"]', "acpi.dmar.atsr.ports"),
    ('ports = ["0000:00:1d.4"]', 'ports = "0000:00:1d.4"', "acpi.dmar.atsr"),
    ('flags = 0, ports', 'flags = 256, ports', "acpi.dmar.atsr"),
    ("ats = true\n", "ats = 1\n", "(0000:0c:00.0).ats"),
    ("subsystem_device = 0x7b19\nirq = 16\n", "subsystem_device = 0x7b19\nats = true\nirq = 16\n", ".ats"),
    ("x2apic = true\n", "x2apic = true\n[recorded.irq]\nvectors = [[0, 0x30, 7]]\n", "recorded.irq.vectors"),
    ("x2apic = true\n", "x2apic = true\n[recorded.boot_clock]\nbanner = 5\n", "recorded.boot_clock.banner"),
    ("mac = \"00:d8:61:3a:5c:19\"", "mac = \"00:d8:61:3a:5c\"", "(0000:02:00.0).mac"),
    ('serial = "S4EWNX0R404182M"', 'serial = 7', "(0000:06:00.0).nvme"),
])
def test_bad_declarations_name_the_field(old, new, where):
    text = preset_text("seed-vtd")
    assert old in text
    with pytest.raises(TopologyError) as e:
        topology.from_text(text.replace(old, new, 1), "bad.toml", PRESETS)
    assert "bad.toml" in str(e.value) and where in str(e.value)


# --- NICs keep their permanent address --------------------------------------------------------
def test_mac_survives_unbind_bind_remove_rescan_and_driver_change():
    m = topology.load("qemu-ref")
    dev = m.lookup("0000:02:00.0")
    assert [nd.mac for nd in dev.netdevs] == ["52:54:00:12:34:56"]
    e1000e = m.drivers["e1000e"]
    for _ in range(3):
        binding.unbind(m, e1000e, dev.name)
        binding.bind(m, e1000e, dev.name)
        assert [nd.mac for nd in dev.netdevs] == ["52:54:00:12:34:56"]
    m.remove_function(dev)
    m.rescan()
    dev = m.lookup("0000:02:00.0")
    assert [nd.mac for nd in dev.netdevs] == ["52:54:00:12:34:56"]
    binding.unbind(m, e1000e, dev.name)
    # e1000 cannot drive an 82574L (its probe fails: test_e1000_probe_fails_on_82574l); the
    # address comes back with e1000e
    binding.new_id(m, m.drivers["e1000"], "8086 10d3")
    assert dev.driver is None and dev.netdevs == []
    binding.bind(m, e1000e, dev.name)
    assert [nd.mac for nd in dev.netdevs] == ["52:54:00:12:34:56"]


def test_undeclared_mac_is_derived_from_the_function_not_a_counter():
    m = topology.load("seed-vtd")
    pf = m.lookup("0000:03:00.0")
    sriov.enable(m, pf, 2)
    vf = m.lookup("0000:03:10.0")
    first = [nd.mac for nd in vf.netdevs]
    assert first == ["02:00:00:03:80:00"]                  # 02:<domain>:<bus>:<devfn>:<n>
    drv = vf.driver
    binding.unbind(m, drv, vf.name)
    binding.bind(m, drv, vf.name)
    assert [nd.mac for nd in vf.netdevs] == first


# --- domains_used is the domain-ID allocator's count ------------------------------------------------
def test_domains_used_counts_allocated_domain_ids():
    m = topology.load("qemu-ref")
    assert m.domains_used() == 13              # DIDs 0, 1 and one per group (capture: 13)
    assert m.domains_used() == len({0, 1} | m.dmar[0].domains.keys())


def test_6_12_identity_domain_takes_no_domain_id_of_its_own():
    """6.12: the static identity domain uses the reserved FLPT_DEFAULT_DID, so a group going
    identity gives its DMA domain's id back; 6.1 gives the identity domain an id of its own."""
    m = topology.load("seed-vtd")
    before = m.domains_used()
    dev = m.lookup("0000:02:00.0")
    binding.unbind(m, dev.driver, dev.name)
    iommu.store_type(m, dev.group, "identity\n")
    assert m.domains_used() == before - 1
    assert dev.group.domain.did == 1


@pytest.mark.parametrize("cmdline, on, said", [
    ("quiet intel_iommu=off intel_iommu=on", True, ["DMAR: IOMMU disabled", "DMAR: IOMMU enabled"]),
    ("intel_iommu=on intel_iommu=off", False, ["DMAR: IOMMU enabled", "DMAR: IOMMU disabled"]),
    ("intel_iommu=on,sm_on", True, ["DMAR: IOMMU enabled"]),
    ("intel_iommu=igfx_off,off", False, ["DMAR: IOMMU disabled"]),
    ("quiet", True, []),
])
def test_the_last_intel_iommu_switch_wins(cmdline, on, said):
    """intel_iommu_setup runs for each intel_iommu= word, each comma-separated option in
    turn, printing a line per on/off; dmar_disabled is what the last one set."""
    text = re.sub(r'^cmdline = ".*"$', f'cmdline = "{cmdline}"', preset_text("seed-vtd"), count=1, flags=re.M)
    m = topology.from_text(text, "seed with another command line", PRESETS)
    assert m.iommu_on is on
    assert [t for t in lines(m) if t.startswith("DMAR: IOMMU ")] == said
    assert bool(m.groups) is on
