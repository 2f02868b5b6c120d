"""Device DMA reaching a VFIO program's memory (no mount): group 42 on seed-vtd (01:00.0
and 01:00.1 on vfio-pci) in a container whose program memory is a BytesMemory; the
device's writes and reads go through the container's domain to the pinned pages, page
by page, stopping at the first fault; through the model function (iommu/device_dma.py)
and through the `dma` control's text."""
from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given, settings, strategies as st

from vfakefs.model import controls, topology
from vfakefs.model.errors import SysfsError
from vfakefs.model.iommu import iommu
from vfakefs.model.iommu.device_dma import dma_read, dma_write
from vfakefs.model.vfio import type1
from vfakefs.model.vfio.container import VfioContainer
from vfakefs.model.vfio.group import VfioGroup
from vfakefs.model.vfio.memory import BytesMemory
from tests.model.vfio_machine import claim_group42, group42_machine

GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"
MiB = 1 << 20
VBASE = 0x7F00_0000_0000          # the program's buffer (2 MiB aligned)
R = type1.VFIO_DMA_MAP_FLAG_READ
CONFIG = 7 << 40


class CountingMemory(BytesMemory):
    """A program's memory that counts the calls made on it (process_vm_writev's)."""

    def __init__(self, base, size):
        super().__init__(base, size)
        self.writes, self.reads = [], []

    def write(self, vaddr, data):
        self.writes.append((vaddr, len(data)))
        super().write(vaddr, data)

    def read(self, vaddr, n):
        self.reads.append((vaddr, n))
        return super().read(vaddr, n)


@pytest.fixture
def m():
    m = group42_machine()
    return m


@pytest.fixture
def vfio(m):
    """The essay's sequence: container, group 42, TYPE1v2, the GPU's device fd with bus
    mastering set through its config region, as a driver in the program would."""
    mem = CountingMemory(VBASE, 8 * MiB)
    c, _g, vd = claim_group42(m, mem)
    return c, vd, mem


def faults(m):
    return [f for f in m.iommu_unit().fault_log]


# --- the model function ---------------------------------------------------------------------------
def test_write_lands_in_the_program_buffer_in_one_call(m, vfio):
    c, vd, mem = vfio
    c.map_dma(VBASE, 0, 2 * MiB)                   # one 2 MiB superpage
    data = bytes(range(256)) * 4096                # 1 MiB
    mem.writes.clear()
    r = dma_write(m, vd.dev, 0x1000, data)
    assert (r.issued, r.done, r.fault) == (True, MiB, None)
    assert r.hpa == c.iommu.dma_list[0].hpa + 0x1000
    assert mem.buf[0x1000:0x1000 + MiB] == data and mem.buf[:0x1000] == bytes(0x1000)
    assert mem.writes == [(VBASE + 0x1000, MiB)]   # physically contiguous: one process_vm_writev
    back = dma_read(m, vd.dev, 0x1000, MiB)
    assert back.data == data and back.done == MiB and back.iotlb_hit
    m.check()


def test_separate_mappings_are_separate_calls_at_their_own_addresses(m, vfio):
    """Two MAP_DMAs next to each other in IOVA but not in the program: the transfer is
    split where the pinned memory changes, each piece at its own vaddr."""
    c, vd, mem = vfio
    c.map_dma(VBASE + 4 * MiB, 0x10000, 0x2000)
    c.map_dma(VBASE, 0x12000, 0x1000)
    mem.writes.clear()
    r = dma_write(m, vd.dev, 0x11800, b"\xaa" * 0x1000)
    assert r.done == 0x1000 and r.fault is None
    assert mem.writes == [(VBASE + 4 * MiB + 0x1800, 0x800), (VBASE, 0x800)]
    assert mem.buf[4 * MiB + 0x1800:4 * MiB + 0x2000] == b"\xaa" * 0x800
    assert mem.buf[:0x800] == b"\xaa" * 0x800 and mem.buf[0x800] == 0


def test_stops_at_the_first_page_that_faults(m, vfio):
    c, vd, mem = vfio
    c.map_dma(VBASE, 0, 0x2000)
    c.map_dma(VBASE + 0x3000, 0x3000, 0x1000)      # the page after the hole is mapped
    before = vd.dev.dma_faults
    r = dma_write(m, vd.dev, 0x1800, b"\x55" * 0x3000)
    assert r.done == 0x800                         # the rest of page 0x1000, then 0x2000 faults
    assert (r.fault.addr, r.fault.reason, r.fault.read) == (0x2000, 0x05, False)
    assert mem.buf[0x1800:0x2000] == b"\x55" * 0x800
    assert mem.buf[0x2000:0x5000] == bytes(0x3000)  # nothing at or past the fault, mapped or not
    assert vd.dev.dma_faults == before + 1
    assert "DMAR: [DMA Write NO_PASID] Request device [01:00.0] fault addr 0x2000 [fault reason 0x05] " \
           "PTE Write access is not set" in m.kmsg.text()
    r = dma_read(m, vd.dev, 0x1ffe, 4)
    assert r.data == b"\x55\x55" and r.fault.reason == 0x06 and r.fault.read


@pytest.mark.parametrize("pages", [2, 16, 17, 300])      # walked one by one up to 16 pages, batched above
def test_both_walks_stop_at_the_same_place(m, vfio, pages):
    c, vd, mem = vfio
    c.map_dma(VBASE, 0, (pages - 1) * 0x1000)                       # the last page of the request: a hole
    errors = len(faults(m))
    r = dma_write(m, vd.dev, 0x10, b"\x77" * (pages * 0x1000 - 0x20))
    end = (pages - 1) * 0x1000
    assert r.done == end - 0x10 and (r.fault.addr, r.fault.reason) == (end, 0x05)
    assert mem.buf[0x10:end] == b"\x77" * (end - 0x10) and mem.buf[end:end + 0x1000] == bytes(0x1000)
    assert faults(m)[errors:] == [r.fault]                         # one fault, serviced and logged
    assert f"fault addr {end:#x} [fault reason 0x05]" in m.kmsg.text()
    r = dma_read(m, vd.dev, 0, pages * 0x1000)
    assert r.done == end and r.data[0x10:end] == b"\x77" * (end - 0x10) and r.fault.read
    again = dma_read(m, vd.dev, 0, end)
    assert again.iotlb_hit and again.fault is None and again.data == r.data


def test_read_only_mapping_reads_and_refuses_writes(m, vfio):
    c, vd, mem = vfio
    c.map_dma(VBASE, 0, 0x1000, flags=R)
    mem.write(VBASE + 0x10, b"from the program")
    assert dma_read(m, vd.dev, 0x10, 16).data == b"from the program"
    r = dma_write(m, vd.dev, 0x10, b"x" * 16)
    assert r.done == 0 and r.fault.reason == 0x05 and r.hpa is None
    assert mem.read(VBASE + 0x10, 16) == b"from the program"


def test_no_bus_mastering_no_request(m, vfio):
    c, vd, mem = vfio
    c.map_dma(VBASE, 0, 0x1000)
    cmd = int.from_bytes(vd.read(CONFIG | 4, 2), "little")
    vd.write(CONFIG | 4, (cmd & ~0x4).to_bytes(2, "little"))
    errors = len(faults(m))
    r = dma_write(m, vd.dev, 0, b"x")
    assert not r.issued and r.done == 0 and mem.buf[0] == 0 and len(faults(m)) == errors


def test_unmap_cuts_the_device_off(m, vfio):
    c, vd, mem = vfio
    c.map_dma(VBASE, 0, 0x1000)
    assert dma_write(m, vd.dev, 0, b"a").done == 1                 # the translation is cached now
    c.unmap_dma(0, 0x1000)                                         # ...and invalidated by the unmap
    r = dma_write(m, vd.dev, 0, b"b")
    assert r.done == 0 and r.fault.reason == 0x05 and mem.buf[0] == ord("a")


def test_the_other_group_member_reaches_the_same_memory(m, vfio):
    c, vd, mem = vfio
    c.map_dma(VBASE, 0, 0x1000)
    audio = m.lookup(AUDIO)
    audio.config.w16(4, audio.config.r16(4) | 0x4)
    assert dma_write(m, audio, 0x20, b"hda").done == 3
    assert mem.read(VBASE + 0x20, 3) == b"hda"


def test_program_memory_gone_drops_writes_and_reads_zeros(m, vfio):
    """The pages stay pinned when the program unmaps its buffer (a real device still
    reaches them); the program no longer sees them, and here they hold nothing."""
    c, vd, mem = vfio
    c.map_dma(VBASE, 0, 0x1000)
    mem.buf[:4] = b"live"
    mem.base = 0x1000                              # the program's mapping moved away: EFAULT at VBASE
    assert dma_write(m, vd.dev, 0, b"gone").done == 4
    assert dma_read(m, vd.dev, 0, 4).data == bytes(4)
    assert mem.buf[:4] == b"live"


def test_memory_outside_any_program_keeps_what_devices_write(m):
    """A kernel driver's dma_map buffer: host RAM the model keeps (sparse, zero until written)."""
    ixgbe = m.lookup("0000:03:00.0")
    iova = iommu.dma_map(m, ixgbe, 0x3000)
    r = dma_write(m, ixgbe, iova + 0xFFE, b"0123")
    assert r.done == 4 and r.fault is None
    assert dma_read(m, ixgbe, iova + 0xFFC, 8).data == b"\0\0" + b"0123" + b"\0\0"
    assert m.ram.read(r.hpa, 4) == b"0123"


def test_no_remapping_unit_bus_address_is_host_address():
    m = topology.load("seed-vtd")
    m.dmar = []
    f = m.lookup("0000:03:00.0")
    r = dma_write(m, f, 0x5000, b"abc")
    assert (r.hpa, r.done) == (0x5000, 3) and m.ram.read(0x5000, 3) == b"abc"


def test_bad_ranges_are_einval(m, vfio):
    _, vd, _ = vfio
    for iova, n in ((-1, 1), (0, -1), ((1 << 64) - 2, 4)):
        with pytest.raises(SysfsError) as e:
            dma_read(m, vd.dev, iova, n)
        assert e.value.errno == errno.EINVAL


# --- the control's text ------------------------------------------------------------------------------
def test_dma_control_write_repeats_the_data_into_the_program(m, vfio):
    c, vd, mem = vfio
    c.map_dma(VBASE, 0, 2 * MiB)
    hpa = c.iommu.dma_list[0].hpa
    a = controls.dma_request(m, f"{GPU} write 0x1000 10 data=c0ffee\n")
    assert a == f"{GPU} write iova 0x1000 -> hpa {hpa + 0x1000:#x}\n"
    assert mem.read(VBASE + 0x1000, 11) == bytes.fromhex("c0ffeec0ffeec0ffeec000")
    a = controls.dma_request(m, f"{GPU} read 0x1000 12")
    assert a == f"{GPU} read iova 0x1000 -> hpa {hpa + 0x1000:#x} (iotlb hit)\ndata c0ffeec0ffeec0ffeec00000\n"
    controls.dma_request(m, f"{GPU} write 0x1001 2")                # no data=: zeros
    assert mem.read(VBASE + 0x1000, 4) == bytes.fromhex("c00000c0")
    controls.dma_request(m, f"{GPU} write 0x2000 2 data=0102030405")  # longer than the length: cut
    assert mem.read(VBASE + 0x2000, 3) == b"\1\2\0"


def test_dma_control_answers_a_partial_transfer(m, vfio):
    c, vd, mem = vfio
    c.map_dma(VBASE, 0, 0x1000)
    a = controls.dma_request(m, f"{GPU} write 0xffe 4 data=abcd")
    line = ("[DMA Write NO_PASID] Request device [01:00.0] fault addr 0x1000 [fault reason 0x05] "
            "PTE Write access is not set")
    assert a == f"{GPU} write iova 0xffe: fault: {line}\nwrote 2 of 4 bytes\n"
    assert mem.read(VBASE + 0xFFE, 2) == b"\xab\xcd"


@pytest.mark.parametrize("text,why", [
    (f"{GPU} write 0x1000 4 data=", "data= is empty"),
    (f"{GPU} write 0x1000 4 data=123", "data= has 3 hex digits, not whole bytes"),
    (f"{GPU} write 0x1000 4 data=12g4", "data= holds 'g', not a hex digit"),
    (f"{GPU} read 0x1000 4 data=00", "data= is for writes only"),
    (f"{GPU} write 0x1000 4 pattern=00", "unknown setting 'pattern=00'"),
])
def test_dma_control_bad_payload_changes_nothing(m, vfio, text, why):
    c, vd, mem = vfio
    c.map_dma(VBASE, 0, 0x2000)
    mem.buf[0x1000:0x1004] = b"keep"
    iotlb = m.iommu_unit().iotlb.stats()
    with pytest.raises(SysfsError) as e:
        controls.dma_request(m, text)
    assert e.value.errno == errno.EINVAL
    assert m.kmsg.records[-1].text == f"vfakefs: dma: {why}"
    assert mem.buf[0x1000:0x1004] == b"keep" and m.iommu_unit().iotlb.stats() == iotlb


# --- as a property: the transfer against a byte-by-byte reference -----------------------------------
PAGES = 48          # the IOVA space the property plays in: 48 pages from 0


@settings(max_examples=int(os.environ.get("VTD_EXAMPLES", "25")), deadline=None)
@given(st.data())
def test_transfers_match_a_byte_by_byte_reference(data):
    """Whatever is mapped where (pages of the IOVA space to scattered program pages, in
    runs of MAP_DMAs), a write lands byte for byte where the mappings say, up to the
    first unmapped page, and a read returns what the program holds there."""
    m = group42_machine()
    mem = CountingMemory(VBASE, 2 * PAGES * 4096)
    c = VfioContainer(m, memory=mem)
    g = VfioGroup.open(m, 42)
    g.set_container(c)
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    dev = m.lookup(GPU)
    dev.config.w16(4, dev.config.r16(4) | 0x4)
    where = {}                                                   # IOVA page -> program page
    free = list(range(2 * PAGES))
    page = 0
    while page < PAGES:
        page += data.draw(st.integers(0, 3))                     # a hole, maybe
        n = data.draw(st.integers(1, 20))
        if page + n > PAGES:
            break
        vpage = data.draw(st.sampled_from([p for p in free if all(p + k in free for k in range(n))] or [None]))
        if vpage is None:
            break
        c.map_dma(VBASE + vpage * 4096, page * 4096, n * 4096)
        for k in range(n):
            where[page + k] = vpage + k
            free.remove(vpage + k)
        page += n
    iova = data.draw(st.integers(0, PAGES * 4096 - 1))
    length = data.draw(st.integers(1, PAGES * 4096 - iova))
    seed = data.draw(st.integers(0, 254))
    payload = bytes((i * 131 + seed) % 255 + 1 for i in range(length))     # never 0, rarely repeating
    expect = bytearray(mem.buf)
    done = 0
    for a in range(iova, iova + length):
        if a >> 12 not in where:
            break
        expect[where[a >> 12] * 4096 + (a & 0xFFF)] = payload[a - iova]
        done += 1
    r = dma_write(m, dev, iova, payload)
    assert r.done == done and mem.buf == expect
    assert (r.fault is None) == (done == length)
    if r.fault is not None:
        assert r.fault.addr == (iova + done) & ~0xFFF
    back = dma_read(m, dev, iova, length)
    assert back.done == done and back.data == payload[:done]
