"""A VT-d DMA-remapping unit (VT-d spec ch. 3, 6, 7, 9; drivers/iommu/intel/).

Root table -> context tables -> second-level page tables live in simulated
physical memory; translate() is the hardware's staged walk (the checks of each
entry and their fault reasons: entries.py), answered from the IOTLB where it can;
every fault goes through record_fault(), and service_faults() is the kernel's
handler (dmar_fault) with its log lines (both in faults.py, with FSTS and FECTL).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vfakefs.model.ida import Ida
from vfakefs.model.intel import qi
from vfakefs.model.intel.entries import AT_TRANSLATED, AT_UNTRANSLATED, TT_PASS_THROUGH, context_walk, \
    masks, width
from vfakefs.model.intel.faults import FSTS_PFO, FSTS_PPF, FaultRecording   # noqa: F401 (FSTS_*: ours to export)
from vfakefs.model.intel.devtlb import MAX_AGAW_PFN_WIDTH, queue_dev_iotlb
from vfakefs.model.intel.pte import ADDR, PS, R, W, LEVEL_SHIFT

if TYPE_CHECKING:
    from vfakefs.model.intel.pagetable import PageTable

# Fault reasons (drivers/iommu/intel/dmar.c dma_remap_fault_reasons)
FAULT_REASONS = {
    0x00: "Software", 0x01: "Present bit in root entry is clear", 0x02: "Present bit in context entry is clear",
    0x03: "Invalid context entry", 0x04: "Access beyond MGAW", 0x05: "PTE Write access is not set",
    0x06: "PTE Read access is not set", 0x07: "Next page table ptr is invalid", 0x08: "Root table address invalid",
    0x09: "Context table ptr is invalid", 0x0a: "non-zero reserved fields in RTP",
    0x0b: "non-zero reserved fields in CTP", 0x0c: "non-zero reserved fields in PTE",
    0x0d: "PCE for translation request specifies blocking",
}
TT_MULTI_LEVEL, TT_DEV_IOTLB = 0, 1        # CONTEXT_TT_* (pass-through: entries.py)
GSTS = 0xC7000000   # TES RTPS QIES IRES IRTPS: translation, root table, QI and IR enabled
IQ_ENTRIES = qi.IQ_ENTRIES


FAULT_LOG_MAX = 4096   # faults dmar_table_errors keeps (like the printk ring, it forgets the oldest)


@dataclass
class Domain:
    did: int
    type: str                     # DMA, DMA-FQ, identity, blocked, unmanaged
    table: PageTable | None       # None for identity (pass-through) and blocked
    mappings: dict = field(default_factory=dict)   # iova -> (hpa, size, prot) made by the DMA API
    fq: list = field(default_factory=list)         # DMA-FQ: (iova, size) unmapped, awaiting the flush
    fq_timer: bool = False                         # the flush queue's timer is armed

    def alloc_iova(self, size: int, limit: int = 1 << 32, reserved=()) -> int | None:
        """alloc_iova(..., size_aligned): pages rounded up to a power of two, aligned
        to it, in the highest free gap below limit that avoids the live mappings and
        the reserved ranges (inclusive (start, end) pairs, iova_reserve_iommu_regions);
        IOVA page 0 is never handed out (the iova domain's start_pfn is 1). None when
        nothing fits."""
        span = _span(size)
        busy = [(iova, iova + _span(sz)) for iova, (_, sz, _) in self.mappings.items()]
        busy += [(iova, iova + _span(sz)) for iova, sz in self.fq]     # not free until flushed
        busy += [(start, end + 1) for start, end in reserved]
        top = limit
        for start, end in sorted(busy, key=lambda r: r[1], reverse=True):
            if end <= top and (top - span) & ~(span - 1) >= end:
                break                          # the gap between this range and top fits
            top = min(top, start)
        iova = (top - span) & ~(span - 1)
        return iova if iova >= 4096 else None


def _span(size: int) -> int:
    return 1 << max(12, (size - 1).bit_length())


@dataclass
class Fault:
    sid: int
    addr: int
    reason: int
    read: bool
    at: int = AT_UNTRANSLATED     # the request's address type (FRCD.AT)

    def log_line(self) -> str:
        kind = "DMA Read" if self.read else "DMA Write"
        return ("DMAR: [%s NO_PASID] Request device [%02x:%02x.%d] fault addr 0x%x [fault reason 0x%02x] %s"
                % (kind, self.sid >> 8, (self.sid >> 3) & 0x1F, self.sid & 7, self.addr, self.reason,
                   FAULT_REASONS.get(self.reason, "Unknown")))


@dataclass
class Translation:
    """What translate() answers: an address, or the fault that stopped it."""
    hpa: int | None = None
    fault: Fault | None = None
    iotlb_hit: bool = False
    atc_hit: bool = False         # every page came from the device's own ATC (intel/atc.py)


@dataclass
class DmarUnit(FaultRecording, qi.QueuedInvalidation):
    seq_id: int
    reg_base: int = 0xFED90000
    version: tuple[int, int] = (1, 0)
    cap: int = 0xD2078C406F0462
    ecap: int = 0xF050DA
    machine: object = None
    iotlb_entries: int = 4096
    fault_log: list = field(default_factory=list)      # the last FAULT_LOG_MAX faults serviced
    faults_serviced: int = 0                           # all of them, ever
    iq_tail: int = 0
    qi_submissions: int = 0                            # qi_submit_sync calls, ever
    qi_live: bool = False                              # init_flush has run: IRTE changes are flushed
    irta: int = 0x20000F   # interrupt remapping table address register: base | EIME | size 2^(15+1)
    perf: dict = field(default_factory=dict)   # dmar_perf_latency: type -> 7 buckets, min, max, average (us)
    # ATS (iommu/ats.py): rids whose context entry says Device-TLB (info->ats_supported), the
    # ATCs of devices with ATS enabled, and per domain id the device-TLB tags its flushes reach
    ats_rids: set = field(default_factory=set)
    atcs: dict = field(default_factory=dict)           # rid -> Atc
    devtlb: dict = field(default_factory=dict)         # did -> {rid: DevTlbTag}

    FAULT_LOG_MAX = FAULT_LOG_MAX

    def __post_init__(self):
        self._init_faults()           # FRCD, FSTS, FECTL (faults.py)
        # the domain-id allocator (intel/iommu.c domain_ida): the lowest free id; 0 is
        # reserved (caching mode's non-present entries), 1 is the static identity domain's
        self.domain_ids = Ida(reserved=sorted(self.RESERVED_DIDS))
        self._runs: list[float] = []  # when the fault handler ran (its ratelimit)
        self.materialized = False
        self.on_materialize = None    # called once the tables exist (the IOMMU core programs them)

    # The tables live in numpy arrays. They are made on first use, not at mount:
    # importing numpy would cost `vfakefs mount` a sixth of its time.
    LAZY = frozenset(("mem", "iotlb", "root", "rtaddr", "iq_base", "iq_status", "iq", "context_tables", "domains"))

    def __getattr__(self, name):
        if name in DmarUnit.LAZY and not self.__dict__.get("materialized", True):
            self.materialize()
            return self.__dict__[name]
        raise AttributeError(name)

    def materialize(self) -> None:
        """Allocate the root table, IOTLB and invalidation queue (intel_iommu_init)."""
        if self.materialized:
            return
        # imported here, not at the top: these need numpy, which stays off the mount path
        from vfakefs.model.intel.iotlb import Iotlb
        from vfakefs.model.intel.memory import PhysMem
        self.materialized = True
        self.domains = {}                                # did -> Domain
        self.context_tables: dict[int, int] = {}         # bus -> context table address
        self.iq = [(0, 0, 0)] * IQ_ENTRIES
        self.mem = PhysMem()
        self.iotlb = Iotlb(self.iotlb_entries)
        self.root = self.mem.alloc_page()
        self.rtaddr = self.root       # RTADDR_REG as the hardware latched it (SRTP); the walk starts here
        self.iq_base = self.mem.alloc_page()
        self.iq_status = self.mem.alloc_page()
        self.init_flush()
        if self.on_materialize is not None:
            self.on_materialize()

    # --- capability fields -------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"dmar{self.seq_id}"

    @property
    def domains_supported(self) -> int:
        return 2 ** (4 + 2 * (self.cap & 0x7))  # CAP.ND

    @property
    def ir_supported(self) -> bool:
        return bool(self.ecap & 0x8)  # ECAP.IR

    @property
    def mgaw(self) -> int:
        return ((self.cap >> 16) & 0x3F) + 1

    @property
    def haw(self) -> int:
        """Host address width: the boot log's (boot.py prints MGAW as the DMAR table's HAW)."""
        return self.mgaw

    @property
    def levels(self) -> int:
        """Page-table depth: the largest supported AGAW not above MGAW (SAGAW bit 1: 39, 2: 48, 3: 57)."""
        sagaw = (self.cap >> 8) & 0x1F
        for bit, levels in ((3, 5), (2, 4), (1, 3)):
            if sagaw & (1 << bit) and 12 + 9 * levels <= max(self.mgaw, 39):
                return levels
        return 3

    @property
    def superpage_levels(self) -> tuple[int, ...]:
        sllps = (self.cap >> 34) & 0xF
        return tuple(lv for lv, bit in ((2, 1), (3, 2)) if sllps & bit)

    @property
    def nfr(self) -> int:
        return ((self.cap >> 40) & 0xFF) + 1

    @property
    def fro(self) -> int:
        return ((self.cap >> 24) & 0x3FF) * 16

    # --- domains and context entries ----------------------------------------------------------
    RESERVED_DIDS = frozenset((0, 1))   # taken at init (iommu_init_domains): see domain_ids_used

    def new_domain(self, kind: str) -> Domain:
        if kind == "identity":
            # the static identity domain: FLPT_DEFAULT_DID (1) since 6.12, before that an id of
            # its own the first time a device attaches to it (a profile fact)
            dom = next((d for d in self.domains.values() if d.type == "identity"), None)
            if dom is None:
                reserved = getattr(getattr(self.machine, "profile", None), "identity_flpt_did", True)
                did = 1 if reserved else self.domain_ids.alloc()
                dom = self.domains[did] = Domain(did, "identity", None)
            return dom
        from vfakefs.model.intel.pagetable import PageTable   # (numpy's memory: made on first use)
        did = self.domain_ids.alloc()
        table = PageTable(self.mem, self.levels, self.superpage_levels) if kind != "blocked" else None
        dom = self.domains[did] = Domain(did, kind, table)
        return dom

    def domain_ids_used(self) -> int:
        """bitmap_weight(iommu->domain_ids) (intel-iommu/domains_used): the ids taken at init,
        0 (invalid translations under caching mode) and 1 (FLPT_DEFAULT_DID; on 6.1 without
        scalable mode the QEMU captures show it taken as well: the first domain is DID 2),
        and the id of every domain the unit holds."""
        return len(self.RESERVED_DIDS | self.domains.keys())

    def free_domain(self, dom: Domain) -> None:
        """domain_exit() + ida_free of its id, once no context entry names it: its page
        tables go back to memory, its IOTLB entries and counters go, its id is free
        for the next domain. The static identity domain lives for ever."""
        if dom.type == "identity" or self.domains.get(dom.did) is not dom:
            return
        del self.domains[dom.did]
        if dom.table is not None:
            dom.table.free()
            dom.table = None
        dom.mappings.clear()
        dom.fq.clear()
        self.iotlb.forget_domain(dom.did)
        self.devtlb.pop(dom.did, None)
        self.domain_ids.free(dom.did)

    def context_slot(self, rid: int, create: bool = True) -> int | None:
        bus, devfn = rid >> 8, rid & 0xFF
        table = self.context_tables.get(bus)
        if table is None:
            if not create:
                return None
            table = self.context_tables[bus] = self.mem.alloc_page()
            self.mem.write(self.root + 16 * bus, table | 1)          # root entry: CTP | P
        return table + 16 * devfn

    def set_context(self, rid: int, dom: Domain | None) -> None:
        """Program (or clear, for blocked/None) the legacy context entry of rid, then
        invalidate the context cache and the domain's IOTLB as intel_iommu does."""
        slot = self.context_slot(rid)
        old_lo, old_hi = self.mem.read(slot), self.mem.read(slot + 8)
        if dom is None or dom.type == "blocked":
            lo = hi = 0
        elif dom.table is None:                                       # identity: pass-through
            lo, hi = TT_PASS_THROUGH << 2 | 1, dom.did << 8 | (self.levels - 2)
        else:   # domain_context_mapping_one(): Device-TLB translation when the device has ATS
            tt = TT_DEV_IOTLB if rid in self.ats_rids else TT_MULTI_LEVEL
            lo, hi = dom.table.pgd | tt << 2 | 1, dom.did << 8 | (self.levels - 2)
        self.mem.write(slot, lo)
        self.mem.write(slot + 8, hi)
        # the kernel clears a present entry before it programs another (domain_context_clear_one,
        # from dmar_remove_one_dev_info / device_block_translation): device-selective context
        # cache for the old domain id, then its IOTLB, each its own submission
        if old_lo & 1:
            self._flush_context(rid, (old_hi >> 8) & 0xFFFF, (old_hi >> 8) & 0xFFFF)
            tag = self.devtlb.get((old_hi >> 8) & 0xFFFF, {}).pop(rid, None)
            if tag is not None:                    # then the device's whole ATC (iommu/ats.py)
                queue_dev_iotlb(self, tag, 0, MAX_AGAW_PFN_WIDTH)
        # not-present to present (domain_context_mapping_one): a write-buffer flush only, unless
        # caching mode caches non-present entries in the "special domain #0": context cache
        # for DID 0, IOTLB for the new domain
        if lo & 1 and self.cap & 0x80:
            self._flush_context(rid, 0, (hi >> 8) & 0xFFFF)

    def context(self, rid: int) -> tuple[int, int]:
        slot = self.context_slot(rid, create=False)
        if slot is None:
            return 0, 0
        return self.mem.read(slot), self.mem.read(slot + 8)

    @contextmanager
    def timed(self, kind: int):
        """dmar_latency_update(): bucket how long an invalidation took, when enabled."""
        t0 = time.perf_counter_ns()
        yield
        counts = self.perf.get(kind)
        if counts is None:
            return
        us = (time.perf_counter_ns() - t0) / 1000
        bucket = next((i for i, top in enumerate((0.1, 1, 10, 100, 1000, 10000)) if us < top), 6)
        counts[bucket] += 1
        n = sum(counts[:7])
        counts[7] = int(us) if n == 1 else min(counts[7], int(us))
        counts[8] = max(counts[8], int(us))
        counts[9] = int((counts[9] * (n - 1) + us) / n)

    # --- translation (VT-d spec 3.6, 3.7) -------------------------------------------------------
    def translate(self, rid: int, iova: int, size: int = 1, write: bool = False,
                  at: int = AT_UNTRANSLATED) -> Translation:
        """Check root and context entry (entries.py), then walk the page table for every
        page of [iova, iova+size); the first page that cannot be accessed is the fault.
        at: the request's address type (AT_TRANSLATED: the device sends a host address)."""
        reason, ctx = context_walk(self, rid, at)
        if reason:
            return self._fault(rid, iova, reason, write, at)
        tt, did, pgd, levels = ctx
        if tt == TT_PASS_THROUGH or at == AT_TRANSLATED:
            return Translation(hpa=iova)
        if iova + size > 1 << width(self, levels):
            return self._fault(rid, iova, 0x04, write, at)
        if not self.mem.owns(pgd):
            return self._fault(rid, iova, 0x03, write, at)       # SLPTPTR cannot be read
        first, hit_all = None, True
        for page in range(iova >> 12, ((iova + max(size, 1) - 1) >> 12) + 1):
            hpa, hit, reason = self._page(did, pgd, levels, page, write)
            if reason:
                return self._fault(rid, page << 12, reason, write, at)
            hit_all &= hit
            if first is None:
                first = hpa | (iova & 0xFFF)
        return Translation(hpa=first, iotlb_hit=hit_all)

    def _page(self, did: int, pgd: int, levels: int, vpfn: int, write: bool):
        """(hpa, IOTLB hit, 0) or (None, False, fault reason) for one page."""
        need = W if write else R
        cached = self.iotlb.lookup(did, vpfn)
        if cached is not None and cached & need:
            return cached & ADDR, True, 0
        table, iova, mk = pgd, vpfn << 12, masks(self)
        for lv in range(levels, 0, -1):
            e = self.mem.read(table + 8 * ((iova >> LEVEL_SHIFT[lv]) & 511))
            superpage = lv in mk.superpage_levels and bool(e & PS)
            if e & (R | W) and e & mk.pte[lv, superpage]:
                return None, False, 0x0c
            if not e & need:
                return None, False, 0x05 if write else 0x06
            if lv == 1 or superpage:
                hpa = (e & ADDR & ~((1 << LEVEL_SHIFT[lv]) - 1)) | (iova & ((1 << LEVEL_SHIFT[lv]) - 1) & ~0xFFF)
                self.iotlb.fill(did, vpfn, hpa | (e & (R | W)))
                return hpa, False, 0
            table = e & ADDR
            if not self.mem.owns(table):
                return None, False, 0x07
        return None, False, 0x07

    def translate_batch(self, rid: int, iovas, write: bool = False):
        """Vectorised translate of many IOVAs from one source (model/walk.py)."""
        from vfakefs.model.intel.walk import translate_batch   # numpy: off the mount path
        return translate_batch(self, rid, iovas, write)

    # --- a device's DMA: through its ATC when ATS is on (intel/atc.py), else translate() ----------
    def device_translate(self, rid: int, iova: int, size: int = 1, write: bool = False) -> Translation:
        from vfakefs.model.intel.atc import translate             # numpy: off the mount path
        return translate(self, rid, iova, size, write)

    def device_translate_batch(self, rid: int, iovas, write: bool = False):
        from vfakefs.model.intel.atc import translate_batch
        return translate_batch(self, rid, iovas, write)

    def new_atc(self):
        """A device's ATC, when the kernel enables its ATS (iommu/ats.py)."""
        from vfakefs.model.intel.atc import Atc
        return Atc()

    # --- fault recording (VT-d spec 7.2; record_fault and the kernel's handler: faults.py) ------
    def _fault(self, rid: int, iova: int, reason: int, write: bool, at: int = AT_UNTRANSLATED) -> Translation:
        f = Fault(rid, iova & ~0xFFF, reason, not write, at)
        self.record_fault(f)
        return Translation(fault=f)

    # --- the register file, as iommu_regset shows it ------------------------------------------
    def registers(self) -> list[tuple[str, int, int]]:
        iqh = iqt = (self.iq_tail * 16)
        regs32 = [("VER", 0x00, self.version[0] << 4 | self.version[1]), ("GCMD", 0x18, 0), ("GSTS", 0x1C, GSTS),
                  ("FSTS", 0x34, self.fsts), ("FECTL", 0x38, self.fectl), ("FEDATA", 0x3C, 0x21),
                  ("FEADDR", 0x40, 0xFEE01004), ("FEUADDR", 0x44, 0), ("PMEN", 0x64, 0), ("PLMBASE", 0x68, 0),
                  ("PLMLIMIT", 0x6C, 0), ("ICS", 0x9C, 0), ("PRS", 0xDC, 0), ("PECTL", 0xE0, 0),
                  ("PEDATA", 0xE4, 0), ("PEADDR", 0xE8, 0), ("PEUADDR", 0xEC, 0)]
        regs64 = [("CAP", 0x08, self.cap), ("ECAP", 0x10, self.ecap), ("RTADDR", 0x20, self.rtaddr), ("CCMD", 0x28, 0),
                  ("AFLOG", 0x58, 0), ("PHMBASE", 0x70, 0), ("PHMLIMIT", 0x78, 0), ("IQH", 0x80, iqh),
                  ("IQT", 0x88, iqt), ("IQA", 0x90, self.iq_base), ("IRTA", 0xB8, self.irta),
                  ("PQH", 0xC0, 0), ("PQT", 0xC8, 0), ("PQA", 0xD0, 0), ("MTRRCAP", 0x100, 0), ("MTRRDEF", 0x108, 0)]
        fixed = ["FIX64K_00000", "FIX16K_80000", "FIX16K_A0000", "FIX4K_C0000", "FIX4K_C8000", "FIX4K_D0000",
                 "FIX4K_D8000", "FIX4K_E0000", "FIX4K_E8000", "FIX4K_F0000", "FIX4K_F8000"]
        regs64 += [(f"MTRR_{n}", 0x120 + 8 * i, 0) for i, n in enumerate(fixed)]
        for i in range(10):
            regs64 += [(f"MTRR_PHYSBASE{i}", 0x180 + 16 * i, 0), (f"MTRR_PHYSMASK{i}", 0x188 + 16 * i, 0)]
        regs64 += [("VCCAP", 0xE30, 0), ("VCMD", 0xE00, 0), ("VCRSP", 0xE10, 0)]
        return regs32 + regs64
