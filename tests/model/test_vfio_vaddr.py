"""type1's VFIO_UPDATE_VADDR (UNMAP_DMA with VADDR, MAP_DMA with VADDR) and the per-process
memlock accounting (mm->locked_vm against RLIMIT_MEMLOCK), on seed-vtd, no mount."""
import errno

import pytest

from tests.model.test_vfio_container import GPU, MiB, VBASE, errno_of, rid, snapshot, to_vfio
from vfakefs.model import topology
from vfakefs.model.errors import SysfsError
from vfakefs.model.iommu import device_dma
from vfakefs.model.vfio import type1
from vfakefs.model.vfio.container import VfioContainer
from vfakefs.model.vfio.group import VfioGroup
from vfakefs.model.vfio.memory import BytesMemory, Mm

R, W, V = type1.VFIO_DMA_MAP_FLAG_READ, type1.VFIO_DMA_MAP_FLAG_WRITE, type1.VFIO_DMA_MAP_FLAG_VADDR
U_ALL, U_VADDR = type1.VFIO_DMA_UNMAP_FLAG_ALL, type1.VFIO_DMA_UNMAP_FLAG_VADDR
NIC = "0000:02:00.0"                     # group 7
NEW = VBASE + 0x1000_0000                # where the successor maps the same memory


@pytest.fixture
def m():
    m = topology.load("seed-vtd")
    for name in (GPU, "0000:01:00.1", NIC):
        to_vfio(m, name)
    return m


def ready(m, mm=None, kind=type1.VFIO_TYPE1v2_IOMMU, **kw):
    mm = mm or Mm(BytesMemory(VBASE, 4 * MiB), **kw)
    c = VfioContainer(m, mm=mm)
    g = VfioGroup.open(m, 42)
    g.set_container(c)
    c.set_iommu(kind)
    return c, g


def dma_write(m, iova, data, name=GPU):
    """The device (bus mastering on) writes through the VFIO domain into whatever memory
    the pin points at, as the `dma` control does."""
    dev = m.lookup(name)
    dev.config.w16(0x04, dev.config.r16(0x04) | 0x4)
    r = device_dma.dma_write(m, dev, iova, data)
    assert r.fault is None and r.done == len(data)


def state(c):
    return snapshot(c) + ([(d.vaddr, d.vaddr_invalid, d.mm) for d in c.iommu.dma_list], c.iommu.vaddr_invalid_count)


# --- UNMAP_DMA(VADDR) ---------------------------------------------------------------------------
def test_invalidate_keeps_the_mapping_and_its_charge(m):
    c, g = ready(m)
    c.map_dma(VBASE, 0, 2 * MiB)
    c.map_dma(VBASE + 2 * MiB, 2 * MiB, 0x1000, flags=R)
    pages, pins = c.iommu.domain.table.mapped_pages, list(m.vfio_pins)
    assert c.unmap_dma(0, 2 * MiB + 0x1000, flags=U_VADDR) == 2 * MiB + 0x1000
    assert [d.vaddr_invalid for d in c.iommu.dma_list] == [True, True] and c.iommu.vaddr_invalid_count == 2
    assert c.iommu.domain.table.mapped_pages == pages and m.vfio_pins == pins and c.locked_vm == 513
    # the device still reaches the pinned pages: DMA goes on while the vaddr is away
    dma_write(m, 0x1000, b"live")
    assert c.memory.read(VBASE + 0x1000, 4) == b"live"


def test_new_vaddr_for_exactly_the_invalidated_range(m):
    mem = BytesMemory(VBASE, 0x2000_0000)     # the old and the new view of the same memory
    c, g = ready(m, Mm(mem))
    c.map_dma(VBASE, 0, 2 * MiB)
    c.unmap_dma(0, 2 * MiB, flags=U_VADDR)
    c.map_dma(NEW, 0, 2 * MiB, flags=V)
    d = c.iommu.dma_list[0]
    assert (d.vaddr, d.vaddr_invalid, c.iommu.vaddr_invalid_count, c.locked_vm) == (NEW, False, 0, 512)
    dma_write(m, 0x1000, b"new!")
    assert mem.read(NEW + 0x1000, 4) == b"new!" and mem.read(VBASE + 0x1000, 4) == bytes(4)
    assert c.unmap_dma(0, 2 * MiB) == 2 * MiB and c.locked_vm == 0 and m.vfio_pins == []


@pytest.mark.parametrize("call, err", [
    (lambda c: c.map_dma(NEW, 4 * MiB, 0x1000, flags=V), errno.ENOENT),          # no mapping there
    (lambda c: c.map_dma(NEW, 0, 0x1000, flags=V), errno.EINVAL),                 # valid vaddr
    (lambda c: c.map_dma(NEW, 2 * MiB, 0x1000, flags=V | R), errno.EINVAL),       # VADDR with R/W
    (lambda c: c.map_dma(NEW + 1, 2 * MiB, 0x1000, flags=V), errno.EINVAL),       # misaligned
    (lambda c: c.map_dma(NEW, 2 * MiB, 0x2000, flags=V), errno.EINVAL),           # not its size
    (lambda c: c.map_dma(NEW, 2 * MiB - 0x1000, 0x2000, flags=V), errno.EINVAL),  # overlaps, not it
    (lambda c: c.unmap_dma(2 * MiB, 0x1000, flags=U_VADDR), errno.EINVAL),        # invalid already
    (lambda c: c.unmap_dma(0, 4 * MiB, flags=U_VADDR), errno.EINVAL),             # undoes the first
    (lambda c: c.unmap_dma(0, 0, flags=U_VADDR | U_ALL), errno.EINVAL),
    (lambda c: c.unmap_dma(0, 0x1000, flags=U_VADDR | 1), errno.EINVAL),          # with dirty bitmap
], ids=["none", "valid", "with-rw", "misaligned", "size", "overlap", "twice", "rollback", "all-twice",
        "dirty"])
def test_vaddr_errors_change_nothing(m, call, err):
    c, g = ready(m)
    c.map_dma(VBASE, 0, 0x1000)
    c.map_dma(VBASE + 0x1000, 2 * MiB, 0x1000)
    c.unmap_dma(2 * MiB, 0x1000, flags=U_VADDR)
    before = state(c)
    assert errno_of(call, c) == err
    assert state(c) == before and [d.vaddr_invalid for d in c.iommu.dma_list] == [False, True]


def test_unmap_all_vaddr_and_back(m):
    c, g = ready(m)
    c.map_dma(VBASE, 0, 0x1000)
    c.map_dma(VBASE + 0x1000, 0x10_0000, 0x1000)
    assert c.unmap_dma(0, 0, flags=U_VADDR | U_ALL) == 0x2000 and c.iommu.vaddr_invalid_count == 2
    c.map_dma(VBASE, 0, 0x1000, flags=V)
    c.map_dma(VBASE + 0x1000, 0x10_0000, 0x1000, flags=V)
    assert c.iommu.vaddr_invalid_count == 0 and c.locked_vm == 2


def test_v1_vaddr_range_starting_inside_a_mapping_does_nothing(m):
    c, g = ready(m, kind=type1.VFIO_TYPE1_IOMMU)
    c.map_dma(VBASE, 0, 0x2000)
    assert c.unmap_dma(0x1000, 0x1000, flags=U_VADDR) == 0 and c.iommu.vaddr_invalid_count == 0


def test_unmapping_an_invalidated_mapping_refunds_it(m):
    c, g = ready(m)
    c.map_dma(VBASE, 0, 0x3000)
    c.unmap_dma(0, 0x3000, flags=U_VADDR)
    assert c.unmap_dma(0, 0x3000) == 0x3000
    assert c.iommu.vaddr_invalid_count == 0 and c.locked_vm == 0 and c.iommu.dma_avail == type1.DMA_ENTRY_LIMIT


def test_attach_while_a_vaddr_is_invalid_is_ebusy(m):
    c, g = ready(m)
    c.map_dma(VBASE, 0, 0x1000)
    c.unmap_dma(0, 0x1000, flags=U_VADDR)
    g7 = VfioGroup.open(m, 7)
    nic_ctx, nic_domain = m.iommu_unit().context(rid(m, NIC)), g7.group.domain
    assert errno_of(g7.set_container, c) == errno.EBUSY
    assert g7.container is None and g7.group.owner is None and g7.group.domain is nic_domain
    assert m.iommu_unit().context(rid(m, NIC)) == nic_ctx and c.groups == [g]
    c.map_dma(VBASE, 0, 0x1000, flags=V)
    g7.set_container(c)                          # with every vaddr back, the attach goes through
    assert c.groups == [g, g7]
    m.check()


def test_update_vaddr_extension_only_with_a_backend(m):
    c = VfioContainer(m)
    assert c.check_extension(type1.VFIO_UPDATE_VADDR) == 0
    c, g = ready(m)
    assert c.check_extension(type1.VFIO_UPDATE_VADDR) == 1


# --- the successor process: vfio_change_dma_owner ----------------------------------------------------
def test_new_vaddr_from_another_process_moves_the_charge(m):
    old = Mm(BytesMemory(VBASE, 4 * MiB))
    new = Mm(BytesMemory(NEW, 4 * MiB), memlock_limit=1 * MiB)
    c, g = ready(m, old)
    c.map_dma(VBASE, 0, 0x4000)
    c.unmap_dma(0, 0x4000, flags=U_VADDR)
    c.map_dma(NEW, 0, 0x4000, flags=V, mm=new)
    assert (old.locked_vm, new.locked_vm) == (0, 4) and c.iommu.dma_list[0].mm is new
    dma_write(m, 0x10, b"moved")
    assert new.memory.read(NEW + 0x10, 5) == b"moved"
    c.unmap_dma(0, 0x4000)
    assert (old.locked_vm, new.locked_vm) == (0, 0)


def test_successor_over_its_limit_is_enomem_and_nothing_moves(m):
    old = Mm(BytesMemory(VBASE, 4 * MiB))
    new = Mm(BytesMemory(NEW, 4 * MiB), memlock_limit=0x3000)
    c, g = ready(m, old)
    c.map_dma(VBASE, 0, 0x4000)
    c.unmap_dma(0, 0x4000, flags=U_VADDR)
    before = state(c)
    assert errno_of(c.map_dma, NEW, 0, 0x4000, flags=V, mm=new) == errno.ENOMEM
    assert state(c) == before and (old.locked_vm, new.locked_vm) == (4, 0)


# --- memlock: one mm for every container the process opened ------------------------------------------
def test_containers_of_one_process_share_locked_vm(m):
    mm = Mm(BytesMemory(VBASE, 4 * MiB), memlock_limit=0x5000)
    c1, g1 = ready(m, mm)
    c2 = VfioContainer(m, mm=mm)
    g7 = VfioGroup.open(m, 7)
    g7.set_container(c2)
    c2.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    c1.map_dma(VBASE, 0, 0x3000)
    before = state(c2)
    assert errno_of(c2.map_dma, VBASE + 0x3000, 0, 0x3000) == errno.ENOMEM
    assert state(c2) == before and mm.locked_vm == 3
    assert m.kmsg.records[-1].text == "vfio_pin_pages_remote: RLIMIT_MEMLOCK (20480) exceeded"
    c2.map_dma(VBASE + 0x3000, 0, 0x2000)       # what is left of the limit
    assert mm.locked_vm == 5 and c1.locked_vm == c2.locked_vm == 5
    g1.close()                                  # container 1 released: its pages come back
    assert mm.locked_vm == 2
    g7.close()
    assert mm.locked_vm == 0


def test_a_forked_child_pays_for_what_it_maps(m):
    parent = Mm(BytesMemory(VBASE, 4 * MiB), memlock_limit=0x1000)
    child = Mm(parent.memory, memlock_limit=0x2000)
    c, g = ready(m, parent)
    c.map_dma(VBASE, 0, 0x2000, mm=child)
    assert (parent.locked_vm, child.locked_vm) == (0, 2)
    c.unmap_dma(0, 0x2000)                      # the parent unmaps: the child gets its pages back
    assert (parent.locked_vm, child.locked_vm) == (0, 0)


def test_cap_ipc_lock_is_taken_when_mapping(m):
    mm = Mm(BytesMemory(VBASE, 4 * MiB), memlock_limit=0, cap_ipc_lock=True)
    c, g = ready(m, mm)
    c.map_dma(VBASE, 0, 0x2000)
    mm.cap_ipc_lock = False                     # dropped later: the mapping keeps its lock_cap
    assert c.unmap_dma(0, 0x2000) == 0x2000 and mm.locked_vm == 0
    assert errno_of(c.map_dma, VBASE, 0, 0x1000) == errno.ENOMEM


def test_refund_never_goes_below_zero():
    mm = Mm(memlock_limit=0x1000)
    mm.account(1, False)
    mm.account(-5, False)
    assert mm.locked_vm == 0
    with pytest.raises(SysfsError) as e:
        mm.account(2, False)
    assert e.value.errno == errno.ENOMEM
    assert mm.locked_vm == 0
