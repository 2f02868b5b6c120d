"""The interrupt remapping table entry (IRTE) and what passes through it
(VT-d spec 5.1, 9.10-9.12; drivers/iommu/intel/irq_remapping.c): the 128-bit
formats, remapped and posted, the posted-interrupt descriptor, and the result
or fault of one interrupt message."""
from __future__ import annotations

from dataclasses import dataclass

INTR_REMAP_TABLE_ENTRIES = 65536

# dmar.c irq_remap_fault_reasons[] (0x20 + i)
IR_FAULT_REASONS = {
    0x20: "Detected reserved fields in the decoded interrupt-remapped request",
    0x21: "Interrupt index exceeded the interrupt-remapping table size",
    0x22: "Present field in the IRTE entry is clear",
    0x23: "Error accessing interrupt-remapping table pointed by IRTA_REG",
    0x24: "Detected reserved fields in the IRTE entry",
    0x25: "Blocked a compatibility format interrupt request",
    0x26: "Blocked an interrupt request due to source-id verification failure",
}
# VT-d 5.1.4.1: qualified faults are not recorded when the IRTE's FPD is set.
QUALIFIED = {0x22, 0x24, 0x26}

SVT_NO_VERIFY, SVT_VERIFY_SID, SVT_VERIFY_BUS = 0, 1, 2
# SQ: which requester-id bits take part in the SVT=1 comparison (VT-d 9.10; QEMU vtd_svt_mask)
SQ_MASKS = (0xFFFF, 0xFFFB, 0xFFF9, 0xFFF8)

MANAGED_IRQ_SHUTDOWN_VECTOR = 0xEF  # x86: where an activated but not yet requested irq points
POSTED_INTR_VECTOR = 0xF2           # KVM's notification vector
FIRST_DYNAMIC_VECTOR, FIRST_SYSTEM_VECTOR = 0x21, 0xEC
IOAPIC_SID = 0xFF00                 # QEMU q35: Q35_PSEUDO_BUS_PLATFORM << 8 | Q35_PSEUDO_DEVFN_IOAPIC

# reserved bits (VT-d 9.10): remapped-format low 12-14, 24-31; posted-format low 2-7, 12-13, 24-37;
# high 84-95 in posted format, 84-127 in remapped format
_RSV_LO_REMAP = 0x7 << 12 | 0xFF << 24
_RSV_LO_POSTED = 0x3F << 2 | 0x3 << 12 | ((1 << 14) - 1) << 24
_RSV_HI_REMAP = ~((1 << 20) - 1) & (2**64 - 1)
_RSV_HI_POSTED = 0xFFF << 20
_RSV_DLM = {3, 6}


@dataclass(frozen=True, slots=True)
class Irte:
    """One 128-bit interrupt remapping table entry, field by field (VT-d 9.10)."""
    present: bool = False
    fpd: bool = False         # fault processing disable
    dm: int = 0               # destination mode: 1 logical       (remapped format)
    rh: int = 0               # redirection hint                  (remapped)
    tm: int = 0               # trigger mode: 1 level             (remapped)
    dlm: int = 0              # delivery mode                     (remapped)
    avail: int = 0            # bits 8-11, for software
    im: bool = False          # IRTE mode: 1 posted
    urg: bool = False         # urgent                            (posted)
    vector: int = 0
    dest_id: int = 0          # bits 32-63; xAPIC uses only 40-47  (remapped)
    pda: int = 0              # posted-interrupt descriptor address, 64-byte aligned (posted)
    sid: int = 0
    sq: int = 0
    svt: int = 0

    def encode(self) -> tuple[int, int]:
        lo = int(self.present) | int(self.fpd) << 1 | self.avail << 8 | int(self.im) << 15 | self.vector << 16
        hi = self.sid | self.sq << 16 | self.svt << 18
        if self.im:
            lo |= int(self.urg) << 14 | ((self.pda >> 6) & 0x3FFFFFF) << 38
            hi |= (self.pda >> 32) << 32
        else:
            lo |= self.dm << 2 | self.rh << 3 | self.tm << 4 | self.dlm << 5 | self.dest_id << 32
        return lo, hi

    @classmethod
    def decode(cls, lo: int, hi: int) -> Irte:
        lo, hi = int(lo), int(hi)
        common = dict(present=bool(lo & 1), fpd=bool(lo >> 1 & 1), avail=lo >> 8 & 0xF, im=bool(lo >> 15 & 1),
                      vector=lo >> 16 & 0xFF, sid=hi & 0xFFFF, sq=hi >> 16 & 3, svt=hi >> 18 & 3)
        if common["im"]:
            return cls(urg=bool(lo >> 14 & 1), pda=(hi >> 32) << 32 | (lo >> 38) << 6, **common)
        return cls(dm=lo >> 2 & 1, rh=lo >> 3 & 1, tm=lo >> 4 & 1, dlm=lo >> 5 & 7, dest_id=lo >> 32, **common)

    @property
    def xapic_dest(self) -> int:
        return self.dest_id >> 8 & 0xFF

    @staticmethod
    def reserved_set(lo: int, hi: int, x2apic: bool, posted_ok: bool) -> bool:
        """Any reserved bit set, in the format the entry's IM selects (fault reason 0x24)."""
        lo, hi = int(lo), int(hi)
        if lo >> 15 & 1:
            return not posted_ok or bool(lo & _RSV_LO_POSTED or hi & _RSV_HI_POSTED or (hi >> 18 & 3) == 3)
        bad = lo & _RSV_LO_REMAP or hi & _RSV_HI_REMAP or (hi >> 18 & 3) == 3 or (lo >> 5 & 7) in _RSV_DLM
        if not x2apic:                       # IRTA.EIME=0: only bits 40-47 of the destination exist
            bad = bad or lo >> 32 & 0xFFFF00FF
        return bool(bad)


def irte_dest(cpu: int, x2apic: bool) -> int:
    """IRTE_DEST(): the APIC's logical destination for one CPU, placed as the IRTE wants it.
    xAPIC flat logical: one bit per CPU in bits 40-47; x2APIC cluster: cluster << 16 | bit."""
    if x2apic:
        return (cpu >> 4) << 16 | 1 << (cpu & 15)
    return (1 << cpu) << 8


def dest_cpus(irte: Irte, x2apic: bool) -> tuple[int, ...]:
    if not irte.dm:                                      # physical: the APIC id, which is the CPU here
        return (irte.dest_id if x2apic else irte.xapic_dest,)
    if x2apic:
        base = (irte.dest_id >> 16) * 16
        return tuple(base + b for b in range(16) if irte.dest_id >> b & 1)
    return tuple(b for b in range(8) if irte.xapic_dest >> b & 1)


@dataclass
class PostedDescriptor:
    """Posted-interrupt descriptor (VT-d 9.11): PIR bits 0-255, ON, SN, NV, NDST."""
    ndst: int = 0
    nv: int = POSTED_INTR_VECTOR
    pir: int = 0
    on: bool = False
    sn: bool = False
    posted: int = 0          # interrupts posted into PIR
    notifications: int = 0   # notification events sent to ndst with nv

    # the 64-byte descriptor in memory (VT-d 9.11): PIR bits 0-255, ON bit 256, SN bit 257,
    # NV bits 264-271, NDST bits 288-319 (x2APIC: the 32-bit APIC id; xAPIC: bits 296-303)
    def to_bytes(self, x2apic: bool = True) -> bytes:
        ndst = self.ndst if x2apic else (self.ndst & 0xFF) << 8
        word = self.pir | int(self.on) << 256 | int(self.sn) << 257 | (self.nv & 0xFF) << 264 | ndst << 288
        return word.to_bytes(64, "little")

    def load(self, raw: bytes, x2apic: bool = True) -> None:
        """Take PIR, ON, SN, NV and NDST from the descriptor's bytes in memory."""
        word = int.from_bytes(raw[:64], "little")
        self.pir = word & ((1 << 256) - 1)
        self.on, self.sn = bool(word >> 256 & 1), bool(word >> 257 & 1)
        self.nv = word >> 264 & 0xFF
        ndst = word >> 288 & 0xFFFFFFFF
        self.ndst = ndst if x2apic else ndst >> 8 & 0xFF

    def post(self, vector: int, urgent: bool) -> bool:
        """Hardware's posting: set the PIR bit; notify unless one is outstanding or suppressed."""
        self.pir |= 1 << vector
        self.posted += 1
        if self.on or (self.sn and not urgent):
            return False
        self.on = True
        self.notifications += 1
        return True


@dataclass(frozen=True)
class MsiResult:
    """What deliver_msi() did with one interrupt message."""
    source: int                      # requester id
    index: int | None = None
    reason: int | None = None        # fault reason when blocked
    vector: int | None = None
    cpus: tuple[int, ...] = ()
    posted: bool = False
    notified: bool = False

    @property
    def blocked(self) -> bool:
        return self.reason is not None

    @property
    def delivered(self) -> bool:
        return self.reason is None

    @property
    def cpu(self) -> int | None:
        return self.cpus[0] if self.cpus else None


@dataclass
class IrFault:
    """An interrupt-remapping fault as the fault recording register holds it: FI in bits 63:48."""
    sid: int
    addr: int
    reason: int
    read: bool = False

    @property
    def index(self) -> int:
        return self.addr >> 48

    def log_line(self) -> str:
        # dmar_fault_do_one(), INTR_REMAP branch (5.15+)
        return ("DMAR: [INTR-REMAP] Request device [%02x:%02x.%d] fault index 0x%x [fault reason 0x%02x] %s"
                % (self.sid >> 8, (self.sid >> 3) & 0x1F, self.sid & 7, self.index, self.reason,
                   IR_FAULT_REASONS.get(self.reason, "Unknown")))
