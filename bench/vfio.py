#!/usr/bin/env python3
"""VFIO through `vfakefs run`: what an unmodified C program (bench/vfio_bench.c, built
here with gcc) sees, each figure printed beside the issue's target, baselines measured
in the same run.

What it does (daemon and programs pinned to one CPU, as DESIGN.md's performance notes ask):
 1. Mounts seed-vtd in the foreground and gives group 42 to vfio-pci (the essay's steps).
 2. Emulated ioctl: median of N VFIO_GROUP_GET_STATUS, each timed inside the program,
    under `vfakefs run`. Unrelated ioctl: median of N FIONREAD on a pipe in the same
    program under the filter, against the same program's FIONREAD run without
    `vfakefs run` (no filter), rounds alternating.
 3. MAP_DMA of 1 GiB (MAP_NORESERVE memory, 1 GiB aligned), timed inside the program,
    and its UNMAP_DMA: at IOVA 1 GiB (type1 can use one 1 GiB page) and at 1 GiB + 4 KiB
    (4 KiB pages only).
 4. A 1 MiB device write into the program's mapped buffer, through the daemon: one
    write of the `dma` control (a DMA engine's transfer, device_write()); the program
    checks every byte. Beside it, the daemon's own code path for the same
    write (device_dma.dma_write through the VFIO domain, one process_vm_writev) timed
    in this process on a Machine of its own (model_device_write()), to show where the
    time goes.
 5. Remounts bench/vfio-8x2.toml (8 groups of 2 functions on vfio-pci) and holds 8
    containers with 2 devices each at once: the time until all 8 are set up, and their
    emulated-ioctl medians while all 8 ask at the same time.

    taskset -c 0 .venv/bin/python bench/vfio.py [--n N] [--rounds R] [--json FILE]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_under_traffic import REPO, unmount   # noqa: E402
from figures import figure, write as write_figures  # noqa: E402

HERE = Path(__file__).resolve().parent
GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"
MiB, GiB = 1 << 20, 1 << 30


def mount(mnt: Path, topology: str, cpu: int, src: Path, log) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-m", "vfakefs", "mount", "-f",
                             "-t", topology, str(mnt)], cwd=src, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while not (mnt / "sys/bus/pci/devices").is_dir():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the mount did not come up (exit {proc.poll()})")
        time.sleep(0.05)
    return proc


def write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def bind_group_42(mnt: Path) -> None:
    pci = mnt / "sys/bus/pci"
    write(pci / "devices" / GPU / "driver/unbind", GPU)
    write(pci / "drivers/vfio-pci/new_id", "10de 1b80")
    write(pci / "devices" / AUDIO / "driver_override", "vfio-pci")
    write(pci / "devices" / AUDIO / "driver/unbind", AUDIO)
    write(pci / "drivers_probe", AUDIO)


def in_run(mnt: Path, *argv) -> list[str]:
    return [sys.executable, "-m", "vfakefs", "run", "--mnt", str(mnt), "--", *map(str, argv)]


def figures(out: str) -> dict[str, int]:
    d = {}
    for line in out.splitlines():
        k, _, v = line.partition(" ")
        try:
            d[k] = int(v, 0)
        except ValueError:
            pass
    return d


def run(cmd: list, src: Path, input: str | None = None) -> dict[str, int]:
    env = dict(os.environ, PYTHONPATH=str(src))
    r = subprocess.run(list(map(str, cmd)), cwd=src, env=env, input=input, capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return figures(r.stdout)


def device_write(mnt: Path, size: int) -> float:
    """A device write of `size` bytes at IOVA 0 through the daemon, in seconds (the
    median of 5, after one untimed): one request on the `dma` control (the device's
    engine sends it as 4 KiB requests)."""
    fd = os.open(mnt / "sys/kernel/debug/vfakefs/dma", os.O_RDWR)
    request = f"{GPU} write 0x0 {size} data=a5\n".encode()
    try:
        os.write(fd, request)      # once untimed: the daemon's first walk imports its numpy code
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            os.write(fd, request)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    finally:
        os.close(fd)


def model_device_write(exe: Path, size: int, rounds: int = 5) -> tuple[float, dict]:
    """The same write without the control in front: the daemon's code path (device_dma's
    dma_write through the VFIO domain into a program's buffer with process_vm_writev)
    called in this process on a Machine of its own (this checkout's model), the buffer
    in a plain program (`vfio_bench buffer`). Median seconds, and what the program found
    in its buffer."""
    sys.path.insert(0, str(REPO))
    from vfakefs.model import topology
    from vfakefs.model.base import binding
    from vfakefs.model.iommu.device_dma import dma_write
    from vfakefs.model.vfio.container import VfioContainer
    from vfakefs.model.vfio.group import VfioGroup
    from vfakefs.syscall.process import ProcMemory

    m = topology.load("seed-vtd")
    for name in (GPU, AUDIO):
        dev = m.lookup(name)
        binding.unbind(m, dev.driver, name)
        dev.driver_override = "vfio-pci"
        binding.bind(m, m.drivers["vfio-pci"], name)
    p = subprocess.Popen([str(exe), "buffer", str(size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        addr = int(p.stdout.readline().split()[1], 0)
        assert p.stdout.readline().strip() == "ready"
        c = VfioContainer(m, memory=ProcMemory(p.pid))
        g = VfioGroup.open(m, 42)
        g.set_container(c)
        c.set_iommu(3)
        dev = g.get_device_fd(GPU).dev
        dev.config.w16(0x04, dev.config.r16(0x04) | 0x4)             # bus master, as a driver sets it
        c.map_dma(addr, 0, size)
        data, times = b"\xa5" * size, []
        for _ in range(rounds):
            t0 = time.perf_counter()
            r = dma_write(m, dev, 0, data)
            times.append(time.perf_counter() - t0)
            assert r.done == size and r.fault is None, r
        out, _ = p.communicate("go\n", timeout=60)
        return statistics.median(times), figures(out)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def hold_eight(mnt: Path, src: Path, exe: Path, n: int) -> tuple[int, float, list[float], list[float]]:
    """8 programs, each a container with one group of 2 devices, alive at once."""
    groups = []
    for bus in range(1, 9):
        dev = f"0000:{bus:02x}:00.0"
        gid = os.path.basename(os.readlink(mnt / "sys/bus/pci/devices" / dev / "iommu_group"))
        groups.append((gid, dev, f"0000:{bus:02x}:00.1"))
    env = dict(os.environ, PYTHONPATH=str(src))
    t0 = time.perf_counter()
    procs = [subprocess.Popen(in_run(mnt, exe, "hold", n, *g), cwd=src, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for g in groups]
    ready, inside = 0, []
    try:
        for p in procs:
            f = figures(p.stdout.readline())
            if p.stdout.readline().strip() == "ready" and "setup_ns" in f:
                ready += 1
                inside.append(f["setup_ns"] / 1e6)
        setup = time.perf_counter() - t0
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        medians = []
        for p in procs:
            out, err = p.communicate(timeout=600)
            f = figures(out)
            if p.returncode == 0 and "emulated_p50_ns" in f:
                medians.append(f["emulated_p50_ns"] / 1000)
            else:
                print(f"a holder failed ({p.returncode}): {out}{err}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return ready, setup, inside, medians


def line(what: str, value: str, target: str, ok: bool | None) -> None:
    verdict = "" if ok is None else ("met" if ok else "MISSED")
    print(f"{what:<52} {value:>22}   {target:<22} {verdict}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="ioctls timed per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds alternating filtered and unfiltered")
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--src", type=Path, default=REPO, help="the checkout the daemon runs from")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON (bench/figures.py)")
    args = ap.parse_args()
    src = args.src.resolve()
    gcc = shutil.which("gcc")
    if gcc is None:
        print("bench/vfio.py needs gcc (apt-get install gcc libc6-dev)")
        return 1
    os.sched_setaffinity(0, {args.cpu})
    with tempfile.TemporaryDirectory(prefix="vfakefs-bench-") as tmp:
        tmp = Path(tmp)
        exe = tmp / "vfio_bench"
        subprocess.run([gcc, "-O2", "-o", str(exe), str(HERE / "vfio_bench.c")], check=True)
        mnt = tmp / "mnt"
        mnt.mkdir()
        log = open(tmp / "daemon.log", "w+")
        emulated, under, native = [], [], []
        try:
            proc = mount(mnt, "seed-vtd", args.cpu, src, log)
            try:
                bind_group_42(mnt)
                for _ in range(args.rounds):
                    f = run(in_run(mnt, exe, "ioctl", args.n, 42, GPU), src)
                    emulated.append(f["emulated_p50_ns"] / 1000)
                    under.append(f["unrelated_p50_ns"] / 1000)
                    native.append(run([exe, "unrelated", args.n], src)["unrelated_p50_ns"] / 1000)
                f = run(in_run(mnt, exe, "map", GiB, 42, GPU), src)
                map_ms, unmap_ms = f["map_ns"] / 1e6, f["unmap_ns"] / 1e6
                f = run(in_run(mnt, exe, "map", GiB, 42, GPU, GiB + 4096), src)
                map4k_ms, unmap4k_ms = f["map_ns"] / 1e6, f["unmap_ns"] / 1e6
                env = dict(os.environ, PYTHONPATH=str(src))
                p = subprocess.Popen(in_run(mnt, exe, "dmabuf", MiB, 42, GPU), cwd=src, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                try:
                    assert p.stdout.readline().strip() == "ready", "dmabuf did not start"
                    seconds = device_write(mnt, MiB)
                    out, _ = p.communicate("go\n", timeout=600)
                    landed = figures(out)
                finally:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
                model_seconds, model_landed = model_device_write(exe, MiB)
            finally:
                unmount(mnt, proc)
            proc = mount(mnt, str(HERE / "vfio-8x2.toml"), args.cpu, src, log)
            try:
                ready, setup, inside, medians = hold_eight(mnt, src, exe, max(args.n // 10, 100))
            finally:
                unmount(mnt, proc)
        except (OSError, RuntimeError, AssertionError) as e:
            print(f"the run failed: {e}")
            log.seek(0)
            print(log.read()[-3000:])
            return 1
    em, un, na = statistics.median(emulated), statistics.median(under), statistics.median(native)
    print(f"daemon from {src}, pinned with the programs to CPU {args.cpu}; {args.rounds} rounds of {args.n} ioctls")
    line("emulated ioctl (GROUP_GET_STATUS), median", f"{em:.1f} us", "<= 30 us", em <= 30)
    line("unrelated ioctl (FIONREAD), median under the filter", f"{un:.2f} us", "", None)
    line("unrelated ioctl (FIONREAD), median without it", f"{na:.2f} us", "", None)
    line("  difference", f"{un - na:+.2f} us", "within 1 us", abs(un - na) <= 1)
    line("MAP_DMA of 1 GiB (IOVA 1 GiB: one 1 GiB page)", f"{map_ms:.1f} ms", "< 50 ms", map_ms < 50)
    line("  its UNMAP_DMA", f"{unmap_ms:.1f} ms", "", None)
    line("MAP_DMA of 1 GiB (IOVA 1 GiB + 4 KiB: 4 KiB pages)", f"{map4k_ms:.1f} ms", "< 50 ms", map4k_ms < 50)
    line("  its UNMAP_DMA", f"{unmap4k_ms:.1f} ms", "", None)
    good = landed.get("differ") == 0 and landed.get("byte0") == 0xA5
    rate = MiB / seconds / 1e9
    line("1 MiB device write into the program's buffer", f"{rate:.3f} GB/s", ">= 1 GB/s", rate >= 1 and good)
    line("  every byte landed", "yes" if good else f"no ({landed})", "", None)
    line("  the path: one write of the `dma` control", f"{seconds * 1e6:.0f} us", "", None)
    good = model_landed.get("differ") == 0 and model_landed.get("byte0") == 0xA5
    line("  dma_write() alone, in this process (no control)", f"{MiB / model_seconds / 1e9:.3f} GB/s", "",
         None)
    line("  every byte landed", "yes" if good else f"no ({model_landed})", "", None)
    line("8 containers with 2 devices each at once", f"{ready}/8 ready", "8/8", ready == 8)
    line("  until all 8 were ready (8 `vfakefs run` started)", f"{setup * 1000:.0f} ms", "", None)
    if inside:
        line("  the slowest set-up inside its program", f"{max(inside):.1f} ms", "", None)
    if medians:
        line("  emulated ioctl median, 8 programs at once", f"{statistics.median(medians):.1f} us", "", None)
    if args.json:
        landed_ok = landed.get("differ") == 0 and landed.get("byte0") == 0xA5
        figs = [figure("emulated ioctl (GROUP_GET_STATUS), median", em, "us", target=("value", "<=", 30)),
                figure("unrelated ioctl (FIONREAD) under the filter, median", un, "us", baseline=na,
                       baseline_what="the same program without the filter", target=("diff", "<=", 1)),
                figure("MAP_DMA of 1 GiB, one 1 GiB page", map_ms, "ms", target=("value", "<", 50)),
                figure("MAP_DMA of 1 GiB, 4 KiB pages", map4k_ms, "ms", target=("value", "<", 50)),
                figure("1 MiB device write into the program's buffer", rate, "GB/s",
                       baseline=MiB / model_seconds / 1e9, baseline_what="dma_write() alone, in-process",
                       target=("value", ">=", 1)),
                figure("8 containers with 2 devices each at once: ready", ready, "of 8", target=("value", ">=", 8)),
                figure("  until all 8 were ready", setup * 1000, "ms")]
        if not landed_ok:
            figs[4]["ok"] = False
        write_figures(args.json, "vfio.py", figs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
