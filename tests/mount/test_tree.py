"""The shape of the mounted tree, read with real programs: links, sizes, modes,
inode numbers, link counts and the text of a few files, against the kernel's
layout (KERNEL-FACTS.md sections 0-2 and 4) and the preset topology files."""
from __future__ import annotations

import os
import re
from collections import Counter

import pytest

from tests.conftest import is_bridge, preset_devices, run, sysfs_device_path

SEED = preset_devices("seed-vtd")
QEMU = preset_devices("qemu-ref")


@pytest.fixture(params=["seed-vtd", "qemu-ref"])
def any_mnt(request):
    return request.getfixturevalue({"seed-vtd": "seed_mnt", "qemu-ref": "qemu_mnt"}[request.param])


def _ok(r):
    assert r.returncode == 0, f"{r.args}: rc={r.returncode} stderr={r.stderr!r}"
    return r.stdout


# --- /sys/bus/pci/devices ----------------------------------------------------------------
def test_bus_pci_devices_lists_every_function(any_mnt):
    want = preset_devices(any_mnt.preset)
    names = _ok(run(["ls", any_mnt.pci / "devices"])).split()
    assert sorted(names) == sorted(want)


def test_bus_pci_devices_are_relative_links_nested_below_bridges(any_mnt):
    devs = preset_devices(any_mnt.preset)
    for bdf in devs:
        link = any_mnt.pci / "devices" / bdf
        target = _ok(run(["readlink", link])).rstrip("\n")
        expect = sysfs_device_path(devs, bdf)
        assert target == "../../../" + expect, bdf
        resolved = _ok(run(["readlink", "-f", link])).rstrip("\n")
        assert resolved == str(any_mnt.sys / expect), bdf
        assert _ok(run(["stat", "-L", "-c", "%F", link])).strip() == "directory", bdf


def test_devices_root_lists_only_root_bus_functions(seed_mnt):
    names = set(_ok(run(["ls", seed_mnt.sys / "devices/pci0000:00"])).split())
    on_root = {b for b, d in SEED.items() if "parent" not in d}
    assert on_root <= names
    assert not {b for b in SEED if b not in on_root} & names


@pytest.mark.parametrize("bdf, name, target", [
    ("0000:01:00.0", "iommu_group", "../../../../kernel/iommu_groups/42"),
    ("0000:01:00.1", "iommu_group", "../../../../kernel/iommu_groups/42"),
    ("0000:03:00.0", "driver", "../../../../bus/pci/drivers/ixgbe"),
    ("0000:01:00.0", "driver", "../../../../bus/pci/drivers/nouveau"),
    ("0000:06:00.0", "driver", "../../../../../../bus/pci/drivers/nvme"),
    ("0000:00:1c.0", "driver", "../../../bus/pci/drivers/pcieport"),
    ("0000:00:1f.4", "subsystem", "../../../bus/pci"),
    ("0000:01:00.0", "subsystem", "../../../../bus/pci"),
    ("0000:01:00.0", "iommu", "../../../virtual/iommu/dmar0"),
])
def test_device_links_byte_for_byte(seed_mnt, bdf, name, target):
    assert _ok(run(["readlink", seed_mnt.devdir(bdf) / name])) == target + "\n"


def test_unbound_device_has_no_driver_link(seed_mnt):
    r = run(["readlink", seed_mnt.devdir("0000:00:1f.4") / "driver"])
    assert r.returncode != 0
    assert "driver" not in _ok(run(["ls", seed_mnt.devdir("0000:00:1f.4")])).split()


def test_class_net_links_resolve_to_the_device(seed_mnt):
    eth0 = seed_mnt.sys / "class/net/eth0"
    assert _ok(run(["readlink", eth0])) == \
        "../../devices/pci0000:00/0000:00:1c.0/0000:03:00.0/net/eth0\n"
    assert _ok(run(["readlink", "-f", eth0 / "device"])).strip() == \
        str(seed_mnt.sys / "devices/pci0000:00/0000:00:1c.0/0000:03:00.0")


@pytest.mark.parametrize("attr, value", [
    ("sriov_totalvfs", "63\n"), ("sriov_offset", "128\n"), ("sriov_stride", "2\n"),
    ("sriov_vf_device", "1515\n"), ("sriov_numvfs", "0\n"), ("sriov_drivers_autoprobe", "1\n"),
])
def test_sriov_attrs_through_class_net(seed_mnt, attr, value):
    assert _ok(run(["cat", seed_mnt.sys / "class/net/eth0/device" / attr])) == value


def test_non_sriov_device_has_no_sriov_files(seed_mnt):
    names = _ok(run(["ls", seed_mnt.devdir("0000:01:00.0")])).split()
    assert not [n for n in names if n.startswith("sriov_")]


# --- /sys/kernel/iommu_groups -----------------------------------------------------------
def test_group_42_holds_the_gpu_and_its_audio_function(seed_mnt):
    g = seed_mnt.sys / "kernel/iommu_groups/42"
    assert _ok(run(["ls", g / "devices"])).split() == ["0000:01:00.0", "0000:01:00.1"]
    for bdf in ("0000:01:00.0", "0000:01:00.1"):
        assert _ok(run(["readlink", g / "devices" / bdf])) == \
            f"../../../../devices/pci0000:00/0000:00:01.0/{bdf}\n"
        assert _ok(run(["readlink", "-f", g / "devices" / bdf])).strip() == \
            str(seed_mnt.sys / "devices/pci0000:00/0000:00:01.0" / bdf)
    assert sorted(_ok(run(["ls", g])).split()) == ["devices", "reserved_regions", "type"]


def test_every_group_member_links_back_to_its_group(seed_mnt):
    groups = seed_mnt.sys / "kernel/iommu_groups"
    seen = Counter()
    for gid in _ok(run(["ls", groups])).split():
        for bdf in _ok(run(["ls", groups / gid / "devices"])).split():
            seen[bdf] += 1
            assert _ok(run(["readlink", "-f", seed_mnt.devdir(bdf) / "iommu_group"])).strip() == \
                str(groups / gid)
    assert set(seen) == set(SEED) and set(seen.values()) == {1}


def test_reserved_regions_format(seed_mnt):
    text = _ok(run(["cat", seed_mnt.sys / "kernel/iommu_groups/42/reserved_regions"]))
    assert re.fullmatch(r"(0x[0-9a-f]{16} 0x[0-9a-f]{16} (direct|direct-relaxable|reserved|msi)\n)+", text)
    assert "0x00000000fee00000 0x00000000feefffff msi\n" in text


# --- walking the whole tree ----------------------------------------------------------------
def test_find_maxdepth_6_without_errors(seed_mnt):
    r = run(["find", seed_mnt.sys, "-maxdepth", "6"])
    assert r.returncode == 0 and r.stderr == ""
    found = set(r.stdout.splitlines())
    for p in ("bus/pci/devices/0000:03:00.0", "kernel/iommu_groups/42/devices/0000:01:00.0",
              "devices/pci0000:00/0000:00:1c.0/0000:03:00.0/sriov_totalvfs", "class/net/eth0"):
        assert str(seed_mnt.sys / p) in found, p


def test_find_whole_mount_without_errors(any_mnt):
    r = run(["find", any_mnt.path])
    assert r.returncode == 0 and r.stderr == ""
    assert len(r.stdout.splitlines()) > 500


def test_every_file_under_a_device_dir_can_be_stat_ed_and_readable_ones_read(seed_mnt):
    d = seed_mnt.sys / "devices/pci0000:00/0000:00:1c.0/0000:03:00.0"
    # 0444/0644 text files: one read each must succeed (config, resourceN and rom are binary)
    r = run(f"cd '{d}' && for f in $(find . -maxdepth 1 -type f -perm -0444 ! -name config); do "
            "cat \"$f\" >/dev/null || echo \"FAILED $f\"; done")
    assert r.returncode == 0 and "FAILED" not in r.stdout, r.stdout + r.stderr


# --- stat: sizes, modes, inodes, link counts ------------------------------------------------
@pytest.mark.parametrize("path, size", [
    ("bus/pci/devices/0000:03:00.0/vendor", 4096),
    ("bus/pci/devices/0000:03:00.0/sriov_numvfs", 4096),
    ("bus/pci/devices/0000:03:00.0/resource", 4096),
    ("bus/pci/drivers_probe", 4096),
    ("bus/pci/devices/0000:01:00.0/config", 4096),          # PCIe: extended config space
    ("bus/pci/devices/0000:00:1c.0/config", 4096),
    ("bus/pci/devices/0000:00:1f.4/config", 256),           # conventional PCI
    ("bus/pci/devices/0000:01:00.0/resource0", 16 << 20),   # BAR length
    ("bus/pci/devices/0000:01:00.0/rom", 512 << 10),
    ("devices/pci0000:00/0000:00:01.0/0000:01:00.0", 0),      # directory
    ("kernel/iommu_groups/42", 0),
    ("bus/pci/devices/0000:01:00.0", 0),                     # the link itself (lstat)
    ("devices/pci0000:00/0000:00:01.0/0000:01:00.0/driver", 0),
])
def test_stat_size(seed_mnt, path, size):
    assert _ok(run(["stat", "-c", "%s", seed_mnt.sys / path])) == f"{size}\n"


def test_qemu_conventional_pci_config_is_256(qemu_mnt):
    # the e1000 at 00:05.0 is conventional PCI; the e1000e at 02:00.0 is PCIe
    assert _ok(run(["stat", "-c", "%s", qemu_mnt.devdir("0000:00:05.0") / "config"])) == "256\n"
    assert _ok(run(["stat", "-c", "%s", qemu_mnt.devdir("0000:02:00.0") / "config"])) == "4096\n"


@pytest.mark.parametrize("path, mode, kind", [
    ("bus/pci/devices/0000:03:00.0/vendor", "444", "regular file"),
    ("bus/pci/devices/0000:03:00.0/driver_override", "644", "regular file"),
    ("bus/pci/devices/0000:03:00.0/sriov_numvfs", "644", "regular file"),
    ("bus/pci/devices/0000:03:00.0/sriov_totalvfs", "444", "regular file"),
    ("bus/pci/devices/0000:03:00.0/remove", "220", "regular file"),
    ("bus/pci/devices/0000:03:00.0/rescan", "200", "regular file"),
    ("bus/pci/devices/0000:03:00.0/config", "644", "regular file"),
    ("bus/pci/devices/0000:03:00.0/resource0", "600", "regular file"),
    ("bus/pci/devices/0000:03:00.0/uevent", "644", "regular file"),
    ("bus/pci/drivers_probe", "200", "regular file"),
    ("bus/pci/devices/0000:03:00.0", "777", "symbolic link"),
    ("devices/pci0000:00/0000:00:1c.0/0000:03:00.0", "755", "directory"),
    ("kernel/iommu_groups/42/type", "644", "regular file"),
    ("kernel/iommu_groups/42/reserved_regions", "444", "regular file"),
])
def test_stat_mode(seed_mnt, path, mode, kind):
    assert _ok(run(["stat", "-c", "%a|%F|%U|%G", seed_mnt.sys / path])) == f"{mode}|{kind}|root|root\n"


def test_inode_numbers_are_stable_and_distinct(seed_mnt):
    paths = [seed_mnt.sys / p for p in (
        "bus/pci/devices/0000:03:00.0/vendor", "bus/pci/devices/0000:03:00.1/vendor",
        "bus/pci/devices/0000:03:00.0", "devices/pci0000:00/0000:00:1c.0/0000:03:00.0",
        "kernel/iommu_groups/42", "class/net/eth0/device/sriov_totalvfs")]
    first = _ok(run(["stat", "-c", "%i", *paths])).split()
    # read everything in between: listing and opening must not renumber anything
    _ok(run(["find", seed_mnt.sys, "-maxdepth", "5"]))
    _ok(run(["cat", *paths[:2]]))
    second = _ok(run(["stat", "-c", "%i", *paths])).split()
    assert first == second
    assert len(set(first[:5])) == 5   # distinct files, distinct numbers
    # the same file reached through a link is the same inode
    assert _ok(run(["stat", "-L", "-c", "%i", seed_mnt.sys / "bus/pci/devices/0000:03:00.0"])) == \
        _ok(run(["stat", "-c", "%i", seed_mnt.sys / "devices/pci0000:00/0000:00:1c.0/0000:03:00.0"]))


def test_directory_nlink_is_two_plus_subdirectories(any_mnt):
    r = run(["find", any_mnt.sys, "-maxdepth", "7", "-type", "d", "-printf", "%n %p\n"])
    assert r.returncode == 0 and r.stderr == ""
    dirs = {}
    for line in r.stdout.splitlines():
        n, p = line.split(" ", 1)
        dirs[p] = int(n)
    subdirs = Counter(os.path.dirname(p) for p in dirs if p != str(any_mnt.sys))
    checked = 0
    for p, n in dirs.items():
        if p.count("/") - str(any_mnt.sys).count("/") >= 7:
            continue  # its subdirectories lie past maxdepth
        assert n == 2 + subdirs[p], p
        checked += 1
    assert checked > 100


# --- file contents --------------------------------------------------------------------------
def test_uevent_bound_device(seed_mnt):
    assert _ok(run(["cat", seed_mnt.devdir("0000:03:00.0") / "uevent"])) == (
        "DRIVER=ixgbe\n"
        "PCI_CLASS=20000\n"
        "PCI_ID=8086:1528\n"
        "PCI_SUBSYS_ID=8086:0001\n"
        "PCI_SLOT_NAME=0000:03:00.0\n"
        "MODALIAS=pci:v00008086d00001528sv00008086sd00000001bc02sc00i00\n")


def test_uevent_unbound_device(seed_mnt):
    assert _ok(run(["cat", seed_mnt.devdir("0000:00:1f.4") / "uevent"])) == (
        "PCI_CLASS=C0500\n"
        "PCI_ID=8086:A323\n"
        "PCI_SUBSYS_ID=1462:7B19\n"
        "PCI_SLOT_NAME=0000:00:1f.4\n"
        "MODALIAS=pci:v00008086d0000A323sv00001462sd00007B19bc0Csc05i00\n")


@pytest.mark.parametrize("bdf", sorted(SEED))
def test_identity_attrs_match_topology(seed_mnt, bdf):
    d, dev = seed_mnt.devdir(bdf), SEED[bdf]
    out = _ok(run(["cat", d / "vendor", d / "device", d / "class", d / "revision"]))
    assert out == "0x%04x\n0x%04x\n0x%06x\n0x%02x\n" % (
        dev["vendor"], dev["device"], dev["class"], dev.get("revision", 0))


@pytest.mark.parametrize("bdf", sorted(SEED))
def test_resource_has_13_lines_or_17_for_bridges(seed_mnt, bdf):
    text = _ok(run(["cat", seed_mnt.devdir(bdf) / "resource"]))
    lines = text.splitlines(keepends=True)
    assert len(lines) == (17 if is_bridge(SEED[bdf]) else 13)
    for line in lines:
        assert re.fullmatch(r"0x[0-9a-f]{16} 0x[0-9a-f]{16} 0x[0-9a-f]{16}\n", line), line


def test_resource_lines_match_bars(seed_mnt):
    # 01:00.0: BAR0 16M mem32, BAR1 256M 64-bit prefetchable, BAR5 128 bytes of I/O, ROM 512K
    lines = _ok(run(["cat", seed_mnt.devdir("0000:01:00.0") / "resource"])).splitlines()
    spans = [(int(s, 16), int(e, 16), int(f, 16)) for s, e, f in (ln.split() for ln in lines)]
    assert spans[0][1] - spans[0][0] + 1 == 16 << 20 and spans[0][2] == 0x40200
    assert spans[1][1] - spans[1][0] + 1 == 256 << 20 and spans[1][2] == 0x14220c
    assert spans[5][1] - spans[5][0] + 1 == 128 and spans[5][2] == 0x40101
    assert spans[6][1] - spans[6][0] + 1 == 512 << 10 and spans[6][2] == 0x46200
    assert spans[2] == spans[4] == (0, 0, 0)


def test_bridge_bus_numbers_are_decimal(seed_mnt):
    d = seed_mnt.devdir("0000:00:1d.4")
    assert _ok(run(["cat", d / "secondary_bus_number", d / "subordinate_bus_number"])) == "8\n12\n"


# --- /dev ----------------------------------------------------------------------------------
def test_dev_vfio_vfio_is_the_misc_char_device(any_mnt):
    out = _ok(run(["stat", "-c", "%F|%Hr|%Lr|%A|%U", any_mnt.path / "dev/vfio/vfio"]))
    assert out == "character special file|10|196|crw-rw-rw-|root\n"
    assert run(["test", "-c", any_mnt.path / "dev/vfio/vfio"]).returncode == 0


# --- links that go nowhere ----------------------------------------------------------------------
def test_no_dangling_symlinks(seed_mnt):
    r = run(["find", seed_mnt.sys, "-xtype", "l"])
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == ""
