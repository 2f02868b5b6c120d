"""vfakefs's own controls (MNT/sys/kernel/debug/vfakefs/) driven through real mounts:
from bash (`exec 3<>FILE; echo ... >&3; cat <&3`, the answer read back on the same
file descriptor), from python's os.open, and through vfakefs.client. What they
cause is read back where a user would look: MNT/dev/kmsg (non-blocking reads),
iommu/intel/dmar_table_errors, ir_translation_struct and the config space.

Mapped IOVAs. The DMA control only answers; it maps nothing. Two sources of
mappings exist without touching the model:
- qemu-ref's IOMMU group 5 (the ICH9 functions 00:1f.0/2/3) has the ISA window
  0-16 MiB (reserved region `direct-relaxable`) mapped 1:1 at boot. Of its
  members only 00:1f.2 has bus mastering enabled (command 0x0107; 00:1f.0 and
  00:1f.3 answer "not issued"), so 00:1f.2 reading 0x1000 translates to 0x1000.
- `traffic start <bdf> ws=N` dma_maps N bytes for the stream, top-down below
  4 GiB: the first mapping of a domain is at 0x100000000 - N.
"""
from __future__ import annotations

import errno
import os
import re

import pytest

from tests.conftest import run, sh
from vfakefs.client import Controls

VF = "sys/kernel/debug/vfakefs"
INTEL = "sys/kernel/debug/iommu/intel"
NVME, E1000E, AHCI = "0000:01:00.0", "0000:02:00.0", "0000:00:1f.2"     # qemu-ref
IXGBE = "0000:03:00.0"                                                 # seed-vtd
SID_FAIL = "Blocked an interrupt request due to source-id verification failure"


class Kmsg:
    """New records of MNT/dev/kmsg since this reader was made: O_NONBLOCK reads, one
    record each, until EAGAIN."""

    def __init__(self, mnt):
        self.fd = os.open(mnt.path / "dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def new(self) -> list[tuple[int, str]]:
        out = []
        while True:
            try:
                rec = os.read(self.fd, 8192).decode()
            except BlockingIOError:
                return out
            prio, _, _, rest = rec.split(",", 3)
            out.append((int(prio), rest.split(";", 1)[1].rstrip("\n")))

    def close(self):
        os.close(self.fd)


@pytest.fixture
def kmsg():
    readers = []

    def make(mnt) -> Kmsg:
        readers.append(Kmsg(mnt))
        return readers[-1]

    yield make
    for r in readers:
        r.close()


def ask(mnt, control: str, *requests: str) -> list[str]:
    """One bash: open the control read-write on fd 3, then for each request write it
    and `cat` the answer from the same fd."""
    f = mnt.path / VF / control
    script = f"exec 3<>{f}\n" + "".join(f"echo '{r}' >&3 && cat <&3 && echo @@\n" for r in requests)
    r = sh(script)
    assert r.returncode == 0, r.stderr
    return [a.strip("\n") for a in r.stdout.split("@@\n")[:-1]]


def command_word(mnt, bdf: str) -> int:
    """The command register (config bytes 4-5) as `od` reads it."""
    r = run(["od", "-An", "-tx1", "-j4", "-N2", mnt.devdir(bdf) / "config"])
    assert r.returncode == 0, r.stderr
    lo, hi = r.stdout.split()
    return int(hi + lo, 16)


def dmar_table_errors(mnt) -> list[str]:
    return mnt.read(mnt.path / INTEL / "dmar_table_errors").splitlines()


def fault(kind: str, dev: str, addr: int, reason: int, text: str) -> str:
    return f"[{kind} NO_PASID] Request device [{dev}] fault addr {addr:#x} [fault reason {reason:#04x}] {text}"


# --- DMA ----------------------------------------------------------------------------------------
def test_dma_mapped_through_the_isa_window(mount_preset):
    mnt = mount_preset("qemu-ref")
    assert "0x0000000000000000 0x0000000000ffffff direct-relaxable" in \
        mnt.read(mnt.path / "sys/kernel/iommu_groups/5/reserved_regions")
    assert AHCI in os.listdir(mnt.path / "sys/kernel/iommu_groups/5/devices")
    assert command_word(mnt, AHCI) & 0x4                           # bus master enable
    first, again, write = ask(mnt, "dma", f"{AHCI} read 0x1000 64", f"{AHCI} read 0x1000 64",
                              f"{AHCI} write 0xfff000 4096")
    zeros = "00" * 64                                            # host RAM nobody wrote yet
    assert first == f"{AHCI} read iova 0x1000 -> hpa 0x1000\ndata {zeros}"     # a walk fills the IOTLB...
    assert again == f"{AHCI} read iova 0x1000 -> hpa 0x1000 (iotlb hit)\ndata {zeros}"   # ...the next one hits
    assert write == f"{AHCI} write iova 0xfff000 -> hpa 0xfff000"
    assert dmar_table_errors(mnt) == []
    assert ask(mnt, "dma", f"{AHCI} read 0x1000000 4") == [     # one page past the window
        f"{AHCI} read iova 0x1000000: fault: " + fault("DMA Read", "00:1f.2", 0x1000000, 6,
                                                       "PTE Read access is not set")]
    assert ask(mnt, "dma", "0000:00:1f.3 read 0x1000 4") == [   # same group, bus mastering off
        "0000:00:1f.3 read iova 0x1000: not issued (bus mastering disabled)"]


def test_dma_mapped_by_traffic(mount_preset):
    mnt = mount_preset("seed-vtd")
    t = mnt.path / VF / "traffic"
    assert sh(f"echo 'start {IXGBE} rate=1 ws=16384' > {t}").returncode == 0
    try:
        assert re.fullmatch(rf"{IXGBE} rate=1 mix=0\.70 ws=16384 pattern=sequential requests=\d+ faults=0 behind=0 "
                            r"latency=\[(\d+ ){7}\d+\]\n", mnt.read(t))
        base = 0x100000000 - 16384
        answers = ask(mnt, "dma", f"{IXGBE} read {base:#x} 64", f"{IXGBE} write {base + 0x3000:#x} 4096",
                      f"{IXGBE} read 0x100000000 4")
        assert re.fullmatch(rf"{IXGBE} read iova {base:#x} -> hpa 0x[0-9a-f]+( \(iotlb hit\))?\ndata (00){{64}}",
                            answers[0])
        hpa = int(answers[0].split("hpa ")[1].split()[0], 16)
        assert re.fullmatch(rf"{IXGBE} write iova {base + 0x3000:#x} -> hpa {hpa + 0x3000:#x}( \(iotlb hit\))?",
                            answers[1])
        assert answers[2] == f"{IXGBE} read iova 0x100000000: fault: " + \
            fault("DMA Read", "03:00.0", 0x100000000, 6, "PTE Read access is not set")
        dom = mnt.read(mnt.path / INTEL / IXGBE / "domain_translation_struct")
        assert [r.split(" |")[0] for r in dom.splitlines()[2:]] == ["0x00000000ffffc", "0x00000000ffffd",
                                                                    "0x00000000ffffe", "0x00000000fffff"]
    finally:
        sh(f"echo 'stop all' > {t}")
    assert mnt.read(t) == ""


def test_traffic_at_the_bounds_runs_and_restart_unmaps(mount_preset):
    """The largest stream allowed (rate 1,000,000/s, ws 1 GiB) starts, its buffer is
    mapped below 4 GiB clear of the MSI window, DMA into it translates and the
    mount keeps answering while it runs; restarting the stream with a small buffer
    unmaps the big one; stop unmaps the rest."""
    mnt = mount_preset("seed-vtd")
    t = mnt.path / VF / "traffic"
    dom = mnt.path / INTEL / IXGBE / "domain_translation_struct"
    assert sh(f"echo 'start {IXGBE} rate=1000000 ws=1073741824 pattern=random' > {t}").returncode == 0
    try:
        assert mnt.read(t).startswith(f"{IXGBE} rate=1000000 mix=0.70 ws=1073741824 pattern=random ")
        (a,) = ask(mnt, "dma", f"{IXGBE} read 0x80001000 64")
        assert re.fullmatch(rf"{IXGBE} read iova 0x80001000 -> hpa 0x[0-9a-f]+( \(iotlb hit\))?\ndata (00){{64}}", a), a
        assert mnt.read(mnt.pci / "devices" / IXGBE / "vendor") == "0x8086\n"
        rows = [r.split(" |")[0] for r in mnt.read(dom).splitlines()[2:]]
        assert rows == ["0x0000000080000"]          # the first buffer sits at 4 GiB: one 1 GiB superpage
        assert sh(f"echo 'start {IXGBE} rate=10 ws=8192' > {t}").returncode == 0
        rows = [r.split(" |")[0] for r in mnt.read(dom).splitlines()[2:]]
        assert rows == ["0x00000000ffffe", "0x00000000fffff"]
    finally:
        sh(f"echo 'stop all' > {t}")
    assert mnt.read(t) == "" and mnt.read(dom).splitlines()[2:] == []


def test_dma_unmapped_read_and_write_fault(mount_preset, kmsg):
    mnt = mount_preset("qemu-ref")
    log = kmsg(mnt)
    read, write = ask(mnt, "dma", f"{E1000E} read 0x5000 64", f"{E1000E} write 0x7123 8")
    r_line = fault("DMA Read", "02:00.0", 0x5000, 0x06, "PTE Read access is not set")
    w_line = fault("DMA Write", "02:00.0", 0x7000, 0x05, "PTE Write access is not set")
    assert read == f"{E1000E} read iova 0x5000: fault: {r_line}"
    assert write == f"{E1000E} write iova 0x7123: fault: {w_line}"
    assert log.new() == [(3, "DMAR: DRHD: handling fault status reg 2"), (3, "DMAR: " + r_line),
                         (3, "DMAR: DRHD: handling fault status reg 2"), (3, "DMAR: " + w_line)]
    assert dmar_table_errors(mnt) == [r_line, w_line]
    # dd reads the same records from the start of the log, one per read, up to EAGAIN
    r = run(["dd", f"if={mnt.path}/dev/kmsg", "iflag=nonblock", "bs=8k"])
    assert "Resource temporarily unavailable" in r.stderr
    assert re.search(r"^3,\d+,\d+,-;DMAR: " + re.escape(r_line) + "\n" + r"3,\d+,\d+,-;DMAR: DRHD: handling fault "
                     r"status reg 2\n3,\d+,\d+,-;DMAR: " + re.escape(w_line) + "$", r.stdout, re.M)


def test_dma_answer_belongs_to_its_open_file(mount_preset):
    mnt = mount_preset("qemu-ref")
    a = os.open(mnt.path / VF / "dma", os.O_RDWR)
    b = os.open(mnt.path / VF / "dma", os.O_RDWR)
    try:
        os.write(a, f"{AHCI} read 0x2000 4\n".encode())
        os.write(b, f"{E1000E} read 0x2000 4\n".encode())
        assert os.pread(b, 4096, 0).decode().startswith(f"{E1000E} read iova 0x2000: fault: ")
        assert os.pread(a, 4096, 0).decode() == f"{AHCI} read iova 0x2000 -> hpa 0x2000\ndata 00000000\n"
        c = os.open(mnt.path / VF / "dma", os.O_RDONLY)
        try:
            assert os.read(c, 4096) == b""                      # a fresh open has asked nothing
        finally:
            os.close(c)
    finally:
        os.close(a)
        os.close(b)


# --- DMA with a payload: the bytes land in host memory and read back ------------------------------
def test_dma_write_data_lands_and_reads_back(mount_preset):
    """qemu-ref's ISA window maps 0-16 MiB 1:1, so AHCI's DMA reaches host RAM the kernel
    owns (not a program's): the model keeps what devices write there. data= is repeated
    to the length; a write without data= writes zeros; a request crossing a page is two
    pages translated, both in the answer's IOTLB flag."""
    mnt = mount_preset("qemu-ref")
    w, r, w0, r0 = ask(mnt, "dma", f"{AHCI} write 0x1ffe 8 data=c0ffee", f"{AHCI} read 0x1ffc 12",
                       f"{AHCI} write 0x1ffe 2", f"{AHCI} read 0x1ffe 4")
    assert w == f"{AHCI} write iova 0x1ffe -> hpa 0x1ffe"
    assert r == f"{AHCI} read iova 0x1ffc -> hpa 0x1ffc (iotlb hit)\ndata 0000c0ffeec0ffeec0ff0000"
    assert w0 == f"{AHCI} write iova 0x1ffe -> hpa 0x1ffe (iotlb hit)"
    assert r0 == f"{AHCI} read iova 0x1ffe -> hpa 0x1ffe (iotlb hit)\ndata 0000eec0"
    (big,) = ask(mnt, "dma", f"{AHCI} read 0x1004 4096")              # the longest request: 2 hex a byte
    assert big.splitlines()[1] == "data " + "00" * (0x1FFE - 0x1004) + "0000" + "eec0ffee"
    assert dmar_table_errors(mnt) == []


def test_a_long_write_is_one_transfer_of_many_pages(mount_preset):
    """A write moves up to 1 MiB at once (a DMA engine's transfer, 4 KiB requests on the
    bus): every page gets the pattern, the pages around it nothing."""
    mnt = mount_preset("qemu-ref")
    (w,) = ask(mnt, "dma", f"{AHCI} write 0x100000 1048576 data=5a")
    assert w == f"{AHCI} write iova 0x100000 -> hpa 0x100000"
    first, last, before, after = ask(mnt, "dma", f"{AHCI} read 0x100000 4096", f"{AHCI} read 0x1ff000 4096",
                                     f"{AHCI} read 0xff000 4096", f"{AHCI} read 0x200000 4096")
    assert [a.splitlines()[1] for a in (first, last)] == ["data " + "5a" * 4096] * 2
    assert [a.splitlines()[1] for a in (before, after)] == ["data " + "00" * 4096] * 2
    assert dmar_table_errors(mnt) == []


def test_dma_stops_at_the_page_that_faults(mount_preset, kmsg):
    """The window ends at 16 MiB: a request across its end moves the bytes before the
    page that faults and nothing from there on; the fault is logged as any other."""
    mnt = mount_preset("qemu-ref")
    log = kmsg(mnt)
    w, r = ask(mnt, "dma", f"{AHCI} write 0xfffffe 4 data=aabb", f"{AHCI} read 0xfffffc 8")
    w_line = fault("DMA Write", "00:1f.2", 0x1000000, 0x05, "PTE Write access is not set")
    r_line = fault("DMA Read", "00:1f.2", 0x1000000, 0x06, "PTE Read access is not set")
    assert w == f"{AHCI} write iova 0xfffffe: fault: {w_line}\nwrote 2 of 4 bytes"
    assert r == f"{AHCI} read iova 0xfffffc: fault: {r_line}\ndata 0000aabb"
    assert log.new() == [(3, "DMAR: DRHD: handling fault status reg 2"), (3, "DMAR: " + w_line),
                         (3, "DMAR: DRHD: handling fault status reg 2"), (3, "DMAR: " + r_line)]
    assert dmar_table_errors(mnt) == [w_line, r_line]
    (a,) = ask(mnt, "dma", f"{AHCI} read 0x1000000 4")                 # the first page faults: no data
    assert a == f"{AHCI} read iova 0x1000000: fault: {r_line}"


BAD_PAYLOADS = [
    (f"{AHCI} write 0x1000 4 data=", "data= is empty"),
    (f"{AHCI} write 0x1000 4 data=abc", "data= has 3 hex digits, not whole bytes"),
    (f"{AHCI} write 0x1000 4 data=zz", "data= holds 'z', not a hex digit"),
    (f"{AHCI} write 0x1000 4 data=0x12", "data= holds 'x', not a hex digit"),
    (f"{AHCI} read 0x1000 4 data=00", "data= is for writes only"),
    (f"{AHCI} write 0x1000 4 bytes=00", "unknown setting 'bytes=00'"),
    (f"{AHCI} write 0x1000 4 data=00 data=11", "repeated setting 'data=11'"),
    (f"{AHCI} read 0x1000 4 at=translated at=translated", "repeated setting 'at=translated'"),
    (f"{AHCI} read 0x1000 4 at=untranslated", "unknown setting 'at=untranslated'"),
    (f"{AHCI} write 0x1000 4 data=00 at=translated x=1",
     "expected '<bdf> read <iova> <length> [at=translated]' or "
     "'<bdf> write <iova> <length> [data=<hex>] [at=translated]'"),
    (f"{AHCI} write 0x1000 1048577 data=00", "length 1048577 is more than one write transfers (1048576)"),
]


def test_bad_payload_writes_nothing(mount_preset, kmsg):
    """A refused write moves no byte: memory, IOTLB counters and fault log as before."""
    mnt = mount_preset("qemu-ref")
    (w,) = ask(mnt, "dma", f"{AHCI} write 0x1000 4 data=01020304")
    assert w == f"{AHCI} write iova 0x1000 -> hpa 0x1000"
    stats = mnt.read(mnt.path / INTEL / "iotlb_stats")
    log = kmsg(mnt)
    fd = os.open(mnt.path / VF / "dma", os.O_RDWR)
    try:
        for text, why in BAD_PAYLOADS:
            with pytest.raises(OSError) as e:
                os.write(fd, text.encode() + b"\n")
            assert e.value.errno == errno.EINVAL, text
            assert log.new() == [(4, f"vfakefs: dma: {why}")], text
    finally:
        os.close(fd)
    assert mnt.read(mnt.path / INTEL / "iotlb_stats") == stats and dmar_table_errors(mnt) == []
    assert ask(mnt, "dma", f"{AHCI} read 0x1000 4") == [f"{AHCI} read iova 0x1000 -> hpa 0x1000 (iotlb hit)"
                                                        "\ndata 01020304"]


# --- MSI: a device's programmed vectors -----------------------------------------------------------
def test_msi_vector_sends_the_programmed_message(mount_preset):
    """`<bdf> vector <n>` sends what the function's MSI capability (config space) or MSI-X
    table (the IRTEs the kernel allocated for it) holds: the same answer as the raw form
    with that address and data."""
    mnt = mount_preset("qemu-ref")
    nvme = [i for i, sid, _, _ in ir_entries(mnt) if sid == "01:00.0"]
    assert len(nvme) == 3
    for n, index in enumerate(nvme):
        address, data = remappable_msi(index)
        vec, raw = ask(mnt, "msi", f"{NVME} vector {n}", f"{NVME} {address:#x} {data}")
        assert vec == raw and vec.startswith(f"{NVME}: index {index:#x}: delivered vector 0x"), (vec, raw)
    # the bridge 03:00.0 uses MSI: its message is in config space, where lspci reads it
    r = mnt.lspci("-vv", "-s", "03:00.0")
    address, data = re.search(r"MSI: Enable\+ .*\n\s+Address: ([0-9a-f]+)  Data: ([0-9a-f]+)", r.stdout).groups()
    vec, raw = ask(mnt, "msi", "0000:03:00.0 vector 0", f"0000:03:00.0 0x{address} 0x{data}")
    assert vec == raw and vec.startswith("0000:03:00.0: index 0x15: delivered vector"), (vec, raw)


BAD_VECTORS = [
    (f"{NVME} vector 3", f"vector 3 is not enabled: {NVME}'s MSI-X table entry 3 was never programmed"),
    (f"{NVME} vector 61", f"vector 61 is past {NVME}'s MSI-X table (61 entries)"),
    (f"{NVME} vector x", "vector 'x' is not a number"),
    (f"{NVME} vector 2048", "vector 2048 is outside 0..2047"),
    (f"{NVME} vector -1", "vector -1 is outside 0..2047"),
    (f"{AHCI} vector 0", f"{AHCI} has neither MSI nor MSI-X enabled"),
    ("0000:03:00.0 vector 1", "vector 1 is not enabled: 0000:03:00.0 has 1 MSI vector enabled"),
]


# --- bad input: EINVAL, a `vfakefs: <control>: <why>` line, nothing changed -------------------------
BAD = [
    ("dma", "garbage", "expected '<bdf> read <iova> <length> [at=translated]' or "
                       "'<bdf> write <iova> <length> [data=<hex>] [at=translated]'"),
    ("dma", f"{E1000E} sideways 0x1000 4", "direction 'sideways' is not read or write"),
    ("dma", f"{E1000E} read zz 4", "iova 'zz' is not a number"),
    ("dma", f"{E1000E} read 0x1000 0", "length must be positive and iova not negative"),
    ("dma", "zz read 0x1000 4", "malformed device 'zz'"),
    ("dma", "0000:0f:00.0 read 0x1000 4", "no device 0000:0f:00.0"),
    ("msi", f"{NVME} 0xfee00318", "expected '<bdf> <address> <data>' or '<bdf> vector <n>'"),
    ("msi", f"{NVME} 0x12345678 0", "address 0x12345678 is not in the MSI window 0xfee00000-0xfeefffff"),
    ("msi", f"{NVME} zz 0", "address 'zz' is not a number"),
    ("traffic", "bogus", "expected 'start <bdf> [rate=N] [mix=R] [ws=BYTES] [pattern=P]' or 'stop <bdf>|all'"),
    ("traffic", "start", "expected a device after start"),
    ("traffic", f"start {NVME} rate=x", "rate 'x' is not a number"),
    ("traffic", f"start {NVME} speed=3", "unknown setting 'speed=3'"),
    ("traffic", f"start {NVME} pattern=zigzag", "unknown setting 'pattern=zigzag'"),
    ("traffic", f"start {NVME} rate=0", "rate must be positive, mix within 0..1, ws at least 4096"),
    ("traffic", f"start {NVME} mix=2", "rate must be positive, mix within 0..1, ws at least 4096"),
    ("traffic", f"stop {NVME}", f"no traffic from {NVME}"),
    ("traffic", "stop", "expected 'stop <bdf>|all'"),
    # bounds (issue 8): what the simulated machine can hold, the state unchanged after
    ("dma", f"{E1000E} read 0x1000 4097", "length 4097 is more than one read answers (4096)"),
    ("dma", f"{E1000E} read 0x100000000 4294967296", "length 4294967296 is more than one read answers (4096)"),
    ("dma", f"{E1000E} write 0x100000000 4294967296", "length 4294967296 is more than one write transfers (1048576)"),
    ("dma", f"{E1000E} read 0xfffffffffffffffe 4", "iova 0xfffffffffffffffe + length 4 is past the 64-bit address space"),
    ("dma", f"{E1000E} write 0x10000000000000000 4", "iova 0x10000000000000000 + length 4 is past the 64-bit address space"),
    ("msi", f"{NVME} 0xfee00000 0x100000000", "data 4294967296 is outside 0..4294967295"),
    ("msi", f"{NVME} 0xfee00000 -1", "data -1 is outside 0..4294967295"),
    ("traffic", f"start {NVME} rate=1000000000000", "rate 1000000000000 is more than 1000000 requests a second"),
    ("traffic", f"start {NVME} rate=1000001", "rate 1000001 is more than 1000000 requests a second"),
    ("traffic", f"start {NVME} ws=8589934592", "ws 8589934592 is more than 1073741824 bytes"),
    ("traffic", f"start {NVME} ws=1073741825", "ws 1073741825 is more than 1073741824 bytes"),
    ("traffic", f"start {NVME} mix=nan", "rate must be positive, mix within 0..1, ws at least 4096"),
    ("traffic", f"start {NVME} mix=inf", "rate must be positive, mix within 0..1, ws at least 4096"),
    ("fault_threshold", "2147483648", "threshold 2147483648 is more than 2147483647"),
    ("fault_threshold", "abc", "threshold 'abc' is not a number"),
    ("fault_threshold", "0", "threshold must be at least 1"),
    ("fault_threshold", "-3", "threshold must be at least 1"),
    *(("dma", text, why) for text, why in BAD_PAYLOADS),
    *(("msi", text, why) for text, why in BAD_VECTORS),
]


def state(mnt) -> dict:
    v = mnt.path / VF
    return {"traffic": mnt.read(v / "traffic"), "fault_threshold": mnt.read(v / "fault_threshold"),
            "errors": dmar_table_errors(mnt),
            "iotlb": mnt.read(mnt.path / INTEL / "iotlb_stats"),
            "domain": mnt.read(mnt.path / INTEL / "domain_translation_struct"),
            "devices": sorted(os.listdir(mnt.pci / "devices")),
            "command": command_word(mnt, E1000E)}


@pytest.mark.parametrize("control,text,why", BAD, ids=[f"{c}:{t}" for c, t, _ in BAD])
def test_bad_input_is_einval_and_logged(qemu_mnt, kmsg, control, text, why):
    before = state(qemu_mnt)
    log = kmsg(qemu_mnt)
    r = sh(f"echo '{text}' > {qemu_mnt.path / VF / control}")
    assert r.returncode == 1 and r.stderr.endswith("write error: Invalid argument\n"), r.stderr
    assert log.new() == [(4, f"vfakefs: {control}: {why}")]
    assert state(qemu_mnt) == before


@pytest.mark.parametrize("control", ["dma", "msi"])
def test_bad_request_on_the_fd_keeps_no_answer(qemu_mnt, control):
    fd = os.open(qemu_mnt.path / VF / control, os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, b"nonsense\n")
        assert e.value.errno == errno.EINVAL
        assert os.pread(fd, 4096, 0) == b""
    finally:
        os.close(fd)


@pytest.mark.parametrize("text", ["abc", "1x"])
def test_bad_reset_is_einval_and_logged(mount_preset, kmsg, text):
    mnt = mount_preset("qemu-ref")
    assert sh(f"echo 7 > {mnt.path / VF / 'fault_threshold'}").returncode == 0
    before = state(mnt)
    log = kmsg(mnt)
    r = sh(f"echo '{text}' > {mnt.path / VF / 'reset'}")
    assert r.returncode == 1 and "Invalid argument" in r.stderr, r.stderr
    assert state(mnt) == before                                 # no reset happened
    lines = log.new()
    assert len(lines) == 1 and lines[0][0] == 4 and lines[0][1].startswith("vfakefs: reset: "), lines


# --- MSI: source-id verification (the essay's case) -------------------------------------------------
def ir_entries(mnt) -> list[tuple[int, str, int, int]]:
    """(index, source id, destination, vector) of each remapped IRTE ir_translation_struct shows."""
    out = []
    for line in mnt.read(mnt.path / INTEL / "ir_translation_struct").splitlines():
        m = re.match(r"^ (\d+) +([0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) ([0-9a-f]{8}) ([0-9a-f]{2}) ", line)
        if m:
            out.append((int(m[1]), m[2], int(m[3], 16), int(m[4], 16)))
    return out


def remappable_msi(handle: int, subhandle: int | None = 0) -> tuple[int, int]:
    """VT-d 5.1.2.2: address 0xFEE | handle[14:0] << 5 | interrupt format 1 << 4 | SHV << 3 |
    handle[15] << 2; data = subhandle."""
    shv = subhandle is not None
    return 0xFEE00000 | (handle & 0x7FFF) << 5 | 1 << 4 | int(shv) << 3 | (handle >> 15 & 1) << 2, subhandle or 0


def test_msi_with_another_devices_handle_is_blocked(mount_preset, kmsg):
    mnt = mount_preset("qemu-ref")
    index, _, dest, vector = next(e for e in ir_entries(mnt) if e[1] == "01:00.0")
    assert (index, dest, vector) == (24, 0x200, 0x28)
    address, data = remappable_msi(index)
    assert (address, data) == (0xFEE00318, 0)
    # the same message the model's kernel programmed into the NVMe's MSI-X table
    from vfakefs.model import topology
    from vfakefs.model.pci.bdf import Bdf
    m = topology.load("qemu-ref")
    assert m.irq_remap.dev_message(m.by_bdf[Bdf.from_str(NVME)], 0) == (address, data)

    log = kmsg(mnt)
    stolen, own = ask(mnt, "msi", f"{E1000E} {address:#x} {data}", f"{NVME} {address:#x} {data}")
    assert stolen == f"{E1000E}: index 0x18: blocked: [fault reason 0x26] {SID_FAIL}"
    assert own == f"{NVME}: index 0x18: delivered vector 0x28 to cpu 1"    # xAPIC logical 0x02: CPU 1
    line = f"DMAR: [INTR-REMAP] Request device [02:00.0] fault index 0x18 [fault reason 0x26] {SID_FAIL}"
    assert log.new() == [(3, "DMAR: DRHD: handling fault status reg 2"), (3, line)]
    assert dmar_table_errors(mnt) == [line.removeprefix("DMAR: ")]
    # the e1000e's own first handle is its own to use (parked on the shutdown vector 0xef)
    own_index = next(e for e in ir_entries(mnt) if e[1] == "02:00.0")[0]
    a, d = remappable_msi(own_index)
    assert ask(mnt, "msi", f"{E1000E} {a:#x} {d}") == [f"{E1000E}: index {own_index:#x}: delivered vector 0xef to cpu 0"]


def test_dma_faults_are_logged_again_after_the_ratelimit():
    """dmar_fault() prints within its ratelimit (10 runs per 5 s), then prints again once
    the window has passed (the kernel log's clock is the model's, set here)."""
    from vfakefs.model import controls, topology
    m = topology.load("qemu-ref")
    now = [m.kmsg._t0 + 10.0]
    m.kmsg._clock = lambda: now[0]

    def lines(word):
        return sum(word in r.text for r in m.kmsg.records)

    for _ in range(12):
        controls.dma_request(m, f"{E1000E} read 0x1000 4")
    assert lines("DMA Read") == 10                               # the burst is ratelimited
    now[0] += 60
    controls.dma_request(m, f"{E1000E} read 0x1000 4")
    assert lines("DMA Read") == 11                               # and printed again later
    assert lines("INTR-REMAP") == 0


def test_ir_faults_are_logged_again_after_the_ratelimit():
    from vfakefs.model import controls, topology
    m = topology.load("qemu-ref")
    now = [m.kmsg._t0 + 10.0]
    m.kmsg._clock = lambda: now[0]

    def lines():
        return sum("INTR-REMAP" in r.text for r in m.kmsg.records)

    for _ in range(12):
        controls.msi(m, f"{E1000E} 0xfee00318 0")
    assert lines() == 10
    now[0] += 60
    assert "blocked" in controls.msi(m, f"{E1000E} 0xfee00318 0")
    assert lines() == 11


# --- fault threshold ----------------------------------------------------------------------------
def test_fault_threshold_disables_bus_mastering(mount_preset, kmsg):
    mnt = mount_preset("qemu-ref")
    ft = mnt.path / VF / "fault_threshold"
    assert mnt.read(ft) == "100\n"
    assert sh(f"echo 5 > {ft}").returncode == 0 and mnt.read(ft) == "5\n"
    log = kmsg(mnt)
    assert command_word(mnt, E1000E) == 0x0507
    for i in range(1, 5):
        (a,) = ask(mnt, "dma", f"{E1000E} write {i * 0x1000:#x} 8")
        assert "fault reason 0x05" in a
        assert command_word(mnt, E1000E) & 0x4, i              # still mastering after 4 faults
    (a,) = ask(mnt, "dma", f"{E1000E} read 0x9000 8")             # the 5th
    assert "fault reason 0x06" in a
    assert command_word(mnt, E1000E) == 0x0503                  # Bus Master Enable (bit 2) cleared
    texts = [t for _, t in log.new()]
    assert texts[-1] == f"e1000e {E1000E}: DMAR: 5 DMA faults reached the threshold; bus mastering disabled"
    later = ask(mnt, "dma", f"{E1000E} read 0x9000 8", f"{E1000E} write 0xa000 8")
    assert later == [f"{E1000E} read iova 0x9000: not issued (bus mastering disabled)",
                     f"{E1000E} write iova 0xa000: not issued (bus mastering disabled)"]
    assert len(dmar_table_errors(mnt)) == 5                      # nothing more reached the IOMMU
    assert log.new() == []
    # other devices are not affected
    assert ask(mnt, "dma", f"{AHCI} read 0x1000 4") == [f"{AHCI} read iova 0x1000 -> hpa 0x1000\ndata 00000000"]


def test_fault_threshold_line_is_a_warning(mount_preset, kmsg):
    mnt = mount_preset("qemu-ref")
    assert sh(f"echo 1 > {mnt.path / VF / 'fault_threshold'}").returncode == 0
    log = kmsg(mnt)
    ask(mnt, "dma", f"{E1000E} read 0x1000 4")
    assert log.new()[-1] == (4, f"e1000e {E1000E}: DMAR: 1 DMA faults reached the threshold; "
                                "bus mastering disabled")
    assert command_word(mnt, E1000E) & 0x4 == 0


# --- reset --------------------------------------------------------------------------------------
def snapshot(mnt) -> str:
    """Devices, drivers, groups, config bytes (as root: the whole config space), the
    controls and the IOMMU's visible state, as one text made by one bash."""
    script = f"""
    cd {mnt.pci}/devices
    for d in *; do
        echo "$d $(readlink $d/driver) $(readlink $d/iommu_group)"
        od -An -tx1 $d/config | md5sum
    done
    ls {mnt.path}/sys/kernel/iommu_groups {mnt.path}/sys/class/net {mnt.path}/dev/vfio
    cat {mnt.path}/sys/kernel/iommu_groups/*/type
    cd {mnt.path}/{VF}; cat traffic fault_threshold
    cd {mnt.path}/{INTEL}; cat dmar_table_errors dmar_translation_struct domain_translation_struct
    """
    r = sh(script)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_reset_restores_the_initial_state(mount_preset, kmsg):
    mnt = mount_preset("qemu-ref")
    initial = snapshot(mnt)
    v = mnt.path / VF
    changes = f"""
    set -e
    echo {E1000E} > {mnt.pci}/drivers/e1000e/unbind
    echo 2 > {mnt.devdir(NVME)}/sriov_numvfs
    echo 2 > {v}/fault_threshold
    echo 'start 0000:06:00.0 rate=10 ws=8192' > {v}/traffic
    """
    r = sh(changes)
    assert r.returncode == 0, r.stderr
    ask(mnt, "dma", "0000:05:00.0 read 0x1000 4", "0000:05:00.0 read 0x2000 4")     # bus mastering off
    assert command_word(mnt, "0000:05:00.0") & 0x4 == 0
    changed = snapshot(mnt)
    assert changed != initial and "0000:01:00.1" in changed
    log = kmsg(mnt)
    r = sh(f"echo 1 > {v / 'reset'}")
    assert r.returncode == 0, r.stderr
    after = snapshot(mnt)
    assert after == initial
    assert (6, "vfakefs: machine reset to its topology") in log.new()
    assert command_word(mnt, "0000:05:00.0") == 0x0507


# --- the Python client ----------------------------------------------------------------------------
def test_client_against_a_mount(mount_preset):
    mnt = mount_preset("seed-vtd")
    c = Controls(mnt.path)
    r_line = fault("DMA Read", "03:00.0", 0x1000, 6, "PTE Read access is not set")
    assert c.dma(IXGBE, "read", 0x1000, 64) == f"{IXGBE} read iova 0x1000: fault: {r_line}\n"
    assert c.faults() == [r_line]
    assert "DMAR: " + r_line in c.dmesg()
    c.traffic_start(IXGBE, rate=1000, ws=16384)
    assert c.traffic().startswith(f"{IXGBE} rate=1000 mix=0.70 ws=16384 pattern=sequential ")
    assert re.fullmatch(rf"{IXGBE} read iova 0xffffc000 -> hpa 0x[0-9a-f]+( \(iotlb hit\))?\ndata (00){{64}}\n",
                        c.dma(IXGBE, "read", 0xFFFFC000, 64))
    c.traffic_stop(IXGBE)
    assert c.traffic() == ""
    with pytest.raises(OSError) as e:
        c.traffic_stop(IXGBE)                                   # nothing left to stop
    assert e.value.errno == errno.EINVAL
    assert c.fault_threshold == 100
    c.fault_threshold = 3
    assert c.fault_threshold == 3
    with pytest.raises(OSError) as e:
        c.fault_threshold = 0
    assert e.value.errno == errno.EINVAL and c.fault_threshold == 3
    assert "vfakefs: fault_threshold: threshold must be at least 1" in c.dmesg()
    c.dma(IXGBE, "write", 0x2000, 4)
    c.dma(IXGBE, "write", 0x3000, 4)                            # the 3rd fault
    assert c.dma(IXGBE, "read", 0x1000, 4) == f"{IXGBE} read iova 0x1000: not issued (bus mastering disabled)\n"
    assert len(c.faults()) == 3
    assert c.msi(IXGBE, 0xFEE00010, 0) == \
        f"{IXGBE}: index 0x0: blocked: [fault reason 0x26] {SID_FAIL}\n"   # IRTE 0 is the IOAPIC's
    assert c.faults()[-1].startswith("[INTR-REMAP] Request device [03:00.0] fault index 0x0")
    with pytest.raises(OSError) as e:
        c.msi(IXGBE, 0x1000, 0)
    assert e.value.errno == errno.EINVAL
    c.reset()
    assert c.fault_threshold == 100 and c.traffic() == "" and c.faults() == []
    assert c.dma(IXGBE, "read", 0x1000, 4).endswith(f"fault: {r_line}\n")      # mastering again
    assert c.dmesg().count("vfakefs: machine reset to its topology") == 1
