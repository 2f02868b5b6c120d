"""MNT/sys/kernel/debug/iommu/intel/ through real mounts of both presets, read with
real `cat` and `stat`, checked against KERNEL-FACTS §5 (formats), §7 (entry
layouts) and, for qemu-ref, the reference capture of the same machine.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import preset_devices, run, sh
from tests.fidelity.capture import REFERENCE_DIR

CAPTURE = REFERENCE_DIR / "capture-dbgkernel-intel_iommu_on.txt"
INTEL = "sys/kernel/debug/iommu/intel"
KERNEL_FILES = ["dmar_perf_latency", "dmar_translation_struct", "invalidation_queue", "iommu_regset",
                "ir_translation_struct"]
OWN_FILES = ["dmar_table_errors", "iotlb_stats"]            # vfakefs's own, beside the kernel's

REGS32 = [("VER", 0x00), ("GCMD", 0x18), ("GSTS", 0x1C), ("FSTS", 0x34), ("FECTL", 0x38), ("FEDATA", 0x3C),
          ("FEADDR", 0x40), ("FEUADDR", 0x44), ("PMEN", 0x64), ("PLMBASE", 0x68), ("PLMLIMIT", 0x6C),
          ("ICS", 0x9C), ("PRS", 0xDC), ("PECTL", 0xE0), ("PEDATA", 0xE4), ("PEADDR", 0xE8), ("PEUADDR", 0xEC)]
REGS64 = [("CAP", 0x08), ("ECAP", 0x10), ("RTADDR", 0x20), ("CCMD", 0x28), ("AFLOG", 0x58), ("PHMBASE", 0x70),
          ("PHMLIMIT", 0x78), ("IQH", 0x80), ("IQT", 0x88), ("IQA", 0x90), ("IRTA", 0xB8), ("PQH", 0xC0),
          ("PQT", 0xC8), ("PQA", 0xD0), ("MTRRCAP", 0x100), ("MTRRDEF", 0x108)]
FIXED_MTRRS = ["FIX64K_00000", "FIX16K_80000", "FIX16K_A0000", "FIX4K_C0000", "FIX4K_C8000", "FIX4K_D0000",
               "FIX4K_D8000", "FIX4K_E0000", "FIX4K_E8000", "FIX4K_F0000", "FIX4K_F8000"]
REGS64 += [(f"MTRR_{n}", 0x120 + 8 * i) for i, n in enumerate(FIXED_MTRRS)]
for _i in range(10):
    REGS64 += [(f"MTRR_PHYSBASE{_i}", 0x180 + 16 * _i), (f"MTRR_PHYSMASK{_i}", 0x188 + 16 * _i)]

REGSET_ROW = re.compile(r"^(\S+) *\t0x([0-9a-f]{2,})\t\t0x([0-9a-f]{16})$")
DMAR_ROW = re.compile(r"^([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])\t0x([0-9a-f]{16}):0x([0-9a-f]{16})\t"
                      r"0x([0-9a-f]{16}):0x([0-9a-f]{16})\t(-1    )\t"
                      r"0x0{16}:0x0{16}:0x0{16}$")
IQ_ROW = re.compile(r"^ *(\d+)\t([0-9a-f]{16})\t([0-9a-f]{16})\t([0-9a-f]{16})$")
IR_ROW = re.compile(r"^ (\d+) *([0-9a-f]{2}):([0-9a-f]{2})\.([0-7]) ([0-9a-f]{8}) ([0-9a-f]{2})  "
                    r"([0-9a-f]{16})\t([0-9a-f]{16})$")
PERF_HEADER = ("                  <0.1us   0.1us-1us    1us-10us  10us-100us   100us-1ms    1ms-10ms      >=10ms"
               "     min(us)     max(us) average(us)")
PERF_ROW = re.compile(r"^   inv_iotlb( {0,11}\d{1,12}){10}$")
DOMAIN_ROW_61 = re.compile(r"^0x[0-9a-f]{13} \|(\t0x[0-9a-f]{16}){5}$")
DOMAIN_ROW_612 = re.compile(r"^0x[0-9a-f]{13} \|(\t0x[0-9a-f]{16}){3,5}$")
FAULT_LINE = re.compile(r"^\[(DMA Read|DMA Write) NO_PASID\] Request device \[[0-9a-f]{2}:[0-9a-f]{2}\.\d\] "
                        r"fault addr 0x[0-9a-f]+ \[fault reason 0x[0-9a-f]{2}\] .+$"
                        r"|^\[INTR-REMAP\] Request device \[[0-9a-f]{2}:[0-9a-f]{2}\.\d\] fault index 0x[0-9a-f]+ "
                        r"\[fault reason 0x[0-9a-f]{2}\] .+$")


def cat(p: Path) -> str:
    r = run(["cat", str(p)])
    assert r.returncode == 0, (p, r.stderr)
    return r.stdout


def capture_output(command: str) -> str:
    """What `command` printed in the reference capture: the lines between `$ command`
    and its `[rc=0]`."""
    lines = CAPTURE.read_text().splitlines(keepends=True)
    start = lines.index(f"$ {command}\n") + 1
    end = next(i for i in range(start, len(lines)) if lines[i] == "[rc=0]\n")
    return "".join(lines[start:end])


def regset(text: str) -> dict[str, int]:
    return {m[1]: int(m[3], 16) for m in map(REGSET_ROW.match, text.splitlines()) if m}


@pytest.fixture(params=["seed", "qemu"])
def mnt(request, seed_mnt, qemu_mnt):
    return seed_mnt if request.param == "seed" else qemu_mnt


# --- the directory: every file, cat, modes, sizes -----------------------------------------------
def test_listing_per_kernel(seed_mnt, qemu_mnt):
    files = sorted(KERNEL_FILES + OWN_FILES)
    assert sorted((qemu_mnt.path / INTEL).iterdir()) == \
        sorted(qemu_mnt.path / INTEL / n for n in files + ["domain_translation_struct"])       # 6.1: one file
    seed_devs = sorted(preset_devices("seed-vtd"))
    assert sorted(p.name for p in (seed_mnt.path / INTEL).iterdir()) == sorted(files + seed_devs)  # 6.12: dirs
    for bdf in seed_devs:
        assert [p.name for p in (seed_mnt.path / INTEL / bdf).iterdir()] == ["domain_translation_struct"]


def test_every_file_cats_with_exit_0(mnt):
    r = sh(f"cd {mnt.path}/{INTEL} && find . -type f | sort | while read f; do cat \"$f\" >/dev/null || exit 9; "
           f"echo \"$f\"; done")
    assert r.returncode == 0, r.stderr
    listed = r.stdout.split()
    n_domain = len(preset_devices("seed-vtd")) if mnt.preset == "seed-vtd" else 1
    assert len(listed) == len(KERNEL_FILES + OWN_FILES) + n_domain


def test_modes_and_sizes_like_debugfs(mnt):
    r = sh(f"cd {mnt.path}/{INTEL} && find . -mindepth 1 -exec stat -c '%F|%a|%s|%U|%G|%n' {{}} +")
    assert r.returncode == 0, r.stderr
    rows = [line.split("|") for line in r.stdout.splitlines()]
    assert len(rows) >= len(KERNEL_FILES + OWN_FILES) + 1
    for kind, mode, size, user, group, name in rows:
        assert (user, group) == ("root", "root"), name
        if kind == "directory":
            assert mode == "755", name
            continue
        assert kind == "regular empty file" and size == "0", (kind, size, name)   # debugfs: size 0
        assert mode == ("644" if name.endswith("/dmar_perf_latency") else "444"), (mode, name)


# --- iommu_regset -------------------------------------------------------------------------------
def test_iommu_regset_format(mnt):
    text = cat(mnt.path / INTEL / "iommu_regset")
    lines = text.split("\n")
    assert lines[0] == "IOMMU: dmar0 Register Base Address: fed90000"
    assert lines[1] == "Name\t\t\tOffset\t\tContents"
    rows = [REGSET_ROW.match(line) for line in lines[2:-2]]
    assert all(rows), [line for line in lines[2:-2] if not REGSET_ROW.match(line)]
    names = [(m[1], int(m[2], 16)) for m in rows]
    assert names[:len(REGS32)] == REGS32 and names[len(REGS32):len(REGS32) + len(REGS64)] == REGS64
    for line, m in zip(lines[2:-2], rows):                      # %-16s: padded to 16 unless longer
        assert line.index("\t") == max(16, len(m[1]))
    assert text.endswith("\n\n")                               # a blank line after the IOMMU
    regs = regset(text)
    assert regs["GSTS"] == 0xC7000000                          # TES RTPS QIES IRES IRTPS
    assert regs["VER"] == 0x10


def test_iommu_regset_qemu_matches_capture(qemu_mnt):
    ours, ref = cat(qemu_mnt.path / INTEL / "iommu_regset"), capture_output(f"cat /{INTEL}/iommu_regset")
    assert [(m[1], m[2]) for m in map(REGSET_ROW.match, ours.splitlines()) if m] == \
        [(m[1], m[2]) for m in map(REGSET_ROW.match, ref.splitlines()) if m]
    ref_regs, our_regs = regset(ref), regset(ours)
    for name in ("VER", "GCMD", "GSTS", "FSTS", "FEDATA", "FEADDR", "CAP", "ECAP", "RTADDR", "IRTA"):
        assert our_regs[name] == ref_regs[name], name
    assert ours.splitlines()[:2] == ref.splitlines()[:2]


def test_class_iommu_agrees_with_regset(mnt):
    regs = regset(cat(mnt.path / INTEL / "iommu_regset"))
    base = int(cat(mnt.path / INTEL / "iommu_regset").split("\n")[0].rsplit(" ", 1)[1], 16)
    d = mnt.path / "sys/class/iommu/dmar0/intel-iommu"
    assert cat(d / "cap") == "%x\n" % regs["CAP"]
    assert cat(d / "ecap") == "%x\n" % regs["ECAP"]
    assert cat(d / "address") == "%x\n" % base
    assert cat(d / "version") == "%d:%d\n" % (regs["VER"] >> 4, regs["VER"] & 0xF)
    if mnt.preset == "qemu-ref":
        assert (regs["CAP"], regs["ECAP"]) == (0xD2008C22260286, 0xF00F4A)   # the topology's


# --- dmar_translation_struct --------------------------------------------------------------------
def dmar_rows(text: str) -> list[re.Match]:
    lines = text.split("\n")
    assert re.fullmatch(r"IOMMU dmar0: Root Table Address: 0x[0-9a-f]+", lines[0]), lines[0]
    assert lines[1] == "B.D.F\tRoot_entry\t\t\t\tContext_entry\t\t\t\tPASID\tPASID_table_entry"
    assert lines[-2:] == ["", ""]                                # rows, a blank line, and the final \n
    rows = [DMAR_ROW.match(line) for line in lines[2:-2]]
    assert all(rows), [line for line in lines[2:-2] if not DMAR_ROW.match(line)]
    return rows


def test_dmar_translation_struct_rows(mnt):
    text = cat(mnt.path / INTEL / "dmar_translation_struct")
    rows = dmar_rows(text)
    regs = regset(cat(mnt.path / INTEL / "iommu_regset"))
    assert int(text.split("\n")[0].rsplit("0x", 1)[1], 16) == regs["RTADDR"]
    bdfs = ["0000:%s:%s.%s" % (m[1], m[2], m[3]) for m in rows]
    assert bdfs == sorted(preset_devices(mnt.preset))                   # one row per function, in BDF order
    levels = {"seed-vtd": 4, "qemu-ref": 3}[mnt.preset]
    root_of_bus: dict[str, int] = {}
    ctx_of_group: dict[str, tuple[int, int]] = {}
    for bdf, m in zip(bdfs, rows):
        root_hi, root_lo, ctx_hi, ctx_lo = (int(m[i], 16) for i in (4, 5, 6, 7))
        assert root_hi == 0 and root_lo & 0xFFF == 1                   # legacy root entry: CTP | P
        assert root_of_bus.setdefault(m[1], root_lo) == root_lo        # one context table per bus
        tt = 1 if bdf == "0000:0c:00.0" else 0                         # ATS: Device-TLB (CONTEXT_TT_DEV_IOTLB)
        assert ctx_lo & 0xFFF == 1 | tt << 2, bdf                      # P, FPD 0, TT (multi-level)
        assert ctx_hi & 7 == levels - 2 and ctx_hi >> 24 == 0          # AW
        group = Path(run(["readlink", mnt.devdir(bdf) / "iommu_group"]).stdout.strip()).name
        assert ctx_of_group.setdefault(group, (ctx_hi, ctx_lo)) == (ctx_hi, ctx_lo), bdf   # a group: one domain
    dids = [hi >> 8 for hi, _ in ctx_of_group.values()]
    assert len(set(dids)) == len(dids) and min(dids) == 2               # 0 reserved, 1 the identity domain's


def test_dmar_translation_struct_qemu_like_capture(qemu_mnt):
    ours = dmar_rows(cat(qemu_mnt.path / INTEL / "dmar_translation_struct"))
    ref = dmar_rows(capture_output(f"cat /{INTEL}/dmar_translation_struct"))
    # same rows, same context-entry high words: DIDs 2.. in probe order, AW 1 (39-bit, 3-level)
    assert [(m[1], m[2], m[3], m[6]) for m in ours] == [(m[1], m[2], m[3], m[6]) for m in ref]
    assert ours[0].group(0).startswith("00:00.0\t") and ours[0][6] == "0000000000000201"
    assert [int(m[6], 16) >> 8 for m in ours] == [2, 3, 4, 5, 6, 7, 7, 7, 8, 9, 10, 11, 12, 11, 12]
    # which functions share a context table (bus) and a page table (group) is the capture's too
    def shape(rows):
        firsts_root, firsts_ctx = {}, {}
        return [(firsts_root.setdefault(m[5], len(firsts_root)), firsts_ctx.setdefault(m[7], len(firsts_ctx)))
                for m in rows]
    assert shape(ours) == shape(ref)


# --- domain_translation_struct -------------------------------------------------------------------
def test_domain_translation_struct_61_single_file(qemu_mnt):
    text = cat(qemu_mnt.path / INTEL / "domain_translation_struct")
    ctx = {"0000:%s:%s.%s" % (m[1], m[2], m[3]): int(m[7], 16) & ~0xFFF
           for m in dmar_rows(cat(qemu_mnt.path / INTEL / "dmar_translation_struct"))}
    blocks = text.split("\n\n")
    assert blocks[-1] == ""                                      # a blank line after each device
    seen = []
    for block in blocks[:-1]:
        lines = block.split("\n")
        m = re.fullmatch(r"Device (0000:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) @0x([0-9a-f]+)", lines[0])
        assert m, lines[0]
        assert lines[1] == "IOVA_PFN\t\tPML5E\t\t\tPML4E\t\t\tPDPE\t\t\tPDE\t\t\tPTE"
        assert all(DOMAIN_ROW_61.match(r) for r in lines[2:]), lines[2:4]
        assert int(m[2], 16) == ctx[m[1]]                        # @ the page table the context entry points at
        seen.append((m[1], len(lines) - 2))
    assert [b for b, _ in seen] == sorted(preset_devices("qemu-ref"))
    rows = dict(seen)
    # group 5 (the ICH9 functions) has the ISA window 0-16 MiB mapped 1:1 in 4 KiB pages
    assert rows["0000:00:1f.0"] == rows["0000:00:1f.2"] == 4096
    isa = text.split("Device 0000:00:1f.0")[1].split("\n\n")[0].split("\n")[2:]
    assert isa[0].startswith("0x0000000000000 |\t0x0000000000000000\t0x0000000000000000\t")
    assert isa[-1].startswith("0x0000000000fff |") and isa[-1].endswith("\t0x0000000000fff003")
    assert rows["0000:02:00.0"] == 0


def test_domain_translation_struct_612_per_device(seed_mnt):
    ctx = {"0000:%s:%s.%s" % (m[1], m[2], m[3]): int(m[7], 16) & ~0xFFF
           for m in dmar_rows(cat(seed_mnt.path / INTEL / "dmar_translation_struct"))}
    r = sh(f"cd {seed_mnt.path}/{INTEL} && for d in 0000:*; do cat $d/domain_translation_struct || exit 9; done")
    assert r.returncode == 0, r.stderr
    header = "IOVA_PFN         \tPML5E             \tPML4E             \tPDPE              \tPDE               \tPTE"
    for bdf in sorted(preset_devices("seed-vtd")):
        lines = cat(seed_mnt.path / INTEL / bdf / "domain_translation_struct").split("\n")
        b = bdf.replace(".", ":").split(":")
        assert lines[0] == "Device %s:%s:%s.%s @0x%x" % (*b, ctx[bdf]), lines[0]
        assert lines[1] == header
        assert lines[-1] == "" and all(DOMAIN_ROW_612.match(x) for x in lines[2:-1])


# --- invalidation_queue -------------------------------------------------------------------------
def test_invalidation_queue_format(mnt):
    text = cat(mnt.path / INTEL / "invalidation_queue")
    lines = text.split("\n")
    assert lines[0] == "Invalidation queue on IOMMU: dmar0"
    m = re.fullmatch(r" Base: 0x([0-9a-f]+)\tHead: (\d+)\tTail: (\d+)", lines[1])
    assert m, lines[1]
    regs = regset(cat(mnt.path / INTEL / "iommu_regset"))
    assert int(m[1], 16) == regs["IQA"] & ~0xFFF
    assert (int(m[2]), int(m[3])) == (regs["IQH"] >> 4, regs["IQT"] >> 4)   # legacy: register >> 4
    assert lines[2] == "Index\t\tqw0\t\t\tqw1\t\t\tstatus"
    rows = [IQ_ROW.match(x) for x in lines[3:-2]]
    assert len(rows) == 256 and all(rows)
    assert [int(r[1]) for r in rows] == list(range(256))
    assert all(int(r[4], 16) in (0, 1, 2, 3) for r in rows)
    assert lines[-2:] == ["", ""]
    if mnt.preset == "qemu-ref":      # caching mode: the boot's context/IOTLB invalidations are queued
        assert any(int(r[2], 16) & 0xF == 0x1 for r in rows) and any(int(r[2], 16) & 0xF == 0x2 for r in rows)


# --- ir_translation_struct ----------------------------------------------------------------------
def test_ir_translation_struct_qemu_equals_capture(qemu_mnt):
    assert cat(qemu_mnt.path / INTEL / "ir_translation_struct") == \
        capture_output(f"cat /{INTEL}/ir_translation_struct")


def test_ir_translation_struct_format(mnt):
    text = cat(mnt.path / INTEL / "ir_translation_struct")
    lines = text.split("\n")
    assert lines[:3] == ["Remapped Interrupt supported on IOMMU: dmar0", " IR table address:200000",
                         " Entry SrcID   DstID    Vct IRTE_high\t\tIRTE_low"]
    end = lines.index("")
    rows = [IR_ROW.match(x) for x in lines[3:end]]
    assert rows and all(rows), lines[3:end]
    assert lines[end:] == ["", "****", "", ""]
    for r in rows:
        hi, lo = int(r[7], 16), int(r[8], 16)
        assert lo & 1 and not lo >> 15 & 1                        # present, remapped format
        assert int(r[5], 16) == lo >> 32 and int(r[6], 16) == lo >> 16 & 0xFF
        assert (int(r[2], 16), int(r[3], 16), int(r[4])) == (hi >> 8 & 0xFF, hi >> 3 & 0x1F, hi & 7)
    idx = [int(r[1]) for r in rows]
    assert idx == sorted(idx)


# --- dmar_perf_latency --------------------------------------------------------------------------
def test_dmar_perf_latency_write(mount_preset):
    mnt = mount_preset("qemu-ref")
    f = mnt.path / INTEL / "dmar_perf_latency"
    off = "IOMMU: dmar0 Register Base Address: fed90000\n" + PERF_HEADER + "\n"
    assert cat(f) == off == capture_output(f"cat /{INTEL}/dmar_perf_latency")
    r = sh(f"echo 1 > {f}")
    assert r.returncode == 0, r.stderr
    on = cat(f)
    lines = on.split("\n")
    assert lines[:2] == off.split("\n")[:2] and PERF_ROW.match(lines[2]) and lines[3:] == [""], on
    ref_on = capture_output(f"cat /{INTEL}/dmar_perf_latency").splitlines()
    after_echo = CAPTURE.read_text().split(f"$ echo 1 > /{INTEL}/dmar_perf_latency\n[rc=0]\n")[1]
    assert after_echo.startswith(f"$ cat /{INTEL}/dmar_perf_latency\n")
    assert after_echo.split("\n")[3].startswith("   inv_iotlb") and ref_on[:2] == lines[:2]
    for bad in ("5", "abc", "-1"):
        r = sh(f"echo {bad} > {f}")
        assert r.returncode == 1 and "Invalid argument" in r.stderr, (bad, r.stderr)
        assert cat(f) == on                                     # unchanged: still enabled
    assert sh(f"echo 0 > {f}").returncode == 0
    assert cat(f) == off
    for bad in ("5", "abc"):
        r = sh(f"echo {bad} > {f}")
        assert r.returncode == 1 and "Invalid argument" in r.stderr
        assert cat(f) == off                                    # unchanged: still disabled


def test_dmar_perf_latency_counts_invalidations(mount_preset):
    """With inv_iotlb on, an IOTLB invalidation (caching mode invalidates on map:
    a `traffic start` maps its working set) lands in a bucket."""
    mnt = mount_preset("qemu-ref")
    f = mnt.path / INTEL / "dmar_perf_latency"
    assert sh(f"echo 1 > {f}").returncode == 0
    t = mnt.path / "sys/kernel/debug/vfakefs/traffic"
    assert sh(f"echo 'start 0000:02:00.0 rate=1 ws=8192' > {t} && echo 'stop all' > {t}").returncode == 0
    counts = [int(x) for x in cat(f).split("\n")[2].split()[1:]]
    assert sum(counts[:7]) >= 1 and counts[8] >= counts[7]


# --- vfakefs's own: dmar_table_errors, iotlb_stats ------------------------------------------------
def test_own_files_format(mnt):
    errors = cat(mnt.path / INTEL / "dmar_table_errors")
    assert all(FAULT_LINE.match(x) for x in errors.splitlines())
    stats = cat(mnt.path / INTEL / "iotlb_stats").split("\n")
    assert re.fullmatch(r"IOTLB on dmar0: \d+ entries, \d+ global invalidations", stats[0])
    assert stats[1] == "DID            hits       misses  invalidations"
    assert all(re.fullmatch(r"\d+ +\d+ +\d+ +\d+", x) for x in stats[2:-1]) and stats[-1] == ""
