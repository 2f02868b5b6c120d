"""`vfakefs top MNT` run as a real program against real mounts with traffic started
through the `traffic` control, its batch frames parsed row by row; its options (-p, -o,
-n, -d), its errors, its interactive mode on a pty; and the dma_stats control it reads
(vfakefs/dma_stats), whose counts follow the `dma` control's requests exactly.

No wall-clock assertion: rates are only checked for being positive or zero."""
from __future__ import annotations

import errno
import os
import re
import select
import subprocess
import sys
import time

import pytest

from tests.conftest import ENV, REPO, run, sh, vfakefs

VF = "sys/kernel/debug/vfakefs"
IXGBE, IXGBE1 = "0000:03:00.0", "0000:03:00.1"
NVME_A, NVME_C = "0000:06:00.0", "0000:0a:00.0"
AHCI = "0000:00:1f.2"                         # qemu-ref: the ISA window 0-16 MiB mapped 1:1
HEAD = ["DEVICE", "DRIVER", "REQ/s", "B/s", "IOTLB%", "ATC%", "FAULTS", "FLT/s", "IRQ/s", "VECTORS/s"]
UNITS = {"k": 1e3, "M": 1e6, "G": 1e9}


def num(text: str) -> float:
    """A rate as top prints it: 0, 7.5, 123, 12.3k, 410M."""
    return float(text[:-1]) * UNITS[text[-1]] if text[-1] in UNITS else float(text)


def frames(text: str) -> list[dict]:
    """Each batch frame: its header lines and rows {bdf: {column: text}} in their order."""
    out = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].startswith("vfakefs top - "):
            out.append({"header": lines[:3], "rows": {}, "order": []})
        elif lines and lines[0].split() == HEAD:
            for line in lines[1:]:
                f = line.split(None, 9)
                assert len(f) == 10, line
                out[-1]["rows"][f[0]] = dict(zip(HEAD, f))
                out[-1]["order"].append(f[0])
        else:
            raise AssertionError(f"not a frame: {block!r}")
    return out


def top(mnt, *args) -> list[dict]:
    r = vfakefs("top", str(mnt.path), "-b", *args)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return frames(r.stdout)


def write(path, text: str) -> None:
    r = sh(f"echo '{text}' > {path}")
    assert r.returncode == 0, r.stderr


@pytest.fixture
def busy(mount_preset):
    """seed-vtd with a stream on the X540's first port and a fault storm from one NVMe
    (the fault threshold raised so the storm's device keeps bus mastering)."""
    mnt = mount_preset("seed-vtd")
    v = mnt.path / VF
    write(v / "fault_threshold", "2147483647")
    write(v / "traffic", f"start {IXGBE} rate=5000 ws=65536")
    write(v / "traffic", f"start {NVME_A} rate=1000 pattern=storm")
    try:
        yield mnt
    finally:
        write(v / "traffic", "stop all")


def test_frames_show_the_streams(busy):
    fs = top(busy, "-n", "2", "-d", "0.2")
    assert len(fs) == 2
    for f in fs:
        rows = f["rows"]
        assert sorted(rows) == sorted(os.listdir(busy.pci / "devices"))      # every function, once
        assert re.fullmatch(r"vfakefs top - .* - clock [0-9.]+ s, interval [0-9.]+ s simulated \([0-9.]+ s real\)",
                            f["header"][0]), f["header"][0]
        assert "streams: 2 running" in f["header"][1] and "IOMMU: dmar0 on" in f["header"][1]
        assert f["header"][2] == f"Functions: {len(rows)} shown of {len(rows)}, sorted by dma"
        x = rows[IXGBE]
        assert x["DRIVER"] == "ixgbe" and num(x["REQ/s"]) > 0 and num(x["B/s"]) > 0
        assert x["FAULTS"] == "0" and x["FLT/s"] == "0" and 0 <= float(x["IOTLB%"]) <= 100
        n = rows[NVME_A]
        assert n["DRIVER"] == "nvme" and num(n["REQ/s"]) > 0 and n["B/s"] == "0"   # a storm moves nothing
        assert int(n["FAULTS"]) > 0 and num(n["FLT/s"]) > 0 and n["IOTLB%"] == "0.0"
        for idle in (IXGBE1, NVME_C):
            i = rows[idle]
            assert (i["REQ/s"], i["B/s"], i["FAULTS"], i["FLT/s"], i["IRQ/s"]) == ("0", "0", "0", "0", "0")
            assert set(re.findall(r"\d+:(\S+)", i["VECTORS/s"])) == {"0"}
        assert rows["0000:00:1c.0"]["DRIVER"] == "pcieport" and rows["0000:00:00.0"]["DRIVER"] == "-"
        assert f["order"][:2] == [IXGBE, NVME_A]                     # busiest first (5,000 and 1,000 a second)
        total = re.search(r"DMA faults: (\d+) total", f["header"][1])
        assert int(total[1]) == sum(int(r["FAULTS"]) for r in rows.values())
    assert int(fs[1]["rows"][NVME_A]["FAULTS"]) > int(fs[0]["rows"][NVME_A]["FAULTS"])


def test_filter_and_sort(busy):
    f, = top(busy, "-n", "1", "-d", "0.2", "-p", "03:00.0,0a:00.0", "-p", NVME_A, "-o", "faults")
    assert f["order"][0] == NVME_A and sorted(f["order"]) == sorted([IXGBE, NVME_A, NVME_C])
    assert f["header"][2] == f"Functions: 3 shown of {len(os.listdir(busy.pci / 'devices'))}, sorted by faults"
    f, = top(busy, "-n", "1", "-d", "0.2", "-p", "0000:0a:00.0")
    assert f["order"] == [NVME_C]
    f, = top(busy, "-n", "1", "-d", "0.2", "-p", "0000:0d:00.0")           # no such function: no row
    assert f["order"] == [] and f["header"][2].startswith("Functions: 0 shown of ")


def test_interrupts_per_vector_and_sort_by_irqs(mount_preset):
    mnt = mount_preset("seed-vtd")
    msi = mnt.path / VF / "msi"
    p = subprocess.Popen([sys.executable, "-m", "vfakefs", "top", str(mnt.path), "-b", "-n", "2", "-d", "0.3",
                          "-o", "irqs"], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        while p.poll() is None:          # vector 1 of the X540's first port and a log line, while top runs
            fd = os.open(msi, os.O_RDWR)
            try:
                os.write(fd, f"{IXGBE} vector 1".encode())
                assert b"delivered" in os.pread(fd, 4096, 0)
            finally:
                os.close(fd)
            with open(mnt.path / "dev/kmsg", "w") as k:
                k.write("<6>top test\n")
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    for f in frames(out):
        x = f["rows"][IXGBE]
        vec = dict(v.split(":") for v in x["VECTORS/s"].split())
        assert sorted(vec) == ["0", "1", "2"]                       # eth0-TxRx-0, eth0-TxRx-1, eth0
        assert num(vec["1"]) > 0 and vec["0"] == vec["2"] == "0" and num(x["IRQ/s"]) == num(vec["1"])
        assert f["order"][0] == IXGBE and f["rows"][IXGBE1]["IRQ/s"] == "0"
        assert f["rows"]["0000:01:00.1"]["IRQ/s"] == "-"           # snd_hda_intel on NVIDIA: INTx, no MSI
        assert num(re.search(r"kernel log: (\S+) lines/s", f["header"][1])[1]) > 0


def test_ats_device_shows_its_atc(mount_preset):
    mnt = mount_preset("seed-vtd")
    cx5 = "0000:0c:00.0"
    write(mnt.path / VF / "traffic", f"start {cx5} rate=2000 ws=65536")
    try:
        f, = top(mnt, "-n", "1", "-d", "0.2", "-p", f"{cx5},{IXGBE}")
    finally:
        write(mnt.path / VF / "traffic", "stop all")
    assert f["rows"][cx5]["DRIVER"] == "mlx5_core" and num(f["rows"][cx5]["REQ/s"]) > 0
    assert 0 <= float(f["rows"][cx5]["ATC%"]) <= 100
    assert f["rows"][IXGBE]["ATC%"] == "-"                          # no ATS capability


def test_umount_while_top_watches(mount_preset):
    """top holds no file open between two frames, so the mount can be unmounted under it
    (a try that meets a frame being read is refused as busy and changes nothing: again);
    top then says that the mount is gone and exits 1."""
    mnt = mount_preset("seed-vtd")
    p = subprocess.Popen([sys.executable, "-m", "vfakefs", "top", str(mnt.path), "-b", "-d", "0.2"], cwd=REPO,
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("vfakefs top - ")        # the first frame is out
        for _ in range(50):
            r = vfakefs("umount", str(mnt.path))
            if r.returncode == 0 or "busy" not in r.stderr:
                break
        assert r.returncode == 0, r.stderr
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1
    assert err == f"vfakefs top: {mnt.path}: cannot read {mnt.pci}/devices: No such file or directory\n"


def test_errors(tmp_path):
    r = vfakefs("top", str(tmp_path), "-b", "-n", "1")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"vfakefs top: {tmp_path}: not a vfakefs mount ({tmp_path}/sys/bus/pci/devices is missing)\n"
    r = vfakefs("top", str(tmp_path / "nowhere"), "-b", "-n", "1")
    assert r.returncode == 2 and "not a vfakefs mount" in r.stderr
    for bad, what in ((["-o", "cpu"], "argument -o/--sort: invalid choice: 'cpu'"),
                      (["-p", "3:0.0"], "argument -p/--device: invalid PCI address value: '3:0.0'"),
                      (["-d", "0"], "argument -d/--delay: invalid number of seconds value: '0'"),
                      (["-d", "nan"], "argument -d/--delay: invalid number of seconds value: 'nan'"),
                      (["-n", "0"], "argument -n/--iterations: invalid iteration count value: '0'")):
        r = vfakefs("top", str(tmp_path), "-b", *bad)
        assert r.returncode == 2 and what in r.stderr and r.stdout == "", (bad, r.stderr)


def test_interactive_redraws_in_place_and_q_quits(seed_mnt):
    main, sub = os.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "vfakefs", "top", str(seed_mnt.path), "-d", "0.2"], cwd=REPO,
                             env=dict(ENV, COLUMNS="120", LINES="40"), stdin=sub, stdout=sub, stderr=sub)
        os.close(sub)
        sub = None
        seen = b""
        try:
            while seen.count(b"DEVICE ") < 2:                       # two frames drawn
                ready, _, _ = select.select([main], [], [], 60)
                assert ready, seen
                seen += os.read(main, 65536)
            os.write(main, b"q")
            assert p.wait(timeout=60) == 0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        try:
            while select.select([main], [], [], 0)[0]:
                seen += os.read(main, 65536)
        except OSError:
            pass
    finally:
        os.close(main)
        if sub is not None:
            os.close(sub)
    assert seen.startswith(b"\x1b[?1049h\x1b[?25l")                # the alternate screen, no cursor
    assert seen.count(b"\x1b[H") >= 3 and b"q quits" in seen         # each frame redrawn from the top
    assert seen.endswith(b"\x1b[?25h\x1b[?1049l")                   # the terminal given back


def test_interactive_with_n_leaves_the_last_frame(seed_mnt):
    main, sub = os.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "vfakefs", "top", str(seed_mnt.path), "-d", "0.2", "-n", "2",
                              "-p", IXGBE], cwd=REPO, env=dict(ENV, COLUMNS="120", LINES="40"),
                             stdin=sub, stdout=sub, stderr=sub)
        assert p.wait(timeout=60) == 0
        seen = b""
        while select.select([main], [], [], 0)[0]:
            seen += os.read(main, 65536)
    finally:
        os.close(main)
        os.close(sub)
    assert b"\x1b[?1049h" not in seen and seen.count(b"DEVICE ") == 2
    assert seen.endswith(b"\x1b[?25h\r\n") and IXGBE.encode() + b" ixgbe" in seen


# --- the dma_stats control it reads ---------------------------------------------------------------
def stats(mnt) -> dict[str, list[int]]:
    lines = mnt.read(mnt.path / VF / "dma_stats").splitlines()
    assert re.fullmatch(r"clock \d+\.\d{6}", lines[0]), lines[0]
    assert lines[1].split() == ["device", "requests", "bytes", "faults", "iotlb_hits", "iotlb_misses", "serviced"]
    return {f[0]: [int(x) for x in f[1:]] for f in (line.split() for line in lines[2:])}


def test_dma_stats_counts_the_dma_controls_requests(mount_preset):
    mnt = mount_preset("qemu-ref")
    before = stats(mnt)
    assert sorted(before) == sorted(os.listdir(mnt.pci / "devices"))
    fd = os.open(mnt.path / VF / "dma", os.O_RDWR)
    try:
        for req in (f"{AHCI} write 0x1800 4096", f"{AHCI} read 0x1000000 8", "0000:00:1f.3 read 0x1000 4"):
            os.write(fd, req.encode())
    finally:
        os.close(fd)
    after = stats(mnt)
    req, nbytes, faults, hits, misses, serviced = (a - b for a, b in zip(after[AHCI], before[AHCI]))
    assert (req, nbytes, faults, serviced) == (3, 4096, 1, 1)   # two pages written, then one faulting read
    assert hits + misses == 3
    assert after["0000:00:1f.3"] == before["0000:00:1f.3"]     # bus mastering off: nothing was issued
    assert {k: v for k, v in after.items() if k != AHCI} == {k: v for k, v in before.items() if k != AHCI}


def test_dma_stats_is_read_only(seed_mnt):
    f = seed_mnt.path / VF / "dma_stats"
    assert oct(os.stat(f).st_mode & 0o777) == "0o444"
    before = stats(seed_mnt)
    r = sh(f"echo 0 > {f}")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = run(["python3", "-c", f"import os\ntry:\n os.open('{f}', os.O_WRONLY)\nexcept OSError as e:\n print(e.errno)"])
    assert r.stdout.strip() == str(errno.EACCES)
    after = stats(seed_mnt)
    assert {k: v[:5] for k, v in after.items()} == {k: v[:5] for k, v in before.items()}


# --- the rates, from two samples (no mount) ------------------------------------------------------
def test_rates_over_the_clock_and_after_a_reset():
    from pathlib import Path
    from vfakefs.top import Device, Sample, frame
    dev = lambda req: {IXGBE: Device(IXGBE, "ixgbe", (req, req * 4096, 0, req, 0), None, {0: req // 10})}  # noqa: E731
    a, b = Sample(100.0, 2.0, dev(1000), 1, "dmar0 on", 5), Sample(100.5, 2.5, dev(3000), 1, "dmar0 on", 10)
    text = frame(Path("/m"), a, b, "dma", None)
    assert text[0] == "vfakefs top - /m - clock 2.500 s, interval 0.500 s simulated (0.500 s real)"
    assert "kernel log: 10 lines/s" in text[1]
    assert text[-1].split()[:9] == [IXGBE, "ixgbe", "4.0k", "16.4M", "100.0", "-", "0", "0", "400"]
    # a reset: the clock and the counters start again; the rates are over the new clock
    c = Sample(101.0, 0.25, dev(500), 1, "dmar0 on", 12)
    assert frame(Path("/m"), b, c, "dma", None)[-1].split()[2] == "2.0k"
    # no clock movement: over real time, and said so
    d = Sample(101.5, 0.25, dev(1000), 1, "dmar0 on", 12)
    text = frame(Path("/m"), c, d, "dma", None)
    assert text[0].endswith("interval 0.500 s real (the engine did not step)") and text[-1].split()[2] == "1.0k"
    # a reset whose clock has not moved yet: real time too
    e = Sample(102.0, 0.0, dev(0), 0, "dmar0 on", 12)
    assert frame(Path("/m"), d, e, "dma", None)[0].endswith("(the engine did not step)")
    # a mount without dma_stats: no counters, rates over real time
    f = Sample(102.5, None, {IXGBE: Device(IXGBE, "ixgbe")}, None, "off", None)
    text = frame(Path("/m"), f, f, "dma", None)
    assert text[0].endswith("(the mount shows no clock)")
    assert text[-1].split() == [IXGBE, "ixgbe", "-", "-", "-", "-", "-", "-", "-", "-"]
