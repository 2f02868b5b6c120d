"""Primary fault logging and the fault event interrupt of a VT-d unit (VT-d spec 7.1-7.4,
10.4.9-10.4.14), and the kernel's handler for it (drivers/iommu/intel/dmar.c dmar_fault).

The register file as the kernel touches it:
- FSTS (0x34): PFO 0 (RW1C), PPF 1 (RO: the OR of every F bit), IQE 4, ICE 5, ITE 6, PRO 7
  (RW1C), FRI 15:8 (RO: the register the first pending fault went to).
- FECTL (0x38): IM 31 (RW), IP 30 (RO). The kernel unmasks it when it requests the
  interrupt (dmar_set_interrupt -> dmar_msi_unmask writes 0), so a booted unit reads 0.
- NFR fault recording registers of 16 bytes at CAP.FRO: qword 0 FI (the page address),
  qword 1 SID 15:0, FR 39:32, AT 61:60, T 62 (1 = read), F 63 (RW1C).
"""
from __future__ import annotations

FSTS_PFO, FSTS_PPF, FSTS_IQE, FSTS_ICE, FSTS_ITE, FSTS_PRO = 0x1, 0x2, 0x10, 0x20, 0x40, 0x80
FSTS_W1C = FSTS_PFO | FSTS_IQE | FSTS_ICE | FSTS_ITE | FSTS_PRO
FSTS_STATUS = FSTS_W1C | FSTS_PPF          # the fields whose setting is an interrupt condition
FECTL_IM, FECTL_IP = 1 << 31, 1 << 30
FRCD_F = 1 << 31                           # in the register's top dword (+12), as dmar_fault writes it

# Qualified faults (VT-d spec 7.1.3, legacy-mode table): reported only while the FPD field of
# the context entry that processed the request is clear. The unqualified ones are those the
# hardware meets before it has a context entry to read FPD from: the root table or root
# entry (0x01, 0x08, 0x0a) or the context table behind it (0x09).
QUALIFIED = frozenset((0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0b, 0x0c, 0x0d))
CTX_FPD = 0x2


class FaultRecording:
    """Mixed into DmarUnit: its fault recording registers, FSTS and FECTL."""

    def _init_faults(self) -> None:
        self.frcd = [None] * self.nfr      # fault recording registers: the Fault each holds (F set), or None
        self._next_frcd = 0                # the hardware's internal index: round-robin over the registers
        self._fsts = 0                     # FSTS without PPF, which is computed from the F bits
        self.fectl = 0                     # IM clear: the kernel unmasked it at request_irq
        self.fault_irqs = 0                # fault event interrupt messages issued
        self._irq = False                  # one issued, its handler (dmar_fault) not yet run
        self.faults_suppressed = 0         # qualified faults not recorded because of FPD

    # --- FSTS: PPF is the OR of the F bits (VT-d 10.4.9) -------------------------------------
    @property
    def fsts(self) -> int:
        """FRI is undefined while PPF is clear (VT-d 10.4.9): it reads 0 then."""
        if any(f is not None for f in self.frcd):
            return self._fsts | FSTS_PPF
        return self._fsts & 0xFF

    @fsts.setter
    def fsts(self, value: int) -> None:
        self._fsts = value & ~FSTS_PPF

    def fpd(self, rid: int) -> bool:
        """The FPD field of the context entry that processes rid's requests."""
        if not self.materialized or not self.mem.owns(self.rtaddr):
            return False
        root = self.mem.read(self.rtaddr + 16 * (rid >> 8))
        ctp = root & ~0xFFF
        if not root & 1 or not self.mem.owns(ctp):
            return False
        return bool(self.mem.read(ctp + 16 * (rid & 0xFF)) & CTX_FPD)

    # --- recording (VT-d 7.2.1) -----------------------------------------------------------
    def record_fault(self, f) -> bool:
        """Primary fault logging. Not recorded: a qualified DMA-remapping fault under FPD,
        any fault while PFO is set; a fault that finds the register at the internal index
        still holding one sets PFO and is lost. True when it was recorded."""
        if f.reason < 0x20 and f.reason in QUALIFIED and self.fpd(f.sid):
            self.faults_suppressed += 1
            return False
        if self._fsts & FSTS_PFO:
            return False
        i = self._next_frcd
        if self.frcd[i] is not None:
            self._fsts |= FSTS_PFO
            return False
        pending = self.fsts & FSTS_STATUS
        self.frcd[i] = f
        if not pending & FSTS_PPF:
            self._fsts = (self._fsts & ~0xFF00) | i << 8      # FRI: where the pending faults start
        self._next_frcd = (i + 1) % self.nfr
        if not pending:                   # a status field already set: no new interrupt condition
            self._interrupt_condition()
        return True

    def _interrupt_condition(self) -> None:
        """VT-d 7.4 (fault event interrupt): masked, IP is set and the message held;
        else the message is issued (to the kernel's dmar_fault)."""
        if self.fectl & FECTL_IM:
            self.fectl |= FECTL_IP
        else:
            self._issue()

    def _issue(self) -> None:
        self.fectl &= ~FECTL_IP
        self.fault_irqs += 1
        self._irq = True

    def take_fault_irq(self) -> bool:
        """Whether an issued fault event awaits its handler (and it is now taken)."""
        irq, self._irq = self._irq, False
        return irq

    def _serviced(self) -> None:
        """IP clears once software has serviced every status field (VT-d 10.4.10)."""
        if not self.fsts & FSTS_STATUS:
            self.fectl &= ~FECTL_IP

    # --- software's writes (what the kernel writes: dmar_fault, dmar_msi_(un)mask) -----------
    def write_fsts(self, value: int) -> None:
        self._fsts &= ~(value & FSTS_W1C)
        self._serviced()

    def write_fectl(self, value: int) -> None:
        """IM is read/write, IP read-only; unmasking with IP set issues the held message."""
        self.fectl = (self.fectl & FECTL_IP) | (value & FECTL_IM)
        if not self.fectl & FECTL_IM and self.fectl & FECTL_IP:
            self._issue()

    def write_frcd_high(self, i: int, value: int) -> None:
        """The top dword of fault recording register i: F is RW1C, the rest read-only."""
        if value & FRCD_F:
            self.frcd[i] = None
            self._serviced()

    def frcd_qwords(self, i: int) -> tuple[int, int]:
        f = self.frcd[i]
        if f is None:
            return 0, 0
        read = 1 if getattr(f, "read", False) else 0
        return f.addr, (1 << 63 | read << 62 | (getattr(f, "at", 0) & 3) << 60
                        | (f.reason & 0xFF) << 32 | f.sid & 0xFFFF)

    def fault_registers(self) -> list[tuple[str, int, int]]:
        """(name, offset, value) of the fault recording registers, each as two qwords."""
        out = []
        for i in range(self.nfr):
            lo, hi = self.frcd_qwords(i)
            out += [(f"FRCD{i}_LO", self.fro + 16 * i, lo), (f"FRCD{i}_HI", self.fro + 16 * i + 8, hi)]
        return out

    # --- the kernel's handler -------------------------------------------------------------
    def service_faults(self, log, now: float = 0.0) -> list:
        """dmar_fault(): print FSTS; without PPF, nothing more (PFO alone stays set). Else from
        FRI on, each register with F set is logged and its F cleared, up to the first without
        F; then PFO|PPF|PRO is written to FSTS. Like the kernel it prints only within its
        ratelimit (10 runs per 5 s); the faults are cleared and counted all the same."""
        status = self.fsts
        if not status:
            return []
        self._runs = [t for t in self._runs if now - t < 5.0] + [now]
        printing = len(self._runs) <= 10
        if printing:
            log(f"DMAR: DRHD: handling fault status reg {status:x}", 3)
        if not status & FSTS_PPF:
            return []
        i, pending = (status >> 8) & 0xFF, []
        while i < self.nfr and self.frcd[i] is not None:
            f = self.frcd[i]
            if printing:
                log(f.log_line(), 3)
            self.frcd[i] = None                       # writel(DMA_FRCD_F, ... + 12)
            pending.append(f)
            i = (i + 1) % self.nfr
        self.write_fsts(FSTS_PFO | FSTS_PPF | FSTS_PRO)
        self.fault_log.extend(pending)
        self.faults_serviced += len(pending)
        if len(self.fault_log) > self.FAULT_LOG_MAX:    # a storm may run for hours: keep the newest
            del self.fault_log[:-self.FAULT_LOG_MAX]
        return pending
