"""The essay's passthrough sequence and its error paths through the Python API
(vfakefs.vfio) on seed-vtd, no mount: real buffers at their real addresses, real eventfds."""
import errno
import mmap
import os
import resource
import select

import pytest

from vfakefs import vfio
from vfakefs.model.errors import SysfsError

GPU, AUDIO, NIC = "0000:01:00.0", "0000:01:00.1", "0000:02:00.0"
MiB = 1 << 20
TRIGGER_EVENTFD = vfio.VFIO_IRQ_SET_DATA_EVENTFD | vfio.VFIO_IRQ_SET_ACTION_TRIGGER


@pytest.fixture
def m():
    """The essay's bind steps for 01:00.0, and 01:00.1 too, so group 42 is viable."""
    m = vfio.boot("seed-vtd")
    assert vfio.bind_vfio_pci(m, GPU) == "vfio-pci"
    assert vfio.bind_vfio_pci(m, AUDIO) == "vfio-pci"
    return m


def device_dma_write(m, bdf, iova, data):
    """The device writes `data` at `iova` (what the `dma` control does): the VT-d unit
    translates, the bytes land in the pinned memory."""
    assert vfio.dma_write(m, bdf, iova, data) == len(data)


def set_bus_master(dev):
    """What the guest driver does first: PCI_COMMAND |= BUS_MASTER, through the config region."""
    cmd = int.from_bytes(dev.read_config(0x04, 2), "little")
    dev.write_config(0x04, (cmd | 0x4).to_bytes(2, "little"))


def oserr(fn, *args, **kw):
    with pytest.raises(OSError) as e:
        fn(*args, **kw)
    assert e.value.strerror == os.strerror(e.value.errno)
    return e.value.errno


def context_did(m, bdf=GPU):
    lo, hi = m.iommu_unit().context(m.lookup(bdf).bdf.rid)
    return (hi >> 8) & 0xFFFF if lo & 1 else None


# --- the essay, in its order -----------------------------------------------------------------------
def test_the_essay_sequence_then_dma_and_msi_reach_the_program(m):
    default_did = context_did(m)
    guest = mmap.mmap(-1, 2 * MiB)                       # the guest memory, page-aligned
    with vfio.Container(m) as container, vfio.Group(m, 42) as group:
        assert container.get_api_version() == vfio.VFIO_API_VERSION == 0
        assert container.check_extension(vfio.VFIO_TYPE1_IOMMU) == 1
        assert group.get_status() & vfio.VFIO_GROUP_FLAGS_VIABLE
        group.set_container(container)
        container.set_iommu(vfio.VFIO_TYPE1_IOMMU)
        with group.get_device_fd(GPU) as device:
            info = device.get_info()
            assert info.flags == vfio.VFIO_DEVICE_FLAGS_PCI | vfio.VFIO_DEVICE_FLAGS_RESET
            assert (info.num_regions, info.num_irqs) == (9, 5)
            vaddr = container.map_dma(guest, 0, flags=vfio.VFIO_DMA_MAP_FLAG_READ | vfio.VFIO_DMA_MAP_FLAG_WRITE)
            assert container.model.iommu.dma_list[0].vaddr == vaddr
            with vfio.EventFd() as efd:
                device.set_irqs(vfio.VFIO_PCI_MSI_IRQ_INDEX, 0, 1, TRIGGER_EVENTFD, [efd])
                assert context_did(m) not in (None, default_did)       # the VFIO domain
                set_bus_master(device)
                device_dma_write(m, GPU, 0x1000, b"\xde\xad\xbe\xef" * 4)
                assert guest[0x1000:0x1010] == b"\xde\xad\xbe\xef" * 4 and guest[:0x1000] == bytes(0x1000)
                assert select.select([efd], [], [], 0)[0] == []
                result = vfio.raise_vector(m, GPU, 0)        # what `msi <bdf> vector 0` does
                assert result.delivered
                assert select.select([efd], [], [], 0)[0] == [efd]
                assert os.eventfd_read(efd.fileno()) == 1
    # every fd closed, in the kernel's order: the default domain is back, the pages unpinned
    assert context_did(m) == default_did and m.vfio_pins == [] and vfio.this_process(m).locked_vm == 0
    assert m.lookup(GPU).group.owner is None
    vfio.Group(m, 42).close()                             # the node opens again


def test_iommu_info_has_the_iova_ranges_and_dma_avail(m):
    with vfio.Container(m, dma_entry_limit=10) as c, vfio.Group(m, 42) as g:
        g.set_container(c)
        c.set_iommu(vfio.VFIO_TYPE1v2_IOMMU)
        short = c.get_info(argsz=24)                      # C's first call: how much room the caps need
        assert short.argsz > 24 and short.cap_offset == 0 and short.iova_ranges is None
        info = c.get_info()
        assert info.flags == vfio.VFIO_IOMMU_INFO_PGSIZES | vfio.VFIO_IOMMU_INFO_CAPS
        assert info.iova_pgsizes & 0x1000 and info.dma_avail == 10
        assert (0, 0xFEDFFFFF) in info.iova_ranges and info.iova_ranges[1][0] == 0xFEF00000
        buf = mmap.mmap(-1, 0x2000)
        c.map_dma(buf, 0x10000)
        assert c.get_info().dma_avail == 9
        assert oserr(c.map_dma, buf, 0xFEE00000) == errno.EINVAL         # the MSI window is reserved
        assert c.unmap_dma(0x10000, 0x2000) == 0x2000
        assert c.get_info().dma_avail == 10


# --- the error programs ------------------------------------------------------------------------------
def test_non_viable_group_is_eperm():
    m = vfio.boot("seed-vtd")
    vfio.bind_vfio_pci(m, GPU)                            # 01:00.1 stays on snd_hda_intel
    with vfio.Container(m) as c, vfio.Group(m, 42) as g:
        assert g.get_status() == 0
        assert oserr(g.set_container, c) == errno.EPERM
        assert g.get_status() == 0 and g.model.container is None and c.model.groups == []
        assert oserr(c.set_iommu, vfio.VFIO_TYPE1_IOMMU) == errno.EINVAL   # no group joined


def test_second_open_of_the_group_is_ebusy(m):
    with vfio.Group(m, 42):
        assert oserr(vfio.Group, m, 42) == errno.EBUSY
    vfio.Group(m, 42).close()


def test_group_without_a_vfio_member_is_enodev(m):
    assert oserr(vfio.Group, m, 7) == errno.ENODEV


@pytest.fixture
def ready(m):
    c, g = vfio.Container(m), vfio.Group(m, 42)
    g.set_container(c)
    c.set_iommu(vfio.VFIO_TYPE1v2_IOMMU)
    yield c, g
    g.close()
    c.close()


def test_overlapping_map_is_eexist(ready):
    c, g = ready
    buf = mmap.mmap(-1, 0x4000)
    c.map_dma(buf, 0x10000, 0x2000)
    before = [(d.iova, d.size) for d in c.model.iommu.dma_list], c.process.locked_vm
    assert oserr(c.map_dma, buf, 0x11000, 0x2000) == errno.EEXIST
    assert ([(d.iova, d.size) for d in c.model.iommu.dma_list], c.process.locked_vm) == before


@pytest.mark.parametrize("vaddr_off, iova, size", [(0, 0x10800, 0x1000), (0x10, 0x10000, 0x1000),
                                                    (0, 0x10000, 0x800), (0, 0x10000, 0)])
def test_misaligned_or_empty_map_is_einval(ready, vaddr_off, iova, size):
    c, g = ready
    buf = mmap.mmap(-1, 0x4000)
    vaddr = vfio.this_process(c.machine).register(buf) + vaddr_off
    assert oserr(c.map_dma, vaddr, iova, size) == errno.EINVAL
    assert c.model.iommu.dma_list == [] and c.process.locked_vm == 0


def test_unaligned_python_buffer_is_einval_as_in_c(ready):
    c, g = ready
    buf = bytearray(0x3000)
    if vfio.this_process(c.machine).register(buf) % 4096 == 0:
        pytest.skip("this bytearray happens to be page-aligned")
    assert oserr(c.map_dma, buf, 0, 0x2000) == errno.EINVAL


@pytest.mark.parametrize("name", ["0000:01:00.2", "0000:01:00.0\n", "01:00.0", NIC])
def test_unknown_device_is_enodev(ready, name):
    c, g = ready
    assert oserr(g.get_device_fd, name) == errno.ENODEV
    assert g.devices == []


def test_binding_a_dma_api_driver_to_a_claimed_member_is_ebusy(ready, m):
    c, g = ready
    vfio.driver_unbind(m, AUDIO)
    vfio.set_driver_override(m, AUDIO, None)
    assert oserr(vfio.driver_bind, m, "snd_hda_intel", AUDIO) == errno.EBUSY
    assert m.kmsg.records[-1].text == f"snd_hda_intel {AUDIO}: probe with driver snd_hda_intel failed with error -16"
    assert m.lookup(AUDIO).driver is None and m.lookup(AUDIO).group.owner is g.model
    g.close()                                             # released: the driver may have it again
    vfio.driver_bind(m, "snd_hda_intel", AUDIO)
    assert m.lookup(AUDIO).driver.name == "snd_hda_intel"


def test_unknown_driver_directory_is_enoent(m):
    assert oserr(vfio.driver_bind, m, "no-such-driver", GPU) == errno.ENOENT


def test_memory_outside_the_registered_buffers_is_efault(ready):
    c, g = ready
    assert oserr(c.map_dma, 0x7F00_0000_0000, 0, 0x1000) == errno.EFAULT
    ro = mmap.mmap(-1, 0x2000, prot=mmap.PROT_READ)
    assert oserr(c.map_dma, ro, 0) == errno.EFAULT        # the device could write: FOLL_WRITE fails
    c.map_dma(ro, 0, flags=vfio.VFIO_DMA_MAP_FLAG_READ)   # read-only for the device: fine
    assert c.process.locked_vm == 2


def test_memlock_limit_is_enomem_and_changes_nothing(m):
    p = vfio.Process(memlock_limit=0x3000, cap_ipc_lock=False)
    with vfio.Container(m, p) as c, vfio.Group(m, 42) as g:
        g.set_container(c)
        c.set_iommu(vfio.VFIO_TYPE1v2_IOMMU)
        buf = mmap.mmap(-1, 0x4000)
        c.map_dma(buf, 0, 0x2000)
        assert oserr(c.map_dma, p.register(buf) + 0x2000, 0x2000, 0x2000) == errno.ENOMEM
        assert m.kmsg.records[-1].text == "vfio_pin_pages_remote: RLIMIT_MEMLOCK (12288) exceeded"
        assert p.locked_vm == 2 and len(c.model.iommu.dma_list) == 1
    assert p.locked_vm == 0


def test_process_reads_rlimit_memlock_and_cap_ipc_lock_from_the_process():
    soft = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
    p = vfio.Process()
    assert p.memlock_limit == (None if soft == resource.RLIM_INFINITY else soft)
    with open("/proc/self/status") as f:
        capeff = int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)
    assert p.cap_ipc_lock == bool(capeff >> 14 & 1)


# --- eventfds -----------------------------------------------------------------------------------------
@pytest.fixture
def msi_dev(ready):
    c, g = ready
    with g.get_device_fd(GPU) as dev:
        set_bus_master(dev)
        yield dev


def test_eventfd_by_number_stays_the_kernels_reference(msi_dev):
    with vfio.EventFd() as efd:
        number = os.dup(efd.fileno())
        msi_dev.set_irqs(vfio.VFIO_PCI_MSI_IRQ_INDEX, 0, 1, TRIGGER_EVENTFD, [number])
        os.close(number)                                  # the program lets its fd go
        msi_dev.model.raise_vector(0)
        assert efd.readable() and efd.read() == 1


def test_bad_eventfds(msi_dev):
    r, w = os.pipe()
    try:
        assert oserr(msi_dev.set_irqs, vfio.VFIO_PCI_MSI_IRQ_INDEX, 0, 1, TRIGGER_EVENTFD, [r]) == errno.EINVAL
    finally:
        os.close(r)
        os.close(w)
    assert oserr(msi_dev.set_irqs, vfio.VFIO_PCI_MSI_IRQ_INDEX, 0, 1, TRIGGER_EVENTFD, [r]) == errno.EBADF
    efd = vfio.EventFd()
    efd.close()
    assert oserr(msi_dev.set_irqs, vfio.VFIO_PCI_MSI_IRQ_INDEX, 0, 1, TRIGGER_EVENTFD, [efd]) == errno.EBADF
    assert msi_dev.model.irqs.is_none()                   # each failed enable was undone


def test_disable_drops_the_reference(msi_dev):
    with vfio.EventFd() as efd:
        msi_dev.set_irqs(vfio.VFIO_PCI_MSI_IRQ_INDEX, 0, 1, TRIGGER_EVENTFD, [efd])
        ctx_fd = msi_dev.model.irqs.ctx[0].fd
        msi_dev.set_irqs(vfio.VFIO_PCI_MSI_IRQ_INDEX, 0, 0,
                         vfio.VFIO_IRQ_SET_DATA_NONE | vfio.VFIO_IRQ_SET_ACTION_TRIGGER)
        assert oserr(os.fstat, ctx_fd) == errno.EBADF     # the dup is closed with the vector


# --- closing in the kernel's order -------------------------------------------------------------------------
def test_group_closed_before_its_device_is_released_with_the_device(m):
    c, g = vfio.Container(m), vfio.Group(m, 42)
    g.set_container(c)
    c.set_iommu(vfio.VFIO_TYPE1v2_IOMMU)
    dev = g.get_device_fd(GPU)
    g.close()
    assert m.lookup(GPU).group.owner is g.model and oserr(g.get_status) == errno.EBADF
    assert oserr(vfio.Group, m, 42) == errno.EBUSY        # the device fd holds the group file
    dev.close()
    assert m.lookup(GPU).group.owner is None
    vfio.Group(m, 42).close()


def test_container_closed_first_lives_while_its_group_does(m):
    p = vfio.Process(memlock_limit=None, cap_ipc_lock=False)
    c, g = vfio.Container(m, p), vfio.Group(m, 42)
    g.set_container(c)
    c.set_iommu(vfio.VFIO_TYPE1v2_IOMMU)
    buf = mmap.mmap(-1, 0x1000)
    c.map_dma(buf, 0)
    c.close()
    assert oserr(c.map_dma, buf, 0x1000) == errno.EBADF
    assert p.locked_vm == 1 and g.get_status() == vfio.VFIO_GROUP_FLAGS_VIABLE | vfio.VFIO_GROUP_FLAGS_CONTAINER_SET
    g.close()                                             # the last user: mappings go, pages refunded
    assert p.locked_vm == 0 and m.vfio_pins == []


def test_set_container_with_something_else_is_ebadfd(m):
    with vfio.Group(m, 42) as g:
        assert oserr(g.set_container, object()) == errno.EBADFD
        c = vfio.Container(m)
        c.close()
        assert oserr(g.set_container, c) == errno.EBADF


# --- UPDATE_VADDR through the API -----------------------------------------------------------------------
def test_update_vaddr_moves_device_dma_to_the_new_buffer(ready, m):
    c, g = ready
    with g.get_device_fd(GPU) as dev:
        set_bus_master(dev)
        old, new = mmap.mmap(-1, 0x2000), mmap.mmap(-1, 0x2000)
        c.map_dma(old, 0)
        assert c.check_extension(vfio.VFIO_UPDATE_VADDR) == 1
        assert c.unmap_dma(0, 0x2000, vfio.VFIO_DMA_UNMAP_FLAG_VADDR) == 0x2000
        device_dma_write(m, GPU, 0x10, b"during")         # still the pinned pages
        assert old[0x10:0x16] == b"during"
        c.map_dma(new, 0, flags=vfio.VFIO_DMA_MAP_FLAG_VADDR)
        device_dma_write(m, GPU, 0x10, b"after!")
        assert new[0x10:0x16] == b"after!" and old[0x10:0x16] == b"during"
        assert oserr(c.map_dma, new, 0, flags=vfio.VFIO_DMA_MAP_FLAG_VADDR) == errno.EINVAL


# --- this process's memory ----------------------------------------------------------------------------------
def test_self_memory_spans_adjacent_buffers_and_faults_elsewhere():
    mem = vfio.SelfMemory()
    big = mmap.mmap(-1, 0x3000)
    lo = memoryview(big)[:0x1000]
    hi = memoryview(big)[0x1000:0x2000]
    a, b = mem.register(lo), mem.register(hi)
    assert b == a + 0x1000 and mem.register(lo) == a
    mem.write(a + 0xFFE, b"span")
    assert big[0xFFE:0x1002] == b"span" and mem.read(a + 0xFFE, 4) == b"span"
    assert oserr_model(mem.read, a + 0x1FFE, 4) == errno.EFAULT           # past hi: big's third page
    mem.unregister(hi)
    assert oserr_model(mem.write, a + 0x1000, b"x") == errno.EFAULT


def oserr_model(fn, *args):
    with pytest.raises(SysfsError) as e:
        fn(*args)
    return e.value.errno


# --- the rest of the device fd -----------------------------------------------------------------------------
def test_device_regions_config_reset_and_irqs(ready, m):
    c, g = ready
    dev = g.get_device_fd(GPU)
    cfg = dev.get_region_info(vfio.VFIO_PCI_CONFIG_REGION_INDEX)
    assert cfg.offset == vfio.VFIO_PCI_INDEX_TO_OFFSET(7) == 7 << 40 and cfg.size == m.lookup(GPU).config.size
    assert cfg.flags == vfio.VFIO_REGION_INFO_FLAG_READ | vfio.VFIO_REGION_INFO_FLAG_WRITE
    ids = m.lookup(GPU).config.bytes[:4]
    assert dev.read(cfg.offset, 4) == dev.read_config(0, 4) == bytes(ids)
    assert oserr(dev.read, cfg.offset + cfg.size - 2, 4) == errno.EFAULT
    assert oserr(dev.get_region_info, 9) == errno.EINVAL
    msi = dev.get_irq_info(vfio.VFIO_PCI_MSI_IRQ_INDEX)
    assert msi.count >= 1 and msi.flags & vfio.VFIO_IRQ_INFO_EVENTFD
    dev.reset()
    with vfio.EventFd() as efd:
        dev.set_irqs(vfio.VFIO_PCI_MSI_IRQ_INDEX, 0, 1, TRIGGER_EVENTFD, [efd])
        dev.set_irqs(vfio.VFIO_PCI_MSI_IRQ_INDEX, 0, 1,
                     vfio.VFIO_IRQ_SET_DATA_BOOL | vfio.VFIO_IRQ_SET_ACTION_TRIGGER, [True])   # loopback
        assert efd.read() == 1
    assert oserr(g.unset_container) == errno.EBUSY          # a device fd is open
    dev.close()
    assert oserr(dev.get_info) == errno.EBADF
    g.unset_container()
    assert g.get_status() == vfio.VFIO_GROUP_FLAGS_VIABLE and m.lookup(GPU).group.owner is None
