"""Interrupt remapping: the IRTE table, its allocation, and MSI delivery through it.

Names are the VT-d specification's (ch. 5 "Interrupt Remapping", 9.9-9.11 IRTE and
posted-interrupt descriptor) and drivers/iommu/intel/irq_remapping.c's (alloc_irte,
free_irte, set_msi_sid, prepare_irte). The table is two uint64 columns, lo and hi,
exactly the 128-bit entries the hardware reads; everything else is derived. The columns
and the allocation bitmap are plain arrays (array, bytearray): a boot that programs MSI
builds the table, and numpy stays off the mount path; `lo`, `hi` and `bitmap` are numpy
views of the same memory, for whoever wants vector operations on them.
Faults go through the unit's own fault recording (DmarUnit.record_fault) and are
serviced by its dmar_fault() model, so one place logs every VT-d fault.
"""
from __future__ import annotations

import errno
from array import array
from collections import Counter
from typing import TYPE_CHECKING, NamedTuple

from vfakefs.model.errors import SysfsError
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.intel.irq_matrix import VectorMatrix
from vfakefs.model.intel.irq_posted import PostedInterrupts
from vfakefs.model.intel.irte import (
    INTR_REMAP_TABLE_ENTRIES, QUALIFIED, SVT_VERIFY_SID, SVT_VERIFY_BUS, SQ_MASKS,
    MANAGED_IRQ_SHUTDOWN_VECTOR,
    IOAPIC_SID, Irte, irte_dest, dest_cpus, PostedDescriptor, MsiResult, IrFault)

if TYPE_CHECKING:
    import numpy as np


def msi_sid(dev) -> tuple[int, int, int]:
    """set_msi_sid(): (SVT, SQ, SID) for a function's MSIs. Behind a PCIe-to-PCI bridge the
    requester id is the bridge's (secondary bus, devfn 0) alias, so only the bus range
    from that secondary bus down to the device's own bus can be verified."""
    up = dev.physfn.parent if dev.physfn is not None else dev.parent
    while up is not None:
        if up.kind == "pcie_pci_bridge" and dev.pcie_cap is None:
            return SVT_VERIFY_BUS, 0, up.secondary << 8 | dev.bdf.bus
        up = up.parent
    return SVT_VERIFY_SID, 0, dev.bdf.rid


def _rid(source) -> int:
    if isinstance(source, int):
        return source & 0xFFFF
    if isinstance(source, str):
        return Bdf.from_str(source).rid
    if isinstance(source, Bdf):
        return source.rid
    return source.bdf.rid


class Owner(NamedTuple):
    """Who an allocated IRTE belongs to: an IOAPIC pin or a function's n-th vector."""
    kind: str                  # "ioapic" or "msi"
    key: object                # pin, or the function's Bdf
    n: int = 0
    managed: bool = False


_new_owner = tuple.__new__


class IrqRemapTable(PostedInterrupts):
    """One DMAR unit's interrupt remapping table and the kernel's bookkeeping of it
    (posted interrupts: irq_posted.py)."""

    def __init__(self, unit=None, *, x2apic: bool = False, nr_cpus: int = 2, kmsg=None,
                 ioapic_sid: int = IOAPIC_SID, enabled: bool = True):
        self.unit = unit
        irta = getattr(unit, "irta", 0x20000F)
        self.address = irta & ~0xFFF
        self.size = min(INTR_REMAP_TABLE_ENTRIES, 2 ** ((irta & 0xF) + 1))
        self.x2apic = x2apic
        self.enabled = enabled            # GSTS.IRES
        self.compat_blocked = True        # GSTS.CFIS clear: iommu_set_irq_remapping blocks compat MSIs
        self.ioapic_sid = ioapic_sid
        self.kmsg = kmsg
        self._lo = array("Q", bytes(8 * INTR_REMAP_TABLE_ENTRIES))
        self._hi = array("Q", bytes(8 * INTR_REMAP_TABLE_ENTRIES))
        self._bitmap = bytearray(INTR_REMAP_TABLE_ENTRIES)      # 1: allocated
        self._views = None                                     # (lo, hi, bitmap) as numpy, once asked for
        self._lowest_free = 0          # every entry below it is allocated (alloc_irte's hint)
        self.owners: dict[int, Owner] = {}
        self.allocs: dict[Bdf, list[tuple[int, int]]] = {}    # function -> (base, count) blocks
        self.matrix = VectorMatrix(nr_cpus)
        self.descriptors: dict[int, PostedDescriptor] = {}
        self.saved: dict[int, tuple[int, int]] = {}           # remapped IRTE kept while posted
        self.handlers: dict = {}                               # IRTE -> the handler request_irq gave
        self.deliveries: Counter = Counter()                   # (vector, cpu) -> count
        self.by_device: Counter = Counter()                    # requester id -> delivered count
        self.faults: list[IrFault] = []
        self.irte_counts: Counter = Counter()                  # (IRTE, cpu) -> delivered: the irq's kstat
        self.notifications: Counter = Counter()                # cpu -> posted-interrupt notifications
        # where posted-interrupt descriptors live: (read(addr, n), write(addr, bytes)) of host
        # memory (model/ram.py), set by irq_boot.build; None keeps them in `descriptors` only
        self.pd_memory = None

    # --- unit facts ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return getattr(self.unit, "name", "dmar0")

    @property
    def pi_supported(self) -> bool:
        return bool(getattr(self.unit, "cap", 0) >> 59 & 1)   # CAP.PI

    # --- the columns as numpy arrays (views: writes through them change the table) ------------------
    def _numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._views is None:
            import numpy as np        # here, not at the top: off the mount path
            self._views = (np.frombuffer(self._lo, dtype=np.uint64), np.frombuffer(self._hi, dtype=np.uint64),
                           np.frombuffer(self._bitmap, dtype=bool))
        return self._views

    @property
    def lo(self) -> np.ndarray:
        return self._numpy()[0]

    @property
    def hi(self) -> np.ndarray:
        return self._numpy()[1]

    @property
    def bitmap(self) -> np.ndarray:
        return self._numpy()[2]

    # --- entries ------------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> Irte:
        return Irte.decode(self._lo[index], self._hi[index])

    def write(self, index: int, irte: Irte) -> None:
        """modify_irte(): the entry changes as one 128-bit store."""
        self._lo[index], self._hi[index] = irte.encode()
        self._flush_iec(index)

    def _flush_iec(self, index: int, mask: int = 0) -> None:
        """modify_irte / clear_entries end with qi_flush_iec: the unit's interrupt entry cache."""
        flush = getattr(self.unit, "flush_iec", None)
        if flush is not None:
            flush(index, mask)

    def clear(self, index: int, count: int = 1) -> None:
        if count == 1:                          # (an MSI-X vector's own entry)
            self._lo[index] = self._hi[index] = 0
        else:
            zeros = array("Q", bytes(8 * count))
            self._lo[index:index + count] = zeros
            self._hi[index:index + count] = zeros
        self._flush_iec(index, (count - 1).bit_length())

    def present(self) -> np.ndarray:
        """Indices of present entries, in table order."""
        import numpy as np
        return np.nonzero(self.lo & np.uint64(1))[0]

    # --- allocation (alloc_irte / free_irte) ---------------------------------------------------------
    def alloc_irte(self, count: int = 1) -> int:
        """bitmap_find_free_region(): the lowest free block of count rounded up to a power of
        two, aligned to its size (multi-MSI needs base | subhandle addressing)."""
        span = 1 << (count - 1).bit_length()
        if span == 1:                      # MSI-X, one at a time: from the lowest maybe-free entry on
            i = self._bitmap.find(0, self._lowest_free, self.size)
            if i < 0:
                raise MemoryError(f"{self.name}: no free IRTE block of 1")
            self._bitmap[i] = 1
            self._lowest_free = i + 1
            return i
        # the first free block aligned to its size; a table not a multiple of it has none
        free = bytes(span)
        index = self._bitmap.find(free, 0, self.size) if self.size % span == 0 else -1
        while index >= 0 and index % span:               # a free run, unaligned: look from the next aligned start
            index = self._bitmap.find(free, index + span - index % span, self.size)
        if index < 0:
            raise MemoryError(f"{self.name}: no free IRTE block of {span}")
        self._bitmap[index:index + span] = b"\x01" * span
        return index

    def _alloc_singles(self, n: int) -> list[int]:
        """alloc_irte(1) n times (MSI-X: an entry per vector), in one call."""
        bitmap, size, out = self._bitmap, self.size, []
        i = bitmap.find(0, self._lowest_free, size)
        if 0 <= i and i + n <= size and bitmap.count(0, i, i + n) == n:
            # the lowest free entry and the n - 1 after it are free: they are the n taken
            bitmap[i:i + n] = b"\x01" * n
            self._lowest_free = i + n
            return list(range(i, i + n))
        for _ in range(n):
            i = bitmap.find(0, self._lowest_free, size)
            if i < 0:
                raise MemoryError(f"{self.name}: no free IRTE block of 1")
            bitmap[i] = 1
            self._lowest_free = i + 1
            out.append(i)
        return out

    def free_irte(self, index: int, count: int = 1) -> None:
        span = 1 << (count - 1).bit_length()
        for i in range(index, index + span):
            self._give_back(i)
        self.clear(index, span)
        if span == 1:
            self._bitmap[index] = 0
        else:
            self._bitmap[index:index + span] = bytes(span)
        self._lowest_free = min(self._lowest_free, index)

    def _give_back(self, i: int) -> None:
        """What an entry being freed holds besides its words: its owner, its CPU vector
        (present, remapped (not posted) and holding one, not parked), saved state, counts."""
        own = self.owners.pop(i, None)
        lo = self._lo[i]
        if own is not None and lo & 1 and not lo >> 15 & 1 and lo >> 16 & 0xFF != MANAGED_IRQ_SHUTDOWN_VECTOR:
            e = self[i]
            for cpu in dest_cpus(e, self.x2apic):
                self.matrix.free(e.vector, cpu)
        self.saved.pop(i, None)
        self.handlers.pop(i, None)
        if self.irte_counts:
            for cpu in range(len(self.matrix.used)):
                self.irte_counts.pop((i, cpu), None)

    def _remapped(self, vector: int, cpu: int, svt: int, sq: int, sid: int) -> Irte:
        """prepare_irte() + set_irte_sid(): edge, fixed, logical, redirection hint set."""
        return Irte(present=True, dm=1, rh=1, vector=vector, dest_id=irte_dest(cpu, self.x2apic),
                    sid=sid, sq=sq, svt=svt)

    def _remapped_words(self, vector: int, cpu: int, svt: int, sq: int, sid: int) -> tuple[int, int]:
        """_remapped(...).encode(), without making the Irte (thousands of VFs' vectors):
        present, DM=1, RH=1, the vector and destination; SID, SQ, SVT."""
        return (1 | 1 << 2 | 1 << 3 | vector << 16 | irte_dest(cpu, self.x2apic) << 32,
                sid | sq << 16 | svt << 18)

    def alloc_ioapic_pin(self, pin: int, requested: bool) -> int:
        """An IOAPIC pin's irq: its IRTE is allocated with the irq and written (present) only
        when the irq is started, i.e. requested."""
        index = self.alloc_irte(1)
        self.owners[index] = Owner("ioapic", pin)
        if requested:
            vector, cpu = self.matrix.alloc()
            self.write(index, self._remapped(vector, cpu, SVT_VERIFY_SID, 0, self.ioapic_sid))
        return index

    def alloc_msi(self, dev, nvec: int, kind: str = "msix", *, requested: bool = True,
                  managed_from: int | None = None) -> list[int]:
        """pci_alloc_irq_vectors() through the remapping domain: MSI-X one IRTE per vector, MSI
        one aligned block; each entry is activated at once (reservation mode), pointing at
        MANAGED_IRQ_SHUTDOWN_VECTOR on CPU 0 until request_irq. Vectors from managed_from on
        are managed: spread one per CPU and started at once."""
        svt, sq, sid = msi_sid(dev)
        if kind == "msi":
            base = self.alloc_irte(nvec)
            indices = list(range(base, base + nvec))
        else:
            indices = self._alloc_singles(nvec)
        owners, lo_col, hi_col, bdf, matrix = self.owners, self._lo, self._hi, dev.bdf, self.matrix
        parked = self._remapped_words(MANAGED_IRQ_SHUTDOWN_VECTOR, 0, svt, sq, sid)
        flush = getattr(self.unit, "flush_iec", None)
        allocs = self.allocs.get(bdf)
        if allocs is None:
            allocs = self.allocs[bdf] = []
        if kind == "msi":
            allocs.append((indices[0], nvec))
        for n, index in enumerate(indices):
            managed = managed_from is not None and n >= managed_from
            owners[index] = _new_owner(Owner, ("msi", bdf, n, managed))     # Owner(...)
            words = parked
            try:
                if managed:
                    vector, cpu = matrix.alloc((n - managed_from) % len(matrix.used))
                    words = self._remapped_words(vector, cpu, svt, sq, sid)
                elif requested and not matrix.surely_full():   # (thousands of VFs: no raise each)
                    vector, cpu = matrix.alloc()
                    words = self._remapped_words(vector, cpu, svt, sq, sid)
            except MemoryError:
                pass                                   # vector space exhausted: the irq stays parked
            lo_col[index], hi_col[index] = words       # modify_irte: one 128-bit store (write())
            if flush is not None:
                flush(index, 0)                        # (_flush_iec)
            if kind != "msi":
                allocs.append((index, 1))
        return indices

    def request_irqs(self, dev) -> None:
        """request_irq() for vectors still parked on the shutdown vector (a netdev's ndo_open)."""
        for index in self.indices(dev):
            e = self[index]
            if e.present and not e.im and e.vector == MANAGED_IRQ_SHUTDOWN_VECTOR:
                try:
                    vector, cpu = self.matrix.alloc()
                except MemoryError:
                    return                                 # request_irq fails: the rest stay parked
                self.write(index, self._remapped(vector, cpu, e.svt, e.sq, e.sid))

    def request_irq(self, index: int, handler=None) -> None:
        """request_irq() of one parked vector: it gets a CPU and vector from the matrix;
        handler() runs for each message delivered to it (handle())."""
        e = self[index]
        if e.present and not e.im and e.vector == MANAGED_IRQ_SHUTDOWN_VECTOR:
            try:
                vector, cpu = self.matrix.alloc()
            except MemoryError:
                raise SysfsError(errno.ENOSPC, "no free vector") from None   # assign_irq_vector_any()
            self.write(index, self._remapped(vector, cpu, e.svt, e.sq, e.sid))
        if handler is not None:
            self.handlers[index] = handler

    def free_irq(self, index: int) -> None:
        """free_irq(): the vector goes back to the matrix; the entry stays allocated, parked
        on MANAGED_IRQ_SHUTDOWN_VECTOR (reservation mode) until the vectors are freed."""
        self.handlers.pop(index, None)
        e = self[index]
        if e.present and not e.im and e.vector != MANAGED_IRQ_SHUTDOWN_VECTOR:
            for cpu in dest_cpus(e, self.x2apic):
                self.matrix.free(e.vector, cpu)
            self.write(index, self._remapped(MANAGED_IRQ_SHUTDOWN_VECTOR, 0, e.svt, e.sq, e.sid))

    def free_msi(self, dev) -> None:
        """pci_free_irq_vectors(): every IRTE of the function is cleared and freed."""
        blocks = self.allocs.pop(dev.bdf, None)
        if not blocks:
            return
        # free_irte() of each; an MSI-X vector's own entry (count 1) cleared inline: thousands of VFs
        lo_col, hi_col, bitmap = self._lo, self._hi, self._bitmap
        flush = getattr(self.unit, "flush_iec", None)
        for i, count in blocks:
            if count != 1:
                self.free_irte(i, count)
                continue
            self._give_back(i)
            lo_col[i] = hi_col[i] = 0                  # clear()
            if flush is not None:
                flush(i, 0)                            # (_flush_iec)
            bitmap[i] = 0
            if i < self._lowest_free:
                self._lowest_free = i

    def indices(self, dev) -> list[int]:
        return [base + i for base, count in self.allocs.get(dev.bdf, []) for i in range(count)]

    # --- MSI messages -------------------------------------------------------------------------------
    @staticmethod
    def msi_message(index: int, subhandle: int | None = 0) -> tuple[int, int]:
        """The remappable-format message the kernel programs (arch/x86 msi.h dmar_* fields):
        address 0xFEE | handle[14:0] << 5 | format << 4 | SHV << 3 | handle[15] << 2; data = subhandle."""
        shv = subhandle is not None
        addr = 0xFEE00000 | (index & 0x7FFF) << 5 | 1 << 4 | int(shv) << 3 | (index >> 15 & 1) << 2
        return addr, subhandle or 0

    def dev_message(self, dev, n: int = 0) -> tuple[int, int]:
        """The message a function's n-th vector sends: a multi-MSI block shares its base handle."""
        blocks = self.allocs[dev.bdf]
        if len(blocks) == 1 and blocks[0][1] > 1:
            return self.msi_message(blocks[0][0], n)
        return self.msi_message(blocks[n][0], 0)

    # --- delivery (VT-d 5.1.4) ----------------------------------------------------------------------
    def deliver_msi(self, source, address: int, data: int) -> MsiResult:
        """An interrupt message from `source` (a Bdf, name, function or requester id) through
        the remapping hardware: blocked with a fault reason, or delivered to CPUs or posted."""
        rid = _rid(source)
        if address >> 20 != 0xFEE:
            raise ValueError(f"{address:#x} is not an interrupt address (0xFEEx_xxxx)")
        if not address >> 4 & 1:                                   # compatibility format
            if self.enabled and self.compat_blocked:
                return self._block(rid, 0, 0x25)
            vector, dest = data & 0xFF, address >> 12 & 0xFF
            cpus = tuple(b for b in range(8) if dest >> b & 1) if address >> 2 & 1 else (dest,)
            return self._deliver(rid, None, vector, cpus)
        handle = (address >> 5 & 0x7FFF) | (address >> 2 & 1) << 15
        if data & 0xFFFF0000:
            return self._block(rid, handle, 0x20)
        index = handle + (data & 0xFFFF if address >> 3 & 1 else 0)
        if index >= self.size:
            return self._block(rid, index, 0x21)
        lo, hi = self._lo[index], self._hi[index]
        e = Irte.decode(lo, hi)
        if not e.present:
            return self._block(rid, index, 0x22, e.fpd)
        if Irte.reserved_set(lo, hi, self.x2apic, self.pi_supported):
            return self._block(rid, index, 0x24, e.fpd)
        if not self.source_ok(e, rid):
            return self._block(rid, index, 0x26, e.fpd)
        if e.im:
            # the hardware's atomic update of the descriptor in memory: PIR bit, then ON;
            # a notification (NV to NDST) only when ON was clear and SN does not suppress it
            desc = self.descriptors.setdefault(e.pda, PostedDescriptor())
            self._load(e.pda, desc)
            notified = desc.post(e.vector, e.urg)
            self._store(e.pda, desc)
            if notified:
                self.notifications[desc.ndst] += 1
            self.by_device[rid] += 1
            return MsiResult(rid, index, vector=e.vector, cpus=(desc.ndst,), posted=True, notified=notified)
        return self._deliver(rid, index, e.vector, dest_cpus(e, self.x2apic))

    def handle(self, result: MsiResult) -> bool:
        """The kernel's side of a message delivered to an IRTE (not posted: that goes to a
        vCPU): the handler request_irq() gave it runs (vfio_msihandler signals the
        program's eventfd). True when a handler ran."""
        if not result.delivered or result.posted or result.index is None:
            return False
        handler = self.handlers.get(result.index)
        if handler is None:
            return False
        handler()
        return True

    @staticmethod
    def source_ok(e: Irte, rid: int) -> bool:
        if e.svt == SVT_VERIFY_SID:
            mask = SQ_MASKS[e.sq]
            return rid & mask == e.sid & mask
        if e.svt == SVT_VERIFY_BUS:
            return e.sid >> 8 <= rid >> 8 <= e.sid & 0xFF
        return True

    def _deliver(self, rid: int, index, vector: int, cpus: tuple[int, ...]) -> MsiResult:
        for cpu in cpus:
            self.deliveries[vector, cpu] += 1
        if index is not None and cpus:
            self.irte_counts[index, cpus[0]] += 1              # the irq's count on the CPU that took it
        self.by_device[rid] += 1
        return MsiResult(rid, index, vector=vector, cpus=cpus)

    def _block(self, rid: int, index: int, reason: int, fpd: bool = False) -> MsiResult:
        if not (fpd and reason in QUALIFIED):
            self.record_fault(IrFault(rid, (index & 0xFFFF) << 48, reason))
        return MsiResult(rid, index, reason=reason)

    def record_fault(self, f: IrFault) -> None:
        """Into the unit's fault recording registers, then its dmar_fault() handler logs it."""
        self.faults.append(f)
        unit = self.unit
        if unit is not None and hasattr(unit, "record_fault"):
            unit.record_fault(f)
            if self.kmsg is not None and unit.take_fault_irq():     # issued unless FECTL.IM
                unit.service_faults(self.kmsg.log, self.kmsg.uptime_usec() / 1e6)
        elif self.kmsg is not None:
            self.kmsg.log("DMAR: DRHD: handling fault status reg 2", 3)
            self.kmsg.log(f.log_line(), 3)
