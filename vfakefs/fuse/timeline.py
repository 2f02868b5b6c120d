"""Runs a scenario (model/scenario.py) on the machine a mount serves: each run of a
step, when the engine's simulated clock reaches its time, is a write(2) made through
the same Operations a user's write goes through (open, write, release: the same
store, errno, publish and invalidation of the kernel's caches, uevents, and wait for
`vfakefs run`'s networks).

The clock: while a scenario runs, a work item on the machine's workqueue
(Machine.schedule) comes back every engine tick, which keeps the engine ticking at
its full rate (10 ms of simulated time) and wakes the runner when its next run is
due. The scenario's time 0 is the first tick after its start; a run is never early,
and late by less than one tick.

One scenario at a time; MNT/sys/kernel/debug/vfakefs/scenario starts one (a path),
stops it (`stop`) and reports on it. A reset (a power cycle) stops it.
"""
from __future__ import annotations

import errno
import logging
import os
from typing import TYPE_CHECKING

import pyfuse3
import trio

from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_INFO, KERN_WARNING
from vfakefs.sysfs.nodes import Link

if TYPE_CHECKING:
    from vfakefs.model.scenario import Scenario

log = logging.getLogger("vfakefs")
EPS = 1e-9          # the clock is a sum of float ticks
MAX_LINKS = 40      # symlinks one path may pass, as the kernel's path walk (ELOOP past it)
KEEP_FAILURES = 20  # failures the status lists (all are counted and logged)


class _Root:
    """The caller of a step's write: root, as the daemon (a scenario acts as the admin would)."""
    uid = gid = 0
    umask = 0o022

    def __init__(self):
        self.pid = os.getpid()


def resolve(ops, path: str) -> int:
    """The inode of a file of the mount at an absolute path of the machine, following
    symlinks as the kernel's path walk does (ENOENT, ENOTDIR, ELOOP). Each name is
    looked up through the inode table as a kernel lookup is (its caches stay true)."""
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    links = 0
    while parts:
        name = parts.pop(0)
        if name == ".":
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        _, node = ops.child(ops.ino_of("/".join(done)), name)
        if isinstance(node, Link):
            links += 1
            if links > MAX_LINKS:
                raise pyfuse3.FUSEError(errno.ELOOP)
            if node.target.startswith("/"):
                done = []
            parts = [p for p in node.target.split("/") if p] + parts
            continue
        done.append(name)
    return ops.ino_of("/".join(done))


async def write_file(ops, path: str, text: str) -> None:
    """open(O_WRONLY), one write(2), close: as `echo text > path` in the machine does."""
    ino = resolve(ops, path)
    info = await ops.open(ino, os.O_WRONLY, _Root())
    try:
        await ops.write(info.fh, 0, text.encode("latin-1", "replace"))
    finally:
        await ops.release(info.fh)


def check(ops, sc: Scenario) -> None:
    """What can be checked only on the machine: each named control exists (files may
    come and go with the steps, controls do not). ScenarioError names the step."""
    from vfakefs.model.scenario import CONTROL_DIR, ScenarioError   # a scenario's: off the mount path
    known = sorted(ops.listing(resolve(ops, CONTROL_DIR)))
    for s in sc.steps:
        if s.control is not None and s.control not in known:
            raise ScenarioError(sc.source, f"step {s.number}: control",
                                f"no control {s.control!r} (controls: {', '.join(known)})")


def _shown(value: str) -> str:
    """A value on one line of the status and the log."""
    return value.strip().replace("\n", "\\n")


def _strerror(e: int) -> str:
    return f"{errno.errorcode.get(e, str(e))} ({os.strerror(e)})"


class Timeline:
    """The scenario control's side in the daemon: at most one scenario runs at a time."""

    def __init__(self, host, ops):
        self.host, self.ops = host, ops
        self.nursery = None          # the daemon's: set once it serves
        self.scenario: Scenario | None = None
        self.state = "idle"          # idle, running, done, stopped, failed
        self.why = ""                # how it stopped
        self.cancel: trio.CancelScope | None = None
        self.reset_state()
        # for the life of the daemon: a listener that left the list while the Machine
        # notifies would make it skip the next one
        host.subscribe(self._changed)

    def reset_state(self) -> None:
        self.t0: float | None = None   # the clock at the scenario's time 0 (its first tick)
        self.done = 0                # runs made
        self.left: dict[int, int] = {}   # step number -> its runs still to make
        self.next: tuple | None = None   # (time, step, k) of the run waited for
        self.failures: list[str] = []
        self.nfailed = 0
        self.machine = None
        self.event: trio.Event | None = None   # what the runner waits on

    # --- the control -----------------------------------------------------------------------
    def command(self, text: str) -> None:
        """`<absolute path>`: load that scenario and start it; `stop`: stop the one running."""
        word = text.strip()
        if word == "stop":
            self.stop("stopped by the scenario control")
            return
        if not word.startswith("/"):
            self._reject("expected the absolute path of a scenario file, or 'stop'")
        if self.state == "running":
            self._reject(f"{self.scenario.source} is running: write 'stop' first", errno.EBUSY)
        if self.nursery is None:
            self._reject("no engine runs this machine", errno.ENODEV)
        from vfakefs.model.scenario import ScenarioError, load      # the first scenario's: off the mount path
        try:
            sc = load(word)
            check(self.ops, sc)
        except ScenarioError as e:
            missing = e.where == "" and not os.path.exists(word)
            self._reject(str(e), errno.ENOENT if missing else errno.EINVAL)
        self.start(sc)

    def _reject(self, why: str, err: int = errno.EINVAL):
        self.host.machine.kmsg.log(f"vfakefs: scenario: {why}", KERN_WARNING)
        raise SysfsError(err, why)

    def status(self) -> str:
        lines = [f"state: {self.state}" + (f" ({self.why})" if self.why else "")]
        sc = self.scenario
        if sc is None:
            return lines[0] + "\n"
        m = self.host.machine
        lines += [f"file: {sc.source}", f"name: {sc.name}"]
        if self.state == "running" and m is self.machine:
            lines.append(f"time: {self.now():.3f} s")
        steps_done = sum(1 for n in self.left.values() if n == 0)
        lines += [f"step: {steps_done}/{len(sc.steps)}", f"runs: {self.done}/{sc.runs}"]
        if self.state == "running" and self.next is not None:
            t, s, k = self.next
            run = f" (run {k + 1}/{s.count})" if s.count > 1 else ""
            lines.append(f"next: step {s.number}{run} at {t:.3f} s: {s.describe()}: {_shown(s.value(k))}")
        lines.append(f"failures: {self.nfailed}")
        lines += [f"  {f}" for f in self.failures]
        return "\n".join(lines) + "\n"

    # --- running ----------------------------------------------------------------------------
    def start(self, sc: Scenario) -> None:
        """Start sc (the caller has checked it): its time 0 is the engine's next tick."""
        self.reset_state()
        self.scenario, self.state, self.why = sc, "running", ""
        self.left = {s.number: s.count for s in sc.steps}
        self.machine = m = self.host.machine
        m.schedule(0, self._tick)
        self.cancel = trio.CancelScope()
        m.kmsg.log(f"vfakefs: scenario {sc.name}: started ({len(sc.steps)} steps, {sc.runs} runs, "
                   f"until {sc.end:.3f} s)", KERN_INFO)
        self.nursery.start_soon(self._run, sc, self.cancel)

    def stop(self, why: str, state: str = "stopped") -> None:
        if self.state != "running":
            return
        self.state, self.why = state, why
        self._finish()
        self.host.machine.kmsg.log(f"vfakefs: scenario {self.scenario.name}: {why} after {self.done} of "
                                   f"{self.scenario.runs} runs", KERN_INFO)

    def _finish(self) -> None:
        self.cancel.cancel()
        m = self.machine              # nothing left on the workqueue to keep the engine ticking
        m.delayed = [w for w in m.delayed if w[1] != self._tick]
        self.next = None

    def now(self) -> float:
        """The scenario's time: simulated seconds since its first tick."""
        return 0.0 if self.t0 is None else self.machine.clock - self.t0

    def due(self) -> bool:
        return self.t0 is not None and self.next is not None and self.now() + EPS >= self.next[0]

    def _tick(self) -> None:
        """Every engine tick while the scenario runs (the engine calls it: Machine.schedule)."""
        if self.state != "running" or self.host.machine is not self.machine:
            return
        if self.t0 is None:
            self.t0 = self.machine.clock
        self.machine.schedule(0, self._tick)       # due at the next tick
        if self.event is not None and self.due():
            self.event.set()

    def _changed(self) -> None:
        if self.state == "running" and self.host.machine is not self.machine:
            self.stop("the machine was reset")

    async def _run(self, sc: Scenario, scope: trio.CancelScope) -> None:
        with scope:
            m = self.machine
            for t, s, k in sc.timeline():
                self.next = (t, s, k)
                while not self.due():
                    self.event = trio.Event()
                    await self.event.wait()      # Cancelled once stopped
                self.event = None
                err = await self._write(s, k)
                if self.cancel is not scope:
                    return      # stopped during the write, and a newer scenario runs: its state is not ours
                go_on = self._account(m, s, k, err)
                if self.state != "running":
                    return      # stopped during the write (`stop`, a step that reset the machine)
                if not go_on:
                    self.stop(f"step {s.number} failed (on_error = stop)", "failed")
                    return
            self.state = "done"
            self._finish()
            m.kmsg.log(f"vfakefs: scenario {sc.name}: done, {sc.runs} runs, {self.nfailed} failed", KERN_INFO)

    async def _write(self, s, k: int) -> int:
        """One run of step s: 0 or the errno its write answered."""
        try:
            await write_file(self.ops, s.path, s.value(k))
        except pyfuse3.FUSEError as e:
            return e.errno
        except Exception:   # a bug, not a kernel answer: the daemon's log has it, the run failed
            log.exception("scenario: step %d", s.number)
            return errno.EIO
        return 0

    def _account(self, m, s, k: int, err: int) -> bool:
        """Count a run; log it when it failed; whether the scenario goes on."""
        self.done += 1
        self.left[s.number] -= 1
        if err == (s.expect or 0):
            return True
        why = "succeeded" if err == 0 else _strerror(err)
        if s.expect is not None:
            why += f", expected {errno.errorcode.get(s.expect, s.expect)}"
        run = f" run {k + 1}" if s.count > 1 else ""
        line = f"step {s.number}{run} at {self.now():.3f} s: {s.describe()}: {_shown(s.value(k))}: {why}"
        self.nfailed += 1
        if len(self.failures) < KEEP_FAILURES:
            self.failures.append(line)
        if self.host.machine is m:
            m.kmsg.log(f"vfakefs: scenario {self.scenario.name}: {line}", KERN_WARNING)
        return not s.stop_on_error
