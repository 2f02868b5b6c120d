"""vfio_iommu_type1's module parameters take effect (no mount): m.module_params holds what
/sys/module/vfio_iommu_type1/parameters/ was given, and type1 reads each when the kernel
does: allow_unsafe_interrupts at a group's attach, dma_entry_limit at SET_IOMMU,
disable_hugepages at each MAP_DMA. A container given a value of its own keeps it."""
from __future__ import annotations

import errno

import pytest

from vfakefs.model import topology
from vfakefs.model.base import binding
from vfakefs.model.errors import SysfsError
from vfakefs.model.vfio import type1
from vfakefs.model.vfio.container import VfioContainer
from vfakefs.model.vfio.group import VfioGroup
from vfakefs.model.vfio.memory import BytesMemory

GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"
MiB = 1 << 20
VBASE = 0x7F00_0000_0000
P = "vfio_iommu_type1"


@pytest.fixture
def m():
    m = topology.load("seed-vtd")
    for name in (GPU, AUDIO):
        dev = m.lookup(name)
        binding.unbind(m, dev.driver, name)
        dev.driver_override = "vfio-pci"
        binding.bind(m, m.drivers["vfio-pci"], name)
    return m


def errno_of(fn, *args, **kw):
    with pytest.raises(SysfsError) as e:
        fn(*args, **kw)
    return e.value.errno


def joined(m, **kw):
    c = VfioContainer(m, memory=BytesMemory(VBASE, 8 * MiB), **kw)
    g = VfioGroup.open(m, 42)
    g.set_container(c)
    return c, g


def test_defaults_are_the_kernels():
    assert type1.PARAMETERS == {"allow_unsafe_interrupts": False, "disable_hugepages": False,
                                "dma_entry_limit": 65535}
    m = topology.load("seed-vtd")
    assert [type1.module_param(m, n) for n in type1.PARAMETERS] == [False, False, 65535]


def test_allow_unsafe_interrupts_read_at_attach(m):
    """No interrupt remapping: SET_IOMMU is EPERM (the warning logged, nothing attached)
    until the parameter is set, then the same container's SET_IOMMU succeeds."""
    m.interrupt_remapping = False
    c, g = joined(m)
    assert errno_of(c.set_iommu, type1.VFIO_TYPE1v2_IOMMU) == errno.EPERM
    assert m.kmsg.records[-1].text == type1.IR_WARNING
    assert c.iommu is None
    m.module_params[(P, "allow_unsafe_interrupts")] = True
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    assert c.iommu is not None and m.lookup(GPU).group.domain is c.iommu.domain
    m.check()


def test_a_containers_own_allow_unsafe_interrupts_wins(m):
    m.interrupt_remapping = False
    m.module_params[(P, "allow_unsafe_interrupts")] = True
    c, g = joined(m, allow_unsafe_interrupts=False)
    assert errno_of(c.set_iommu, type1.VFIO_TYPE1v2_IOMMU) == errno.EPERM


def test_dma_entry_limit_read_at_set_iommu(m):
    m.module_params[(P, "dma_entry_limit")] = 2
    c, g = joined(m)
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    m.module_params[(P, "dma_entry_limit")] = 65535      # later changes: the next SET_IOMMU's
    c.map_dma(VBASE, 0, 4096)
    c.map_dma(VBASE, 0x2000, 4096)
    before = ([(d.iova, d.size) for d in c.iommu.dma_list], c.iommu.domain.table.mapped_pages, c.locked_vm)
    assert errno_of(c.map_dma, VBASE, 0x4000, 4096) == errno.ENOSPC
    assert ([(d.iova, d.size) for d in c.iommu.dma_list], c.iommu.domain.table.mapped_pages, c.locked_vm) == before
    c.unmap_dma(0, 4096)
    c.map_dma(VBASE, 0x4000, 4096)
    m.check()


def test_dma_entry_limit_zero_refuses_every_mapping(m):
    m.module_params[(P, "dma_entry_limit")] = 0
    c, g = joined(m)
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    assert errno_of(c.map_dma, VBASE, 0, 4096) == errno.ENOSPC
    assert c.iommu.dma_list == [] and c.locked_vm == 0


def test_disable_hugepages_maps_4k_pages_only(m):
    """A 2 MiB-aligned 4 MiB mapping is two 2 MiB superpages by default (CAP.SLLPS has
    them); with disable_hugepages, 1024 4 KiB PTEs. Both translate the same."""
    c, g = joined(m)
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    table = c.iommu.domain.table
    c.map_dma(VBASE, 0, 4 * MiB)
    m.module_params[(P, "disable_hugepages")] = True
    c.map_dma(VBASE + 4 * MiB, 8 * MiB, 4 * MiB)      # read when mapping: this one is 4 KiB pages
    assert _leaf_sizes(table, 0, 4 * MiB) == {2 * MiB}
    assert _leaf_sizes(table, 8 * MiB, 4 * MiB) == {4096}
    assert c.iommu.dma_list[1].hpa % (2 * MiB) == 0    # aligned memory: only the parameter decides
    u = m.iommu_unit()
    rid = m.lookup(GPU).bdf.rid
    for iova in (0x1000, 8 * MiB + 0x1000):
        assert u.translate(rid, iova, 1, False).fault is None
    m.module_params[(P, "disable_hugepages")] = False
    c.map_dma(VBASE, 16 * MiB, 2 * MiB)
    assert _leaf_sizes(table, 16 * MiB, 2 * MiB) == {2 * MiB}
    m.check()


def _leaf_sizes(table, iova, size):
    """The page sizes the table maps [iova, iova+size) with: the leaf's level is where
    the walk (table.entries) stops."""
    out, a = set(), iova
    while a < iova + size:
        level = table.levels - len(table.entries(a)) + 1
        leaf = 4096 << 9 * (level - 1)
        out.add(leaf)
        a += leaf
    return out
