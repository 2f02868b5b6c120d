"""The vfio-pci device fd's calls in the model (no mount): DEVICE_GET_INFO,
GET_REGION_INFO, the config region, DEVICE_RESET, GET_IRQ_INFO, SET_IRQS, and a
device raising MSI/MSI-X vectors through interrupt remapping to an eventfd."""
from __future__ import annotations

import errno

import pytest

from vfakefs.model import topology
from vfakefs.model.base import binding
from vfakefs.model.errors import SysfsError
from vfakefs.model.intel.irte import MANAGED_IRQ_SHUTDOWN_VECTOR
from vfakefs.model.pci import sriov
from vfakefs.model.vfio.device import (
    VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET, VFIO_REGION_INFO_FLAG_CAPS, VFIO_REGION_INFO_FLAG_MMAP,
    VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE, VfioPciDevice)
from vfakefs.model.vfio.intrs import (
    VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE, VFIO_IRQ_INFO_NORESIZE,
    VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_BOOL,
    VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE)

RW = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE
INTX, MSI, MSIX, ERR, REQ = range(5)
CONFIG = 7 << 40
TRIGGER_EVENTFD = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD
TRIGGER_NONE = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE


class Counter:
    """An eventfd as the model sees one: signal() adds one."""
    def __init__(self):
        self.count = 0

    def signal(self):
        self.count += 1


def vfio_open(m, name: str) -> VfioPciDevice:
    """Bind name to vfio-pci as a user would (unbind, driver_override, bind), then open it."""
    f = m.lookup(name)
    if f.driver is not None:
        binding.unbind(m, f.driver, name)
    f.driver_override = "vfio-pci"
    binding.bind(m, m.drivers["vfio-pci"], name)
    assert f.driver.name == "vfio-pci"
    return VfioPciDevice(m, f, None)


def err(e: int, fn, *args, **kw):
    with pytest.raises(SysfsError) as exc:
        fn(*args, **kw)
    assert exc.value.errno == e, errno.errorcode.get(exc.value.errno)


def r32(vd, off):
    return int.from_bytes(vd.read(CONFIG | off, 4), "little")


def w32(vd, off, v):
    assert vd.write(CONFIG | off, v.to_bytes(4, "little")) == 4


@pytest.fixture
def seed():
    return topology.load("seed-vtd")


@pytest.fixture
def gpu(seed):
    return vfio_open(seed, "0000:01:00.0")


@pytest.fixture
def nic(seed):
    return vfio_open(seed, "0000:02:00.0")


# --- DEVICE_GET_INFO ---------------------------------------------------------------------------
def test_device_info_pci_reset_9_regions_5_irqs(gpu):
    info = gpu.get_info()
    assert info.flags == VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET
    assert (info.num_regions, info.num_irqs, info.argsz) == (9, 5, 24)


def test_device_info_argsz_below_16_is_einval(gpu):
    assert gpu.get_info(argsz=16).num_regions == 9
    err(errno.EINVAL, gpu.get_info, argsz=15)


def test_device_without_reset_method_has_no_reset_flag_and_reset_is_einval(seed):
    seed.lookup("0000:02:00.0").reset_methods = ()
    vd = vfio_open(seed, "0000:02:00.0")
    assert vd.get_info().flags == VFIO_DEVICE_FLAGS_PCI
    err(errno.EINVAL, vd.reset)
    assert "0000:02:00.0: resetting" not in seed.kmsg.text()


def test_device_reset_resets_the_function_and_keeps_config(gpu):
    w32(gpu, 0x04, r32(gpu, 0x04) | 0x4)
    before = bytes(gpu.dev.config.bytes)
    gpu.reset()
    assert bytes(gpu.dev.config.bytes) == before


# --- GET_REGION_INFO -----------------------------------------------------------------------------
def test_region_info_bars_have_topology_sizes_and_offsets(gpu):
    want = {0: (16 << 20, RW | VFIO_REGION_INFO_FLAG_MMAP), 1: (256 << 20, RW | VFIO_REGION_INFO_FLAG_MMAP),
            2: (0, 0), 3: (32 << 20, RW | VFIO_REGION_INFO_FLAG_MMAP), 4: (0, 0), 5: (128, RW)}  # BAR5: I/O
    for index, (size, flags) in want.items():
        info = gpu.get_region_info(index)
        assert (info.index, info.size, info.flags, info.offset) == (index, size, flags, index << 40)


def test_region_info_config_is_the_config_space_size(seed, gpu):
    info = gpu.get_region_info(7)
    assert (info.size, info.flags, info.offset) == (4096, RW, 7 << 40)
    smbus = vfio_open(seed, "0000:00:1f.4")          # conventional PCI: 256 bytes
    assert smbus.get_region_info(7).size == 256
    # a 256-byte memory BAR on a page boundary still maps (the rest of the page is reserved)
    assert smbus.get_region_info(0).flags == RW | VFIO_REGION_INFO_FLAG_MMAP


def test_region_info_rom_is_read_only_bar_size(gpu, nic):
    info = gpu.get_region_info(6)
    assert (info.size, info.flags) == (512 << 10, VFIO_REGION_INFO_FLAG_READ)
    assert gpu.read((6 << 40) + 0, 2) == b"\x55\xaa"
    err(errno.EINVAL, gpu.write, 6 << 40, b"\0")
    err(errno.EINVAL, gpu.read, (6 << 40) + (512 << 10), 1)
    info = nic.get_region_info(6)                  # no ROM
    assert (info.size, info.flags) == (0, 0)


def test_region_info_vga_only_on_a_vga_device(gpu, nic):
    info = gpu.get_region_info(8)
    assert (info.size, info.flags, info.offset) == (0xC0000, RW, 8 << 40)
    err(errno.EINVAL, nic.get_region_info, 8)


def test_region_info_bad_index_or_argsz_is_einval(gpu):
    err(errno.EINVAL, gpu.get_region_info, 9)
    err(errno.EINVAL, gpu.get_region_info, -1)
    err(errno.EINVAL, gpu.get_region_info, 0, argsz=31)


def test_region_info_msix_bar_has_the_mappable_capability(nic):
    info = nic.get_region_info(0)                  # igb's MSI-X table is in BAR0
    assert info.flags == RW | VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS
    assert (info.argsz, info.cap_offset) == (40, 0)          # argsz says the room the chain needs
    info = nic.get_region_info(0, argsz=40)
    assert (info.argsz, info.cap_offset, info.caps) == (40, 32, ((3, 1),))
    assert nic.get_region_info(2).flags == RW                 # the I/O BAR: no mmap
    assert nic.get_region_info(3).flags == RW | VFIO_REGION_INFO_FLAG_MMAP


# --- the config region ------------------------------------------------------------------------------
def test_config_reads_the_device_ids(gpu):
    f = gpu.dev
    assert gpu.read(CONFIG, 4) == f.config.read(0, 4)
    assert r32(gpu, 0x08) >> 8 == f.class_code


def test_config_access_past_the_end_is_efault(gpu):
    assert len(gpu.read(CONFIG | 4092, 4)) == 4
    err(errno.EFAULT, gpu.read, CONFIG | 4093, 4)
    err(errno.EFAULT, gpu.read, CONFIG | 4096, 1)
    before = bytes(gpu.dev.config.bytes)
    err(errno.EFAULT, gpu.write, CONFIG | 4094, b"\0\0\0\0")
    assert bytes(gpu.dev.config.bytes) == before


def test_bar_sizing_by_writing_all_ones(gpu):
    f = gpu.dev
    phys = bytes(f.config.bytes[0x10:0x34])
    assert r32(gpu, 0x10) == f.bars[0].start       # before: the address and type bits
    for off in range(0x10, 0x28, 4):
        w32(gpu, off, 0xFFFFFFFF)
    assert r32(gpu, 0x10) == 0xFF000000            # 16 MiB, 32-bit, not prefetchable
    assert r32(gpu, 0x14) == 0xF000000C            # 256 MiB, 64-bit prefetchable: low dword
    assert r32(gpu, 0x18) == 0xFFFFFFFF            # its high dword
    assert r32(gpu, 0x1C) == 0xFE00000C            # 32 MiB
    assert r32(gpu, 0x24) == 0xFFFFFF81            # 128 bytes of I/O
    w32(gpu, 0x30, 0xFFFFFFFE)
    assert r32(gpu, 0x30) == 0xFFF80000            # 512 KiB ROM, enable bit as written
    assert bytes(f.config.bytes[0x10:0x34]) == phys    # the device's BARs never change
    w32(gpu, 0x10, f.bars[0].start)
    assert r32(gpu, 0x10) == f.bars[0].start


def test_absent_bar_reads_zero_after_sizing(nic):
    w32(nic, 0x14, 0xFFFFFFFF)                     # BAR1 is not implemented
    assert r32(nic, 0x14) == 0


def test_bus_master_is_written_through_memory_enable_is_virtual(gpu):
    f = gpu.dev
    cmd = int.from_bytes(gpu.read(CONFIG | 4, 2), "little")
    gpu.write(CONFIG | 4, (cmd | 0x4).to_bytes(2, "little"))
    assert f.config.r16(4) & 0x4                    # what DMA checks
    gpu.write(CONFIG | 4, ((cmd | 0x4) & ~0x2).to_bytes(2, "little"))
    assert not int.from_bytes(gpu.read(CONFIG | 4, 2), "little") & 0x2
    assert f.config.r16(4) & 0x2 == cmd & 0x2        # memory decode: vconfig only
    gpu.write(CONFIG | 4, (cmd & ~0x4).to_bytes(2, "little"))
    assert not f.config.r16(4) & 0x4


def test_read_only_fields_ignore_writes(gpu):
    f = gpu.dev
    before = bytes(f.config.bytes[:0x40])
    ids = gpu.read(CONFIG, 0x10)
    gpu.write(CONFIG, b"\xff" * 4)                  # vendor, device
    gpu.write(CONFIG | 0x06, b"\xff\xff")           # status
    gpu.write(CONFIG | 0x08, b"\xff" * 4)           # revision, class
    gpu.write(CONFIG | 0x2C, b"\xff" * 4)           # subsystem
    gpu.write(CONFIG | 0x34, b"\xff")               # capability pointer
    gpu.write(CONFIG | 0x3D, b"\x07")               # interrupt pin
    assert gpu.read(CONFIG, 0x0C) == ids[:0x0C]
    assert gpu.read(CONFIG | 0x34, 1) == before[0x34:0x35]
    assert gpu.read(CONFIG | 0x3D, 1) == before[0x3D:0x3E]
    assert bytes(f.config.bytes[:0x40]) == before


def test_interrupt_line_is_virtual(gpu):
    gpu.write(CONFIG | 0x3C, b"\x05")
    assert gpu.read(CONFIG | 0x3C, 1) == b"\x05"
    assert gpu.dev.config.r8(0x3C) != 5


# --- GET_IRQ_INFO ---------------------------------------------------------------------------------------
def test_irq_info_counts_and_flags(gpu, nic):
    i = gpu.get_irq_info(INTX)
    assert (i.count, i.flags) == (1, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED)
    noresize = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE
    assert [(gpu.get_irq_info(x).count, gpu.get_irq_info(x).flags) for x in (MSI, MSIX, ERR, REQ)] == \
        [(1, noresize), (0, noresize), (1, noresize), (1, noresize)]
    assert nic.get_irq_info(MSIX).count == 5
    assert nic.get_irq_info(MSI).count == 0


def test_irq_info_errors(seed, gpu):
    err(errno.EINVAL, gpu.get_irq_info, 5)
    err(errno.EINVAL, gpu.get_irq_info, INTX, argsz=15)
    smbus = vfio_open(seed, "0000:00:1f.4")           # not PCIe: no error reporting
    err(errno.EINVAL, smbus.get_irq_info, ERR)
    assert smbus.get_irq_info(REQ).count == 1


def test_intx_count_zero_without_a_pin(seed):
    vd = vfio_open(seed, "0000:06:00.0")              # nvme here has no INTx
    assert vd.get_irq_info(INTX).count == 0
    err(errno.EINVAL, vd.set_irqs, INTX, 0, 1, TRIGGER_EVENTFD, [Counter()])


# --- SET_IRQS: MSI-X through interrupt remapping -------------------------------------------------------
def test_msix_enable_allocates_remappable_irtes_and_disable_frees_them(seed, nic):
    t, f = seed.irq_remap, nic.dev
    present = set(map(int, t.present()))
    efds = [Counter() for _ in range(5)]
    nic.set_irqs(MSIX, 0, 5, TRIGGER_EVENTFD, efds)
    idx = t.indices(f)
    assert len(idx) == 5 and not set(idx) & present
    for n, i in enumerate(idx):
        e = t[i]
        assert e.present and e.sid == f.bdf.rid and e.vector != MANAGED_IRQ_SHUTDOWN_VECTOR
        addr, data = nic.irqs.msix_table[n]
        assert addr >> 20 == 0xFEE and addr >> 4 & 1      # remappable format
        assert (addr >> 5 & 0x7FFF) | (addr >> 2 & 1) << 15 == i
    pos = f.caps[0x11]
    assert f.config.r16(pos + 2) & 0x8000                 # MSI-X enable, in the device
    nic.set_irqs(MSIX, 0, 0, TRIGGER_NONE)
    assert t.indices(f) == [] and not any(t[i].present for i in idx)
    assert set(map(int, t.present())) == present
    assert not f.config.r16(pos + 2) & 0x8000


def test_raise_vector_signals_the_registered_eventfd(nic):
    efds = [Counter() for _ in range(3)]
    nic.set_irqs(MSIX, 0, 3, TRIGGER_EVENTFD, efds)
    nic.write(CONFIG | 4, (int.from_bytes(nic.read(CONFIG | 4, 2), "little") | 0x4).to_bytes(2, "little"))
    r = nic.raise_vector(1)
    assert r.delivered and [e.count for e in efds] == [0, 1, 0]
    nic.set_irqs(MSIX, 1, 1, TRIGGER_EVENTFD, [None])    # fd -1: de-assigned, irq freed
    assert nic.m.irq_remap[nic.irqs.irte[1]].vector == MANAGED_IRQ_SHUTDOWN_VECTOR
    nic.raise_vector(1)
    assert efds[1].count == 1
    nic.raise_vector(2)
    assert efds[2].count == 1


def test_raise_vector_needs_bus_mastering(nic):
    efd = Counter()
    nic.set_irqs(MSIX, 0, 1, TRIGGER_EVENTFD, [efd])
    cmd = int.from_bytes(nic.read(CONFIG | 4, 2), "little")
    nic.write(CONFIG | 4, (cmd & ~0x4).to_bytes(2, "little"))
    assert nic.raise_vector(0) is None and efd.count == 0
    err(errno.EINVAL, nic.raise_vector, 1)               # not enabled
    nic.write(CONFIG | 4, (cmd | 0x4).to_bytes(2, "little"))
    assert nic.raise_vector(0).delivered and efd.count == 1


def test_spoofed_source_id_is_blocked_and_logged(seed, nic):
    efd = Counter()
    nic.set_irqs(MSIX, 0, 1, TRIGGER_EVENTFD, [efd])
    nic.write(CONFIG | 4, (int.from_bytes(nic.read(CONFIG | 4, 2), "little") | 0x4).to_bytes(2, "little"))
    other = seed.lookup("0000:03:00.0")
    r = nic.raise_vector(0, source=other)
    assert r.blocked and r.reason == 0x26 and efd.count == 0
    assert seed.irq_remap.faults[-1].sid == other.bdf.rid


def test_msi_programs_the_capability_and_the_region_shows_the_virtual_one(seed, gpu):
    t, f = seed.irq_remap, gpu.dev
    efd = Counter()
    pos = f.caps[0x05]
    # vconfig is the copy vfio_config_init() took at open: what nouveau left (its message)
    before = gpu.read(CONFIG | (pos + 4), 4)
    gpu.set_irqs(MSI, 0, 1, TRIGGER_EVENTFD, [efd])
    (i,) = t.indices(f)
    assert f.config.r16(pos + 2) & 1                       # MSI enable
    addr = f.config.r32(pos + 4)
    assert addr >> 4 & 1 and (addr >> 5 & 0x7FFF) == i     # remappable, handle = the IRTE
    assert gpu.read(CONFIG | (pos + 4), 4) == before        # the user's view: SET_IRQS wrote the device
    gpu.write(CONFIG | 4, (int.from_bytes(gpu.read(CONFIG | 4, 2), "little") | 0x4).to_bytes(2, "little"))
    assert gpu.raise_vector(0).delivered and efd.count == 1
    gpu.set_irqs(MSI, 0, 0, TRIGGER_NONE)
    assert t.indices(f) == [] and not t[i].present and not f.config.r16(pos + 2) & 1


def test_msi_loopback_none_and_bool(nic):
    efds = [Counter(), Counter()]
    nic.set_irqs(MSIX, 0, 2, TRIGGER_EVENTFD, efds)
    nic.set_irqs(MSIX, 0, 2, TRIGGER_NONE)
    assert [e.count for e in efds] == [1, 1]
    nic.set_irqs(MSIX, 0, 2, VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_BOOL, [0, 1])
    assert [e.count for e in efds] == [1, 2]
    err(errno.EINVAL, nic.set_irqs, MSIX, 1, 2, TRIGGER_NONE)     # beyond the enabled vectors


def test_set_irqs_validation_errors(nic):
    efd = Counter()
    err(errno.EINVAL, nic.set_irqs, 5, 0, 1, TRIGGER_EVENTFD, [efd])                  # index
    err(errno.EINVAL, nic.set_irqs, MSIX, 3, 3, TRIGGER_EVENTFD, [efd] * 3)           # past the count
    err(errno.EINVAL, nic.set_irqs, MSIX, 5, 0, TRIGGER_NONE)                         # start past it
    err(errno.EINVAL, nic.set_irqs, MSI, 0, 1, TRIGGER_EVENTFD, [efd])                # no MSI at all
    err(errno.EINVAL, nic.set_irqs, MSIX, 0, 1, TRIGGER_EVENTFD | VFIO_IRQ_SET_DATA_BOOL, [efd])
    err(errno.EINVAL, nic.set_irqs, MSIX, 0, 1, TRIGGER_EVENTFD | 0x40, [efd])         # unknown flag
    err(errno.EINVAL, nic.set_irqs, MSIX, 0, 1, VFIO_IRQ_SET_ACTION_TRIGGER, [efd])    # no data type
    err(errno.EINVAL, nic.set_irqs, MSIX, 0, 2, TRIGGER_EVENTFD, [efd, efd], argsz=24)  # data cut short
    err(errno.EINVAL, nic.set_irqs, MSIX, 0, 1, TRIGGER_EVENTFD, [efd], argsz=19)
    err(errno.ENOTTY, nic.set_irqs, MSIX, 0, 1, VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE)
    err(errno.ENOTTY, nic.set_irqs, MSIX, 0, 1, VFIO_IRQ_SET_DATA_NONE)               # no action
    err(errno.EINVAL, nic.set_irqs, MSIX, 0, 1, TRIGGER_NONE)                         # loopback, not enabled
    assert nic.irqs.is_none() and nic.m.irq_remap.indices(nic.dev) == []


def test_bad_eventfd_undoes_the_enable(nic):
    t, f = nic.m.irq_remap, nic.dev
    present = set(map(int, t.present()))
    err(errno.EINVAL, nic.set_irqs, MSIX, 0, 2, TRIGGER_EVENTFD, [Counter(), object()])
    err(errno.EBADF, nic.set_irqs, MSIX, 0, 2, TRIGGER_EVENTFD, [Counter(), 7])
    assert nic.irqs.is_none() and t.indices(f) == [] and set(map(int, t.present())) == present
    assert not f.config.r16(f.caps[0x11] + 2) & 0x8000


def test_msi_and_msix_and_intx_exclude_each_other(gpu):
    gpu.set_irqs(INTX, 0, 1, TRIGGER_EVENTFD, [Counter()])
    err(errno.EINVAL, gpu.set_irqs, MSI, 0, 1, TRIGGER_EVENTFD, [Counter()])
    gpu.set_irqs(INTX, 0, 0, TRIGGER_NONE)
    gpu.set_irqs(MSI, 0, 1, TRIGGER_EVENTFD, [Counter()])
    err(errno.EINVAL, gpu.set_irqs, INTX, 0, 1, TRIGGER_EVENTFD, [Counter()])


# --- INTx, ERR, REQ ----------------------------------------------------------------------------------
def test_intx_trigger_loopback_mask_unmask(gpu):
    efd = Counter()
    err(errno.EINVAL, gpu.set_irqs, INTX, 0, 1, VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE)  # not enabled
    gpu.set_irqs(INTX, 0, 1, TRIGGER_EVENTFD, [efd])
    gpu.set_irqs(INTX, 0, 1, TRIGGER_NONE)
    gpu.set_irqs(INTX, 0, 1, VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_BOOL, [0])
    assert efd.count == 1
    gpu.set_irqs(INTX, 0, 1, VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE)
    assert gpu.irqs.intx_masked and gpu.dev.config.r16(4) & 0x400          # DisINTx
    err(errno.ENOTTY, gpu.set_irqs, INTX, 0, 1, VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_EVENTFD, [efd])
    gpu.set_irqs(INTX, 0, 1, VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_DATA_BOOL, [1])
    assert not gpu.irqs.intx_masked and not gpu.dev.config.r16(4) & 0x400
    gpu.set_irqs(INTX, 0, 0, TRIGGER_NONE)
    assert gpu.irqs.is_none()
    err(errno.EINVAL, gpu.set_irqs, INTX, 0, 1, TRIGGER_NONE)


def test_err_and_req_eventfds(gpu):
    for index in (ERR, REQ):
        efd = Counter()
        gpu.set_irqs(index, 0, 1, TRIGGER_EVENTFD, [efd])
        gpu.set_irqs(index, 0, 1, TRIGGER_NONE)
        gpu.set_irqs(index, 0, 1, VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_BOOL, [1])
        assert efd.count == 2
        gpu.set_irqs(index, 0, 0, TRIGGER_NONE)                           # count 0: released
        gpu.set_irqs(index, 0, 1, TRIGGER_NONE)
        assert efd.count == 2
        err(errno.EINVAL, gpu.set_irqs, index, 1, 1, TRIGGER_NONE)
        err(errno.ENOTTY, gpu.set_irqs, index, 0, 1, VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_DATA_NONE)


# --- qemu-ref: a real config dump (e1000e: MSI and MSI-X) -----------------------------------------------
def test_qemu_ref_e1000e_msix_through_remapping():
    m = topology.load("qemu-ref")
    vd = vfio_open(m, "0000:02:00.0")
    n = vd.get_irq_info(MSIX).count
    assert n >= 1 and vd.get_irq_info(MSI).count >= 1
    efds = [Counter() for _ in range(n)]
    vd.set_irqs(MSIX, 0, n, TRIGGER_EVENTFD, efds)
    assert len(m.irq_remap.indices(vd.dev)) == n
    vd.write(CONFIG | 4, (int.from_bytes(vd.read(CONFIG | 4, 2), "little") | 0x4).to_bytes(2, "little"))
    assert vd.raise_vector(n - 1).delivered and efds[n - 1].count == 1
    vd.set_irqs(MSIX, 0, 0, TRIGGER_NONE)
    assert m.irq_remap.indices(vd.dev) == []


def test_device_reset_logs_the_function_reset(gpu):
    gpu.reset()
    text = gpu.m.kmsg.text()
    assert "0000:01:00.0: resetting" in text and "0000:01:00.0: reset done" in text


def test_msi_flags_write_cannot_enable_msi_without_set_irqs(gpu):
    f = gpu.dev
    pos = f.caps[0x05]
    gpu.write(CONFIG | (pos + 2), b"\x71")          # enable, 8 vectors
    assert not f.config.r16(pos + 2) & 0x71           # the device: still off, one vector
    assert gpu.read(CONFIG | (pos + 2), 1)[0] & 0x71 == 0
    gpu.set_irqs(MSI, 0, 1, TRIGGER_EVENTFD, [Counter()])
    gpu.write(CONFIG | (pos + 2), b"\x71")
    assert f.config.r16(pos + 2) & 0x71 == 0x01       # enabled, queue size clamped to what was allocated


def test_multiple_msi_shares_one_aligned_block(seed):
    f = seed.lookup("0000:01:00.0")
    pos = f.caps[0x05]
    f.config.w16(pos + 2, f.config.r16(pos + 2) & ~0x0E | 2 << 1)   # the hardware offers 4 vectors
    vd = vfio_open(seed, f.name)
    assert vd.get_irq_info(MSI).count == 4
    efds = [Counter() for _ in range(3)]
    vd.set_irqs(MSI, 0, 3, TRIGGER_EVENTFD, efds)
    t = seed.irq_remap
    idx = t.indices(f)
    assert idx == list(range(idx[0], idx[0] + 3)) and idx[0] % 4 == 0
    assert t.bitmap[idx[0] + 3]                       # the block is rounded up to 4 (alloc_irte)
    assert (f.config.r16(pos + 2) >> 4) & 7 == 2      # MME: 4 messages
    vd.write(CONFIG | 4, (int.from_bytes(vd.read(CONFIG | 4, 2), "little") | 0x4).to_bytes(2, "little"))
    r = vd.raise_vector(2)
    assert r.delivered and r.index == idx[2] and [e.count for e in efds] == [0, 0, 1]
    err(errno.EINVAL, vd.raise_vector, 3)              # allocated for alignment, never enabled
    vd.set_irqs(MSI, 0, 0, TRIGGER_NONE)
    assert t.indices(f) == [] and not any(t[i].present for i in idx) and not t.bitmap[idx[0] + 3]


def test_pcie_device_control_writes_as_vfio_allows(gpu):
    f = gpu.dev
    devctl = f.pcie_cap + 8
    before = f.config.r16(devctl)
    gpu.write(CONFIG | devctl, ((before | 0x0010 | 0x0200) & ~0x00E0 | 0x0020).to_bytes(2, "little"))
    after = f.config.r16(devctl)
    assert after & 0x0010                       # relaxed ordering: written through
    assert after & 0x0200 == before & 0x0200    # phantom functions: never
    assert after & 0x00E0 == before & 0x00E0    # max payload: the device keeps the platform's
    assert int.from_bytes(gpu.read(CONFIG | devctl, 2), "little") & 0x00E0 == 0x0020   # the user sees its own


def test_pcie_initiate_flr_resets_an_flr_capable_function(gpu):
    f = gpu.dev
    devctl = f.pcie_cap + 8
    assert not f.config.r32(f.pcie_cap + 4) & 1 << 28          # DevCap: no FLR in seed-vtd's dump
    gpu.write(CONFIG | devctl, (f.config.r16(devctl) | 0x8000).to_bytes(2, "little"))
    assert "0000:01:00.0: resetting" not in gpu.m.kmsg.text()
    f.config.w32(f.pcie_cap + 4, f.config.r32(f.pcie_cap + 4) | 1 << 28)
    gpu.write(CONFIG | devctl, (f.config.r16(devctl) | 0x8000).to_bytes(2, "little"))
    assert "0000:01:00.0: resetting" in gpu.m.kmsg.text()
    assert not int.from_bytes(gpu.read(CONFIG | devctl, 2), "little") & 0x8000   # reads back clear
    assert not f.config.r16(devctl) & 0x8000


def test_msix_enable_bit_is_virtual(nic):
    f = nic.dev
    pos = f.caps[0x11]
    nic.write(CONFIG | (pos + 2), (0x8000).to_bytes(2, "little"))
    assert nic.read(CONFIG | (pos + 2), 2)[1] & 0x80          # the user reads what it wrote
    assert not f.config.r16(pos + 2) & 0x8000                  # the device is enabled by SET_IRQS only


def test_a_vf_offers_no_intx(seed):
    pf = seed.lookup("0000:03:00.0")
    sriov.enable(seed, pf, 1)
    vf = next(f for f in seed.functions if f.physfn is pf)
    vf.irq, vf.config.bytes[0x3D] = 16, 1          # even with a pin and an irq
    vd = vfio_open(seed, vf.name)
    assert vd.get_irq_info(INTX).count == 0
    assert vd.get_irq_info(MSIX).count >= 1


def test_close_frees_the_irtes_stops_dma_and_restores_config(seed, nic):
    t, f = seed.irq_remap, nic.dev
    present = set(map(int, t.present()))
    at_open = bytes(f.config.bytes)
    efds = [Counter() for _ in range(5)]
    nic.set_irqs(MSIX, 0, 5, TRIGGER_EVENTFD, efds)
    nic.set_irqs(REQ, 0, 1, TRIGGER_EVENTFD, [Counter()])
    cmd = int.from_bytes(nic.read(CONFIG | 4, 2), "little")
    nic.write(CONFIG | 4, (cmd | 0x4).to_bytes(2, "little"))
    devctl = f.pcie_cap + 8
    nic.write(CONFIG | devctl, (f.config.r16(devctl) ^ 0x0010).to_bytes(2, "little"))   # written through
    assert f.config.r16(devctl) != int.from_bytes(at_open[devctl:devctl + 2], "little")
    nic.close()
    assert t.indices(f) == [] and set(map(int, t.present())) == present
    assert not f.config.r16(4) & 0x4
    assert bytes(f.config.bytes) == bytes(at_open[:4]) + (int.from_bytes(at_open[4:6], "little") & ~0x4).to_bytes(
        2, "little") + at_open[6:]
    assert nic.irqs.is_none() and nic.irqs.req_trigger is None
    nic.close()                                              # the last close happens once
