"""Enabling and disabling virtual functions (drivers/pci/iov.c).

configure() is sriov_numvfs_store() after parsing; enable() and disable() are
sriov_enable() and sriov_disable(): they write NumVFs and VF Enable into the
PF's SR-IOV capability and add or remove the VFs as full PCI functions.

Each has a stepwise form (configure_steps, enable_steps, disable_steps: a Stepwise)
that a write through the mount drives a few VFs at a time (fuse/stepping.py), so the
VFs show in sysfs as they come, as under the kernel's device_lock(PF); the forms
without _steps run the same steps at once. sriov_numvfs shows the old count until
the end (Sriov.shown: iov->num_VFs is set last).
"""
from __future__ import annotations

import errno

from vfakefs.model import faults
from vfakefs.model.base import binding
from vfakefs.model.pci import config as C
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.pci.builder import build_vf_config
from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_WARNING
from vfakefs.model.pci.pci import EMPTY, PciFunction, Resource, read_header


def configure(m, pf: PciFunction, n: int) -> None:
    """sriov_numvfs_store() after parsing, at once."""
    steps = configure_steps(m, pf, n)
    if steps is not None:
        steps.finish()


def configure_steps(m, pf: PciFunction, n: int) -> Stepwise | None:
    """sriov_numvfs_store() in the kernel's order of checks; what is refused raises before
    any change. None when there is nothing to do, else the enable or disable to carry out."""
    sr = pf.sriov
    sr.settle()
    if n > sr.total_vfs:
        raise SysfsError(errno.ERANGE)
    if n == sr.num_vfs:
        return None
    drv = pf.driver
    if drv is None:
        m.kmsg.dev(pf, "no driver bound to device; cannot configure SR-IOV")
        raise SysfsError(errno.ENOENT)
    if not drv.sriov_configure:
        m.kmsg.dev(pf, "driver does not support SR-IOV configuration via sysfs")
        raise SysfsError(errno.ENOENT)
    if n == 0:
        return disable_steps(m, pf)
    if sr.num_vfs:
        m.kmsg.dev(pf, f"{sr.num_vfs} VFs already enabled. Disable before enabling {n} VFs", KERN_WARNING)
        raise SysfsError(errno.EBUSY)
    if callable(drv.sriov_configure):
        drv.sriov_configure(m, pf, n)       # the driver's own refusal (vfio-pci without enable_sriov)
    return enable_steps(m, pf, n)


class Stepwise:
    """sriov_enable() or sriov_disable() carried out a few VFs at a time, so that whoever
    drives it (the FUSE write) lets other requests in between: each VF is in sysfs as soon
    as it is added, sriov_numvfs shows the old count until the end (iov->num_VFs). step()
    does the next few VFs, True once all are done; after it, `wait` is a faults.Held when
    the next VF's addition takes time (an `add` rule: its config space answers late), which
    the driver of the steps waits for; finish() does the rest at once, without waiting."""

    def __init__(self, m, pf: PciFunction, gen):
        self.m, self.pf, self._gen = m, pf, gen
        self.done, self.wait, self._running = False, None, False
        self.lock = None                    # the faults.Held that holds the PF's lock meanwhile
        pf.sriov.pending = self

    def step(self) -> bool:
        if self.done or self._running:
            return self.done
        self._running = True
        try:
            self.wait = next(self._gen)
        except StopIteration:
            self.done, self.wait = True, None
        except BaseException:
            self.done = True
            raise
        finally:
            self._running = False
            if self.done and self.pf.sriov.pending is self:
                self.pf.sriov.pending = None
        return self.done

    def finish(self) -> None:
        if self._running:
            return                          # asked from inside a step (a VF's own probe): it goes on
        if self.wait is not None:
            self.wait.finish()              # a pause (an add rule) is cut short: the rest is added now
        with self.m.batch():
            while not self.step():
                pass


def step_size(n: int) -> int:
    """VFs per step: at most ~64 steps, so the cost of the pauses stays small beside the work."""
    return max(8, n // 64)


def enable(m, pf: PciFunction, n: int) -> None:
    enable_steps(m, pf, n).finish()


def enable_steps(m, pf: PciFunction, n: int, every: int | None = None) -> Stepwise:
    """sriov_enable(): what can fail is checked before the first change; the VFs are added
    by the returned Stepwise."""
    sr = pf.sriov
    sr.settle()
    # sriov_enable(): the last VF's bus must lie in the PF's bus range (busn_res:
    # the bus itself up to the bridge's subordinate; the root bus ends at ff)
    last = sr.vf_bus(n - 1)
    limit = pf.parent.subordinate if pf.parent is not None else 0xFF
    if last > limit:
        m.kmsg.dev(pf, "can't enable %d VFs (bus %02x out of range of [bus %02x-%02x])"
                   % (n, last, pf.bdf.bus, limit), 3)
        raise SysfsError(errno.ENOMEM)
    # everything that can fail happens before the first change
    template = sr.vf_config if sr.vf_config is not None else build_vf_config(pf)
    new_vf = _vf_maker(m, pf, template, sr.iov_resources())
    vfs = [new_vf(vf_id) for vf_id in range(n)]
    cfg = pf.config
    cfg.w16(sr.pos + C.SRIOV_NUM_VF, n)
    cfg.w16(sr.pos + C.SRIOV_CTRL, cfg.r16(sr.pos + C.SRIOV_CTRL) | C.SRIOV_CTRL_VFE | C.SRIOV_CTRL_MSE)
    sr.shown = sr.num_vfs
    return Stepwise(m, pf, _adding(m, pf, vfs, every or step_size(n)))


def _adding(m, pf: PciFunction, vfs: list, every: int):
    sr = pf.sriov
    try:
        i, paused = 0, -1
        while i < len(vfs):
            wait = None
            chunk = []
            with m.batch():
                while i < len(vfs) and len(chunk) < every:
                    vf = vfs[i]
                    if paused != i:
                        wait = faults.adding(m, vf)     # its addition takes time (an add rule)
                        if wait is not None:
                            paused = i
                            break
                    i += 1
                    chunk.append(vf)
                    m.add_function(vf)   # pci_iov_add_virtfn(): add, link, then probe, one VF after another
                    sr.vfs.append(vf)
                    m.uevent("change", vf)      # pci_iov_sysfs_link(): once virtfnN and physfn exist
                    if pf.driver is not None and pf.driver.captures_vfs:
                        # vfio_pci_bus_notifier: a vfio-pci PF's VFs go to vfio-pci too
                        vf.driver_override = pf.driver.name
                        m.kmsg.dev(pf, f"Captured SR-IOV VF {vf.name} driver_override")
                    binding.device_attach(m, vf)
                if i == len(vfs):
                    m.uevent("change", pf)      # sriov_enable(), after sriov_add_vfs()
                    sr.shown = None             # then iov->num_VFs
                if chunk:
                    m.changed(*chunk)   # (their PF's virtfn links with them; add_function notes their groups)
            if i < len(vfs):
                yield wait
    finally:
        sr.shown = None


def _vf_maker(m, pf: PciFunction, template: bytes, iov: list[Resource]):
    """new_vf(vf_id) -> VF vf_id, as pci_iov_add_virtfn() sets it up from its PF; what is the
    same for every VF (its config space's header, its NUMA node, the BAR sizes) read once."""
    sr = pf.sriov
    total = sr.hw_total_vfs
    header = read_header(C.ConfigSpace(4096, template))    # every VF's config space starts as the template
    node = m.locality.vf_node(pf)
    bar_sizes = [(r.start, r.size // total, r.flags) if r.size else None for r in iov]
    vf_device, kw = sr.vf_device, dict(
        kind="endpoint", vendor=pf.vendor, class_code=pf.class_code, parent=pf.parent,
        subsystem_vendor=pf.subsystem_vendor, subsystem_device=pf.subsystem_device, revision=pf.revision,
        numa_node=node, physfn=pf, dma_mask_bits=32, consistent_dma_mask_bits=32,   # until a driver sets them
        reset_methods=("flr",), aspm=pf.aspm, power_state="unknown", machine=m)

    domain, first, stride = pf.bdf.domain, pf.bdf.vf_rid(sr.offset, sr.stride, 0), sr.stride

    def new_vf(vf_id: int) -> PciFunction:
        bars = [Resource(b[0] + vf_id * b[1], b[1], b[2]) if b is not None else EMPTY for b in bar_sizes]
        return PciFunction(bdf=Bdf.from_rid(domain, first + stride * vf_id),    # sr.vf_bdf(vf_id)
                           device=vf_device, config=C.ConfigSpace(4096, template),
                           bars=bars, vf_id=vf_id, header=header, **kw)
    return new_vf


def disable(m, pf: PciFunction) -> None:
    """sriov_disable(), at once."""
    disable_steps(m, pf).finish()


def disable_steps(m, pf: PciFunction, every: int | None = None) -> Stepwise:
    """sriov_disable(): VFs go in order 0..N-1, each with its driver and group; then VF
    Enable and NumVFs are cleared, and only then does sriov_numvfs show 0."""
    sr = pf.sriov
    sr.settle()
    sr.shown = sr.num_vfs
    return Stepwise(m, pf, _removing(m, pf, every or step_size(len(sr.vfs))))


def _removing(m, pf: PciFunction, every: int):
    sr = pf.sriov
    try:
        while True:
            chunk = sr.vfs[:every]
            with m.batch():
                for vf in chunk:
                    binding.release(m, vf)
                    m.remove_one(vf)
                del sr.vfs[:len(chunk)]
                if not sr.vfs:
                    cfg = pf.config
                    cfg.w16(sr.pos + C.SRIOV_CTRL,
                            cfg.r16(sr.pos + C.SRIOV_CTRL) & ~(C.SRIOV_CTRL_VFE | C.SRIOV_CTRL_MSE))
                    cfg.w16(sr.pos + C.SRIOV_NUM_VF, 0)
                    sr.shown = None
                m.changed(*chunk) if chunk else m.changed(pf)   # (remove_one notes their groups)
            if not sr.vfs:
                return
            yield None
    finally:
        sr.shown = None
