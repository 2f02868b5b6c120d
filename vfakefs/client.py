"""A small Python API over a mount's own controls (MNT/sys/kernel/debug/vfakefs/)
and its kernel log, for test suites that would rather not shell out:

    from vfakefs.client import Controls
    c = Controls("/mnt/vfakefs")
    c.dma("0000:03:10.0", "write", 0x1000, 64)   # -> "... fault: [DMA Write NO_PASID] ..."
    c.dma("0000:03:10.0", "write", 0x1000, 64, data=b"ab")   # "ab" 32 times
    c.dma_read("0000:03:10.0", 0x1000, 64)        # -> the 64 bytes the device read
    c.msi("0000:00:03.0", 0xfee00010, 0)
    c.msi_vector("0000:01:00.0", 0)               # the vector's programmed message
    c.traffic_start("0000:03:00.0", rate=100_000, pattern="random")
    c.fault_threshold = 10
    c.fault("0000:03:00.0", "sriov_numvfs", delay=5)      # the next write takes 5 s of simulated time
    c.fault("0000:03:00.1", "probe", fail="EIO", times="always")
    c.dmesg()                                     # the log as dmesg prints it
    c.reset()
    c.scenario_start("churn.toml"); c.scenario_wait(timeout=30)   # timed steps (model/scenario.py)

It talks to the files only (it imports nothing else of vfakefs), so it works
against any mount, local or in a container. Errors come back as OSError with
the errno the control answered (EINVAL, with the reason in the kernel log).
"""
from __future__ import annotations

import os
import time
from pathlib import Path


class Controls:
    def __init__(self, mountpoint: str | os.PathLike):
        self.root = Path(mountpoint)
        self.dir = self.root / "sys/kernel/debug/vfakefs"

    def _ask(self, name: str, request: str) -> str:
        """Write a request and read the answer on the same open file. A request must fit
        one write of a sysfs file (4096 bytes): a longer one is cut there, as by the kernel,
        so it is refused here (a dma write's data= holds at most about 2000 bytes)."""
        if len(request.encode()) > 4096:
            raise ValueError(f"a {name} request is at most 4096 bytes, not {len(request.encode())}")
        fd = os.open(self.dir / name, os.O_RDWR)
        try:
            os.write(fd, request.encode())
            return os.pread(fd, 1 << 16, 0).decode()
        finally:
            os.close(fd)

    def _write(self, name: str, text: str) -> None:
        fd = os.open(self.dir / name, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def dma(self, bdf: str, direction: str, iova: int, length: int, data: bytes | None = None) -> str:
        """One DMA request (a read 1..4096 bytes, a write 1..1 MiB); the control's answer. A write carries `data`
        (repeated to the length, cut when longer) or zeros; a read's answer has a second
        line `data <hex>` with the bytes read (dma_read() returns them)."""
        request = f"{bdf} {direction} {iova:#x} {length}"
        if data is not None:
            request += f" data={bytes(data).hex()}"
        return self._ask("dma", request)

    def dma_read(self, bdf: str, iova: int, length: int) -> bytes:
        """The bytes the device read: all `length`, fewer when a fault stopped it (the
        fault is in dmesg and dmar_table_errors), none when bus mastering is off."""
        for line in self.dma(bdf, "read", iova, length).splitlines()[1:]:
            if line.startswith("data "):
                return bytes.fromhex(line[5:])
        return b""

    def msi(self, bdf: str, address: int, data: int) -> str:
        return self._ask("msi", f"{bdf} {address:#x} {data:#x}")

    def msi_vector(self, bdf: str, n: int) -> str:
        """The device raises its MSI/MSI-X vector n with the message it has programmed
        (OSError EINVAL when that vector is not enabled)."""
        return self._ask("msi", f"{bdf} vector {n}")

    def traffic_start(self, bdf: str, rate: int = 100_000, mix: float = 0.7, ws: int = 1 << 20,
                      pattern: str = "sequential") -> None:
        self._write("traffic", f"start {bdf} rate={rate} mix={mix} ws={ws} pattern={pattern}")

    def traffic_stop(self, bdf: str = "all") -> None:
        self._write("traffic", f"stop {bdf}")

    def traffic(self) -> str:
        return (self.dir / "traffic").read_text()

    @property
    def fault_threshold(self) -> int:
        return int((self.dir / "fault_threshold").read_text())

    @fault_threshold.setter
    def fault_threshold(self, n: int) -> None:
        self._write("fault_threshold", str(n))

    def reset(self) -> None:
        self._write("reset", "1")

    def dmesg(self) -> str:
        return (self.dir / "dmesg").read_text()

    def requests(self) -> dict[str, int]:
        """The FUSE requests the mount has served since it was mounted, per opcode (the
        `requests` control: lookup, getattr, open, read, release, ...). The counts are taken
        at the control's OPEN, which is counted; the READs to its end and the RELEASE of
        this call come after them (the same every call, so a difference of two calls
        with nothing between is what one call costs)."""
        fd = os.open(self.dir / "requests", os.O_RDONLY)
        try:
            text = b""
            while chunk := os.read(fd, 1 << 16):
                text += chunk
        finally:
            os.close(fd)
        return {op: int(n) for op, n in (line.split() for line in text.decode().splitlines())}

    def faults(self) -> list[str]:
        """dmar_table_errors: every DMA fault the simulated kernel serviced."""
        path = self.root / "sys/kernel/debug/iommu/intel/dmar_table_errors"
        return path.read_text().splitlines()

    # --- scenarios (timed steps: vfakefs/model/scenario.py) -------------------------------------
    def scenario_start(self, path: str | os.PathLike) -> None:
        """Start the scenario file at path (made absolute: the daemon reads it). OSError
        EINVAL for a mistake in it (the kernel log says where), EBUSY while one runs."""
        self._write("scenario", os.path.abspath(path))

    def scenario_stop(self) -> None:
        self._write("scenario", "stop")

    def scenario_text(self) -> str:
        return (self.dir / "scenario").read_text()

    def scenario_status(self) -> dict:
        """The scenario control's state as a dict: state (idle, running, done, stopped,
        failed), why (how it stopped), file, name, time, step ("k/n"), runs ("k/n"), next,
        failures (a count) and failed (the lines of the first failures)."""
        st: dict = {"failed": []}
        for line in self.scenario_text().splitlines():
            if line.startswith("  "):
                st["failed"].append(line.strip())
                continue
            key, _, value = line.partition(": ")
            st[key] = value
        state, _, why = st["state"].partition(" (")
        st["state"], st["why"] = state, why.removesuffix(")")
        st["failures"] = int(st.get("failures", 0))
        return st

    def scenario_wait(self, timeout: float | None = None, poll: float = 0.05) -> dict:
        """Until the scenario is no longer running (TimeoutError after timeout seconds);
        its final status."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            st = self.scenario_status()
            if st["state"] != "running":
                return st
            if end is not None and time.monotonic() > end:
                raise TimeoutError(f"scenario {st.get('name', '')} still running after {timeout} s: {st}")
            time.sleep(poll)

    # --- hot-plug (the `hotplug` control) ----------------------------------------------------------------------
    def hotplug_add(self, slot: str, card: str | os.PathLike) -> None:
        """Plug the card a TOML file of [[device]] tables describes into a free pciehp slot
        (its name or its port's BDF); the daemon reads the file. OSError EBUSY (occupied),
        ENODEV (no such slot), ENOSPC (it does not fit the port's windows or buses), EINVAL
        (a bad card file: the reason is in dmesg)."""
        self._write("hotplug", f"add {slot} {os.path.abspath(card)}")

    def hotplug_remove(self, target: str) -> None:
        """Pull the card out of a slot (named by the slot, its port or any function on the card)
        without warning. A card a VFIO user holds stays, disconnected, until the user closes
        its device (hotplug_slots() says `removing`)."""
        self._write("hotplug", f"remove {target}")

    def hotplug_slots(self) -> dict[str, str]:
        """Each pciehp slot's line after its name: `<port> <address> empty|occupied ...|removing ...`."""
        text = (self.dir / "hotplug").read_text()
        return dict(line.split(" ", 1) for line in text.splitlines() if line)

    def fault(self, bdf: str, point: str, *, fail: int | str | None = None, delay: float | None = None,
              times: int | str = 1) -> None:
        """Misbehaving hardware on cue (the `faults` control): the next `times` (or "always")
        writes to the device's file `point` (sriov_numvfs, reset, ...; bind, unbind and
        drivers_probe for the writes naming it), or its `probe` or `netdev`, wait `delay`
        simulated seconds and/or fail with `fail` (an errno number or name, "EIO"); `add`
        (a VF's addition, delay only) pauses an SR-IOV enable written through the mount there.
        OSError EINVAL for a bad rule, the reason in the kernel log."""
        words = [bdf, point]
        if delay is not None:
            words.append(f"delay={float(delay)!r}")
        if fail is not None:
            words.append(f"fail={fail if isinstance(fail, str) else int(fail)}")
        words.append(f"times={times}")
        self._write("faults", " ".join(words))

    def fault_rules(self) -> list[str]:
        """The rules, each with its hit count: `<bdf> <point> [delay=] [fail=] times= hits=`."""
        return (self.dir / "faults").read_text().splitlines()

    def clear_faults(self) -> None:
        self._write("faults", "clear")
