"""Loading and unloading modules (model/base/module.py): the kernel's errnos, its log
lines, drivers registered and unregistered with their modules, and nothing changed by
a refused operation."""
from __future__ import annotations

import errno

import pytest

from tests.model.test_modules_catalogue import reference_proc_modules
from tests.model.vfio_machine import AUDIO, GPU, group42_machine
from vfakefs.model import topology
from vfakefs.model.base import binding
from vfakefs.model.errors import SysfsError
from vfakefs.model.vfio import type1
from vfakefs.model.vfio.container import VfioContainer
from vfakefs.model.vfio.group import VfioGroup

E1000E_DEV = "0000:02:00.0"      # qemu-ref's 82574L


def state(m) -> tuple:
    """Everything a module operation may change."""
    mods = tuple((x.name, x.refs, x.state, x.address, tuple(m.modules.holders(x.name))) for x in m.modules.newest_first())
    binds = tuple((f.name, f.driver.name if f.driver else None) for f in m.functions)
    return mods, tuple(m.drivers), binds, tuple(sorted(m.module_params.items())), tuple(
        (d.name, tuple(d.dynids)) for d in m.drivers.values())


def errno_of(fn, *args) -> int:
    with pytest.raises(SysfsError) as e:
        fn(*args)
    return e.value.errno


def new_lines(m, before: int) -> list[str]:
    return [r.text for r in m.kmsg.records[before:]]


def test_qemu_ref_boots_the_reference_modules():
    m = topology.load("qemu-ref")
    rows = reference_proc_modules()
    got = [(x.name, str(x.info.coresize), str(m.modules.refcnt(x.name)),
            "".join(h + "," for h in m.modules.holders(x.name)) or "-", x.state, f"0x{x.address:016x}")
           for x in m.modules.newest_first()]
    assert got == [tuple(r) for r in rows]
    m.check()


def test_pci_stub_ids_bind_what_they_name():
    m = topology.load("qemu-ref")
    dev = m.lookup(E1000E_DEV)
    binding.unbind(m, m.drivers["e1000e"], E1000E_DEV)
    assert "pci-stub" not in m.drivers and "pci_stub" not in m.modules
    before = len(m.kmsg.records)
    m.modules.load("pci_stub", "ids=8086:10d3,junk,,1af4:1041:1af4:1100")
    assert dev.driver is m.drivers["pci-stub"]
    assert new_lines(m, before) == [
        "pci-stub: add 8086:10D3 sub=FFFFFFFF:FFFFFFFF cls=00000000/00000000",
        "pci-stub 0000:02:00.0: claimed by stub",
        'pci-stub: invalid id string "junk"',
        "pci-stub: add 1AF4:1041 sub=1AF4:1100 cls=00000000/00000000",
    ]
    # the virtio NIC was bound already: driver_attach leaves it with virtio-pci
    assert m.lookup("0000:05:00.0").driver.name == "virtio-pci"
    assert m.modules.refcnt("pci_stub") == 0 and m.modules.loaded["pci_stub"].state == "Live"
    m.check()
    # loaded again: EEXIST, nothing changes
    snap = state(m)
    assert errno_of(m.modules.load, "pci_stub", "ids=1af4:1041") == errno.EEXIST
    assert state(m) == snap
    # unloading unbinds and removes the driver
    m.modules.unload("pci_stub")
    assert dev.driver is None and "pci-stub" not in m.drivers and "pci_stub" not in m.modules
    m.check()


def test_missing_dependency_is_unknown_symbol_enoent():
    m = topology.load("qemu-ref")
    m.modules.unload("nvme")
    assert all(f.driver is None for f in m.functions if f.class_code == 0x010802)
    m.modules.unload("nvme_core")
    snap = state(m)
    before = len(m.kmsg.records)
    assert errno_of(m.modules.load, "nvme") == errno.ENOENT
    assert new_lines(m, before) == ["nvme: Unknown symbol nvme_init_ctrl (err -2)"]
    assert state(m) == snap
    m.modules.load("nvme_core")
    m.modules.load("nvme")
    assert [f.driver.name for f in m.functions if f.class_code == 0x010802 and not f.is_virtfn] == ["nvme", "nvme"]
    assert m.modules.holders("nvme_core") == ["nvme"]
    m.check()


def test_unload_refusals_change_nothing():
    m = topology.load("qemu-ref")
    snap = state(m)
    assert errno_of(m.modules.unload, "nvme_core") == errno.EWOULDBLOCK     # nvme depends on it
    assert errno_of(m.modules.unload, "vfio") == errno.EWOULDBLOCK          # vfio_pci, vfio_pci_core, type1
    assert errno_of(m.modules.unload, "crct10dif_pclmul") == errno.EWOULDBLOCK   # crc_t10dif's crypto tfm
    assert errno_of(m.modules.unload, "pcieport") == errno.ENOENT           # built in: never in the list
    assert errno_of(m.modules.unload, "no_such_module") == errno.ENOENT
    assert errno_of(m.modules.load, "pcieport") == errno.ENOEXEC
    assert state(m) == snap
    m.check()


def test_vfio_device_fd_holds_vfio_pci():
    m = group42_machine()
    assert m.modules.refcnt("vfio") == 3                    # vfio_pci, vfio_pci_core, type1
    c = VfioContainer(m)
    g = VfioGroup.open(m, 42)
    assert m.modules.refcnt("vfio") == 4                    # the group file's fops
    g.set_container(c)
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    assert m.modules.refcnt("vfio_iommu_type1") == 1        # the container's backend
    vd = g.get_device_fd(GPU)
    assert m.modules.refcnt("vfio_pci") == 1 and m.modules.refcnt("vfio") == 5
    snap = state(m)
    assert errno_of(m.modules.unload, "vfio_pci") == errno.EWOULDBLOCK
    assert state(m) == snap
    vd.close()
    assert m.modules.refcnt("vfio_pci") == 0
    g.close()
    assert m.modules.refcnt("vfio_iommu_type1") == 0 and m.modules.refcnt("vfio") == 3
    m.modules.unload("vfio_pci")
    assert "vfio-pci" not in m.drivers
    assert m.lookup(GPU).driver is None and m.lookup(AUDIO).driver is None
    assert m.vfio_groups() == {}
    m.check()


def test_parameters_at_load():
    m = topology.load("qemu-ref")
    binding.unbind(m, m.drivers["e1000e"], E1000E_DEV)
    m.modules.unload("vfio_pci")
    snap = state(m)
    before = len(m.kmsg.records)
    assert errno_of(m.modules.load, "vfio_pci", "enable_sriov=maybe") == errno.EINVAL
    assert new_lines(m, before) == ["vfio_pci: `maybe' invalid for parameter `enable_sriov'"]
    assert errno_of(m.modules.load, "pci_stub", "ids=" + "1" * 1024) == errno.ENOSPC
    assert state(m) == snap
    before = len(m.kmsg.records)
    m.modules.load("vfio_pci", "enable_sriov disable-idle-d3=1 bogus=3 ids=8086:10d3")
    assert m.vfio_enable_sriov and m.modules.param("vfio_pci", "disable_idle_d3") is True
    assert m.lookup(E1000E_DEV).driver.name == "vfio-pci"
    assert new_lines(m, before) == ["vfio_pci: unknown parameter 'bogus' ignored",
                                    "vfio_pci: add [8086:10d3[ffffffff:ffffffff]] class 0x000000/00000000"]
    m.modules.unload("vfio_pci")
    assert not m.vfio_enable_sriov and m.lookup(E1000E_DEV).driver is None
    m.check()


def test_e1000_probe_fails_on_82574l():
    """e1000_init_hw_struct(): e1000_set_mac_type() has no MAC type for 8086:10d3."""
    m = topology.load("qemu-ref")
    dev = m.lookup(E1000E_DEV)
    binding.unbind(m, m.drivers["e1000e"], E1000E_DEV)
    dev.driver_override = "e1000"
    before = len(m.kmsg.records)
    assert errno_of(binding.bind, m, m.drivers["e1000"], E1000E_DEV) == errno.EIO
    assert new_lines(m, before) == [
        "e1000 0000:02:00.0 (unnamed net_device) (uninitialized): Unknown MAC Type",
        "e1000: probe of 0000:02:00.0 failed with error -5",
    ]
    assert dev.driver is None and dev.netdevs == [] and not dev.config.r16(0x04) & 0x4
    assert dev not in m.drivers["e1000"].devices
    # drivers_probe (device_attach) gives up silently and leaves it unbound too
    binding.drivers_probe(m, E1000E_DEV)
    assert dev.driver is None
    m.check()


def test_e1000e_comes_and_goes_with_its_module():
    m = topology.load("qemu-ref")
    dev = m.lookup(E1000E_DEV)
    m.modules.unload("e1000e")
    assert "e1000e" not in m.drivers and dev.driver is None and dev.netdevs == []
    before = len(m.kmsg.records)
    m.modules.load("e1000e")
    lines = new_lines(m, before)
    assert lines[:2] == ["e1000e: Intel(R) PRO/1000 Network Driver",
                         "e1000e: Copyright(c) 1999 - 2015 Intel Corporation."]
    assert dev.driver is m.drivers["e1000e"] and [nd.mac for nd in dev.netdevs] == ["52:54:00:12:34:56"]
    assert list(m.drivers)[-1] == "e1000e"                 # registered last: bus order
    assert m.modules.newest_first()[0].name == "e1000e"
    m.check()


def test_a_driver_in_use_is_loaded_even_when_not_a_boot_driver():
    """lpc_ich is not loaded by default; a topology that binds a function to it loads its module."""
    m = topology.load("seed-vtd")
    assert "lpc_ich" not in m.drivers and "lpc_ich" not in m.modules
    m = topology.from_text(
        '[[device]]\nbdf = "0000:00:00.0"\nkind = "host_bridge"\nvendor = 0x8086\ndevice = 0x29c0\nclass = 0x060000\n'
        '[[device]]\nbdf = "0000:00:1f.0"\nkind = "endpoint"\nvendor = 0x8086\ndevice = 0x2918\nclass = 0x060100\n'
        'driver = "lpc_ich"\n', "t.toml")
    assert m.lookup("0000:00:1f.0").driver is m.drivers["lpc_ich"]
    assert "lpc_ich" in m.modules and "pci_stub" in m.modules      # and the boot set beside it
    m.check()


def test_command_line_module_parameters():
    """`module.param=value` on the command line: built-in modules take it at boot, modules
    loaded at boot take it from modprobe; values their type refuses are left out."""
    text = ('[[device]]\nbdf = "0000:00:00.0"\nkind = "host_bridge"\nvendor = 0x8086\ndevice = 0x29c0\n'
            'class = 0x060000\n')
    m = topology.from_text('cmdline = "intel_iommu=on pciehp.pciehp_poll_mode=1 vfio-pci.enable_sriov '
                           'vfio_iommu_type1.dma_entry_limit=x nvme_core.io_timeout=90 lpc_ich.x=1"\n' + text, "t.toml")
    assert m.modules.param("pciehp", "pciehp_poll_mode") is True
    assert m.vfio_enable_sriov
    assert m.modules.param("vfio_iommu_type1", "dma_entry_limit") == 65535
    assert m.modules.param("nvme_core", "io_timeout") == 90
    assert ("lpc_ich", "x") not in m.module_params
    assert topology.load("qemu-ref").module_params == {}


def test_module_load_and_unload_announce_as_the_kernel_does():
    """load_module: `add /module/e1000e` (mod_sysfs_setup) before init; the init's
    pci_register_driver binds (the device's bind, its netdev's add) and then announces
    the driver (bus_add_driver); unloading announces the unbinds, the driver's remove and
    the module's remove last (free_module)."""
    m = topology.load("qemu-ref")
    m.modules.unload("e1000e")
    seq = m.uevents.seqnum
    m.modules.load("e1000e")
    loaded = [(e.action, e.devpath.rsplit("/", 1)[-1], e.subsystem) for e in m.uevents.events if e.seqnum > seq]
    assert loaded == [("add", "e1000e", "module"), ("add", "eth0", "net"), ("bind", E1000E_DEV, "pci"),
                      ("add", "e1000e", "drivers")]
    seq = m.uevents.seqnum
    m.modules.unload("e1000e")
    gone = [(e.action, e.devpath.rsplit("/", 1)[-1], e.subsystem) for e in m.uevents.events if e.seqnum > seq]
    assert gone == [("remove", "eth0", "net"), ("unbind", E1000E_DEV, "pci"), ("remove", "e1000e", "drivers"),
                    ("remove", "e1000e", "module")]
    refused = m.uevents.seqnum
    with pytest.raises(SysfsError):
        m.modules.unload("e1000e")
    assert m.uevents.seqnum == refused            # a refused call announces nothing
