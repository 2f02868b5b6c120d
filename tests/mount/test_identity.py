"""What a function's own hardware reports, through a real mount: a NIC's permanent address
(the same across unbind/bind and remove/rescan) and an NVMe controller's Identify strings
(from the topology, or defaults that fit the device)."""
from __future__ import annotations

from tests.conftest import sh

E1000E = "0000:02:00.0"


def test_e1000e_keeps_its_mac_across_rebinds(mount_preset):
    m = mount_preset("qemu-ref")
    drv = "sys/bus/pci/drivers/e1000e"
    script = f"""
        cat sys/class/net/eth0/address
        for i in 1 2 3; do
            echo {E1000E} > {drv}/unbind && echo {E1000E} > {drv}/bind || exit 1
            cat sys/bus/pci/devices/{E1000E}/net/*/address
        done
        echo 1 > sys/bus/pci/devices/{E1000E}/remove && echo 1 > sys/bus/pci/rescan || exit 1
        cat sys/bus/pci/devices/{E1000E}/net/*/address
    """
    r = sh(script, cwd=m.path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["52:54:00:12:34:56"] * 5


def test_nvme_identify_strings_come_from_the_topology(seed_mnt):
    def ctrl(bdf: str) -> list[str]:
        r = sh(f"cd sys/bus/pci/devices/{bdf}/nvme/nvme* && cat model serial firmware_rev subsysnqn",
               cwd=seed_mnt.path)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    samsung = ctrl("0000:06:00.0")
    assert samsung == ["Samsung SSD 970 EVO Plus 1TB".ljust(40), "S4EWNX0R404182M".ljust(20), "2B2QEXM7",
                       # no SUBNQN declared: the kernel's own (nvme_init_subnqn), from ids, serial, model
                       "nqn.2014.08.org.nvmexpress:144d144d" + "S4EWNX0R404182M".ljust(20)
                       + "Samsung SSD 970 EVO Plus 1TB".ljust(40)]
    wd = ctrl("0000:0a:00.0")
    assert wd == ["WDC WDS500G3X0C-00SJG0".ljust(40), "19480D802371".ljust(20), "111110WD",
                  "nqn.2018-01.com.wdc:nguid:E8238FA6BF53-0001-001B448B4A3C8E2F"]
    assert not any("QEMU" in line for line in samsung + wd)


def test_qemu_nvme_identify(qemu_mnt):
    r = sh("for d in 0000:01:00.0 0000:06:00.0; do cd sys/bus/pci/devices/$d/nvme/nvme* && "
           "cat model serial subsysnqn; cd - >/dev/null; done", cwd=qemu_mnt.path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "QEMU NVMe Ctrl".ljust(40), "SRIOVPF01".ljust(20), "nqn.2019-08.org.qemu:refsubsys0",
        "QEMU NVMe Ctrl".ljust(40), "PLAIN0002".ljust(20), "nqn.2019-08.org.qemu:PLAIN0002"]
