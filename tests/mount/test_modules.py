"""/sys/module: every `module` link of the tree resolves (a slot's hotplug driver, a
PCI driver), and the module parameters answer as module_param() files do."""
from __future__ import annotations

import pytest

from tests.conftest import run, sh


@pytest.fixture(params=["seed-vtd", "qemu-ref"])
def any_mnt(request):
    return request.getfixturevalue({"seed-vtd": "seed_mnt", "qemu-ref": "qemu_mnt"}[request.param])


def test_qemu_ref_slots_name_acpiphp(qemu_mnt):
    r = sh(f"cd {qemu_mnt.pci}/slots && for s in *; do readlink -e $s/module; done | sort -u")
    assert r.stdout == f"{qemu_mnt.sys}/module/acpiphp\n", r


def test_every_module_link_resolves(any_mnt):
    r = sh(f"cd {any_mnt.sys} && find . -name module -type l | sort")
    links = r.stdout.split()
    assert any(p.startswith("./bus/pci/drivers/") for p in links), links
    for link in links:
        assert run(["readlink", "-e", str(any_mnt.sys / link)]).returncode == 0, f"{link} dangles"


def test_slot_hotplug_module_parameters(seed_mnt, qemu_mnt):
    # acpiphp (qemu-ref's slots): module_param_named(disable, ..., bool, 0444)
    p = qemu_mnt.sys / "module/acpiphp/parameters/disable"
    assert run(["stat", "-c", "%a", p]).stdout == "444\n"
    assert qemu_mnt.read(p) == "N\n"
    # pciehp (seed-vtd's): pciehp_poll_mode (bool) and pciehp_poll_time (int), 0644
    params = seed_mnt.sys / "module/pciehp/parameters"
    assert seed_mnt.read(params / "pciehp_poll_mode") == "N\n"
    assert seed_mnt.read(params / "pciehp_poll_time") == "0\n"


@pytest.mark.parametrize("name, bad, good, shown", [
    ("pciehp_poll_mode", "maybe", "y", "Y\n"),
    ("pciehp_poll_time", "2x", "5", "5\n"),
])
def test_pciehp_parameter_stores(mount_preset, name, bad, good, shown):
    mnt = mount_preset("seed-vtd")
    f = mnt.sys / "module/pciehp/parameters" / name
    before = mnt.read(f)
    r = sh(f"echo {bad} > {f}")
    assert r.returncode != 0 and "Invalid argument" in r.stderr
    assert mnt.read(f) == before
    assert sh(f"echo {good} > {f}").returncode == 0
    assert mnt.read(f) == shown


# vfio_iommu_type1 (loaded beside vfio, by vfio's softdep, in every reference capture):
# allow_unsafe_interrupts and disable_hugepages are bool S_IRUGO|S_IWUSR, dma_entry_limit
# is uint 0644 = U16_MAX (drivers/vfio/vfio_iommu_type1.c)
TYPE1 = "module/vfio_iommu_type1/parameters"


def test_type1_parameters(any_mnt):
    params = any_mnt.sys / TYPE1
    assert sorted(p.name for p in params.iterdir()) == ["allow_unsafe_interrupts", "disable_hugepages",
                                                         "dma_entry_limit"]
    r = run(["stat", "-c", "%n %a %s", *sorted(str(p) for p in params.iterdir())])
    assert [line.split()[1:] for line in r.stdout.splitlines()] == [["644", "4096"]] * 3
    assert any_mnt.read(params / "allow_unsafe_interrupts") == "N\n"
    assert any_mnt.read(params / "disable_hugepages") == "N\n"
    assert any_mnt.read(params / "dma_entry_limit") == "65535\n"


@pytest.mark.parametrize("name, bad, why, good, shown", [
    ("allow_unsafe_interrupts", "maybe", "Invalid argument", "1", "Y\n"),      # kstrtobool
    ("allow_unsafe_interrupts", "", "Invalid argument", "on", "Y\n"),
    ("disable_hugepages", "2", "Invalid argument", "y", "Y\n"),
    ("dma_entry_limit", "-1", "Invalid argument", "0x10", "16\n"),             # kstrtouint, base 0
    ("dma_entry_limit", "4294967296", "Numerical result out of range", "4294967295", "4294967295\n"),
    ("dma_entry_limit", "12abc", "Invalid argument", "+7", "7\n"),
    ("dma_entry_limit", "0x", "Invalid argument", "010", "8\n"),
])
def test_type1_parameter_stores(mount_preset, name, bad, why, good, shown):
    mnt = mount_preset("seed-vtd")
    f = mnt.sys / TYPE1 / name
    before = mnt.read(f)
    r = sh(f"echo '{bad}' > {f}")
    assert r.returncode != 0 and why in r.stderr, r
    assert mnt.read(f) == before
    assert sh(f"echo {good} > {f}").returncode == 0
    assert mnt.read(f) == shown
    assert sh(f"echo {bad or 'x'} > {f}").returncode != 0 and mnt.read(f) == shown     # kept
