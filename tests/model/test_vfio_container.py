"""VFIO containers, groups and the type1 backend on seed-vtd's VT-d unit (no mount)."""
import errno
import struct

import pytest

from vfakefs.model import topology
from vfakefs.model.base import binding
from vfakefs.model.errors import SysfsError
from vfakefs.model.iommu import iommu
from vfakefs.model.pci import sriov
from vfakefs.model.profile import PROFILES
from vfakefs.model.vfio import type1
from vfakefs.model.vfio.container import VfioContainer
from vfakefs.model.vfio.device import VfioPciDevice
from vfakefs.model.vfio.feature import VFIO_DEVICE_FEATURE_PCI_VF_TOKEN, VFIO_DEVICE_FEATURE_SET
from vfakefs.model.vfio.group import VFIO_GROUP_FLAGS_VIABLE, VfioGroup
from vfakefs.model.vfio.memory import BytesMemory
from tests.model.vfio_machine import group42_machine, to_vfio

GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"
MiB, GiB = 1 << 20, 1 << 30
VBASE = 0x7F00_0000_0000          # the program's buffer (2 MiB aligned)
R, W = type1.VFIO_DMA_MAP_FLAG_READ, type1.VFIO_DMA_MAP_FLAG_WRITE


@pytest.fixture
def m():
    m = group42_machine()
    m.check()
    return m


def rid(m, name=GPU):
    return m.lookup(name).bdf.rid


def ctx_did(m, name=GPU):
    lo, hi = m.iommu_unit().context(rid(m, name))
    return (hi >> 8) & 0xFFFF if lo & 1 else None


def errno_of(fn, *args, **kw):
    with pytest.raises(SysfsError) as e:
        fn(*args, **kw)
    return e.value.errno


def ready(m, **kw):
    """The essay's sequence up to SET_IOMMU(TYPE1v2)."""
    c = VfioContainer(m, memory=kw.pop("memory", BytesMemory(VBASE, 4 * MiB)), **kw)
    g = VfioGroup.open(m, 42)
    g.set_container(c)
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    m.check()
    return c, g


def snapshot(c):
    io = c.iommu
    return ([(d.iova, d.size, d.hpa) for d in io.dma_list], io.domain.table.mapped_pages, io.dma_avail,
            c.locked_vm, list(c.m.vfio_pins), c.m.iommu_unit().iq_tail)


# --- container ioctls ---------------------------------------------------------------------------
def test_api_version_and_extensions(m):
    c = VfioContainer(m)
    assert c.get_api_version() == 0
    assert [c.check_extension(e) for e in range(1, 12)] == [1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0]
    assert errno_of(c.unknown_ioctl) == errno.EINVAL
    g = VfioGroup.open(m, 42)
    g.set_container(c)
    c.set_iommu(type1.VFIO_TYPE1_IOMMU)
    # after SET_IOMMU type1 answers: DMA_CC (ECAP.SC) and UPDATE_VADDR too
    assert [c.check_extension(e) for e in range(1, 12)] == [1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0]
    assert errno_of(c.unknown_ioctl) == errno.ENOTTY
    m.check()


def test_set_iommu_errors_leave_the_container_unset(m):
    c = VfioContainer(m)
    assert errno_of(c.set_iommu, type1.VFIO_TYPE1v2_IOMMU) == errno.EINVAL        # no group
    assert errno_of(c.map_dma, VBASE, 0, 4096) == errno.EINVAL                      # no backend
    g = VfioGroup.open(m, 42)
    g.set_container(c)
    dids = set(m.iommu_unit().domains)
    assert errno_of(c.set_iommu, 2) == errno.ENODEV                                  # SPAPR: no backend
    assert errno_of(c.set_iommu, type1.VFIO_UNMAP_ALL) == errno.EINVAL              # an extension, not a model
    assert c.iommu is None and set(m.iommu_unit().domains) == dids
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    assert errno_of(c.set_iommu, type1.VFIO_TYPE1v2_IOMMU) == errno.EINVAL          # already set
    assert c.iommu.v2
    m.check()


def test_set_iommu_needs_interrupt_remapping(m):
    m.interrupt_remapping = False
    c = VfioContainer(m)
    g = VfioGroup.open(m, 42)
    g.set_container(c)
    dids = set(m.iommu_unit().domains)
    assert errno_of(c.set_iommu, type1.VFIO_TYPE1v2_IOMMU) == errno.EPERM
    assert m.kmsg.records[-1].text == type1.IR_WARNING
    assert 'Use the module param "allow_unsafe_interrupts"' in type1.IR_WARNING
    assert c.iommu is None and set(m.iommu_unit().domains) == dids and ctx_did(m) is None
    m.check()
    c2 = VfioContainer(m, allow_unsafe_interrupts=True)
    g.unset_container()
    g.set_container(c2)
    c2.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    assert ctx_did(m) == c2.iommu.domain.did
    m.check()


# --- groups -------------------------------------------------------------------------------------
def test_one_opener_per_group(m):
    g = VfioGroup.open(m, 42)
    assert errno_of(VfioGroup.open, m, 42) == errno.EBUSY
    assert errno_of(VfioGroup.open, m, 7) == errno.ENODEV           # igb's group: no VFIO node
    g.close()
    VfioGroup.open(m, 42).close()
    m.check()


def test_status_follows_dma_ownership():
    m = topology.load("seed-vtd")
    to_vfio(m, GPU)                                                 # 01:00.1 still on snd_hda_intel
    g = VfioGroup.open(m, 42)
    assert g.get_status() == 0
    assert errno_of(g.get_status, 7) == errno.EINVAL
    did = ctx_did(m)
    assert errno_of(g.set_container, VfioContainer(m)) == errno.EPERM
    assert g.container is None and g.group.owner is None and ctx_did(m) == did
    binding.unbind(m, m.drivers["snd_hda_intel"], AUDIO)           # unbound: viable
    assert g.get_status() == VFIO_GROUP_FLAGS_VIABLE
    m.lookup(AUDIO).driver_override = "pci-stub"
    binding.bind(m, m.drivers["pci-stub"], AUDIO)                  # driver_managed_dma: viable
    assert g.get_status() == 1
    g.set_container(VfioContainer(m))
    assert g.get_status() == 3                                      # VIABLE | CONTAINER_SET
    m.check()


def test_set_container_errors(m):
    g = VfioGroup.open(m, 42)
    assert errno_of(g.set_container, object()) == errno.EBADFD
    assert g.group.owner is None
    assert errno_of(g.unset_container) == errno.EINVAL
    c = VfioContainer(m)
    g.set_container(c)
    assert errno_of(g.set_container, VfioContainer(m)) == errno.EINVAL
    assert errno_of(g.set_container, object()) == errno.EINVAL     # "already set" is checked first
    assert c.groups == [g] and g.group.owner is g
    m.check()


def test_firmware_direct_mapping_refuses_the_claim(m):
    dev = m.lookup(AUDIO)
    dev.rmrrs = ((0x7A000000, 0x7A0FFFFF),)
    g = VfioGroup.open(m, 42)
    did = ctx_did(m)
    assert errno_of(g.set_container, VfioContainer(m)) == errno.EINVAL
    assert m.kmsg.records[-1].text.startswith("vfio-pci 0000:01:00.1: Firmware has requested this device "
                                               "have a 1:1 IOMMU mapping")
    assert g.group.owner is None and ctx_did(m) == did


def test_claim_blocks_then_attaches_a_new_domain(m):
    u = m.iommu_unit()
    default = m.lookup(GPU).group.domain
    g = VfioGroup.open(m, 42)
    c = VfioContainer(m)
    tail = u.iq_tail
    g.set_container(c)
    # blocked: context entries cleared, the old domain's context cache and IOTLB flushed
    assert ctx_did(m) is None and ctx_did(m, AUDIO) is None
    descs = [u.iq[(tail + i) % len(u.iq)][0] for i in range(0, 8, 2)]
    assert descs == [0x1 | 3 << 4 | default.did << 16 | rid(m) << 32, 0x2 | 2 << 4 | 3 << 6 | default.did << 16,
                     0x1 | 3 << 4 | default.did << 16 | rid(m, AUDIO) << 32, 0x2 | 2 << 4 | 3 << 6 | default.did << 16]
    assert u.translate(rid(m), 0x1000).fault.reason == 0x02
    m.check()
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    dom = c.iommu.domain
    assert dom.type == "unmanaged" and dom.did not in (default.did, 0, 1)
    assert ctx_did(m) == ctx_did(m, AUDIO) == dom.did
    assert u.context(rid(m))[0] & ~0xFFF == dom.table.pgd
    m.check()


def test_release_restores_the_default_domain(m):
    u = m.iommu_unit()
    default = m.lookup(GPU).group.domain
    c, g = ready(m)
    vdid = c.iommu.domain.did
    c.map_dma(VBASE, 0, 2 * MiB)
    g.close()                                              # last close of the group fd
    assert m.lookup(GPU).group.domain is default and ctx_did(m) == ctx_did(m, AUDIO) == default.did
    assert vdid not in u.domains and m.vfio_pins == [] and c.locked_vm == 0 and c.iommu is None
    assert g.group.owner is None and g.group.vfio is None
    m.check()
    VfioGroup.open(m, 42).close()                          # the node opens again


def test_unset_container_restores_and_device_fds_hold_it(m):
    c, g = ready(m)
    assert errno_of(g.get_device_fd, GPU + "\n") == errno.ENODEV
    fd = g.get_device_fd(GPU)
    assert isinstance(fd, VfioPciDevice) and fd.dev is m.lookup(GPU) and fd.group is g and fd.m is m
    assert errno_of(g.unset_container) == errno.EBUSY
    assert g.container is c
    fd.close()                                             # the device fd's last close
    assert g.devices == [] and not m.lookup(GPU).config.r16(0x04) & 0x4
    g.unset_container()
    assert g.container is None and c.groups == [] and c.iommu is None
    assert ctx_did(m) == m.lookup(GPU).group.domain.did
    m.check()


# --- GROUP_GET_DEVICE_FD ---------------------------------------------------------------------------
def test_get_device_fd_names_and_order(m):
    g = VfioGroup.open(m, 42)
    assert errno_of(g.get_device_fd, "0000:02:00.0") == errno.ENODEV     # not a member
    assert errno_of(g.get_device_fd, GPU) == errno.EINVAL                # no container
    c = VfioContainer(m)
    g.set_container(c)
    assert errno_of(g.get_device_fd, GPU) == errno.EINVAL                # no SET_IOMMU
    c.set_iommu(type1.VFIO_TYPE1_IOMMU)
    assert errno_of(g.get_device_fd, "01:00.0") == errno.ENODEV
    assert errno_of(g.get_device_fd, GPU + "x") == errno.ENODEV
    assert errno_of(g.get_device_fd, GPU + " bogus") == errno.EINVAL
    assert errno_of(g.get_device_fd, GPU + " vf_token=1234") == errno.EINVAL
    tok = " vf_token=11111111-2222-3333-4444-555555555555"
    assert errno_of(g.get_device_fd, GPU + tok) == errno.EINVAL          # neither PF nor VF
    assert errno_of(g.get_device_fd, GPU + tok + tok) == errno.EINVAL    # duplicate option
    assert g.get_device_fd(GPU + "  ").dev.name == GPU
    assert g.get_device_fd(AUDIO).dev.name == AUDIO
    m.check()


# --- binding while claimed ---------------------------------------------------------------------------
def test_binding_a_dma_api_driver_to_a_claimed_member_is_ebusy(m):
    g = VfioGroup.open(m, 42)
    g.set_container(VfioContainer(m))
    binding.unbind(m, m.drivers["vfio-pci"], AUDIO)
    dev = m.lookup(AUDIO)
    dev.driver_override = None
    assert errno_of(binding.bind, m, m.drivers["snd_hda_intel"], AUDIO) == errno.EBUSY
    assert m.kmsg.records[-1].text == "snd_hda_intel 0000:01:00.1: probe with driver snd_hda_intel failed with error -16"
    assert dev.driver is None and g.group.owner is g
    m.check()
    dev.driver_override = "pci-stub"
    binding.bind(m, m.drivers["pci-stub"], AUDIO)          # driver_managed_dma: allowed
    binding.unbind(m, m.drivers["pci-stub"], AUDIO)
    dev.driver_override = None
    g.close()
    binding.bind(m, m.drivers["snd_hda_intel"], AUDIO)      # released: allowed again
    assert dev.driver.name == "snd_hda_intel"
    m.check()


def test_group_type_cannot_change_while_claimed(m):
    g = VfioGroup.open(m, 42)
    g.set_container(VfioContainer(m))
    assert errno_of(iommu.store_type, m, g.group, "identity") == errno.EPERM
    m.check()


# --- MAP_DMA / UNMAP_DMA ----------------------------------------------------------------------------
def test_map_translates_to_the_pinned_memory(m):
    c, g = ready(m)
    u, dom = m.iommu_unit(), c.iommu.domain
    c.map_dma(VBASE, 0, 2 * MiB)
    c.map_dma(VBASE + 2 * MiB, 0x40_0000 + 0x1000, 0x3000, flags=R)
    m.check()
    dma = c.iommu.dma_list[0]
    t = u.translate(rid(m), 0x1234, 4, write=True)
    assert t.fault is None and t.hpa == dma.hpa + 0x1234
    assert u.translate(rid(m, AUDIO), 0x1FF000).hpa == dma.hpa + 0x1FF000
    mem, vaddr = type1.pinned(m, t.hpa)
    assert mem is c.memory and vaddr == VBASE + 0x1234
    mem.write(vaddr, b"dma!")
    assert c.memory.read(VBASE + 0x1234, 4) == b"dma!"
    # 2 MiB-aligned IOVA, address and size: one 2 MiB leaf; the small map: 4 KiB leaves
    levels = {iova: lv for iova, lv, _ in dom.table.leaves()}
    assert levels[0] == 2 and levels[0x40_1000] == levels[0x40_3000] == 1 and len(levels) == 4
    assert u.translate(rid(m), 0x40_2000, write=True).fault.reason == 0x05     # read-only
    assert u.translate(rid(m), 0x80_0000).fault.reason == 0x06                 # unmapped
    assert c.locked_vm == 512 + 3
    assert type1.pinned(m, 0x1000) is None


def test_gigabyte_map_uses_a_1g_page(m):
    c, g = ready(m, memory=None)
    c.map_dma(VBASE, GiB, GiB)
    assert [(iova, lv) for iova, lv, _ in c.iommu.domain.table.leaves()] == [(GiB, 3)]
    assert m.iommu_unit().translate(rid(m), GiB + 0x12345000).hpa == c.iommu.dma_list[0].hpa + 0x12345000
    m.check()


@pytest.mark.parametrize("args, err", [
    (dict(vaddr=VBASE, iova=0, size=4096, argsz=31), errno.EINVAL),
    (dict(vaddr=VBASE, iova=0, size=4096, flags=8), errno.EINVAL),
    (dict(vaddr=VBASE, iova=0, size=4096, flags=0), errno.EINVAL),
    (dict(vaddr=VBASE, iova=0, size=4096, flags=R | 4), errno.EINVAL),
    (dict(vaddr=VBASE, iova=0x100000, size=4096, flags=4), errno.ENOENT),
    (dict(vaddr=VBASE, iova=0, size=0), errno.EINVAL),
    (dict(vaddr=VBASE, iova=0x800, size=4096), errno.EINVAL),
    (dict(vaddr=VBASE + 8, iova=0, size=4096), errno.EINVAL),
    (dict(vaddr=VBASE, iova=0, size=4095), errno.EINVAL),
    (dict(vaddr=VBASE, iova=(1 << 64) - 4096, size=8192), errno.EINVAL),      # IOVA wraps
    (dict(vaddr=(1 << 64) - 4096, iova=0x100000, size=8192), errno.EINVAL),   # vaddr wraps
    (dict(vaddr=VBASE, iova=0x1000, size=4096), errno.EEXIST),                # inside the first map
    (dict(vaddr=VBASE, iova=0, size=0x200000), errno.EEXIST),
    (dict(vaddr=VBASE, iova=0xFEE00000, size=4096), errno.EINVAL),            # the MSI window
    (dict(vaddr=VBASE, iova=0xFED00000, size=0x200000), errno.EINVAL),        # straddles it
    (dict(vaddr=VBASE, iova=1 << 48, size=4096), errno.EINVAL),               # beyond the aperture
    (dict(vaddr=VBASE + 8 * MiB, iova=0x100000, size=4096), errno.EFAULT),    # not the program's
])
def test_map_errors_change_nothing(m, args, err):
    c, g = ready(m)
    c.map_dma(VBASE, 0, 0x10000)
    before, log = snapshot(c), len(m.kmsg.records)
    assert errno_of(c.map_dma, **args) == err
    assert snapshot(c) == before and len(m.kmsg.records) == log
    m.check()


def test_dma_entry_limit_is_enospc(m):
    c, g = ready(m, dma_entry_limit=2)
    c.map_dma(VBASE, 0, 4096)
    c.map_dma(VBASE, 0x2000, 4096)
    before = snapshot(c)
    assert errno_of(c.map_dma, VBASE, 0x4000, 4096) == errno.ENOSPC
    assert snapshot(c) == before
    c.unmap_dma(0, 4096)
    c.map_dma(VBASE, 0x4000, 4096)                          # an unmap gives the entry back
    m.check()


def test_memlock_limit_is_enomem_with_the_kernels_line(m):
    c, g = ready(m, memlock_limit=64 * 1024 + 100)
    c.map_dma(VBASE, 0, 0x8000)
    c.map_dma(VBASE, 0x10000, 0x8000)                       # exactly the limit: allowed
    before = snapshot(c)
    assert errno_of(c.map_dma, VBASE, 0x20000, 4096) == errno.ENOMEM
    assert m.kmsg.records[-1].text == "vfio_pin_pages_remote: RLIMIT_MEMLOCK (65536) exceeded"
    assert m.kmsg.records[-1].level == 4
    assert snapshot(c) == before
    c2, _ = (VfioContainer(m, memlock_limit=4096, cap_ipc_lock=True), None)
    g.unset_container()
    g.set_container(c2)
    c2.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    c2.map_dma(VBASE, 0, 0x10000)                           # CAP_IPC_LOCK: no limit
    m.check()


def last_psi(u):
    """The last page-selective IOTLB descriptor queued (each is followed by a wait)."""
    return u.iq[(u.iq_tail - 2) % len(u.iq)][:2]


def test_unmap_queues_page_selective_invalidations(m):
    c, g = ready(m)
    u, did = m.iommu_unit(), c.iommu.domain.did
    c.map_dma(VBASE, 0, 2 * MiB)
    c.map_dma(VBASE, 0x40_0000, 0x4000)
    c.map_dma(VBASE, 0x50_3000, 0x1000)
    assert u.translate(rid(m), 0x40_1000).fault is None     # in the IOTLB now
    head = 0x2 | 3 << 4 | 3 << 6 | did << 16
    assert c.unmap_dma(0x40_0000, 0x4000) == 0x4000
    IH = 1 << 6                             # only leaves changed (6.12 keeps the hint)
    assert last_psi(u) == (head, 0x40_0000 | IH | 2)
    assert u.translate(rid(m), 0x40_1000).fault.reason == 0x06
    assert c.unmap_dma(0x50_3000, 0x1000) == 0x1000
    assert last_psi(u) == (head, 0x50_3000 | IH | 0)
    superpage = len(c.iommu.domain.table.entries(0)) < c.iommu.domain.table.levels
    tables = u.mem.allocated
    assert c.unmap_dma(0, 2 * MiB) == 2 * MiB
    # a 2 MiB leaf table wholly unmapped goes back to memory (dma_pte_clear_level): no IH then
    assert u.mem.allocated == tables - (0 if superpage else 1)
    assert last_psi(u) == (head, 0 | (IH if superpage else 0) | 9)
    assert c.iommu.domain.table.mapped_pages == 0 and c.locked_vm == 0 and m.vfio_pins == []
    assert c.unmap_dma(0, 2 * MiB) == 0                     # nothing there: success, zero bytes
    m.check()


def test_unmap_all_and_unmap_errors(m):
    c, g = ready(m)
    c.map_dma(VBASE, 0, 0x4000)
    c.map_dma(VBASE, 0x10000, 0x2000)
    before = snapshot(c)
    ALL = type1.VFIO_DMA_UNMAP_FLAG_ALL
    for kw, err in [(dict(iova=0, size=0x4000, argsz=23), errno.EINVAL),
                    (dict(iova=0, size=0x4000, flags=8), errno.EINVAL),
                    (dict(iova=0, size=0x4000, flags=ALL | 1), errno.EINVAL),
                    (dict(iova=0, size=0x4000, flags=1), errno.EINVAL),
                    (dict(iova=0, size=0), errno.EINVAL),
                    (dict(iova=0, size=0x800), errno.EINVAL),
                    (dict(iova=0x800, size=0x1000), errno.EINVAL),
                    (dict(iova=(1 << 64) - 4096, size=0x2000), errno.EINVAL),
                    (dict(iova=0x1000, size=0x3000), errno.EINVAL),     # v2: bisects the first map
                    (dict(iova=0, size=0x2000), errno.EINVAL),
                    (dict(iova=0x1000, size=0, flags=ALL), errno.EINVAL),
                    (dict(iova=0, size=0x1000, flags=ALL), errno.EINVAL)]:
        assert errno_of(c.unmap_dma, **kw) == err, kw
        assert snapshot(c) == before
    assert c.unmap_dma(0, 0, flags=ALL) == 0x6000
    assert c.iommu.dma_list == [] and c.iommu.dma_avail == type1.DMA_ENTRY_LIMIT
    m.check()


def test_v1_unmap_inside_a_mapping_unmaps_nothing(m):
    c = VfioContainer(m, memory=BytesMemory(VBASE, MiB))
    g = VfioGroup.open(m, 42)
    g.set_container(c)
    c.set_iommu(type1.VFIO_TYPE1_IOMMU)
    c.map_dma(VBASE, 0, 0x4000)
    assert c.unmap_dma(0x1000, 0x1000) == 0 and len(c.iommu.dma_list) == 1
    assert c.unmap_dma(0, 0x1000) == 0x4000                 # covering its first IOVA: all of it
    m.check()


# --- IOMMU_GET_INFO ----------------------------------------------------------------------------
def parse_caps(buf):
    caps, off = {}, struct.unpack_from("<I", buf, 16)[0]
    while off:
        cid, ver, nxt = struct.unpack_from("<HHI", buf, off)
        caps[cid] = (ver, off)
        off = nxt
    return caps


def test_get_info_capabilities(m):
    c, g = ready(m)
    assert errno_of(c.get_info, 15) == errno.EINVAL
    short = c.get_info(16)
    need, flags, pgsizes = struct.unpack("<IIQ", short)
    assert flags == 3 and pgsizes == 0x1000 | 0x200000 | 0x40000000
    assert need == 24 + 32 + 16 + 16 + 2 * 16 and len(short) == 16
    assert c.get_info(24)[16:] == b"\0" * 8                 # no room for the chain: cap_offset 0
    c.map_dma(VBASE, 0, 0x1000)
    buf = c.get_info(need)
    assert len(buf) == need and struct.unpack_from("<I", buf, 16)[0] == 24
    caps = parse_caps(buf)
    assert list(caps) == [2, 3, 1] and all(v == 1 for v, _ in caps.values())
    assert struct.unpack_from("<I4xQQ", buf, caps[2][1] + 8) == (0, 0x1000, 0x10000000)
    assert struct.unpack_from("<I", buf, caps[3][1] + 8)[0] == 65534
    off = caps[1][1]
    nr = struct.unpack_from("<I", buf, off + 8)[0]
    ranges = [struct.unpack_from("<QQ", buf, off + 16 + 16 * i) for i in range(nr)]
    assert ranges == [(0, 0xFEDFFFFF), (0xFEF00000, (1 << 48) - 1)]
    m.check()


def _vf_in_a_container(m, pf, n: int):
    """n VFs on pf; the first on vfio-pci, its group in a type1v2 container."""
    sriov.configure(m, pf, n)
    vf = next(f for f in m.functions if f.is_virtfn and f.physfn is pf)
    to_vfio(m, vf.name)
    g = VfioGroup.open(m, vf.group.id)
    c = VfioContainer(m)
    g.set_container(c)
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    return vf, g


def test_vf_token_rules():
    m = topology.load("seed-vtd")
    m.vfio_enable_sriov = True
    pf = m.lookup("0000:03:00.0")
    to_vfio(m, pf.name)
    vf, g = _vf_in_a_container(m, pf, 2)
    assert errno_of(g.get_device_fd, vf.name) == errno.EACCES
    assert m.kmsg.records[-1].text == f"vfio-pci {vf.name}: VF token required to access device"
    wrong = " vf_token=11111111-2222-3333-4444-555555555555"
    assert errno_of(g.get_device_fd, vf.name + wrong) == errno.EACCES
    assert m.kmsg.records[-1].text == f"vfio-pci {vf.name}: Incorrect VF token provided for device"
    assert g.devices == []
    # the PF's token is random (vfio_pci_vf_init) until the PF's user sets one: VFIO_DEVICE_FEATURE
    gpf = VfioGroup.open(m, pf.group.id)
    gpf.set_container(g.container)
    gpf.get_device_fd(pf.name).feature(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN,
                                       data=bytes.fromhex("11111111222233334444555555555555"))
    assert g.get_device_fd(vf.name + wrong).dev is vf
    m.check()


def test_vf_token_with_the_pf_on_another_driver_is_einval():
    m = topology.load("seed-vtd")
    pf = m.lookup("0000:03:00.0")
    vf, g = _vf_in_a_container(m, pf, 1)                    # ixgbe keeps the PF
    tok = " vf_token=00000000-0000-0000-0000-000000000000"
    assert errno_of(g.get_device_fd, vf.name + tok) == errno.EINVAL
    assert m.kmsg.records[-1].text == f"vfio-pci {vf.name}: VF token incorrectly provided, PF not bound to vfio-pci"
    assert g.get_device_fd(vf.name).dev is vf
    m.check()


def test_kernel_6_1_differences(m):
    m.profile = PROFILES["6.1"]
    g = VfioGroup.open(m, 42)
    assert errno_of(g.set_container, object()) == errno.EINVAL     # vfio_group_set_container: not vfio_fops
    assert g.group.owner is None
    c = VfioContainer(m, memory=BytesMemory(VBASE, 4 * MiB))
    g.set_container(c)
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    assert struct.unpack_from("<Q", c.get_info(16), 8)[0] == 0x1000   # intel_iommu_ops: SZ_4K
    c.map_dma(VBASE, 0, 2 * MiB)
    assert [lv for _, lv, _ in c.iommu.domain.table.leaves()] == [2]  # map_pages still builds a superpage
    m.check()


def test_two_groups_share_the_containers_domain(m):
    NIC = "0000:02:00.0"
    to_vfio(m, NIC)
    c, g = ready(m)
    did = c.iommu.domain.did
    nic_default = m.lookup(NIC).group.domain
    c.map_dma(VBASE, 0, 0x4000)
    g2 = VfioGroup.open(m, m.lookup(NIC).group.id)
    assert errno_of(g2.unknown_ioctl) == errno.ENOTTY
    g2.set_container(c)                                     # backend set: attached at once
    assert ctx_did(m, NIC) == did and len(c.groups) == 2
    hpa = c.iommu.dma_list[0].hpa
    assert m.iommu_unit().translate(rid(m, NIC), 0x2000).hpa == hpa + 0x2000
    m.check()
    g.close()                                               # one group leaves: the mappings stay
    assert ctx_did(m) == m.lookup(GPU).group.domain.did
    assert c.iommu.domain.did == did and m.iommu_unit().translate(rid(m, NIC), 0x2000).hpa == hpa + 0x2000
    m.check()
    g2.unset_container()                                    # the last one: backend and domain go
    assert c.iommu is None and did not in m.iommu_unit().domains and m.vfio_pins == []
    assert m.lookup(NIC).group.domain is nic_default and ctx_did(m, NIC) == nic_default.did
    m.check()


def test_joining_a_set_container_undoes_the_claim_on_attach_failure(m):
    NIC = "0000:02:00.0"
    to_vfio(m, NIC)
    c, g = ready(m)
    m.interrupt_remapping = False
    g2 = VfioGroup.open(m, m.lookup(NIC).group.id)
    nic_did = ctx_did(m, NIC)
    assert errno_of(g2.set_container, c) == errno.EPERM
    assert m.kmsg.records[-1].text == type1.IR_WARNING
    assert g2.container is None and g2.group.owner is None and ctx_did(m, NIC) == nic_did
    assert c.groups == [g] and c.iommu.groups == [g]
    m.check()
