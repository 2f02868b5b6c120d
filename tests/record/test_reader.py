"""vfakefs record's reader and writer on small made-up sysfs trees in a temp dir (no mount):
the odd cases a real machine has and our presets do not (a driver the catalogue does not
know, config that cannot be read, attributes missing, VFs enabled), each recorded as what is
there, said in the notes, and the text loads and boots."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from vfakefs.model import topology
from vfakefs.model.pci import config as C
from vfakefs.record import RecordError, record

SEED = topology.load("seed-vtd")


def _cfg(bdf: str) -> bytes:
    return bytes(SEED.by_bdf[next(b for b in SEED.by_bdf if str(b) == bdf)].config.bytes)


def make_function(root: Path, bdf: str, parents: tuple[str, ...] = (), config: bytes | None = None,
                  files: dict | None = None, driver: str | None = None, links: dict | None = None) -> Path:
    """devices/pci0000:00/<parents...>/<bdf> with its files, and the bus/pci/devices link."""
    rel = Path("devices/pci0000:00", *parents, bdf)
    d = root / rel
    d.mkdir(parents=True)
    for name, text in (files or {}).items():
        (d / name).write_text(text)
    if config is not None:
        (d / "config").write_bytes(config)
    if driver is not None:
        (root / "bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(root / "bus/pci/drivers" / driver, d), d / "driver")
    for name, target in (links or {}).items():
        os.symlink(target, d / name)
    (root / "bus/pci/devices").mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(d, root / "bus/pci/devices"), root / "bus/pci/devices" / bdf)
    return d


def ids(vendor: int, device: int, cls: int, **more) -> dict:
    out = {"vendor": f"0x{vendor:04x}\n", "device": f"0x{device:04x}\n", "class": f"0x{cls:06x}\n"}
    out.update({k: f"{v}\n" for k, v in more.items()})
    return out


def loads(rec) -> dict:
    return tomllib.loads(rec.text)


def test_no_pci_bus_is_an_error(tmp_path):
    with pytest.raises(RecordError, match="no PCI devices"):
        record(tmp_path)


def test_a_driver_the_catalogue_does_not_know_is_recorded_and_bound_by_name(tmp_path):
    make_function(tmp_path, "0000:00:00.0", config=_cfg("0000:00:00.0"), files=ids(0x8086, 0x3e30, 0x060000))
    make_function(tmp_path, "0000:00:1f.4", config=_cfg("0000:00:1f.4"), files=ids(0x8086, 0xa323, 0x0c0500),
                  driver="frobnicator")
    rec = record(tmp_path)
    t = loads(rec)
    assert "frobnicator" in t["drivers"]
    assert [d.get("driver") for d in t["device"]] == [None, "frobnicator"]
    assert any("frobnicator" in n and "catalogue" in n for n in rec.notes)
    assert "frobnicator" in rec.text.split("\nname = ")[0]       # said in the opening comments
    m = topology.from_text(rec.text)
    assert m.by_bdf[next(b for b in m.by_bdf if str(b) == "0000:00:1f.4")].driver.name == "frobnicator"


def test_unreadable_config_is_built_from_the_ids(tmp_path):
    make_function(tmp_path, "0000:00:00.0", config=_cfg("0000:00:00.0"), files=ids(0x8086, 0x3e30, 0x060000))
    d = make_function(tmp_path, "0000:00:1c.0", files=ids(0x8086, 0xa110, 0x060400))
    (d / "config").mkdir()                         # read() fails: EISDIR
    make_function(tmp_path, "0000:03:00.0", parents=("0000:00:1c.0",), files=ids(0x8086, 0x1528, 0x020000))
    os.symlink("/nonexistent", tmp_path / "devices/pci0000:00/0000:00:1c.0/0000:03:00.0/config")
    rec = record(tmp_path)
    t = loads(rec)
    port, nic = t["device"][1], t["device"][2]
    assert (port["kind"], nic["kind"], nic["parent"]) == ("root_port", "endpoint", "0000:00:1c.0")
    assert "config" not in port and "config" not in nic
    assert any("0000:00:1c.0: config unreadable" in n for n in rec.notes)
    assert any("0000:03:00.0: config unreadable" in n for n in rec.notes)
    m = topology.from_text(rec.text)
    assert {str(f.bdf) for f in m.functions} == {"0000:00:00.0", "0000:00:1c.0", "0000:03:00.0"}


def test_missing_attributes_are_left_out_or_taken_from_config(tmp_path):
    # only config: no vendor/device/class files, no resource, irq, revision, subsystem ids
    make_function(tmp_path, "0000:00:1f.4", config=_cfg("0000:00:1f.4"))
    rec = record(tmp_path)
    dev = loads(rec)["device"][0]
    assert (dev["vendor"], dev["device"], dev["class"]) == (0x8086, 0xA323, 0x0C0500)
    for key in ("revision", "irq", "bars", "driver", "subsystem_vendor"):
        assert key not in dev
    m = topology.from_text(rec.text)
    assert bytes(m.functions[0].config.bytes) == _cfg("0000:00:1f.4")


def test_nothing_readable_about_a_function_is_an_error(tmp_path):
    make_function(tmp_path, "0000:00:02.0", files={"irq": "5\n"})
    with pytest.raises(RecordError, match="0000:00:02.0: no vendor"):
        record(tmp_path)


def test_64_bytes_of_config_is_not_used_as_the_dump(tmp_path):
    make_function(tmp_path, "0000:00:1f.4", config=_cfg("0000:00:1f.4")[:64], files=ids(0x8086, 0xa323, 0x0c0500))
    rec = record(tmp_path)
    assert "config" not in loads(rec)["device"][0]
    assert any("only 64 bytes" in n for n in rec.notes)
    topology.from_text(rec.text)


def test_a_capability_the_model_does_not_know_is_kept_and_said(tmp_path):
    cfg = bytearray(_cfg("0000:00:1f.4"))
    cfg[0x06] |= 0x10                               # capability list
    cfg[0x34] = 0x40
    cfg[0x40:0x44] = bytes([0x09, 0x00, 0x04, 0x00])   # a vendor-specific capability, last
    make_function(tmp_path, "0000:00:1f.4", config=bytes(cfg), files=ids(0x8086, 0xa323, 0x0c0500))
    rec = record(tmp_path)
    assert any("0x09@0x40" in n for n in rec.notes)
    m = topology.from_text(rec.text)
    assert bytes(m.functions[0].config.bytes)[:0x44] == bytes(cfg)[:0x44]


def test_a_conventional_function_with_extended_config_keeps_4096_bytes(tmp_path):
    cfg = _cfg("0000:00:00.0") + bytes(4096 - 256)   # a host bridge: pci_cfg_space_size_ext
    make_function(tmp_path, "0000:00:00.0", config=cfg, files=ids(0x8086, 0x3e30, 0x060000))
    make_function(tmp_path, "0000:00:1f.4", config=_cfg("0000:00:1f.4"), files=ids(0x8086, 0xa323, 0x0c0500))
    m = topology.from_text(record(tmp_path).text)
    assert [f.config.size for f in m.functions] == [4096, 256]


def test_enabled_vfs_are_the_pf_s_sriov_at_boot_state(tmp_path):
    pf_cfg = bytearray(_cfg("0000:03:00.0"))
    pos = C.ConfigSpace(4096, bytes(pf_cfg)).find_ext_cap(C.EXT_SRIOV)
    pf_cfg[pos + C.SRIOV_CTRL] |= C.SRIOV_CTRL_VFE | C.SRIOV_CTRL_MSE
    pf_cfg[pos + C.SRIOV_NUM_VF] = 1
    make_function(tmp_path, "0000:00:1c.0", config=_cfg("0000:00:1c.0"), files=ids(0x8086, 0xa110, 0x060400),
                  driver="pcieport")
    resource = "".join("0x0 0x0 0x0\n" for _ in range(7)) + \
        "0x0000380002ac4000 0x0000380002bbffff 0x000000000014220c\n" + "0x0 0x0 0x0\n" * 5
    make_function(tmp_path, "0000:03:00.0", parents=("0000:00:1c.0",), config=bytes(pf_cfg), driver="ixgbe",
                  files=ids(0x8086, 0x1528, 0x020000, sriov_totalvfs=63, sriov_offset=128, sriov_stride=2,
                            sriov_vf_device="1515", sriov_numvfs=1, resource=resource),
                  links={"virtfn0": "../0000:03:10.0"})
    make_function(tmp_path, "0000:03:10.0", parents=("0000:00:1c.0",), config=_cfg("0000:03:00.0"),
                  driver="ixgbevf", files=ids(0x8086, 0x1515, 0x020000), links={"physfn": "../0000:03:00.0"})
    rec = record(tmp_path)
    t = loads(rec)
    assert [d["bdf"] for d in t["device"]] == ["0000:00:1c.0", "0000:03:00.0"]     # the VF is not a device
    sr = t["device"][1]["sriov"]
    assert (sr["total_vfs"], sr["offset"], sr["stride"], sr["vf_device"], sr["vf_driver"]) == \
        (63, 128, 2, 0x1515, "ixgbevf")
    assert sr["vf_bars"] == [{"index": 0, "type": "mem64", "size": 16384, "prefetch": True,
                              "address": 0x380002ac4000}]
    assert any("1 VF(s) were enabled" in n for n in rec.notes)
    m = topology.from_text(rec.text)
    pf = next(f for f in m.functions if str(f.bdf) == "0000:03:00.0")
    assert pf.config.r16(pos + C.SRIOV_CTRL) & (C.SRIOV_CTRL_VFE | C.SRIOV_CTRL_MSE) == 0
    assert pf.config.r16(pos + C.SRIOV_NUM_VF) == 0 and pf.sriov.total_vfs == 63


def test_a_second_root_bus_is_recorded_with_its_host_bridge(tmp_path):
    make_function(tmp_path, "0000:00:00.0", config=_cfg("0000:00:00.0"), files=ids(0x8086, 0x3e30, 0x060000))
    d = tmp_path / "devices/pci0000:17/0000:17:00.0"
    d.mkdir(parents=True)
    # a root port on root bus 17 (primary 17, secondary and subordinate 18)
    (d / "config").write_bytes(_cfg("0000:00:1c.0")[:0x18] + bytes([0x17, 0x18, 0x18]) + _cfg("0000:00:1c.0")[0x1B:])
    os.symlink("../../../devices/pci0000:17/0000:17:00.0", tmp_path / "bus/pci/devices/0000:17:00.0")
    e = d / "0000:18:00.0"
    e.mkdir()
    (e / "config").write_bytes(_cfg("0000:02:00.0"))
    os.symlink("../../../devices/pci0000:17/0000:17:00.0/0000:18:00.0", tmp_path / "bus/pci/devices/0000:18:00.0")
    rec = record(tmp_path)
    t = loads(rec)
    assert t["root_buses"] == ["0000:17"]
    assert [(x["bdf"], x.get("parent")) for x in t["device"]] == [
        ("0000:00:00.0", None), ("0000:17:00.0", None), ("0000:18:00.0", "0000:17:00.0")]
    m = topology.from_text(rec.text)
    assert [f.root_bus for f in m.functions] == [(0, 0), (0, 0x17), (0, 0x17)]


def test_a_device_off_the_root_buses_needs_its_parent(tmp_path):
    from vfakefs.model.errors import TopologyError
    text = 'root_buses = ["0000:17"]\n[[device]]\nbdf = "0000:18:00.0"\nkind = "endpoint"\nvendor = 1\n' \
           'device = 2\nclass = 0x020000\n'
    with pytest.raises(TopologyError, match="not on a root bus"):
        topology.parse_text(text)
    for bad in ("0000:00", "0000:1g", "00:17", "10000:17"):
        with pytest.raises(TopologyError, match="root_buses"):
            topology.parse_text(text.replace("0000:17", bad))


def test_an_unusable_bar_is_left_to_vfakefs_and_said(tmp_path):
    resource = "0x1000 0x1fff 0x101\n" + "0x0 0x0 0x0\n" * 6      # a 4 KiB I/O BAR: past 256 ports
    make_function(tmp_path, "0000:00:1f.4", config=_cfg("0000:00:1f.4"),
                  files=ids(0x8086, 0xa323, 0x0c0500, resource=resource))
    rec = record(tmp_path)
    assert "bars" not in loads(rec)["device"][0]
    assert any("BARs not representable" in n for n in rec.notes)


def test_virtio_functions_get_a_netdev_only_when_they_are_network_ones_with_its_mtu(tmp_path):
    """virtio-pci binds every virtio function; virtio_net registers an interface only for a
    network one (1af4:1041), here with the MTU it had (1400, not the default)."""
    blk, net = bytearray(256), bytearray(256)
    for cfg, dev, cls in ((blk, 0x1042, 0x018000), (net, 0x1041, 0x020000)):
        cfg[0:4] = bytes([0xF4, 0x1A, dev & 0xFF, dev >> 8])
        cfg[9:12] = cls.to_bytes(3, "little")
    make_function(tmp_path, "0000:00:02.0", config=bytes(blk), driver="virtio-pci")
    d = make_function(tmp_path, "0000:00:03.0", config=bytes(net), driver="virtio-pci")
    (d / "virtio1/net/eth0").mkdir(parents=True)
    (d / "virtio1/net/eth0/address").write_text("02:fc:00:00:00:01\n")
    (d / "virtio1/net/eth0/mtu").write_text("1400\n")
    rec = record(tmp_path)
    assert loads(rec)["net"] == {"eth0": {"mtu": 1400}}
    m = topology.from_text(rec.text)
    assert {n: (str(nd.dev.bdf), nd.mac, nd.mtu) for n, nd in m.netdevs.items()} == \
        {"eth0": ("0000:00:03.0", "02:fc:00:00:00:01", 1400)}


def make_iommu(root: Path, groups: dict[int, tuple[list[str], str]]) -> None:
    """class/iommu/dmar0 (VT-d: cap, ecap, version) and kernel/iommu_groups/<n>/{type,devices/}."""
    unit = root / "class/iommu/dmar0/intel-iommu"
    unit.mkdir(parents=True)
    for name, text in (("cap", "d2078c406f0462"), ("ecap", "f050de"), ("version", "1:0"), ("address", "fed90000")):
        (unit / name).write_text(text + "\n")
    for g, (bdfs, kind) in groups.items():
        d = root / "kernel/iommu_groups" / str(g)
        (d / "devices").mkdir(parents=True)
        (d / "type").write_text(kind + "\n")
        for b in bdfs:
            os.symlink(f"../../../../bus/pci/devices/{b}", d / "devices" / b)
            os.symlink(f"../../../kernel/iommu_groups/{g}",
                       Path(os.path.realpath(root / "bus/pci/devices" / b)) / "iommu_group")


def test_groups_the_model_forms_otherwise_are_said(tmp_path):
    """The GPU's two functions share a slot without ACS: pci_device_group() puts them in one
    group; a recording that has them apart (an ACS quirk, an override) is told so."""
    make_function(tmp_path, "0000:00:01.0", config=_cfg("0000:00:01.0"), files=ids(0x8086, 0x1901, 0x060400))
    for fn in ("0000:01:00.0", "0000:01:00.1"):
        make_function(tmp_path, fn, parents=("0000:00:01.0",), config=_cfg(fn),
                      files=ids(0x10DE, 0x1B80, 0x030000))
    make_iommu(tmp_path, {1: (["0000:00:01.0"], "DMA-FQ"), 42: (["0000:01:00.0"], "identity"),
                          43: (["0000:01:00.1"], "DMA-FQ")})
    rec = record(tmp_path)
    t = loads(rec)
    assert t["iommu"]["type"] == "intel" and t["cmdline"].endswith("intel_iommu=on")
    assert [d.get("iommu_group") for d in t["device"]] == [1, 42, 43]
    note = next(n for n in rec.notes if n.startswith("IOMMU groups differ"))
    assert "group 43: recorded ['0000:01:00.1'], mounted []" in note
    assert any(n.endswith(": identity recorded, DMA-FQ at mount") for n in rec.notes)   # (6.12: lazy by default)
    assert "#   - IOMMU groups differ" in rec.text.split("\nname = ")[0]


def test_groups_the_model_forms_alike_are_not_noted(tmp_path):
    make_function(tmp_path, "0000:00:01.0", config=_cfg("0000:00:01.0"), files=ids(0x8086, 0x1901, 0x060400))
    for fn in ("0000:01:00.0", "0000:01:00.1"):
        make_function(tmp_path, fn, parents=("0000:00:01.0",), config=_cfg(fn),
                      files=ids(0x10DE, 0x1B80, 0x030000))
    make_iommu(tmp_path, {1: (["0000:00:01.0"], "DMA-FQ"), 42: (["0000:01:00.0", "0000:01:00.1"], "DMA-FQ")})
    rec = record(tmp_path)
    assert not [n for n in rec.notes if "IOMMU group" in n]


def dmar_table() -> bytes:
    """A DMAR table: one DRHD (INCLUDE_PCI_ALL, IOAPIC 2, an HPET) and an ATSR naming 00:1d.4."""
    import struct
    scope = lambda kind, enum_id, bus, dev, fn: bytes([kind, 8, 0, 0, enum_id, bus, dev, fn])  # noqa: E731
    drhd_scopes = scope(3, 2, 0xF0, 0x1F, 0) + scope(4, 0, 0, 0x1F, 0)
    drhd = struct.pack("<HHBBHQ", 0, 16 + len(drhd_scopes), 1, 0, 0, 0xFED90000) + drhd_scopes
    atsr = struct.pack("<HHBBH", 2, 16, 0, 0, 0) + scope(2, 0, 0, 0x1D, 4)
    body = drhd + atsr
    header = b"DMAR" + struct.pack("<IBB", 48 + len(body), 1, 0) + b"INTEL " + b"EDK2    " + \
        struct.pack("<I", 2) + b"    " + struct.pack("<I", 0x01000013) + bytes([38, 1]) + bytes(10)
    return header + body


def _ats_chain(root: Path) -> None:
    """00:1d.4 -> 08:00.0 -> 09:02.0 -> the ConnectX-5 (ATS) at 0c:00.0, each in its own group."""
    chain = ("0000:00:1d.4", "0000:08:00.0", "0000:09:02.0", "0000:0c:00.0")
    for i, bdf in enumerate(chain):
        make_function(root, bdf, parents=chain[:i], config=_cfg(bdf),
                      driver="mlx5_core" if i == 3 else "pcieport")
    make_iommu(root, {g: ([b], "DMA-FQ") for g, b in enumerate(chain)})


def _ats_enabled(m) -> bool:
    f = next(f for f in m.functions if str(f.bdf) == "0000:0c:00.0")
    return bool(f.config.r16(f.config.find_ext_cap(C.EXT_ATS) + 6) & 0x8000)


def test_the_dmar_table_gives_the_atsr_so_ats_is_on_as_recorded(tmp_path):
    _ats_chain(tmp_path)
    (tmp_path / "firmware/acpi/tables").mkdir(parents=True)
    (tmp_path / "firmware/acpi/tables/DMAR").write_bytes(dmar_table())
    rec = record(tmp_path)
    assert loads(rec)["acpi"]["dmar"] == {
        "revision": 1, "oem_id": "INTEL", "oem_table_id": "EDK2", "oem_revision": 2, "creator_id": "",
        "creator_revision": 0x01000013, "flags": 1, "hpet": True, "ioapic_id": 2,
        "atsr": [{"flags": 0, "ports": ["0000:00:1d.4"]}]}
    assert not [n for n in rec.notes if "ATS" in n]
    assert _ats_enabled(topology.from_text(rec.text))


def test_without_the_dmar_table_ats_stays_off_and_is_said(tmp_path):
    _ats_chain(tmp_path)
    rec = record(tmp_path)
    assert "acpi" not in loads(rec)
    assert any(n.startswith("0000:0c:00.0: ATS was enabled") for n in rec.notes)
    assert any("DMAR: No such file" in n for n in rec.notes)
    assert not _ats_enabled(topology.from_text(rec.text))


def test_a_dmar_table_that_is_not_one_is_said(tmp_path):
    _ats_chain(tmp_path)
    (tmp_path / "firmware/acpi/tables").mkdir(parents=True)
    (tmp_path / "firmware/acpi/tables/DMAR").write_bytes(b"APIC" + bytes(60))
    rec = record(tmp_path)
    assert any("DMAR: not a DMAR table" in n for n in rec.notes)


def test_a_conventional_pci_bridge_is_approximated_and_said(tmp_path):
    """No kind for a PCI-to-PCI bridge without a PCIe capability: a pcie_pci_bridge with the
    recorded registers, and the device below it on its secondary bus."""
    bridge = bytearray(256)
    bridge[0:4] = bytes([0x86, 0x80, 0x4E, 0x24])            # 8086:244e, an ICH's PCI bridge
    bridge[8:12] = bytes([0x92, 0x01, 0x04, 0x06])           # rev 92, class 0604 prog-if 01
    bridge[0x0E] = 0x01                                      # header type 1
    bridge[0x18:0x1B] = bytes([0x00, 0x05, 0x05])            # primary 00, secondary and subordinate 05
    make_function(tmp_path, "0000:00:1e.0", config=bytes(bridge))
    nic = bytearray(_cfg("0000:00:1f.4"))
    make_function(tmp_path, "0000:05:00.0", parents=("0000:00:1e.0",), config=bytes(nic))
    rec = record(tmp_path)
    t = loads(rec)
    assert t["device"][0]["kind"] == "pcie_pci_bridge"
    assert (t["device"][0]["secondary_bus"], t["device"][0]["subordinate_bus"]) == (5, 5)
    assert any("0000:00:1e.0: a conventional PCI bridge" in n for n in rec.notes)
    m = topology.from_text(rec.text)
    b = m.functions[0]
    assert bytes(b.config.bytes[:256]) == bytes(bridge) and (b.secondary, b.subordinate) == (5, 5)
