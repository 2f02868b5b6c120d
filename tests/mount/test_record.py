"""`vfakefs record`: the machine recorded, mounted, and read back with real lspci.

Both sides run the same lspci with the same name sources: the pinned pci.ids without the
udev hwdb (LSPCI_NAMES), and -A linux-sysfs with sysfs.path naming the tree, so each side reads
only its own tree. lspci -k's "Kernel modules" lines come from libkmod reading the running
kernel's /lib/modules/$(uname -r)/modules.alias: both sides run outside `vfakefs run`, so both
look up their devices' modalias in the same (host's) file, or both find none.

The host recording reads the host's /sys (read only) and compares whatever PCI functions it
has; our own mounts (seed-vtd, qemu-ref) add what a test host may lack: bridges and switches,
SR-IOV, IOMMU groups, ACS, netdevs, NUMA nodes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import lspci_argv, make_mountpoint, mounted, run, vfakefs

LSPCI_MODES = ("-nn", "-tv", "-k", "-xxx")


def lspci(sysfs: Path, *args) -> str:
    r = run(lspci_argv(f"sysfs.path={sysfs}/bus/pci", *args))
    assert r.returncode == 0, r.stderr
    return r.stdout


def record(tmp_path: Path, *args) -> Path:
    out = tmp_path / "recorded.toml"
    r = vfakefs("record", "-o", str(out), *args)
    assert r.returncode == 0, r.stderr
    assert f"devices written to {out}" in r.stderr
    return out


def state(sys: Path) -> dict:
    """What a round trip keeps: IOMMU groups, SR-IOV totals, drivers, netdevs and MACs, NUMA nodes."""
    groups = {g: sorted(os.listdir(sys / "kernel/iommu_groups" / g / "devices"))
              for g in sorted(os.listdir(sys / "kernel/iommu_groups"))} if (sys / "kernel/iommu_groups").is_dir() else {}
    devs = {}
    for bdf in sorted(os.listdir(sys / "bus/pci/devices")):
        d = sys / "bus/pci/devices" / bdf
        total = d / "sriov_totalvfs"
        devs[bdf] = (total.read_text() if total.exists() else None,
                     os.path.basename(os.readlink(d / "driver")) if (d / "driver").is_symlink() else None,
                     (d / "numa_node").read_text())
    nets = {n: ((sys / "class/net" / n / "address").read_text(), (sys / "class/net" / n / "mtu").read_text(),
                os.path.basename(os.path.realpath(sys / "class/net" / n / "device")))
            for n in sorted(os.listdir(sys / "class/net")) if n != "lo"}
    return {"groups": groups, "devices": devs, "netdevs": nets,
            "drivers": sorted(os.listdir(sys / "bus/pci/drivers"))}


@pytest.mark.skipif(not Path("/sys/bus/pci").is_dir(), reason="this machine has no /sys/bus/pci")
def test_the_host_recorded_and_mounted_reads_the_same_with_lspci(tmp_path):
    topo = record(tmp_path)      # (read only: the round trips below check it on a mount's own counter)
    with mounted(str(topo), make_mountpoint(tmp_path)) as m:
        for mode in LSPCI_MODES:
            assert lspci(m.sys, mode) == lspci(Path("/sys"), mode), f"lspci {mode}"


@pytest.mark.parametrize("preset", ["seed-vtd", "qemu-ref"])
def test_a_mount_recorded_and_mounted_again_is_the_same_machine(mount_preset, tmp_path, preset):
    original = mount_preset(preset)
    seq = original.read(original.sys / "kernel/uevent_seqnum")
    topo = record(tmp_path, "--sysfs", str(original.sys))
    assert original.read(original.sys / "kernel/uevent_seqnum") == seq      # read only
    again = mount_preset(str(topo))
    for mode in LSPCI_MODES:
        assert lspci(again.sys, mode) == lspci(original.sys, mode), f"lspci {mode}"
    want = state(original.sys)
    assert want["groups"] and want["netdevs"]        # there is something to compare
    assert state(again.sys) == want
    if preset == "qemu-ref":
        # its NVMe VFs' probe fails (vf_probe_fails_after: QEMU's secondary controllers are
        # offline): behaviour no sysfs file shows while VFs are off, so not recordable
        return
    # the SR-IOV capability works the same: two VFs on the first PF, on both machines
    pf = next(b for b, (total, _, _) in want["devices"].items() if total)
    for m in (original, again):
        r = run(["bash", "-c", f"echo 2 > {m.devdir(pf)}/sriov_numvfs"])
        assert r.returncode == 0, r.stderr
    want = state(original.sys)
    assert len(want["devices"]) == len(state(again.sys)["devices"]) and state(again.sys) == want
    for mode in LSPCI_MODES:
        assert lspci(again.sys, mode) == lspci(original.sys, mode), f"lspci {mode} with VFs"


TWO_ROOTS = Path(__file__).parent / "topologies/two-root-buses.toml"


def test_a_machine_with_two_root_buses_is_recorded_and_mounted_alike(mount_preset, tmp_path):
    """pci0000:00 and pci0000:17, each host bridge with its own tree, as on a server."""
    original = mount_preset(str(TWO_ROOTS))
    assert (original.sys / "devices/pci0000:17/0000:17:00.0/0000:18:00.0").is_dir()
    assert os.readlink(original.devdir("0000:18:00.0")) == "../../../devices/pci0000:17/0000:17:00.0/0000:18:00.0"
    assert lspci(original.sys, "-tv").splitlines()[1].startswith(" \\-[0000:17]-+-00.0-[18]----00.0  Intel")
    assert (original.sys / "class/pci_bus/0000:17").is_symlink()
    topo = record(tmp_path, "--sysfs", str(original.sys))
    assert 'root_buses = ["0000:17"]' in topo.read_text()
    again = mount_preset(str(topo))
    for mode in LSPCI_MODES:
        assert lspci(again.sys, mode) == lspci(original.sys, mode), f"lspci {mode}"
    assert state(again.sys) == state(original.sys)


def test_the_seed_s_features_survive_the_round_trip(mount_preset, tmp_path):
    """Bridges, SR-IOV, ACS and NUMA nodes are in the recording itself, not only in its reading."""
    original = mount_preset("seed-vtd")
    text = record(tmp_path, "--sysfs", str(original.sys)).read_text()
    assert text.count("[device.sriov]") == 2 and "total_vfs = 63" in text
    assert text.count("[[numa_node]]") == 2
    assert 'kind = "downstream_port"' in text and "iommu_group = 42" in text
    again = mount_preset(str(tmp_path / "recorded.toml"))
    for p in ("0000:00:1c.0", "0000:03:00.0"):
        assert again.read(again.devdir(p) / "numa_node") == original.read(original.devdir(p) / "numa_node")
    acs = run(lspci_argv(f"sysfs.path={again.pci}", "-vvv", "-s", "00:1c.0")).stdout
    assert "ACSCtl:\tSrcValid+" in acs


def test_record_writes_to_standard_output_and_says_what_it_approximated(mount_preset):
    m = mount_preset("qemu-ref")
    r = vfakefs("record", "--sysfs", str(m.sys))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# A machine recorded by `vfakefs record`")
    assert "config spaces are 256 / 4096 bytes" in r.stdout
    assert "vfakefs record: approximated: drivers vfakefs does not know" in r.stderr
    assert "# Approximated or left out:" in r.stdout
    assert "reading PCI functions: 15/15 100%" in r.stderr          # the progress line


def test_record_of_a_tree_without_pci_fails_in_one_line(tmp_path):
    r = vfakefs("record", "--sysfs", str(tmp_path), "-o", str(tmp_path / "x.toml"))
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "no PCI devices here" in r.stderr
    assert not (tmp_path / "x.toml").exists()
