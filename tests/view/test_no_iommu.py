"""A machine whose IOMMU is off still has /sys/kernel/iommu_groups and /sys/class/iommu,
empty: iommu_init() creates the iommu_groups kset at core_initcall and the iommu class is
registered whether or not a unit probes (reference: capture-stock-no-iommu.txt, `ls -la
/sys/kernel/iommu_groups/` shows only . and ..)."""
import re
from pathlib import Path

from vfakefs.model import topology
from vfakefs.sysfs.nodes import Dir
from vfakefs.sysfs.tree import View

from tests.view.test_view import walk


def no_iommu_view(tmp_path) -> View:
    src = (Path(topology.__file__).parent.parent / "presets/seed-vtd.toml").read_text()
    t = tmp_path / "off.toml"
    t.write_text(re.sub(r'(?m)^cmdline = ".*"$', 'cmdline = "quiet intel_iommu=off"', src))
    m = topology.load(str(t))
    assert not m.iommu_on
    return View(m)


def test_iommu_groups_is_an_empty_directory_without_an_iommu(tmp_path):
    v = no_iommu_view(tmp_path)
    kernel = walk(v, "sys/kernel").entries()
    assert isinstance(kernel["iommu_groups"], Dir) and kernel["iommu_groups"].entries() == {}
    assert walk(v, "sys/class/iommu").entries() == {}
    dev = walk(v, "sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0").entries()
    assert "iommu_group" not in dev and "iommu" not in dev
