"""The module catalogue (model/base/modules.py): consistent with itself, with the driver
catalogue, and with the reference capture's /proc/modules."""
from __future__ import annotations

import re
from pathlib import Path

from vfakefs.model.base import modules as M
from vfakefs.model.base.drivers import catalogue

REF = Path(__file__).parents[1] / "reference/kernel-6.1/capture-stock-intel_iommu_on.txt"


def reference_proc_modules() -> list[list[str]]:
    text = REF.read_text()
    block = text.split("$ cat /proc/modules\n", 1)[1].split("[rc=", 1)[0]
    return [line.split() for line in block.splitlines()]


def test_every_dependency_and_driver_is_known():
    mods, drivers = M.modules(), catalogue()
    for mod in mods.values():
        for dep in mod.depends + mod.crypto_users:
            assert dep in mods, (mod.name, dep)
        assert mod.builtin == (mod.path is None), mod.name
        if mod.path:
            assert re.fullmatch(r"kernel/[\w/.-]+\.ko", mod.path), mod.path
        for p in mod.params:
            assert (p.default is None) == (p.mode == 0), (mod.name, p.name)
    for drv in drivers.values():
        owner = M.of_driver(drv.name)
        assert owner is not None, drv.name
        assert owner.name == drv.module_name, (drv.name, owner.name, drv.module_name)


def test_reference_modules_sizes_and_holders():
    """Every module of the reference's /proc/modules is catalogued with its size, and its
    holders (the 4th column) are exactly the loaded modules that depend on it."""
    rows = reference_proc_modules()
    loaded = {r[0] for r in rows}
    mods = M.modules()
    for name, size, _refcnt, deps, *_ in rows:
        assert name in mods and not mods[name].builtin, name
        assert mods[name].coresize == int(size), name
        holders = {m.name for m in mods.values() if name in m.depends and m.name in loaded}
        assert holders == (set() if deps == "-" else set(deps.rstrip(",").split(","))), name


def test_dep_order_puts_each_module_before_what_it_needs():
    for mod in M.modules().values():
        order = M.dep_order(mod.name)
        assert set(order) == M.closure(mod.name)
        for i, n in enumerate(order):
            assert not (M.closure(n) & set(order[:i])), (mod.name, order)
    assert M.dep_order("nvme")[0] == "nvme_core"


def test_lookup_by_user_name():
    assert M.module_name("pci-stub") == "pci_stub"
    assert M.of_driver("vfio-pci").name == "vfio_pci"
    assert M.of_driver("serial").builtin and M.of_driver("serial").name == "8250_pci"
    assert M.modules()["vfio"].softdep_post == ("vfio_iommu_type1", "vfio_iommu_spapr_tce")
