"""Test a small SR-IOV setup script against a simulated machine (vfakefs's pytest plugin)."""
import errno
import sys

import pytest

# the script under test: enable N VFs on an interface, print their PCI addresses
SETUP_VFS = r'''
import os, sys
iface, n = sys.argv[1], sys.argv[2]
dev = f"/sys/class/net/{iface}/device"
with open(f"{dev}/sriov_numvfs", "w") as f:
    f.write(n)
for i in range(int(n)):
    print(os.path.basename(os.readlink(f"{dev}/virtfn{i}")))
'''


@pytest.fixture
def setup_vfs(tmp_path):
    script = tmp_path / "setup_vfs.py"
    script.write_text(SETUP_VFS)
    return script


def test_enable_four_vfs(vfakefs, setup_vfs):
    assert vfakefs.read("/sys/class/net/eth0/device/sriov_totalvfs") == "63\n"
    r = vfakefs.run([sys.executable, setup_vfs, "eth0", "4"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0000:03:10.0", "0000:03:10.2", "0000:03:10.4", "0000:03:10.6"]
    # lspci and bash see the same machine
    lspci = vfakefs.run("lspci -s 03:10 -nn")
    assert lspci.stdout.count("X540 Ethernet Controller Virtual Function [8086:1515]") == 4
    groups = vfakefs.run("basename -a $(readlink /sys/bus/pci/devices/0000:03:10.*/iommu_group)")
    assert len(set(groups.stdout.split())) == 4        # one IOMMU group per VF
    # and the kernel said so
    log = vfakefs.dmesg_since_start()
    assert "pci 0000:03:10.6: Adding to iommu group 20" in log


def test_the_machine_is_fresh_again(vfakefs, setup_vfs):
    assert vfakefs.read("/sys/class/net/eth0/device/sriov_numvfs") == "0\n"
    vfakefs.write("/sys/class/net/eth0/device/sriov_numvfs", "2")
    # changing the count without going through 0 is refused, as by the kernel
    r = vfakefs.run([sys.executable, setup_vfs, "eth0", "3"])
    assert r.returncode == 1 and "Device or resource busy" in r.stderr
    with pytest.raises(OSError) as e:
        vfakefs.write("/sys/class/net/eth0/device/sriov_numvfs", "64")   # above sriov_totalvfs
    assert e.value.errno == errno.ERANGE
    assert vfakefs.read("/sys/class/net/eth0/device/sriov_numvfs") == "2\n"


@pytest.mark.vfakefs_topology("qemu-ref")
def test_on_another_machine(vfakefs):
    r = vfakefs.run("lspci -d 1b36:000c | wc -l")     # QEMU's PCIe root ports
    assert r.stdout.strip() == "3"
