"""Unmodified Debian tools inside `vfakefs run` on qemu-ref: driverctl (0.111), dpdk-devbind.py
(DPDK 22.11) and udevadm (systemd 252), fetched by tools/fetch-clients and run as a user runs
them, with .clients/bin first on PATH (driverctl calls udevadm). What they print and what
they change is compared with what the simulated kernel says; the host stays as it was
(tests/host_state.py). driverctl always gets --nosave: without it, it writes the host's
/etc/driverctl.d."""
from __future__ import annotations

import os
import re
import sys

import pytest

from tests.clients import CLIENTS, client
from tests.conftest import REPO, run
from tests.host_state import host_unchanged  # noqa: F401  (module fixture: the host is left alone)

E1000E, VIRTIO, NVME, E1000 = "0000:02:00.0", "0000:05:00.0", "0000:06:00.0", "0000:00:05.0"


def in_run(mnt, *cmd):
    """cmd inside `vfakefs run`, the fetched tools first on PATH."""
    path = f"{CLIENTS}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    return run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(mnt), "--", "env", f"PATH={path}", *cmd],
               cwd=REPO)


def dev(mnt, name: str):
    return mnt.path / "sys/bus/pci/devices" / name


def bound(mnt, name: str) -> str | None:
    link = dev(mnt, name) / "driver"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def override(mnt, name: str) -> str:
    return (dev(mnt, name) / "driver_override").read_text().strip()


@pytest.fixture
def qemu(mount_preset):
    client("driverctl")
    return mount_preset("qemu-ref")


# --- driverctl --------------------------------------------------------------------------------------
def test_driverctl_list_devices_is_the_simulated_bus(qemu_mnt):
    r = in_run(qemu_mnt.path, client("driverctl"), "list-devices")
    assert r.returncode == 0, r.stderr
    names = sorted(os.listdir(qemu_mnt.path / "sys/bus/pci/devices"))
    assert r.stdout.splitlines() == [f"{n} {bound(qemu_mnt, n) or '(none)'}" for n in names]
    assert "0000:02:00.0 e1000e" in r.stdout.splitlines()


def test_driverctl_set_list_and_unset_overrides(qemu):
    dc = client("driverctl")
    r = in_run(qemu.path, dc, "--nosave", "set-override", VIRTIO, "none")      # no modprobe for "none"
    assert r.returncode == 0, r.stderr
    assert (override(qemu, VIRTIO), bound(qemu, VIRTIO)) == ("none", None)
    assert not (qemu.path / "sys/class/net/eth2").exists()
    r = in_run(qemu.path, dc, "--nosave", "set-override", NVME, "nvme")         # /sys/module/nvme exists
    assert r.returncode == 0, r.stderr
    assert (override(qemu, NVME), bound(qemu, NVME)) == ("nvme", "nvme")
    r = in_run(qemu.path, dc, "list-overrides")
    assert (r.returncode, r.stdout) == (0, f"{VIRTIO} (none)\n{NVME} nvme\n"), r.stderr
    r = in_run(qemu.path, dc, "list-devices")
    assert f"{VIRTIO} (none) [*]" in r.stdout.splitlines() and f"{NVME} nvme [*]" in r.stdout.splitlines()
    # -v asks udevadm for each device's model: sd-device accepts the simulated /sys (statfs
    # says sysfs). With no udev database there is no ID_MODEL_FROM_DATABASE: "()" ends the line.
    r = in_run(qemu.path, dc, "-v", "list-overrides")
    assert r.returncode == 0, r.stderr
    assert [line.rsplit(" (", 1)[0] for line in r.stdout.splitlines()] == [f"{VIRTIO} (none)", f"{NVME} nvme"]
    assert "No such device" not in r.stderr and "too old" not in r.stderr
    for name, drv in ((VIRTIO, "virtio-pci"), (NVME, "nvme")):
        r = in_run(qemu.path, dc, "--nosave", "unset-override", name)
        assert r.returncode == 0, r.stderr
        assert (override(qemu, name), bound(qemu, name)) == ("(null)", drv)
    assert (qemu.path / "sys/class/net/eth2").exists()
    r = in_run(qemu.path, dc, "list-overrides")                                # as on a real kernel
    assert r.returncode == 1 and "No overridable devices found" in r.stderr


def test_driverctl_without_nosave_options_after_the_command_is_refused(qemu):
    """Options after the command end up in the usage text: nothing changes, nothing is saved."""
    r = in_run(qemu.path, client("driverctl"), "set-override", NVME, "none", "--nosave")
    assert r.returncode == 1 and "Usage:" in r.stdout
    assert (override(qemu, NVME), bound(qemu, NVME)) == ("(null)", "nvme")


def test_driverctl_set_override_vfio_pci_loads_the_module(qemu):
    """driverctl runs /sbin/modprobe (by that path) when /sys/module/vfio_pci is missing: the
    fetched kmod stands at /sbin inside the namespace (a bind there, private to it), loads
    vfio_pci from the simulated /lib/modules through finit_module, and the override binds."""
    r = in_run(qemu.path, "modprobe", "-r", "vfio_pci")
    assert r.returncode == 0, r.stderr
    assert not (qemu.path / "sys/module/vfio_pci").exists()
    r = in_run(qemu.path, "bash", "-c", f'mount --bind {CLIENTS} "$(realpath /sbin)" && '
                                        f'exec driverctl --nosave set-override {NVME} vfio-pci')
    assert r.returncode == 0, r.stderr
    assert (override(qemu, NVME), bound(qemu, NVME)) == ("vfio-pci", "vfio-pci")


def test_driverctl_e1000_on_the_82574l_fails_its_probe(qemu):
    """e1000 cannot drive the 82574L (e1000_set_mac_type: Unknown MAC Type): the probe fails
    with -EIO, the device stays unbound with the override set, and driverctl exits 1."""
    dc = client("driverctl")
    r = in_run(qemu.path, dc, "--nosave", "set-override", E1000E, "e1000")
    assert r.returncode == 1
    assert (override(qemu, E1000E), bound(qemu, E1000E)) == ("e1000", None)
    assert not (qemu.path / "sys/class/net/eth0").exists()
    log = in_run(qemu.path, "dmesg").stdout.splitlines()[-2:]
    assert [line.split("] ", 1)[1] for line in log] == [
        "e1000 0000:02:00.0 (unnamed net_device) (uninitialized): Unknown MAC Type",
        "e1000: probe of 0000:02:00.0 failed with error -5"]
    r = in_run(qemu.path, dc, "--nosave", "unset-override", E1000E)
    assert r.returncode == 0, r.stderr
    assert (override(qemu, E1000E), bound(qemu, E1000E)) == ("(null)", "e1000e")


def test_override_is_gone_after_remove_and_rescan(qemu):
    """remove + rescan makes a new pci_dev: the override does not survive, the default driver binds."""
    r = in_run(qemu.path, client("driverctl"), "--nosave", "set-override", VIRTIO, "none")
    assert r.returncode == 0, r.stderr
    r = in_run(qemu.path, "bash", "-c", f"echo 1 > /sys/bus/pci/devices/{VIRTIO}/remove && "
                                        f"echo 1 > /sys/bus/pci/rescan && cat /sys/bus/pci/devices/{VIRTIO}/driver_override")
    assert (r.returncode, r.stdout) == (0, "(null)\n"), r.stderr
    assert bound(qemu, VIRTIO) == "virtio-pci"
    r = in_run(qemu.path, client("driverctl"), "list-devices")
    assert f"{VIRTIO} virtio-pci" in r.stdout.splitlines()


# --- dpdk-devbind.py --------------------------------------------------------------------------------
def status_lines(text: str) -> dict[str, str]:
    return {line.split()[0]: line for line in text.splitlines() if line.startswith("0000:")}


def test_dpdk_devbind_status_lists_the_simulated_nics(qemu_mnt):
    r = in_run(qemu_mnt.path, client("dpdk-devbind.py"), "--status")
    assert r.returncode == 0, r.stderr
    assert "Network devices using kernel driver" in r.stdout
    lines = status_lines(r.stdout)
    assert sorted(lines) == [E1000, E1000E, VIRTIO]
    for name, ifname, drv, model in ((E1000, "eth1", "e1000", "'82540EM Gigabit Ethernet Controller 100e'"),
                                     (E1000E, "eth0", "e1000e", "'82574L Gigabit Network Connection 10d3'"),
                                     (VIRTIO, "eth2", "virtio-pci", "'Virtio 1.0 network device 1041'")):
        assert lines[name].startswith(f"{name} {model} if={ifname} drv={drv} unused="), lines[name]
        assert "vfio-pci" in lines[name].split("unused=")[1]      # loaded DPDK driver: offered


def test_dpdk_devbind_unbind_bind_and_back(qemu):
    devbind = client("dpdk-devbind.py")
    r = in_run(qemu.path, devbind, "--force", "-u", VIRTIO)
    assert r.returncode == 0, r.stderr
    assert bound(qemu, VIRTIO) is None and not (qemu.path / "sys/class/net/eth2").exists()
    r = in_run(qemu.path, devbind, "-u", VIRTIO)
    assert r.returncode == 0 and "is not currently managed by any driver" in r.stderr
    r = in_run(qemu.path, devbind, "-b", "vfio-pci", VIRTIO)        # no netdev now: no --force needed
    assert r.returncode == 0, r.stderr
    # bound through driver_override, which it clears again by writing "\0"
    assert (bound(qemu, VIRTIO), override(qemu, VIRTIO)) == ("vfio-pci", "(null)")
    group = os.path.basename(os.readlink(dev(qemu, VIRTIO) / "iommu_group"))
    r = in_run(qemu.path, "ls", "/dev/vfio")
    assert group in r.stdout.split()
    r = in_run(qemu.path, devbind, "--status-dev", "net")
    head, _, rest = r.stdout.partition("Network devices using kernel driver")
    assert "Network devices using DPDK-compatible driver" in head
    assert status_lines(head)[VIRTIO].startswith(f"{VIRTIO} 'Virtio 1.0 network device 1041' drv=vfio-pci")
    assert VIRTIO not in status_lines(rest)
    r = in_run(qemu.path, devbind, "-b", "vfio-pci", VIRTIO)        # already there: a notice
    assert r.returncode == 0 and "already bound to driver vfio-pci" in r.stderr
    r = in_run(qemu.path, devbind, "-b", "virtio-pci", VIRTIO)      # back to the kernel driver
    assert r.returncode == 0, r.stderr
    assert bound(qemu, VIRTIO) == "virtio-pci" and (qemu.path / "sys/class/net/eth2").exists()


def test_dpdk_devbind_force_takes_a_nic_with_its_interface(qemu):
    devbind = client("dpdk-devbind.py")
    r = in_run(qemu.path, devbind, "--force", "-b", "vfio-pci", E1000)
    assert r.returncode == 0, r.stderr
    assert (bound(qemu, E1000), override(qemu, E1000)) == ("vfio-pci", "(null)")
    assert not (qemu.path / "sys/class/net/eth1").exists()
    r = in_run(qemu.path, devbind, "--force", "-b", "e1000", E1000)
    assert r.returncode == 0, r.stderr
    assert bound(qemu, E1000) == "e1000" and (qemu.path / "sys/class/net/eth1").exists()


def test_dpdk_devbind_refuses_what_the_kernel_lacks(qemu):
    devbind = client("dpdk-devbind.py")
    r = in_run(qemu.path, devbind, "-b", "igb_uio", VIRTIO)         # no /sys/module/igb_uio
    assert r.returncode == 1 and "Driver 'igb_uio' is not loaded" in r.stderr
    r = in_run(qemu.path, devbind, "-b", "vfio-pci", NVME)          # not a class dpdk-devbind handles
    assert r.returncode == 1 and "Unknown device: 0000:06:00.0" in r.stderr
    assert bound(qemu, VIRTIO) == "virtio-pci" and bound(qemu, NVME) == "nvme"


def test_dpdk_devbind_offers_the_kernel_module_and_lspci_is_quiet(qemu):
    devbind = client("dpdk-devbind.py")
    r = in_run(qemu.path, devbind, "--force", "-b", "vfio-pci", VIRTIO)
    assert r.returncode == 0
    r = in_run(qemu.path, devbind, "--status-dev", "net")
    assert r.stderr == ""
    assert status_lines(r.stdout)[VIRTIO].endswith("drv=vfio-pci unused=virtio_pci")


# --- udevadm info -----------------------------------------------------------------------------------
def uevent(mnt, name: str) -> list[str]:
    return (dev(mnt, name) / "uevent").read_text().splitlines()


def test_udevadm_info_prints_the_devices_uevent(qemu_mnt):
    r = in_run(qemu_mnt.path, client("udevadm"), "info", f"/sys/bus/pci/devices/{E1000E}")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    devpath = "/devices/pci0000:00/0000:00:03.0/0000:02:00.0"
    for want in (f"P: {devpath}", f"M: {E1000E}", "U: pci", "V: e1000e",
                 f"E: DEVPATH={devpath}", "E: SUBSYSTEM=pci"):
        assert want in lines, want
    assert all(f"E: {u}" in lines for u in uevent(qemu_mnt, E1000E))


def test_udevadm_info_query_property_is_uevent_devpath_and_subsystem(qemu_mnt):
    r = in_run(qemu_mnt.path, client("udevadm"), "info", "-q", "property", f"/sys/bus/pci/devices/{NVME}")
    assert r.returncode == 0, r.stderr
    devpath = "/devices/pci0000:00/0000:00:04.0/0000:03:00.0/0000:04:01.0/0000:06:00.0"
    assert sorted(r.stdout.splitlines()) == sorted(
        [f"DEVPATH={devpath}", "SUBSYSTEM=pci", *uevent(qemu_mnt, NVME)])


def test_udevadm_info_attribute_walk_reaches_the_root_bus(qemu_mnt):
    r = in_run(qemu_mnt.path, client("udevadm"), "info", "-a", f"/sys/bus/pci/devices/{VIRTIO}")
    assert r.returncode == 0, r.stderr
    walked = [line.split("'")[1] for line in r.stdout.splitlines() if "looking at" in line]
    assert walked == ["/devices/pci0000:00/0000:00:04.0/0000:03:00.0/0000:04:00.0/0000:05:00.0",
                      "/devices/pci0000:00/0000:00:04.0/0000:03:00.0/0000:04:00.0",
                      "/devices/pci0000:00/0000:00:04.0/0000:03:00.0",
                      "/devices/pci0000:00/0000:00:04.0", "/devices/pci0000:00"]
    text = r.stdout.splitlines()
    for want in ('    KERNEL=="0000:05:00.0"', '    DRIVER=="virtio-pci"', '    ATTR{vendor}=="0x1af4"',
                 '    ATTR{driver_override}=="(null)"', '    DRIVERS=="pcieport"', '    KERNELS=="pci0000:00"'):
        assert want in text, want


def test_udevadm_info_of_a_netdev_and_a_missing_device(qemu_mnt):
    r = in_run(qemu_mnt.path, client("udevadm"), "info", "/sys/class/net/eth0")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "P: /devices/pci0000:00/0000:00:03.0/0000:02:00.0/net/eth0" in lines and "U: net" in lines
    assert "E: INTERFACE=eth0" in lines
    r = in_run(qemu_mnt.path, client("udevadm"), "info", "/sys/bus/pci/devices/0000:09:00.0")
    assert r.returncode != 0 and "No such device" in r.stderr


def test_dpdk_devbind_vfio_pci_without_an_iommu_fails_as_the_reference(mount_preset, tmp_path):
    """No IOMMU, no group: vfio_pci_probe fails with -EINVAL (capture-stock-no-iommu.txt);
    dpdk-devbind reports the bind error and the device is left without a driver."""
    src = (REPO / "vfakefs/presets/seed-vtd.toml").read_text()
    topo = tmp_path / "no-iommu.toml"
    topo.write_text(re.sub(r'(?m)^cmdline = ".*"$', 'cmdline = "quiet intel_iommu=off"', src))
    m = mount_preset(str(topo))
    assert os.listdir(m.path / "sys/kernel/iommu_groups") == []
    igb = "0000:02:00.0"
    r = in_run(m.path, client("dpdk-devbind.py"), "--force", "-b", "vfio-pci", igb)
    assert r.returncode == 1
    assert f"Error: bind failed for {igb} - Cannot bind to driver vfio-pci: [Errno 22] Invalid argument" in r.stderr
    assert bound(m, igb) is None and override(m, igb) == "vfio-pci"
    assert f"vfio-pci {igb}: probe with driver vfio-pci failed with error -22" in m.read(m.path / "sys/kernel/debug/vfakefs/dmesg")


def test_dpdk_devbind_takes_a_vf_made_through_sriov_numvfs(mount_preset):
    """seed-vtd's X540: two VFs made through sysfs are network devices dpdk-devbind lists with
    their ixgbevf interfaces, and one of them goes to vfio-pci with a /dev/vfio node."""
    m = mount_preset("seed-vtd")
    devbind = client("dpdk-devbind.py")
    r = in_run(m.path, "bash", "-c", "echo 2 > /sys/class/net/eth0/device/sriov_numvfs")
    assert r.returncode == 0, r.stderr
    lines = status_lines(in_run(m.path, devbind, "--status-dev", "net").stdout)
    vfs = ["0000:03:10.0", "0000:03:10.2"]                 # offset 128, stride 2
    for vf in vfs:
        ifname = os.listdir(dev(m, vf) / "net")[0]
        assert lines[vf].startswith(f"{vf} 'X540 Ethernet Controller Virtual Function 1515' "
                                    f"if={ifname} drv=ixgbevf unused="), lines[vf]
    r = in_run(m.path, devbind, "--force", "-b", "vfio-pci", vfs[0])
    assert r.returncode == 0, r.stderr
    assert (bound(m, vfs[0]), override(m, vfs[0]), bound(m, vfs[1])) == ("vfio-pci", "(null)", "ixgbevf")
    group = os.path.basename(os.readlink(dev(m, vfs[0]) / "iommu_group"))
    assert group in in_run(m.path, "ls", "/dev/vfio").stdout.split()
