"""lspci (pciutils, linux-sysfs access method only) reading the mount:
`lspci -A linux-sysfs -O sysfs.path=$MNT/sys/bus/pci ...`. With -A linux-sysfs
lspci cannot fall back to the host's /proc/bus/pci, so every line below came
from the mount."""
from __future__ import annotations

import re

import pytest

from tests.conftest import lspci_argv, preset_devices, run

SEED = preset_devices("seed-vtd")
ACS_DEVICES = sorted(b for b, d in SEED.items() if d.get("acs"))
PORTS_WITHOUT_ACS = sorted(b for b, d in SEED.items() if d["kind"].endswith("_port") and not d.get("acs"))


def _ok(r):
    assert r.returncode == 0, f"{r.args}: rc={r.returncode} stderr={r.stderr!r}"
    return r.stdout


def _blocks(text: str) -> dict[str, str]:
    """lspci output -> {'01:00.0': the device's lines}: a device starts at an unindented line."""
    out: dict[str, str] = {}
    slot = None
    for line in text.splitlines():
        if line and not line[0].isspace():
            slot = line.split(" ", 1)[0]
            out[slot] = line
        elif slot is not None and line:
            out[slot] += "\n" + line
    return out


def _short(bdf: str) -> str:
    return bdf[5:]


@pytest.fixture(scope="module")
def vvv(seed_mnt) -> dict[str, str]:
    return _blocks(_ok(seed_mnt.lspci("-vvv")))


def test_lspci_nn_lists_every_device_with_its_ids(seed_mnt):
    lines = _ok(seed_mnt.lspci("-nn")).splitlines()
    assert [ln.split()[0] for ln in lines] == [_short(b) for b in sorted(SEED)]
    for line in lines:
        d = SEED["0000:" + line.split()[0]]
        assert "[%04x:%04x]" % (d["vendor"], d["device"]) in line, line
        assert "[%04x]" % (d["class"] >> 8) in line, line


def test_lspci_nn_names_the_seed_devices(seed_mnt):
    lines = {ln.split()[0]: ln for ln in _ok(seed_mnt.lspci("-nn")).splitlines()}
    assert re.search(r"VGA compatible controller \[0300\]: NVIDIA .*\[10de:1b80\] \(rev a1\)$", lines["01:00.0"])
    assert re.search(r"Ethernet controller \[0200\]: Intel .*X540.* \[8086:1528\] \(rev 01\)$", lines["03:00.0"])
    assert re.search(r"SMBus \[0c05\]: .*\[8086:a323\] \(rev 10\)$", lines["00:1f.4"])


def test_lspci_D_shows_the_domain(seed_mnt):
    first = _ok(seed_mnt.lspci("-D")).splitlines()[0]
    assert first.startswith("0000:00:00.0 Host bridge")


def test_lspci_tv_shows_the_tree(seed_mnt):
    out = _ok(seed_mnt.lspci("-tv"))
    lines = out.splitlines()
    assert lines[0].startswith("-[0000:00]-+-00.0  Intel Corporation")
    for piece in (
            "+-01.0-[01]--+-00.0  NVIDIA Corporation GP104 [GeForce GTX 1080]",
            "\\-00.1  NVIDIA Corporation GP104 High Definition Audio Controller",
            "+-1b.0-[02]----00.0  Intel Corporation I210 Gigabit Network Connection",
            "+-1c.0-[03]--+-00.0  Intel Corporation Ethernet Controller 10-Gigabit X540-AT2",
            "+-1d.0-[04-07]----00.0-[05-07]--+-00.0-[06]----00.0  Samsung",
            "\\-01.0-[07]----00.0  Samsung",
            "+-1d.4-[08-0c]----00.0-[09-0c]--+-00.0-[0a]----00.0  Sandisk",
            "+-01.0-[0b]----00.0  Sandisk",
            "\\-02.0-[0c]----00.0  Mellanox Technologies MT27800 Family [ConnectX-5]",
            "\\-1f.4  Intel Corporation"):
        assert piece in out, piece
    assert len(lines) == 12   # one per endpoint and per function of a multifunction slot


def test_lspci_t_numeric(seed_mnt):
    out = _ok(seed_mnt.lspci("-tvn"))
    assert "+-1c.0-[03]--+-00.0  8086:1528" in out
    assert "\\-00.1  8086:1528" in out


def test_lspci_nnk_shows_drivers_in_use(seed_mnt):
    blocks = _blocks(_ok(seed_mnt.lspci("-nnk")))
    for bdf, d in SEED.items():
        block = blocks[_short(bdf)]
        driver = d.get("driver", "pcieport" if d["kind"].endswith("_port") else None)
        if driver:
            assert f"\tKernel driver in use: {driver}" in block.splitlines(), block
        else:
            assert "Kernel driver in use" not in block, block
    assert "\tKernel driver in use: ixgbe" in blocks["03:00.0"].splitlines()


def test_lspci_vvv_decodes_sriov(vvv):
    block = vvv["03:00.0"]
    assert "Capabilities: [" in block and "Single Root I/O Virtualization (SR-IOV)" in block
    assert "Initial VFs: 63, Total VFs: 63, Number of VFs: 0" in block
    assert "VF offset: 128, stride: 2, Device ID: 1515" in block
    assert "\tKernel driver in use: ixgbe" in block.splitlines()
    for bdf in sorted(SEED):
        has_sriov = "sriov" in SEED[bdf]
        assert ("SR-IOV" in vvv[_short(bdf)]) == has_sriov, bdf


@pytest.mark.parametrize("bdf", ACS_DEVICES)
def test_lspci_vvv_shows_acs_where_the_topology_has_it(vvv, bdf):
    block = vvv[_short(bdf)]
    assert "Access Control Services" in block
    ctl = re.search(r"ACSCtl:\t(.*)", block).group(1)
    # the isolation pci_device_group() asks for (REQ_ACS_FLAGS) is enabled
    for flag in ("SrcValid+", "ReqRedir+", "CmpltRedir+", "UpstreamFwd+"):
        assert flag in ctl, (flag, ctl)


@pytest.mark.parametrize("bdf", PORTS_WITHOUT_ACS)
def test_lspci_vvv_shows_no_acs_on_ports_without_it(vvv, bdf):
    assert "Access Control Services" not in vvv[_short(bdf)]


def test_lspci_vvv_iommu_groups(vvv, seed_mnt):
    assert "\tIOMMU group: 42" in vvv["01:00.0"].splitlines()
    assert "\tIOMMU group: 42" in vvv["01:00.1"].splitlines()
    # every device's group as lspci prints it is the one its iommu_group link names
    for bdf in SEED:
        link = _ok(run(["readlink", seed_mnt.devdir(bdf) / "iommu_group"])).strip()
        assert f"\tIOMMU group: {link.rsplit('/', 1)[1]}" in vvv[_short(bdf)].splitlines(), bdf


def test_lspci_vvv_link_status(vvv):
    block = vvv["03:00.0"]
    assert re.search(r"LnkCap:\t.*Speed 5GT/s, Width x8", block)
    assert re.search(r"LnkSta:\tSpeed 5GT/s.*, Width x8", block)


def test_lspci_vvv_regions(vvv):
    block = vvv["01:00.0"]
    assert re.search(r"Region 0: Memory at [0-9a-f]+ \(32-bit, non-prefetchable\) \[size=16M\]", block)
    assert re.search(r"Region 1: Memory at [0-9a-f]+ \(64-bit, prefetchable\) \[size=256M\]", block)
    assert re.search(r"Region 5: I/O ports at [0-9a-f]+ \[size=128\]", block)
    assert re.search(r"Expansion ROM at [0-9a-f]+ .*\[size=512K\]", block)


def _hexdump(block: str) -> bytes:
    data = bytearray()
    for line in block.splitlines()[1:]:
        m = re.fullmatch(r"([0-9a-f]{2,3}): ((?:[0-9a-f]{2} ?){16})", line.strip())
        assert m, line
        assert int(m.group(1), 16) == len(data), line
        data += bytes.fromhex(m.group(2))
    return bytes(data)


def test_lspci_xxx_prints_the_config_header_in_hex(seed_mnt):
    out = _ok(seed_mnt.lspci("-s", "01:00.0", "-xxx"))
    assert out.splitlines()[1].startswith("00: de 10 80 1b")
    data = _hexdump(out.strip())
    assert len(data) == 256
    raw = run(["cat", seed_mnt.devdir("0000:01:00.0") / "config"], text=False)
    assert raw.returncode == 0 and raw.stdout[:256] == data


def test_lspci_xxxx_prints_extended_config_space(seed_mnt):
    data = _hexdump(_ok(seed_mnt.lspci("-s", "03:00.0", "-xxxx")).strip())
    assert len(data) == 4096
    assert data[:4] == bytes.fromhex("86 80 28 15")
    # conventional PCI has no extended space: 256 bytes only
    assert len(_hexdump(_ok(seed_mnt.lspci("-s", "00:1f.4", "-xxxx")).strip())) == 256


def test_lspci_x_as_nobody_sees_64_bytes(seed_mnt):
    r = run(lspci_argv("sysfs.path=sys/bus/pci", "-s", "03:00.0", "-x"),
            cwd=seed_mnt.path, user=65534)
    assert r.returncode == 0, r.stderr
    assert len(_hexdump(r.stdout.strip())) == 64


def test_lspci_machine_readable(seed_mnt):
    out = _ok(seed_mnt.lspci("-vmmk", "-nn", "-s", "03:00.0"))
    assert "Slot:\t03:00.0\n" in out
    assert "Vendor:\tIntel Corporation [8086]\n" in out
    assert "Driver:\tixgbe\n" in out
    assert "IOMMUGroup:\t8\n" in out
