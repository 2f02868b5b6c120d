"""A PCI function's directory answers a lookup of one of its attributes, and its nlink,
without making its whole listing (sysfs/devices.py device_attr, device_subdirs): the first
walk of `lspci` opens 7 of each function's ~60 names. What it answers must be what the
listing holds, in every kind of function: bridges, VFs, drivers with their own
directories and files (no name of theirs is an attribute's), unbound, and after changes
(tests/view/test_properties.py checks the same after random writes)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.view.test_properties import assert_find_agrees
from vfakefs.model import topology
from vfakefs.model.base import binding
from vfakefs.model.pci import sriov
from vfakefs.sysfs.nodes import Bound, Dir
from vfakefs.sysfs.tree import View

TOPOLOGIES = ["seed-vtd", "qemu-ref"] + [str(Path(__file__).resolve().parents[1] / "mount" / "topologies" / f"{n}.toml")
                                          for n in ("hotplug", "two-root-buses", "two-socket")]
LSPCI = ("config", "vendor", "device", "class", "revision", "subsystem_vendor", "subsystem_device")


def function_dirs(v: View) -> dict[str, Dir]:
    out = {}

    def rec(d: Dir, path: str):
        for name, node in d.entries().items():
            if isinstance(node, Dir):
                if node.find is not None:
                    out[f"{path}/{name}"] = node
                if name.startswith("pci") or node.find is not None:
                    rec(node, f"{path}/{name}")
    rec(v.root().entries()["sys"].entries()["devices"], "sys/devices")
    return out


@pytest.mark.parametrize("topo", TOPOLOGIES, ids=lambda t: Path(t).stem)
def test_every_function_directory_tells_names_as_its_listing(topo):
    v = View(topology.load(topo))
    m = v.m
    for pf in [f for f in m.functions if f.sriov is not None and f.driver is not None]:
        sriov.configure(m, pf, min(4, pf.sriov.total_vfs))
    dirs = function_dirs(v)
    assert len(dirs) == len(m.functions)
    for path, d in dirs.items():
        assert_find_agrees(d, path)
        for name in LSPCI:   # what a walk looks up is answered without the listing
            assert isinstance(d.find(name), Bound), f"{path}/{name}"
    for f in list(m.functions):   # unbound: no driver's files, no netdev
        binding.release(m, f)
    for path, d in function_dirs(v).items():
        assert_find_agrees(d, path)

