"""SR-IOV through the view's stores: sriov_numvfs (KERNEL-FACTS §3, in the
kernel's order of checks), sriov_drivers_autoprobe, and what enabling VFs
builds: names, links, groups, drivers, netdevs, config space, BARs, log lines."""
from __future__ import annotations

import errno

import pytest

from tests.view.test_binding import (dev, driver_of, drv, entries, expect_error, log_lines, ok, resolve, show,
                                      snapshot, tree)
from vfakefs.model import topology
from vfakefs.sysfs.nodes import Link
from vfakefs.sysfs.tree import View

SEED_PF, SEED_PF1 = "0000:03:00.0", "0000:03:00.1"     # X540, ixgbe, 63 VFs each, offset 128, stride 2
QEMU_PF = "0000:01:00.0"                                 # QEMU NVMe, nvme, 4 VFs, offset 1, stride 1



def numvfs(pf):
    return f"{dev(pf)}/sriov_numvfs"


def vf_names(view, pf):
    return [f.name for f in view.m.lookup(pf).sriov.vfs]


# --- sriov_numvfs: parsing (check 1) ------------------------------------------------------------
@pytest.mark.parametrize("preset, pf", [("seed-vtd", SEED_PF), ("qemu-ref", QEMU_PF)])
@pytest.mark.parametrize("text", ["abc", "abc\n", "-1\n", " 2\n", "2 \n", "2\n\n", "\n", "65536\n", "0x\n",
                                  "2abc\n", "99999999999999999999999\n"])
def test_numvfs_parse_errors_are_einval(preset, pf, text):
    v = View(topology.load(preset))
    expect_error(v, numvfs(pf), text, errno.EINVAL)
    assert show(v, numvfs(pf)) == "0\n"


@pytest.mark.parametrize("text", ["+2\n", "0x2\n", "02\n", "2", "2\n"])
def test_numvfs_accepts_kstrtou16_forms(qemu, text):
    ok(qemu, numvfs(QEMU_PF), text)
    assert show(qemu, numvfs(QEMU_PF)) == "2\n"
    assert vf_names(qemu, QEMU_PF) == ["0000:01:00.1", "0000:01:00.2"]


# --- checks 2-8, in order -----------------------------------------------------------------------
def test_numvfs_above_total_is_erange(qemu, seed):
    expect_error(qemu, numvfs(QEMU_PF), "5\n", errno.ERANGE)
    expect_error(seed, numvfs(SEED_PF), "64\n", errno.ERANGE)
    expect_error(seed, numvfs(SEED_PF), "65535\n", errno.ERANGE)


def test_numvfs_erange_comes_before_the_driver_check(qemu):
    ok(qemu, f"{drv('nvme')}/unbind", QEMU_PF)
    expect_error(qemu, numvfs(QEMU_PF), "5\n", errno.ERANGE)
    assert not any("no driver bound" in line for line in log_lines(qemu.m))


def test_numvfs_same_value_is_a_no_op_even_without_driver(qemu):
    ok(qemu, f"{drv('nvme')}/unbind", QEMU_PF)
    before = snapshot(qemu)
    ok(qemu, numvfs(QEMU_PF), "0\n")
    assert snapshot(qemu) == before
    assert not any("no driver bound" in line for line in log_lines(qemu.m))


def test_numvfs_same_nonzero_value_without_driver_is_a_no_op(qemu):
    ok(qemu, numvfs(QEMU_PF), "2\n")
    ok(qemu, f"{drv('nvme')}/unbind", QEMU_PF)
    assert any(line == "nvme 0000:01:00.0: driver left SR-IOV enabled after remove" for line in log_lines(qemu.m))
    before = snapshot(qemu)
    ok(qemu, numvfs(QEMU_PF), "2\n")
    assert snapshot(qemu) == before


def test_numvfs_without_driver_is_enoent_and_logs(qemu):
    ok(qemu, f"{drv('nvme')}/unbind", QEMU_PF)
    expect_error(qemu, numvfs(QEMU_PF), "2\n", errno.ENOENT)
    assert log_lines(qemu.m)[-1] == "pci 0000:01:00.0: no driver bound to device; cannot configure SR-IOV"


def test_numvfs_zero_without_driver_keeps_the_vfs(qemu):
    ok(qemu, numvfs(QEMU_PF), "2\n")
    ok(qemu, f"{drv('nvme')}/unbind", QEMU_PF)
    expect_error(qemu, numvfs(QEMU_PF), "0\n", errno.ENOENT)
    assert vf_names(qemu, QEMU_PF) == ["0000:01:00.1", "0000:01:00.2"]


def test_numvfs_with_a_driver_without_sriov_configure_is_enoent(seed):
    # qemu-ref's kernel has no pci-stub; seed-vtd's does
    ok(seed, f"{drv('ixgbe')}/unbind", SEED_PF)
    ok(seed, f"{dev(SEED_PF)}/driver_override", "pci-stub\n")
    ok(seed, "sys/bus/pci/drivers_probe", SEED_PF + "\n")
    assert driver_of(seed, SEED_PF) == "pci-stub"
    expect_error(seed, numvfs(SEED_PF), "2\n", errno.ENOENT)


def test_numvfs_nonzero_to_nonzero_is_ebusy_and_logs(qemu):
    ok(qemu, numvfs(QEMU_PF), "2\n")
    expect_error(qemu, numvfs(QEMU_PF), "3\n", errno.EBUSY)
    assert log_lines(qemu.m)[-1] == "nvme 0000:01:00.0: 2 VFs already enabled. Disable before enabling 3 VFs"
    ok(qemu, numvfs(QEMU_PF), "2\n")                       # same value: success
    assert show(qemu, numvfs(QEMU_PF)) == "2\n"


def test_numvfs_zero_removes_every_vf(qemu):
    before = snapshot(qemu)
    ok(qemu, numvfs(QEMU_PF), "4\n")
    ok(qemu, numvfs(QEMU_PF), "0\n")
    assert show(qemu, numvfs(QEMU_PF)) == "0\n"
    assert not [n for n in entries(qemu, dev(QEMU_PF)) if n.startswith("virtfn")]
    after = snapshot(qemu)
    assert after["paths"] == before["paths"]
    assert after["functions"] == before["functions"]
    assert after["group_types"] == before["group_types"]


def test_vfio_pci_pf_needs_enable_sriov(seed):
    ok(seed, f"{drv('ixgbe')}/unbind", SEED_PF)
    ok(seed, f"{dev(SEED_PF)}/driver_override", "vfio-pci")
    ok(seed, "sys/bus/pci/drivers_probe", SEED_PF)
    assert driver_of(seed, SEED_PF) == "vfio-pci"
    param = "sys/module/vfio_pci/parameters/enable_sriov"
    assert show(seed, param) == "N\n"
    expect_error(seed, numvfs(SEED_PF), "2\n", errno.ENOENT)
    ok(seed, param, "Y\n")
    assert show(seed, param) == "Y\n"
    ok(seed, numvfs(SEED_PF), "2\n")
    assert vf_names(seed, SEED_PF) == ["0000:03:10.0", "0000:03:10.2"]


def test_vfs_of_a_vfio_pci_pf_are_captured_by_vfio_pci(seed):
    # vfio_pci_bus_notifier (BUS_NOTIFY_ADD_DEVICE) sets the new VF's driver_override
    ok(seed, f"{drv('ixgbe')}/unbind", SEED_PF)
    ok(seed, f"{dev(SEED_PF)}/driver_override", "vfio-pci")
    ok(seed, "sys/bus/pci/drivers_probe", SEED_PF)
    ok(seed, "sys/module/vfio_pci/parameters/enable_sriov", "1")
    ok(seed, numvfs(SEED_PF), "2\n")
    assert show(seed, f"{dev('0000:03:10.0')}/driver_override") == "vfio-pci\n"
    assert driver_of(seed, "0000:03:10.0") == "vfio-pci"


# --- sriov_drivers_autoprobe ----------------------------------------------------------------------
AUTOPROBE_GOOD = [("1", 1), ("y\n", 1), ("Y", 1), ("t", 1), ("True\n", 1), ("on\n", 1), ("ON", 1), ("yes", 1),
                  ("0\n", 0), ("n", 0), ("N\n", 0), ("f", 0), ("false", 0), ("off\n", 0), ("OFF", 0), ("no", 0)]


@pytest.mark.parametrize("text, value", AUTOPROBE_GOOD)
def test_sriov_drivers_autoprobe_is_kstrtobool(seed, text, value):
    p = f"{dev(SEED_PF)}/sriov_drivers_autoprobe"
    ok(seed, p, "0" if value else "1")
    ok(seed, p, text)
    assert show(seed, p) == f"{value}\n"


@pytest.mark.parametrize("text", ["", "\n", "x", "2", "o", "o\n", " 1", "-1", "abc"])
def test_sriov_drivers_autoprobe_bad_input_is_einval(seed, text):
    expect_error(seed, f"{dev(SEED_PF)}/sriov_drivers_autoprobe", text, errno.EINVAL)


def test_sriov_drivers_autoprobe_of_is_false(seed):
    # lib/kstrtox.c: after 'o' only the second character decides ('n' true, 'f' false)
    p = f"{dev(SEED_PF)}/sriov_drivers_autoprobe"
    ok(seed, p, "of")
    assert show(seed, p) == "0\n"


def test_autoprobe_zero_leaves_new_vfs_unbound(seed):
    ok(seed, f"{dev(SEED_PF)}/sriov_drivers_autoprobe", "0\n")
    nets = set(seed.m.netdevs)
    ok(seed, numvfs(SEED_PF), "2\n")
    assert [driver_of(seed, vf) for vf in ("0000:03:10.0", "0000:03:10.2")] == [None, None]
    assert set(seed.m.netdevs) == nets
    # the PCI core refuses to probe them, bind included, unless driver_override is set
    expect_error(seed, f"{drv('ixgbevf')}/bind", "0000:03:10.0\n", errno.ENODEV)
    ok(seed, "sys/bus/pci/drivers_probe", "0000:03:10.0\n")
    assert driver_of(seed, "0000:03:10.0") is None
    ok(seed, f"{dev('0000:03:10.0')}/driver_override", "ixgbevf\n")
    ok(seed, f"{drv('ixgbevf')}/bind", "0000:03:10.0\n")
    assert driver_of(seed, "0000:03:10.0") == "ixgbevf"


def test_autoprobe_affects_only_vfs_created_later(seed):
    ok(seed, numvfs(SEED_PF), "2\n")
    ok(seed, f"{dev(SEED_PF)}/sriov_drivers_autoprobe", "0\n")
    assert [driver_of(seed, vf) for vf in ("0000:03:10.0", "0000:03:10.2")] == ["ixgbevf", "ixgbevf"]


# --- what enabling builds -----------------------------------------------------------------------
def test_x540_four_vfs_names_links_groups_drivers(seed):
    groups_before = set(seed.m.groups.by_id)
    ok(seed, numvfs(SEED_PF), "4\n")
    vfs = ["0000:03:10.0", "0000:03:10.2", "0000:03:10.4", "0000:03:10.6"]
    assert vf_names(seed, SEED_PF) == vfs
    pf_dir = entries(seed, dev(SEED_PF))
    for i, vf in enumerate(vfs):
        assert pf_dir[f"virtfn{i}"] == Link(f"../{vf}")
        assert resolve(seed, f"sys/bus/pci/devices/{vf}", follow=False) == \
            Link(f"../../../devices/pci0000:00/0000:00:1c.0/{vf}")
        vf_dir = entries(seed, dev(vf))
        assert vf_dir["physfn"] == Link(f"../{SEED_PF}")
        assert "remove" not in vf_dir and "rescan" not in vf_dir and "sriov_numvfs" not in vf_dir
        assert "sriov_vf_msix_count" in vf_dir
        assert driver_of(seed, vf) == "ixgbevf"
        assert [nd.name for nd in seed.m.lookup(vf).netdevs]
        assert vf in entries(seed, drv("ixgbevf"))
    assert "virtfn4" not in pf_dir
    gids = [seed.m.lookup(vf).group.id for vf in vfs]
    assert len(set(gids)) == 4 and not set(gids) & groups_before
    for vf, gid in zip(vfs, gids):
        assert list(entries(seed, f"sys/kernel/iommu_groups/{gid}/devices")) == [vf]
    assert len(seed.m.netdevs) == 4 + 4          # eth0-eth3 (eth3 the ConnectX-5's), then the VFs'


def test_vf_config_reads_ffff_but_vendor_and_device_files_do_not(seed):
    ok(seed, numvfs(SEED_PF), "1\n")
    vf = "0000:03:10.0"
    cfg = resolve(seed, f"{dev(vf)}/config")
    assert cfg.size == 4096
    assert cfg.decl.read(cfg.obj, 0, 4, True) == b"\xff\xff\xff\xff"
    assert show(seed, f"{dev(vf)}/vendor") == "0x8086\n"
    assert show(seed, f"{dev(vf)}/device") == "0x1515\n"
    assert show(seed, f"{dev(vf)}/class") == show(seed, f"{dev(SEED_PF)}/class")
    assert "PCI_ID=8086:1515\n" in show(seed, f"{dev(vf)}/uevent")


def test_vf_bars_are_slices_of_the_iov_bars(seed):
    ok(seed, numvfs(SEED_PF), "4\n")
    pf_lines = show(seed, f"{dev(SEED_PF)}/resource").splitlines()
    total = int(show(seed, f"{dev(SEED_PF)}/sriov_totalvfs"))
    for bar in range(6):
        start, end, flags = (int(x, 16) for x in pf_lines[7 + bar].split())
        for i, vf in enumerate(vf_names(seed, SEED_PF)):
            vstart, vend, vflags = (int(x, 16) for x in show(seed, f"{dev(vf)}/resource").splitlines()[bar].split())
            if not flags:
                assert (vstart, vend, vflags) == (0, 0, 0)
                continue
            size = (end - start + 1) // total
            assert (vstart, vend, vflags) == (start + i * size, start + (i + 1) * size - 1, flags)
    assert pf_lines[7].split()[2] != "0x0000000000000000"     # the X540 has IOV BARs 0 and 3


def test_63_vfs_on_both_x540_ports(seed):
    ok(seed, numvfs(SEED_PF), "63\n")
    ok(seed, numvfs(SEED_PF1), "63")
    vf0, vf1 = vf_names(seed, SEED_PF), vf_names(seed, SEED_PF1)
    assert len(vf0) == len(vf1) == 63 and not set(vf0) & set(vf1)
    assert vf0[0] == "0000:03:10.0" and vf0[-1] == "0000:03:1f.4"
    assert vf1[0] == "0000:03:10.1" and vf1[-1] == "0000:03:1f.5"
    assert all(n.startswith("0000:03:") for n in vf0 + vf1)
    gids = [f.group.id for f in seed.m.functions if f.is_virtfn]
    assert len(set(gids)) == 126
    assert len(entries(seed, "sys/bus/pci/devices")) == 24 + 126     # 24 functions of its own
    assert sum(1 for n in entries(seed, dev(SEED_PF1)) if n.startswith("virtfn")) == 63
    seed.m.check()


def test_qemu_vfs_get_groups_11_to_14_and_log_like_the_kernel(qemu):
    ok(qemu, f"{dev(QEMU_PF)}/sriov_drivers_autoprobe", "0\n")
    mark = len(log_lines(qemu.m))
    ok(qemu, numvfs(QEMU_PF), "4\n")
    vfs = ["0000:01:00.1", "0000:01:00.2", "0000:01:00.3", "0000:01:00.4"]
    assert vf_names(qemu, QEMU_PF) == vfs
    assert [qemu.m.lookup(vf).group.id for vf in vfs] == [11, 12, 13, 14]
    for i, vf in enumerate(vfs):
        assert entries(qemu, dev(QEMU_PF))[f"virtfn{i}"] == Link(f"../{vf}")
        assert entries(qemu, dev(vf))["iommu_group"] == Link(f"../../../../kernel/iommu_groups/{11 + i}")
        assert show(qemu, f"sys/kernel/iommu_groups/{11 + i}/type") == "DMA\n"
    assert log_lines(qemu.m)[mark:] == [line for i, vf in enumerate(vfs) for line in (
        f"pci {vf}: [1b36:0010] type 00 class 0x010802", f"pci {vf}: Adding to iommu group {11 + i}")]
    mark = len(log_lines(qemu.m))
    ok(qemu, numvfs(QEMU_PF), "0\n")
    assert log_lines(qemu.m)[mark:] == [f"pci {vf}: Removing from iommu group {11 + i}" for i, vf in enumerate(vfs)]
    assert not [g for g in entries(qemu, "sys/kernel/iommu_groups") if int(g) > 10]


def test_qemu_vfs_are_probed_one_by_one(qemu):
    # sriov_add_vfs -> pci_iov_add_virtfn -> pci_bus_add_device probes each VF before the next
    # is added: the capture has 'nvme nvme2: pci function 0000:01:00.1' before VF 01:00.2 appears
    mark = len(log_lines(qemu.m))
    ok(qemu, numvfs(QEMU_PF), "2\n")
    lines = log_lines(qemu.m)[mark:]
    assert lines.index("nvme nvme2: pci function 0000:01:00.1") < \
        lines.index("pci 0000:01:00.2: [1b36:0010] type 00 class 0x010802")


def test_freed_groups_are_reused_lowest_first(seed):
    ok(seed, numvfs(SEED_PF), "4\n")
    ok(seed, numvfs(SEED_PF1), "2\n")
    first = [seed.m.lookup(vf).group.id for vf in vf_names(seed, SEED_PF)]
    second = [seed.m.lookup(vf).group.id for vf in vf_names(seed, SEED_PF1)]
    assert first == [17, 18, 19, 20] and second == [21, 22]     # after the boot's groups 0-16 (and 42)
    ok(seed, numvfs(SEED_PF), "0\n")
    assert not {"17", "18", "19", "20"} & set(entries(seed, "sys/kernel/iommu_groups"))
    ok(seed, numvfs(SEED_PF), "2\n")
    assert [seed.m.lookup(vf).group.id for vf in vf_names(seed, SEED_PF)] == [17, 18]
    ok(seed, numvfs(SEED_PF1), "0\n")
    ok(seed, numvfs(SEED_PF1), "3\n")
    assert [seed.m.lookup(vf).group.id for vf in vf_names(seed, SEED_PF1)] == [19, 20, 21]


def test_qemu_groups_freed_by_disable_are_reused(qemu):
    for _ in range(3):
        ok(qemu, numvfs(QEMU_PF), "2\n")
        assert [qemu.m.lookup(vf).group.id for vf in vf_names(qemu, QEMU_PF)] == [11, 12]
        ok(qemu, numvfs(QEMU_PF), "0\n")


def test_unbinding_ixgbe_disables_its_vfs(seed):
    ok(seed, numvfs(SEED_PF), "2\n")
    ok(seed, f"{drv('ixgbe')}/unbind", SEED_PF)
    assert show(seed, numvfs(SEED_PF)) == "0\n"
    paths = tree(seed, "sys/bus/pci/devices")
    assert not [p for p in paths if "03:10." in p]


# --- VF routing IDs past the PF's bus range (sriov_enable: pci_iov_virtfn_bus) --------------------
WIDE = """
[[device]]
bdf = "0000:00:00.0"
kind = "host_bridge"
vendor = 0x8086
device = 0x3e30
class = 0x060000

[[device]]
bdf = "0000:00:1c.0"
kind = "root_port"
vendor = 0x8086
device = 0xa110
class = 0x060400
%s
[[device]]
bdf = "0000:01:00.0"
parent = "0000:00:1c.0"
kind = "endpoint"
vendor = 0x8086
device = 0x1528
class = 0x020000
driver = "ixgbe"
sriov = { total_vfs = %d, offset = 128, stride = 2, vf_device = 0x1515, vf_driver = "ixgbevf" }
"""


def test_vfs_past_bus_ff_are_enomem_and_change_nothing():
    """total_vfs 65535, offset 128, stride 2: VF 65534 would be on bus 0x201. The kernel
    refuses (ENOMEM, its log line) instead of wrapping onto bus 01 and the devices there."""
    v = View(topology.from_text(WIDE % ("", 65535), "wide.toml"))
    pf = "0000:01:00.0"
    config = bytes(v.m.lookup(pf).config.bytes)
    expect_error(v, numvfs(pf), "65535\n", errno.ENOMEM)
    assert log_lines(v.m)[-1] == "ixgbe 0000:01:00.0: can't enable 65535 VFs (bus 201 out of range of [bus 01-ff])"
    assert v.m.kmsg.records[-1].level == 3
    assert show(v, numvfs(pf)) == "0\n" and bytes(v.m.lookup(pf).config.bytes) == config
    assert len(v.m.functions) == 3
    v.m.check()


def test_vfs_fit_up_to_the_bridges_subordinate_bus():
    """An explicit subordinate_bus of 02 leaves room for VFs 0..191 (VF 191's routing ID is
    0x100 + 128 + 2 * 191 = 0x2fe: bus 02, devfn 0xfe); VF 192 would be on bus 03."""
    v = View(topology.from_text(WIDE % ("subordinate_bus = 2\n", 400), "wide.toml"))
    pf = "0000:01:00.0"
    expect_error(v, numvfs(pf), "193\n", errno.ENOMEM)
    assert log_lines(v.m)[-1] == "ixgbe 0000:01:00.0: can't enable 193 VFs (bus 03 out of range of [bus 01-02])"
    ok(v, numvfs(pf), "192\n")
    assert vf_names(v, pf)[-1] == "0000:02:1f.6"
    ok(v, numvfs(pf), "0\n")                      # and SR-IOV can be disabled again
    assert len(v.m.functions) == 3
