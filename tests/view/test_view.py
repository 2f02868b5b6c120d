"""The view drawn from a Machine, without a mount: show/store and link targets."""
import errno

import pytest

from vfakefs.model.errors import SysfsError
from vfakefs.sysfs.nodes import Bound, Dir, Link


def walk(view, path: str):
    node = view.root()
    for part in path.strip("/").split("/"):
        assert isinstance(node, Dir), f"{path}: {part} below a non-directory"
        node = node.entries()[part]
    return node


def show(view, path):
    node = walk(view, path)
    assert isinstance(node, Bound)
    return node.decl.show(node.obj)


def store(view, path, text):
    node = walk(view, path)
    node.decl.store(node.obj, text)




def test_attribute_texts_match_the_capture(qemu):
    d = "sys/bus/pci/devices/0000:02:00.0"
    assert walk(qemu, d) == Link("../../../devices/pci0000:00/0000:00:03.0/0000:02:00.0")
    d = "sys/devices/pci0000:00/0000:00:03.0/0000:02:00.0"
    assert show(qemu, f"{d}/uevent") == (
        "DRIVER=e1000e\nPCI_CLASS=20000\nPCI_ID=8086:10D3\nPCI_SUBSYS_ID=8086:0000\n"
        "PCI_SLOT_NAME=0000:02:00.0\nMODALIAS=pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00\n")
    assert show(qemu, f"{d}/resource").splitlines()[:4] == [
        "0x00000000fde40000 0x00000000fde5ffff 0x0000000000040200",
        "0x00000000fde60000 0x00000000fde7ffff 0x0000000000040200",
        "0x000000000000c000 0x000000000000c01f 0x0000000000040101",
        "0x00000000fde80000 0x00000000fde83fff 0x0000000000040200"]
    assert show(qemu, f"{d}/resource").splitlines()[6] == "0x00000000fde00000 0x00000000fde3ffff 0x0000000000046200"
    assert len(show(qemu, f"{d}/resource").splitlines()) == 13
    assert (show(qemu, f"{d}/local_cpus"), show(qemu, f"{d}/local_cpulist")) == ("3\n", "0-1\n")
    assert show(qemu, f"{d}/current_link_speed") == "2.5 GT/s PCIe\n"
    assert show(qemu, f"{d}/driver_override") == "(null)\n"
    assert walk(qemu, f"{d}/driver") == Link("../../../../bus/pci/drivers/e1000e")
    assert walk(qemu, f"{d}/iommu_group") == Link("../../../../kernel/iommu_groups/7")
    assert walk(qemu, f"{d}/iommu") == Link("../../../virtual/iommu/dmar0")


def test_bridges_count_17_resource_lines_and_decimal_bus_numbers(qemu):
    d = "sys/devices/pci0000:00/0000:00:04.0"
    assert len(show(qemu, f"{d}/resource").splitlines()) == 17
    assert (show(qemu, f"{d}/secondary_bus_number"), show(qemu, f"{d}/subordinate_bus_number")) == ("3\n", "6\n")


def test_iommu_files(qemu):
    assert show(qemu, "sys/kernel/iommu_groups/0/reserved_regions") == "0x00000000fee00000 0x00000000feefffff msi\n"
    assert show(qemu, "sys/kernel/iommu_groups/0/type") == "DMA\n"
    assert sorted(walk(qemu, "sys/kernel/iommu_groups/10/devices").entries()) == ["0000:04:01.0", "0000:06:00.0"]
    ii = "sys/devices/virtual/iommu/dmar0/intel-iommu"
    assert [show(qemu, f"{ii}/{a}") for a in ("address", "cap", "ecap", "version", "domains_supported",
                                              "domains_used")] == \
        ["fed90000\n", "d2008c22260286\n", "f00f4a\n", "1:0\n", "65536\n", "13\n"]
    assert walk(qemu, "sys/class/iommu/dmar0") == Link("../../devices/virtual/iommu/dmar0")


def test_class_net_links(qemu):
    net = walk(qemu, "sys/class/net").entries()
    assert net["eth0"] == Link("../../devices/pci0000:00/0000:00:03.0/0000:02:00.0/net/eth0")
    assert net["eth2"] == Link("../../devices/pci0000:00/0000:00:04.0/0000:03:00.0/0000:04:00.0/0000:05:00.0/virtio0/net/eth2")
    assert net["lo"] == Link("../../devices/virtual/net/lo")
    assert walk(qemu, "sys/class/net/eth0").target.endswith("net/eth0")
    dev = walk(qemu, "sys/devices/pci0000:00/0000:00:03.0/0000:02:00.0/net/eth0/device")
    assert dev == Link("../../../0000:02:00.0")


def test_sriov_files_and_formats(seed):
    d = "sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0"
    assert [show(seed, f"{d}/{a}") for a in ("sriov_totalvfs", "sriov_numvfs", "sriov_offset", "sriov_stride",
                                             "sriov_vf_device", "sriov_drivers_autoprobe")] == \
        ["63\n", "0\n", "128\n", "2\n", "1515\n", "1\n"]
    assert "sriov_numvfs" not in walk(seed, "sys/devices/pci0000:00/0000:00:1c.0").entries()


def test_config_limits_unprivileged_reads(seed):
    cfg = walk(seed, "sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0/config")
    assert cfg.size == 4096
    assert len(cfg.decl.read(cfg.obj, 0, 4096, True)) == 4096
    assert len(cfg.decl.read(cfg.obj, 0, 4096, False)) == 64
    assert cfg.decl.read(cfg.obj, 64, 16, False) == b""
    assert walk(seed, "sys/devices/pci0000:00/0000:00:1f.4/config").size == 256


@pytest.mark.parametrize("attr, good, bad, read", [
    ("broken_parity_status", "1\n", "abc\n", "0\n"),
    ("msi_bus", "0\n", "-1\n", "1\n"),
    ("d3cold_allowed", "0x0\n", " 0\n", "1\n"),
    ("numa_node", "0\n", "2\n", "1\n"),          # seed-vtd: the X540 on node 1 of 2
])
def test_writable_switches_parse_like_the_kernel(seed, attr, good, bad, read):
    path = f"sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0/{attr}"
    with pytest.raises(SysfsError) as e:
        store(seed, path, bad)
    assert e.value.errno == errno.EINVAL
    assert show(seed, path) == read        # a failed write changes nothing
    store(seed, path, good)
    assert show(seed, path) != read


def test_driver_override_set_and_clear(seed):
    path = "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/driver_override"
    store(seed, path, "vfio-pci\n")
    assert show(seed, path) == "vfio-pci\n"
    store(seed, path, "\n")
    assert show(seed, path) == "(null)\n"
    store(seed, path, "pci-stub")
    store(seed, path, "\0")
    assert show(seed, path) == "(null)\n"
    with pytest.raises(SysfsError) as e:
        store(seed, path, "x" * 4095)
    assert e.value.errno == errno.EINVAL and show(seed, path) == "(null)\n"


def test_enable_follows_the_profile(seed, qemu):
    seedpath = "sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0/enable"
    with pytest.raises(SysfsError) as e:   # 6.12: a bound driver makes it EBUSY
        store(seed, seedpath, "0")
    assert e.value.errno == errno.EBUSY and show(seed, seedpath) == "1\n"
    unbound = "sys/devices/pci0000:00/0000:00:1f.0/enable"
    with pytest.raises(SysfsError) as e:   # disabling what is not enabled: EIO
        store(qemu, unbound, "0")
    assert e.value.errno == errno.EIO


def test_remove_takes_the_subtree_away_and_rescan_brings_it_back(seed):
    port = "sys/devices/pci0000:00/0000:00:1d.0"
    store(seed, f"{port}/remove", "1")
    assert "0000:00:1d.0" not in walk(seed, "sys/devices/pci0000:00").entries()
    assert "0000:06:00.0" not in walk(seed, "sys/bus/pci/devices").entries()
    store(seed, "sys/bus/pci/rescan", "1")
    assert "0000:06:00.0" in walk(seed, "sys/bus/pci/devices").entries()
    assert walk(seed, "sys/bus/pci/devices/0000:06:00.0").target.endswith("0000:05:00.0/0000:06:00.0")
