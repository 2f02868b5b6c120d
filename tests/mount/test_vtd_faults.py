"""VT-d faults through the mount: every legacy fault reason (0x01-0x0d) provoked with
vfakefs's controls (`physmem` corrupts the tables, `regset` moves RTADDR, `dma` sends the
request), seen where a user looks: the fault recording registers (`regset`, with the fault
event masked so they stay), the kernel log and dmar_table_errors once unmasked; FPD
(`fpd`); primary fault overflow and the W1C registers; bad input to each new control.

qemu-ref's 00:1f.2 (AHCI) has the ISA window 0-16 MiB mapped 1:1 in 4 KiB pages, its
unit a 39-bit 3-level table, one fault recording register and no ECAP.DT; seed-vtd's unit
has eight fault recording registers.
"""
from __future__ import annotations

import errno
import os
import re

import pytest

from tests.conftest import sh
from tests.mount.test_controls import INTEL, VF, ask, dmar_table_errors, fault, kmsg  # noqa: F401 (fixture)

AHCI, AHCI_SID, AHCI_DEVFN = "0000:00:1f.2", "00:1f.2", 0xFA
IXGBE = "0000:03:00.0"
ADDR = 0x000F_FFFF_FFFF_F000
IM = 0x80000000


def write(mnt, control: str, text: str) -> None:
    r = sh(f"echo '{text}' > {mnt.path / VF / control}")
    assert r.returncode == 0, r.stderr


def regs(mnt) -> dict[str, int]:
    text = mnt.read(mnt.path / VF / "regset")
    return {m[0]: int(m[1], 16) for m in re.findall(r"^(\w+)\s+\t0x[0-9a-f]+\t\t0x([0-9a-f]{16})$", text, re.M)}


def qword(mnt, hpa: int) -> int:
    (a,) = ask(mnt, "physmem", f"dump {hpa:#x}")
    addr, value = a.split()
    assert int(addr, 16) == hpa
    return int(value, 16)


def structures(mnt) -> dict[str, int]:
    """Where AHCI's root entry, context entry and the PTEs of IOVA 0x1000 live."""
    text = mnt.read(mnt.path / INTEL / "dmar_translation_struct")
    root = int(re.search(r"Root Table Address: (0x[0-9a-f]+)", text)[1], 16)
    row = next(r for r in text.splitlines() if r.startswith(AHCI_SID + "\t"))
    ctx_lo = int(row.split("\t")[2].split(":")[1], 16)
    ctx = (qword(mnt, root) & ~0xFFF) + 16 * AHCI_DEVFN
    assert qword(mnt, ctx) == ctx_lo
    pdpe = ctx_lo & ADDR                                   # 3 levels: PDPE, PDE, PTE (index 1)
    pde = qword(mnt, pdpe) & ADDR
    pte = (qword(mnt, pde) & ADDR) + 8
    assert qword(mnt, pte) & ADDR == 0x1000                # the ISA window, 1:1
    return {"root": root, "ctx": ctx, "pdpe": pdpe, "pde": pde, "pte": pte}


@pytest.fixture(scope="module")
def qmnt(tmp_path_factory):
    from tests.conftest import make_mountpoint, mounted
    with mounted("qemu-ref", make_mountpoint(tmp_path_factory.mktemp("faults"))) as m:
        yield m


@pytest.fixture
def fresh(qmnt):
    write(qmnt, "reset", "1")
    return qmnt


def or_q(mnt, hpa: int, bits: int) -> None:
    write(mnt, "physmem", f"{hpa:#x} {qword(mnt, hpa) | bits:#x}")


def set_q(mnt, hpa: int, value: int) -> None:
    write(mnt, "physmem", f"{hpa:#x} {value:#x}")


# reason -> (how to corrupt, the request, the fault address, read)
CASES = {
    0x01: (lambda mnt, s: set_q(mnt, s["root"], 0), "read 0x1000 4", 0x1000, True),
    0x02: (lambda mnt, s: set_q(mnt, s["ctx"], 0), "read 0x1000 4", 0x1000, True),
    0x03: (lambda mnt, s: or_q(mnt, s["ctx"], 1 << 2), "write 0x2000 4", 0x2000, False),   # TT 01b, no ECAP.DT
    0x04: (lambda mnt, s: None, "read 0x8000000000 4", 0x8000000000, True),               # 2^39
    0x05: (lambda mnt, s: None, "write 0x1000000 4", 0x1000000, False),
    0x06: (lambda mnt, s: None, "read 0x1000000 4", 0x1000000, True),
    0x07: (lambda mnt, s: set_q(mnt, s["pdpe"], 0x1000 | 3), "read 0x1000 4", 0x1000, True),
    0x08: (lambda mnt, s: write(mnt, "regset", "RTADDR 0x1000"), "read 0x1000 4", 0x1000, True),
    0x09: (lambda mnt, s: set_q(mnt, s["root"], 0x1000 | 1), "read 0x1000 4", 0x1000, True),
    0x0a: (lambda mnt, s: set_q(mnt, s["root"] + 8, 1), "read 0x1000 4", 0x1000, True),
    0x0b: (lambda mnt, s: or_q(mnt, s["ctx"] + 8, 1 << 7), "read 0x1000 4", 0x1000, True),
    0x0c: (lambda mnt, s: or_q(mnt, s["pte"], 1 << 45), "read 0x1000 4", 0x1000, True),     # above HAW 39
    0x0d: (lambda mnt, s: None, "read 0x1000 4 at=translated", 0x1000, True),             # TT 00b
}
TEXT = {0x01: "Present bit in root entry is clear", 0x02: "Present bit in context entry is clear",
        0x03: "Invalid context entry", 0x04: "Access beyond MGAW", 0x05: "PTE Write access is not set",
        0x06: "PTE Read access is not set", 0x07: "Next page table ptr is invalid",
        0x08: "Root table address invalid", 0x09: "Context table ptr is invalid",
        0x0a: "non-zero reserved fields in RTP", 0x0b: "non-zero reserved fields in CTP",
        0x0c: "non-zero reserved fields in PTE", 0x0d: "PCE for translation request specifies blocking"}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_each_fault_reason_is_reachable(fresh, kmsg, reason):
    mnt = fresh
    corrupt, request, addr, read = CASES[reason]
    corrupt(mnt, structures(mnt))
    log = kmsg(mnt)
    write(mnt, "regset", f"FECTL {IM:#x}")                     # masked: the record stays for us to read
    kind = "DMA Read" if read else "DMA Write"
    line = fault(kind, AHCI_SID, addr, reason, TEXT[reason])
    (a,) = ask(mnt, "dma", f"{AHCI} {request}")
    assert a.splitlines()[0] == f"{AHCI} {request.split()[0]} iova {int(request.split()[1], 16):#x}: fault: {line}"
    r = regs(mnt)
    assert r["FSTS"] == 0x2                                     # PPF, FRI 0
    assert r["FECTL"] == IM | 0x40000000                        # IM, IP: the event is held
    assert r["FRCD0_LO"] == addr
    at = 2 if "at=translated" in request else 0
    assert r["FRCD0_HI"] == 1 << 63 | int(read) << 62 | at << 60 | reason << 32 | 0x00FA
    assert log.new() == [] and dmar_table_errors(mnt) == []
    write(mnt, "regset", "FECTL 0")                            # unmasked: issued, dmar_fault runs
    assert log.new() == [(3, "DMAR: DRHD: handling fault status reg 2"), (3, "DMAR: " + line)]
    assert dmar_table_errors(mnt) == [line]
    r = regs(mnt)
    assert (r["FSTS"], r["FECTL"], r["FRCD0_HI"]) == (0, 0, 0)


def test_fpd_hides_qualified_faults_only(fresh, kmsg):
    mnt = fresh
    s = structures(mnt)
    log = kmsg(mnt)
    f = mnt.path / VF / "fpd"
    assert oct(os.stat(f).st_mode & 0o777) == "0o600"
    assert f"{AHCI} 0\n" in mnt.read(f)
    write(mnt, "fpd", f"{AHCI} 1")
    assert f"{AHCI} 1\n" in mnt.read(f)
    assert qword(mnt, s["ctx"]) & 0x2                          # the context entry's FPD field
    line6 = fault("DMA Read", AHCI_SID, 0x1000000, 6, TEXT[6])
    (a,) = ask(mnt, "dma", f"{AHCI} read 0x1000000 4")          # the request still fails (UR) ...
    assert a == f"{AHCI} read iova 0x1000000: fault: {line6}"
    assert log.new() == [] and dmar_table_errors(mnt) == []     # ... but is not recorded
    r = regs(mnt)
    assert (r["FSTS"], r["FRCD0_HI"]) == (0, 0)
    assert "qualified faults not recorded (FPD): 1\n" in mnt.read(mnt.path / VF / "regset")
    set_q(mnt, s["root"], 0)                                   # 0x01 is not qualified: recorded
    line1 = fault("DMA Read", AHCI_SID, 0x1000, 1, TEXT[1])
    ask(mnt, "dma", f"{AHCI} read 0x1000 4")
    assert log.new() == [(3, "DMAR: DRHD: handling fault status reg 2"), (3, "DMAR: " + line1)]
    assert dmar_table_errors(mnt) == [line1]
    write(mnt, "fpd", f"{AHCI} 0")
    assert qword(mnt, s["ctx"]) & 0x2 == 0


def test_overflow_stops_recording_until_pfo_is_cleared(mount_preset, kmsg):
    """seed-vtd: eight registers. Masked, eight faults fill them, the ninth sets PFO and is
    lost, and while PFO is set nothing is recorded, even into a register software freed."""
    mnt = mount_preset("seed-vtd")
    log = kmsg(mnt)
    write(mnt, "regset", f"FECTL {IM:#x}")
    for i in range(10):
        ask(mnt, "dma", f"{IXGBE} read {0x10000 * (i + 1):#x} 4")
    r = regs(mnt)
    assert r["FSTS"] == 0x3 and r["FECTL"] == IM | 0x40000000      # PFO | PPF, FRI 0; IP
    assert [r[f"FRCD{i}_LO"] for i in range(8)] == [0x10000 * (i + 1) for i in range(8)]
    write(mnt, "regset", "FRCD0 0x80000000")                   # F is RW1C: register 0 is free
    write(mnt, "regset", "FSTS 0x2")                           # PPF is read-only: nothing changes
    assert regs(mnt)["FRCD0_HI"] == 0 and regs(mnt)["FSTS"] == 0x3
    ask(mnt, "dma", f"{IXGBE} read 0xf0000 4")
    assert regs(mnt)["FRCD0_HI"] == 0                            # PFO set: not recorded
    write(mnt, "regset", "0x34 0x1")                            # FSTS by offset: PFO cleared
    assert regs(mnt)["FSTS"] == 0x2                              # PPF (registers 1-7), FRI 0
    ask(mnt, "dma", f"{IXGBE} read 0xf0000 4")                  # the internal index is at 0 again
    r = regs(mnt)
    assert r["FRCD0_LO"] == 0xf0000 and r["FRCD0_HI"] >> 63
    assert log.new() == []
    write(mnt, "regset", "FECTL 0")                            # unmask: the held event is issued
    out = log.new()
    assert out[0] == (3, "DMAR: DRHD: handling fault status reg 2")
    assert len(out) == 9                                        # from FRI 0: register 0, then 1-7
    assert [int(re.search(r"fault addr (0x[0-9a-f]+)", t)[1], 16) for _, t in out[1:]] == \
        [0xf0000] + [0x10000 * (i + 1) for i in range(1, 8)]
    r = regs(mnt)
    assert r["FSTS"] == 0 and r["FECTL"] == 0 and not any(r[f"FRCD{i}_HI"] for i in range(8))
    assert "fault events issued: 1\n" in mnt.read(mnt.path / VF / "regset")


def test_the_kernel_clears_pfo(mount_preset, kmsg):
    """Unmasked, dmar_fault handles the overflow as the kernel does: FSTS printed with PFO,
    the recorded faults logged, PFO|PPF|PRO written back."""
    mnt = mount_preset("seed-vtd")
    write(mnt, "regset", f"FECTL {IM:#x}")
    for i in range(9):
        ask(mnt, "dma", f"{IXGBE} read {0x10000 * (i + 1):#x} 4")
    log = kmsg(mnt)
    write(mnt, "regset", "FECTL 0")
    out = log.new()
    assert out[0] == (3, "DMAR: DRHD: handling fault status reg 3") and len(out) == 9
    assert len(dmar_table_errors(mnt)) == 8
    assert regs(mnt)["FSTS"] == 0


BAD = [
    ("fpd", f"{AHCI}", "expected '<bdf> 1' or '<bdf> 0'"),
    ("fpd", f"{AHCI} 2", "value '2' is not 0 or 1"),
    ("fpd", "0000:09:00.0 1", "no device 0000:09:00.0"),
    ("fpd", "zz 1", "malformed device 'zz'"),
    ("physmem", "0x1000 0x1", "0x1000+8 is outside the remapping structures' memory {range}"),
    ("physmem", "0x594004 0x1", "hpa 0x594004 is not 8-byte aligned"),
    ("physmem", "0x594000 0x10000000000000000", "qword 18446744073709551616 is outside 0..18446744073709551615"),
    ("physmem", "0x594000 x", "qword 'x' is not a number"),
    ("physmem", "dump 0x594000 513", "count 513 is outside 1..512"),
    ("physmem", "dump {last} 2", "{last}+16 is outside the remapping structures' memory {range}"),
    ("physmem", "0x594000", "expected '<hpa> <qword> [<qword>...]' or 'dump <hpa> [<count>]'"),
    ("regset", "FSTS", "expected '<register> <value>': FSTS, FECTL, RTADDR or FRCD<n> (or its offset)"),
    ("regset", "GCMD 1", "unknown register 'GCMD'; expected '<register> <value>': FSTS, FECTL, RTADDR or "
                         "FRCD<n> (or its offset)"),
    ("regset", "FRCD1 0x80000000", "unknown register 'FRCD1'; expected '<register> <value>': FSTS, FECTL, "
                                   "RTADDR or FRCD<n> (or its offset)"),
    ("regset", "0x18 1", "offset 0x18 is not a register this control writes (FSTS 0x34, FECTL 0x38, RTADDR "
                         "0x20, each FRCD's top dword)"),
    ("regset", "FECTL 0x100000000", "value 4294967296 is outside 0..4294967295"),
    ("regset", "RTADDR 0x594001", "RTADDR 0x594001: bits 11:0 must be 0 (legacy mode, 4 KiB aligned)"),
]


def test_bad_input_changes_nothing(fresh, kmsg):
    mnt = fresh
    for name in ("fpd", "physmem", "regset"):
        assert oct(os.stat(mnt.path / VF / name).st_mode & 0o777) == "0o600", name
    head = mnt.read(mnt.path / VF / "physmem")
    m = re.fullmatch(r"(0x594000-(0x[0-9a-f]+)) \((\d+) pages\)\n", head)
    assert int(m[2], 16) == 0x594000 + 4096 * int(m[3]) - 1
    fill = {"range": m[1], "last": hex(int(m[2], 16) - 7)}
    files = [mnt.path / VF / n for n in ("fpd", "regset", "physmem")] + \
        [mnt.path / INTEL / n for n in ("dmar_translation_struct", "domain_translation_struct", "iommu_regset")]
    before = [mnt.read(f) for f in files]
    log = kmsg(mnt)
    for control, text, why in BAD:
        text, why = text.format(**fill), why.format(**fill)
        fd = os.open(mnt.path / VF / control, os.O_RDWR)
        try:
            with pytest.raises(OSError) as e:
                os.write(fd, text.encode() + b"\n")
        finally:
            os.close(fd)
        assert e.value.errno == errno.EINVAL, text
        assert log.new() == [(4, f"vfakefs: {control}: {why}")], text
    assert [mnt.read(f) for f in files] == before
