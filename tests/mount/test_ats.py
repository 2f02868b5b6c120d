"""ATS and the device ATC through a real mount of seed-vtd: the ConnectX-5 at 0000:0c:00.0
(behind switch port 09:02.0 under root port 00:1d.4, which the DMAR table's ATSR names).
lspci -vvv shows its ATS capability enabled, the boot log the ATSR, the `dma` control and
the traffic streams go through its ATC, unmaps reach it through device-IOTLB descriptors,
vfakefs's own debugfs file atc_stats counts it all, and the identity type turns ATS off."""
from __future__ import annotations

import errno
import re

from tests.conftest import lspci_argv, run, sh
from tests.mount.test_controls import INTEL, VF, ask

CX5, X540 = "0000:0c:00.0", "0000:03:00.0"
STATS_HEAD = "device       ATS         hits       misses  invalidations  entries"
ROW = re.compile(r"(\S+) +(on|off) +(\d+) +(\d+) +(\d+) +(\d+)")


def lspci(mnt, bdf: str) -> str:
    r = run(lspci_argv("sysfs.path=sys/bus/pci", "-vvv", "-s", bdf[5:]), cwd=mnt.path)
    assert r.returncode == 0, r.stderr
    return r.stdout


def stats(mnt) -> dict[str, tuple]:
    lines = mnt.read(mnt.path / VF / "atc_stats").splitlines()
    assert lines[0] == STATS_HEAD
    rows = [ROW.fullmatch(x) for x in lines[1:]]
    assert all(rows), lines
    return {r[1]: (r[2], *map(int, r.groups()[2:])) for r in rows}


def group_of(mnt, bdf: str) -> str:
    return (mnt.devdir(bdf) / "iommu_group").resolve().name


def test_lspci_boot_log_and_registers_show_ats(seed_mnt):
    mnt = seed_mnt
    out = lspci(mnt, CX5)
    assert ("\tCapabilities: [148 v1] Address Translation Service (ATS)\n"
            "\t\tATSCap:\tInvalidate Queue Depth: 00\n"
            "\t\tATSCtl:\tEnable+, Smallest Translation Unit: 00\n") in out
    assert "Address Translation Service" not in lspci(mnt, X540)          # the real X540 has none
    dmesg = mnt.read(mnt.path / VF / "dmesg")
    assert re.search(r"\] DMAR: dmar0: reg_base_addr fed90000 ver 1:0 cap d2078c406f0462 ecap f050de\n"
                     r"\[ *[\d.]+\] DMAR: ATSR flags: 0x0\n", dmesg)
    assert "No ATSR found" not in dmesg
    regs = mnt.read(mnt.path / INTEL / "iommu_regset")
    assert re.search(r"^ECAP\s+0x10\s+0x0000000000f050de$", regs, re.M)   # ECAP.DT (bit 2)
    assert stats(mnt)[CX5][0] == "on"


def test_dma_misses_once_then_hits_the_atc_and_unmap_invalidates_it(mount_preset):
    mnt = mount_preset("seed-vtd")
    t = mnt.path / VF / "traffic"
    base = 0x100000000 - 16384                     # the stream's buffer: 4 pages, top-down below 4 GiB
    assert sh(f"echo 'start {CX5} rate=1 ws=16384' > {t}").returncode == 0
    try:
        first, again, write = ask(mnt, "dma", f"{CX5} read {base + 0x2000:#x} 8",
                                  f"{CX5} read {base + 0x2000:#x} 8", f"{CX5} write {base + 0x2010:#x} 8")
        assert re.fullmatch(rf"{CX5} read iova {base + 0x2000:#x} -> hpa 0x[0-9a-f]+( \(iotlb hit\))?\n"
                            r"data (00){8}", first)
        hpa = first.split("hpa ")[1].split()[0]
        assert again == f"{CX5} read iova {base + 0x2000:#x} -> hpa {hpa} (atc hit)\ndata " + "00" * 8
        assert write == f"{CX5} write iova {base + 0x2010:#x} -> hpa {int(hpa, 16) + 0x10:#x} (atc hit)"
        state, hits, misses, inv, entries = stats(mnt)[CX5]
        assert state == "on" and hits >= 2 and misses >= 1 and inv == 0 and entries >= 1
    finally:
        assert sh(f"echo 'stop all' > {t}").returncode == 0      # unmaps the stream's buffer
    # seed-vtd's groups are DMA-FQ: the unmap's flush waits for the flush queue's timer (the
    # engine's 10 ms of simulated time), which flushes the domain and the device's whole ATC:
    # the device-IOTLB descriptor (SID 0c:00.0, type 3) with the size of everything, S set
    whole = re.compile(r"^ +\d+\t00000c0000000003\t7ffffffffffff001\t", re.M)
    r = sh(f"for i in $(seq 600); do grep -qP '^ +\\d+\\t00000c0000000003\\t7ffffffffffff001\\t' "
           f"{mnt.path / INTEL / 'invalidation_queue'} && exit 0; sleep 0.05; done; exit 1")
    queue = mnt.read(mnt.path / INTEL / "invalidation_queue")
    assert r.returncode == 0 and whole.search(queue), queue
    state, hits, misses, inv, entries = stats(mnt)[CX5]
    assert inv == 1 and entries == 0
    answer, = ask(mnt, "dma", f"{CX5} read {base + 0x2000:#x} 8")     # nothing stale in the ATC
    assert ": fault: " in answer and "PTE Read access is not set" in answer


def test_traffic_through_the_atc_hits_nearly_always(mount_preset):
    mnt = mount_preset("seed-vtd")
    t = mnt.path / VF / "traffic"
    assert sh(f"echo 'start {CX5} rate=1000000 ws=65536' > {t}").returncode == 0
    try:
        # wait (no timing assertion) until the stream has issued a good many requests
        r = sh(f"for i in $(seq 600); do grep -q 'requests=[0-9]\\{{6,\\}}' {t} && exit 0; sleep 0.05; done; exit 1")
        assert r.returncode == 0, mnt.read(t)
        state, hits, misses, inv, entries = stats(mnt)[CX5]
        assert state == "on" and entries == 16 and misses <= 64          # 16 pages: one request each (+ writes)
        assert hits / (hits + misses) > 0.999
    finally:
        sh(f"echo 'stop all' > {t}")


def test_identity_turns_ats_off_and_dma_back_on(mount_preset):
    mnt = mount_preset("seed-vtd")
    g = group_of(mnt, CX5)
    gtype = mnt.path / "sys/kernel/iommu_groups" / g / "type"
    assert mnt.read(gtype) == "DMA-FQ\n"
    assert sh(f"echo {CX5} > {mnt.pci}/drivers/mlx5_core/unbind").returncode == 0
    assert sh(f"echo identity > {gtype}").returncode == 0
    assert "ATSCtl:\tEnable-, Smallest Translation Unit: 00" in lspci(mnt, CX5)
    assert stats(mnt)[CX5][0] == "off"
    assert sh(f"echo DMA > {gtype}").returncode == 0
    assert "ATSCtl:\tEnable+, Smallest Translation Unit: 00" in lspci(mnt, CX5)
    assert stats(mnt)[CX5][0] == "on"


def test_atc_stats_is_read_only(seed_mnt):
    f = seed_mnt.path / VF / "atc_stats"
    before = seed_mnt.read(f)
    r = sh(f"echo 0 > {f}")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = run(["python3", "-c", f"import os\ntry:\n os.open('{f}', os.O_WRONLY)\nexcept OSError as e:\n print(e.errno)"])
    assert r.stdout.strip() == str(errno.EACCES)
    assert seed_mnt.read(f) == before
    assert oct((f.stat().st_mode) & 0o777) == oct(0o444)
