"""/sys/bus/pci/slots/<n>/power and attention on qemu-ref (acpiphp slots), through
bash: power_write_file takes simple_strtoul's low byte (0 powers the slot off and
its device goes, 1 brings it back, anything else EINVAL); acpiphp has no attention
callback (ENODEV). A refused write changes nothing."""
from __future__ import annotations

from tests.conftest import run, sh

NVME = "0000:01:00.0"     # in slot 0 (root port 00:02.0)


def _state(mnt) -> tuple:
    slot = mnt.pci / "slots/0"
    return (mnt.read(slot / "power"), sorted(p.name for p in (mnt.pci / "devices").iterdir()))


def test_power_off_removes_the_slots_device_and_on_brings_it_back(mount_preset):
    mnt = mount_preset("qemu-ref")
    slot = mnt.pci / "slots/0"
    assert mnt.read(slot / "power") == "1\n"
    # `garbage` parses as 0 (simple_strtoul): the kernel powers the slot off
    assert sh(f"echo garbage > {slot}/power").returncode == 0
    assert mnt.read(slot / "power") == "0\n"
    assert not (mnt.pci / "devices" / NVME).exists()
    assert sh(f"echo 1 > {slot}/power").returncode == 0
    assert mnt.read(slot / "power") == "1\n"
    assert run(["readlink", str(mnt.pci / "devices" / NVME / "driver")]).stdout.endswith("/nvme\n")


def test_power_other_values_are_einval_and_logged(mount_preset):
    mnt = mount_preset("qemu-ref")
    before = _state(mnt)
    r = sh(f"echo 2 > {mnt.pci}/slots/0/power")
    assert r.returncode != 0 and "Invalid argument" in r.stderr
    assert _state(mnt) == before
    log = mnt.read(mnt.sys / "kernel/debug/vfakefs/dmesg")
    assert log.rstrip().endswith("pci_hotplug: Illegal value specified for power")
    # only the low byte counts: 256 is 0 (off), 257 is 1
    assert sh(f"echo 256 > {mnt.pci}/slots/0/power").returncode == 0
    assert mnt.read(mnt.pci / "slots/0/power") == "0\n"
    assert sh(f"echo 257 > {mnt.pci}/slots/0/power").returncode == 0
    assert _state(mnt) == before


def test_attention_is_enodev_without_an_attention_callback(mount_preset):
    mnt = mount_preset("qemu-ref")
    before = _state(mnt)
    r = sh(f"echo 1 > {mnt.pci}/slots/0/attention")
    assert r.returncode != 0 and "No such device" in r.stderr
    assert _state(mnt) == before
