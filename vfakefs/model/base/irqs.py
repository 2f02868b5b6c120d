"""The MSI and MSI-X vectors a driver takes at probe, as the real drivers ask for them
at the machine's CPU count, the Linux irq numbers they get, and the names request_irq
gives them (what /proc/interrupts shows: vfakefs's debugfs `interrupts`).

Per driver (the kernel's probe paths):
- ixgbe: ixgbe_acquire_msix_vectors(): one vector per queue pair, queues = online CPUs
  (flow director: at most 63), plus NON_Q_VECTORS (1, the "other" vector), at most the
  MSI-X table size; ixgbe_request_msix_irqs() names them <ifname>-TxRx-<i>, the other one
  last, named <ifname>. ixgbevf the same with at most 2 RSS queues (IXGBEVF_MAX_RSS_QUEUES).
- igb: igb_set_interrupt_capability(): RSS queues = min(CPUs, the part's maximum: 4 on an
  I210); queue pairs only when that is more than half the maximum; one vector per queue
  (pairs: per pair) plus one for link; igb_request_msix() names vector 0 <ifname> and the
  queue vectors <ifname>-rx-<i>, <ifname>-tx-<i> (pairs: <ifname>-TxRx-<i>).
- nvme: nvme_pci_enable() takes one vector (admin queue, nvme<N>q0); nvme_setup_io_queues()
  frees it and takes 1 + one managed vector per I/O queue (one queue per possible CPU).
- nouveau: nvkm_pci_new_() enables MSI (one vector), nvkm_pci_oneinit() requests "nvkm".
- snd_hda_intel: one MSI vector named snd_hda_intel:card<N>, except where the controller's
  preset says AZX_DCAPS_NO_MSI (every NVIDIA HDA controller): INTx, no vector.

A topology may declare `msi_irqs` itself (a recorded machine: qemu-ref); then those are the
function's and nothing here applies. Irq numbers: the lowest free from just above every irq
the topology declares (GSIs, the ports' own), as irq_alloc_descs() hands them out, freed
ones first again.
"""
from __future__ import annotations

import heapq
from typing import NamedTuple

from vfakefs.model.pci import config as C

PCI_MSI_FLAGS_ENABLE, PCI_MSI_FLAGS_QSIZE, PCI_MSI_FLAGS_64BIT = 0x1, 0x70, 0x80
PCI_MSIX_FLAGS_QSIZE, PCI_MSIX_FLAGS_MASKALL, PCI_MSIX_FLAGS_ENABLE = 0x7FF, 0x4000, 0x8000
NON_Q_VECTORS = 1
IXGBE_MAX_FDIR_INDICES = 63
IXGBEVF_MAX_RSS_QUEUES = 2
# igb_get_max_rss_queues(): I210 4, I211 2, the others (82576, I350, ...) 8
IGB_MAX_RSS = {0x1533: 4, 0x1536: 4, 0x1537: 4, 0x1538: 4, 0x157B: 4, 0x157C: 4, 0x1539: 2}
NVIDIA = 0x10DE


class Plan(NamedTuple):
    kind: str                      # "msix" or "msi"
    names: tuple[str, ...]         # request_irq's name for each vector
    admin_first: bool = False      # nvme: one vector first, the rest once the controller is up


_new_plan = tuple.__new__          # _new_plan(Plan, (kind, names, admin_first)): Plan(...) without its __new__'s frame


def msix_size(dev) -> int:
    pos = dev.caps.get(C.CAP_MSIX)
    return (dev.config.r16(pos + 2) & PCI_MSIX_FLAGS_QSIZE) + 1 if pos is not None else 0


def _ifname(dev) -> str:
    return dev.netdevs[0].name if dev.netdevs else dev.name


def _queue_pairs(dev, queues: int, table: int) -> tuple[str, ...]:
    """ixgbe/ixgbevf: a TxRx vector per queue pair, the other vector last (table: the MSI-X
    table's size)."""
    n = min(queues + NON_Q_VECTORS, table)
    name = _ifname(dev)
    names = [f"{name}-TxRx-{i}" for i in range(n - NON_Q_VECTORS)]    # (no generator: thousands of VFs)
    names.append(name)
    return tuple(names)


def _caps(m, dev) -> tuple[int, bool, bool]:
    return max(1, m.nr_cpus), msix_size(dev) > 0, dev.caps.get(C.CAP_MSI) is not None


def ixgbe_plan(m, dev, drv) -> Plan | None:
    table = msix_size(dev)
    return _new_plan(Plan, ("msix", _queue_pairs(dev, min(max(1, m.nr_cpus), IXGBE_MAX_FDIR_INDICES), table),
                            False)) if table else None


def ixgbevf_plan(m, dev, drv) -> Plan | None:
    table = msix_size(dev)
    return _new_plan(Plan, ("msix", _queue_pairs(dev, min(max(1, m.nr_cpus), IXGBEVF_MAX_RSS_QUEUES), table),
                            False)) if table else None


def igb_plan(m, dev, drv) -> Plan | None:
    cpus, has_msix, _ = _caps(m, dev)
    if not has_msix:
        return None
    most = IGB_MAX_RSS.get(dev.device, 8)
    rss = min(cpus, most)
    name = _ifname(dev)
    if rss > most // 2:                                     # IGB_FLAG_QUEUE_PAIRS
        queues = tuple(f"{name}-TxRx-{i}" for i in range(rss))
    else:                                                   # rx vectors first, then tx
        queues = tuple(f"{name}-rx-{i}" for i in range(rss)) + tuple(f"{name}-tx-{i}" for i in range(rss))
    return Plan("msix", ((name,) + queues)[:msix_size(dev)])


def nvme_plan(m, dev, drv) -> Plan | None:
    cpus, has_msix, has_msi = _caps(m, dev)
    if not (has_msix or has_msi):
        return None
    n = 1 + cpus if has_msix else 1
    inst = drv.instance(dev)
    return Plan("msix" if has_msix else "msi",
                tuple(f"nvme{inst}q{i}" for i in range(min(n, msix_size(dev) or 1))), admin_first=n > 1)


def nouveau_plan(m, dev, drv) -> Plan | None:
    return Plan("msi", ("nvkm",)) if _caps(m, dev)[2] else None


def hda_plan(m, dev, drv) -> Plan | None:
    if not _caps(m, dev)[2] or dev.vendor == NVIDIA:       # AZX_DCAPS_NO_MSI
        return None
    return Plan("msi", (f"snd_hda_intel:card{drv.instance(dev)}",))


def plan(m, dev, drv) -> Plan | None:
    """The vectors drv's probe takes on dev (the driver's irq_plan), or None (INTx, or a
    driver that takes none)."""
    return drv.irq_plan(m, dev, drv) if drv.irq_plan is not None else None


class IrqDescs:
    """Linux irq numbers for MSI vectors (irq_alloc_descs): the lowest free at or above base."""

    def __init__(self, base: int):
        self.base = self.next = base
        self.free: list[int] = []

    def alloc(self) -> int:
        if self.free:
            return heapq.heappop(self.free)
        self.next += 1
        return self.next - 1

    def release(self, irq: int) -> None:
        heapq.heappush(self.free, irq)


def irq_descs(m) -> IrqDescs:
    if m.irq_descs is None:
        declared = [f.irq for f in m.functions] + [irq for f in m.functions for irq, _ in f.msi_irqs
                                                   if not f.msi_names]
        m.irq_descs = IrqDescs(max([23] + declared) + 1)
    return m.irq_descs


def opened(dev) -> bool:
    """request_irq has run for the vectors: at probe, or for a netdev driver at ndo_open."""
    drv = dev.driver
    if drv is None or drv.irq_plan is None or not drv.irqs_on_open:
        return True
    for nd in dev.netdevs:
        if nd.running:
            return True
    return False


def netdev_state(dev) -> None:
    """ndo_open requests the netdev driver's irqs, ndo_stop frees them (free_irq: the
    vectors stay allocated, parked on the shutdown vector)."""
    m = getattr(dev, "machine", None)
    if m is None or not dev.msi_names or m.irq_remap_args is None:
        return
    t = m.irq_remap
    if opened(dev):
        t.request_irqs(dev)
    else:
        for index in t.indices(dev):
            t.free_irq(index)


# --- probe and remove ---------------------------------------------------------------------------------
def take(m, dev, drv) -> Plan | None:
    """The vectors drv's probe allocates: irq numbers, msi_irqs entries, names. The IRTEs
    are the remapping table's (allocate); config space is program()'s."""
    if dev.msi_irqs or not drv.enables_device:
        return None
    p = plan(m, dev, drv)
    if p is None:
        return None
    descs = irq_descs(m)
    dev.msi_irqs = [(descs.alloc(), p.kind) for _ in p.names]
    dev.msi_names = list(p.names)
    return p


def allocate(t, dev, p: Plan) -> None:
    """The IRTEs of a probe after boot, as irq_boot.boot_allocate does them at boot."""
    if p.admin_first:
        t.alloc_msi(dev, 1, p.kind)
        t.free_msi(dev)
        t.alloc_msi(dev, len(p.names), p.kind, managed_from=1)
    else:
        t.alloc_msi(dev, len(p.names), p.kind, requested=opened(dev))


def program(m, dev) -> None:
    """pci_msi(x)_enable: the capability enabled, MSI's message written where the device
    reads it (config space; MSI-X's table is in a BAR: pci/msi.py derives it from the
    IRTEs), dev->irq becomes the MSI's first irq."""
    cfg, kind = dev.config, dev.msi_irqs[0][1]
    if kind == "msix":
        pos = dev.caps[C.CAP_MSIX]
        cfg.w16(pos + 2, (cfg.r16(pos + 2) | PCI_MSIX_FLAGS_ENABLE) & ~PCI_MSIX_FLAGS_MASKALL)
        return
    pos = dev.caps[C.CAP_MSI]
    t = m.irq_remap
    address, data = t.dev_message(dev, 0) if t is not None else (0xFEE00000, 0x21)
    flags = cfg.r16(pos + 2)
    cfg.w32(pos + 4, address & 0xFFFFFFFF)
    data_at = pos + 8
    if flags & PCI_MSI_FLAGS_64BIT:
        cfg.w32(pos + 8, address >> 32)
        data_at = pos + 12
    cfg.w16(data_at, data & 0xFFFF)
    mme = (len(dev.msi_irqs) - 1).bit_length()
    cfg.w16(pos + 2, (flags & ~PCI_MSI_FLAGS_QSIZE) | mme << 4 | PCI_MSI_FLAGS_ENABLE)
    if dev.intx_irq is None:
        dev.intx_irq = dev.irq
    dev.irq = dev.msi_irqs[0][0]


def probe(m, dev, drv) -> None:
    """A probe after boot: build the boot table first (it must not count dev twice), then
    take, allocate, program."""
    if dev.msi_irqs or not drv.enables_device:
        return
    t = m.irq_remap
    p = take(m, dev, drv)
    if p is None:
        return
    if t is not None:
        allocate(t, dev, p)
    program(m, dev)


def remove(m, dev) -> None:
    """pci_free_irq_vectors() after the driver's remove (the IRTEs went with free_msi):
    the irq numbers go back, msi_irqs/ empties, the capability is disabled, dev->irq is
    the INTx one again."""
    if not dev.msi_names:
        return
    descs = irq_descs(m)
    kind = dev.msi_irqs[0][1] if dev.msi_irqs else "msix"
    for irq, _ in reversed(dev.msi_irqs):
        descs.release(irq)
    dev.msi_irqs, dev.msi_names = [], []
    cfg = dev.config
    if kind == "msix" and C.CAP_MSIX in dev.caps:
        pos = dev.caps[C.CAP_MSIX]
        cfg.w16(pos + 2, cfg.r16(pos + 2) & ~PCI_MSIX_FLAGS_ENABLE)
    elif C.CAP_MSI in dev.caps:
        pos = dev.caps[C.CAP_MSI]
        cfg.w16(pos + 2, cfg.r16(pos + 2) & ~(PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE))
    if dev.intx_irq is not None:
        dev.irq, dev.intx_irq = dev.intx_irq, None


def boot(m) -> None:
    """The drivers bound at boot probe in enumeration order: their vectors, then (when any
    uses MSI, whose message lives in config space) the remapping table, then config."""
    taken = [f for f in m.functions if f.driver is not None and take(m, f, f.driver) is not None]
    if taken and any(f.msi_irqs[0][1] == "msi" for f in taken):
        m.irq_remap                                              # noqa: B018 - builds the table
    for f in taken:
        program(m, f)


# --- vfio-pci: the vectors a program enables with SET_IRQS -----------------------------------------------
def vfio_enable(m, dev, nvec: int, msix: bool) -> None:
    """vfio_msi_enable()'s pci_alloc_irq_vectors(): irq numbers and msi_irqs/ entries, named
    as vfio_msi_set_vector_signal() requests them: vfio-msi[x][<n>](<bdf>)."""
    descs = irq_descs(m)
    kind = "msix" if msix else "msi"
    dev.msi_irqs = [(descs.alloc(), kind) for _ in range(nvec)]
    dev.msi_names = [f"vfio-{'msix' if msix else 'msi'}[{n}]({dev.name})" for n in range(nvec)]
    m.changed(dev)                                        # msi_irqs/ appears


def vfio_disable(m, dev) -> None:
    """vfio_msi_disable()'s pci_free_irq_vectors(): the numbers go back, msi_irqs/ empties."""
    descs = irq_descs(m)
    for irq, _ in dev.msi_irqs:
        descs.release(irq)
    dev.msi_irqs, dev.msi_names = [], []
    m.changed(dev)
