"""/sys/module and /proc/modules drawn from the module list (sysfs/module.py), without a
mount: what each directory holds, modes, links, parameter stores, and the view following
loads and unloads."""
from __future__ import annotations

import errno

import pytest

from tests.view.test_view import show, store, walk
from vfakefs.model.errors import SysfsError
from vfakefs.sysfs.nodes import Dir, Link


def names(view, path) -> list[str]:
    return sorted(walk(view, path).entries())


def test_loaded_module_directory(qemu):
    assert names(qemu, "sys/module/vfio") == ["coresize", "holders", "initsize", "initstate", "notes", "parameters",
                                             "refcnt", "sections", "srcversion", "taint", "uevent", "version"]
    assert names(qemu, "sys/module/e1000e") == ["coresize", "drivers", "holders", "initsize", "initstate", "notes",
                                               "parameters", "refcnt", "sections", "srcversion", "taint", "uevent"]
    assert (show(qemu, "sys/module/vfio/initstate"), show(qemu, "sys/module/vfio/refcnt"),
            show(qemu, "sys/module/vfio/initsize"), show(qemu, "sys/module/vfio/taint")) == ("live\n", "3\n", "0\n", "\n")
    modes = {n: walk(qemu, f"sys/module/vfio/{n}").mode for n in ("coresize", "initstate", "refcnt", "uevent")}
    assert modes == {"coresize": 0o444, "initstate": 0o444, "refcnt": 0o444, "uevent": 0o200}
    assert walk(qemu, "sys/module/vfio/holders").entries()["vfio_pci"] == Link("../../vfio_pci")
    assert walk(qemu, "sys/module/e1000e/drivers").entries() == {"pci:e1000e": Link("../../../bus/pci/drivers/e1000e")}
    text = walk(qemu, "sys/module/e1000e/sections").entries()[".text"]
    assert text.mode == 0o400
    assert text.decl.read(text.obj, 0, 64, True) == b"0xffffffffc03aa000\n"
    assert text.decl.read(text.obj, 0, 64, False) == b"0x0000000000000000\n"
    # parameters with a sysfs mode only; mode-0 ones (ids, the E1000_PARAM arrays) have no file
    assert names(qemu, "sys/module/vfio_pci/parameters") == ["disable_denylist", "disable_idle_d3", "disable_vga",
                                                             "enable_sriov", "nointxmask"]
    assert names(qemu, "sys/module/e1000e/parameters") == ["copybreak"]
    assert names(qemu, "sys/module/virtio_ring/holders") == ["virtio", "virtio_net", "virtio_pci"]


def test_builtin_modules_and_driver_links(qemu):
    assert names(qemu, "sys/module/acpiphp") == ["parameters", "uevent"]
    assert names(qemu, "sys/module/shpchp") == ["drivers", "parameters", "uevent"]
    assert "pcieport" not in names(qemu, "sys/module") and "8250_pci" not in names(qemu, "sys/module")
    drivers = walk(qemu, "sys/bus/pci/drivers").entries()
    assert "module" not in drivers["pcieport"].entries() and "module" not in drivers["serial"].entries()
    assert drivers["shpchp"].entries()["module"] == Link("../../../../module/shpchp")
    assert drivers["nvme"].entries()["module"] == Link("../../../../module/nvme")


def test_parameter_stores_parse_as_the_set_op(qemu):
    p = "sys/module/nvme_core/parameters"
    assert show(qemu, f"{p}/shutdown_timeout") == "5\n"
    with pytest.raises(SysfsError) as e:
        store(qemu, f"{p}/shutdown_timeout", "256\n")                       # byte: kstrtou8
    assert e.value.errno == errno.ERANGE
    assert show(qemu, f"{p}/shutdown_timeout") == "5\n"
    store(qemu, f"{p}/shutdown_timeout", "0x10\n")
    assert show(qemu, f"{p}/shutdown_timeout") == "16\n"
    for bad in ("1\n", "4096\n", "x\n"):                                 # io_queue_depth_set: 2..4095
        with pytest.raises(SysfsError) as e:
            store(qemu, "sys/module/nvme/parameters/io_queue_depth", bad)
        assert e.value.errno == errno.EINVAL
    store(qemu, "sys/module/nvme/parameters/io_queue_depth", "64\n")
    assert show(qemu, "sys/module/nvme/parameters/io_queue_depth") == "64\n"
    with pytest.raises(SysfsError):
        store(qemu, "sys/module/nvme_core/parameters/iopolicy", "fastest\n")
    store(qemu, "sys/module/nvme_core/parameters/iopolicy", "round-robin\n")
    assert show(qemu, "sys/module/nvme_core/parameters/iopolicy") == "round-robin\n"
    store(qemu, "sys/module/vfio_pci/parameters/enable_sriov", "1\n")
    assert qemu.m.vfio_enable_sriov


def test_view_follows_loads_and_unloads(qemu):
    m = qemu.m
    m.modules.unload("e1000e")
    assert "e1000e" not in names(qemu, "sys/module") and "e1000e" not in names(qemu, "sys/bus/pci/drivers")
    assert "driver" not in walk(qemu, "sys/devices/pci0000:00/0000:00:03.0/0000:02:00.0").entries()
    m.modules.load("pci_stub", "ids=8086:10d3")
    assert isinstance(walk(qemu, "sys/module/pci_stub"), Dir)
    assert "parameters" not in names(qemu, "sys/module/pci_stub")          # ids is mode 0
    assert walk(qemu, "sys/bus/pci/drivers/pci-stub").entries()["module"] == Link("../../../../module/pci_stub")
    lines = m.modules.proc_text(True).splitlines()
    assert lines[0].startswith("pci_stub 16384 0 - Live 0xffffffffc") and not lines[0].startswith("pci_stub 16384 0 - Live 0x0000")
    assert m.modules.proc_text(False).splitlines()[0] == "pci_stub 16384 0 - Live 0x0000000000000000"
