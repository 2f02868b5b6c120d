"""The interrupt remapping table as the kernel leaves it after boot
(drivers/iommu/intel/irq_remapping.c, arch/x86/kernel/apic/io_apic.c, vector.c).

Computed: which IRTEs exist, for whom, their source ids and validation, the blocks
(alloc_irte), the parked and managed vectors, and each vector and CPU from the matrix
allocator's rules (irq_matrix.VectorMatrix). Recorded: a topology may declare
`[recorded.irq]` (the probe order and vectors one real boot showed, see qemu-ref.toml);
they are applied only when the computed table has exactly the recorded entries.
Nothing here depends on a machine's name."""
from __future__ import annotations

from vfakefs.model import ram
from vfakefs.model.base import irqs
from vfakefs.model.intel.irq_matrix import VectorMatrix
from vfakefs.model.intel.irq_remap import IrqRemapTable
from vfakefs.model.intel.irte import MANAGED_IRQ_SHUTDOWN_VECTOR


def build(machine, *, x2apic: bool = False, unit=None) -> IrqRemapTable:
    """The table after boot: IRTA.EIME in x2apic mode, then boot_allocate()."""
    unit = unit if unit is not None else (machine.dmar[0] if machine.dmar else None)
    if x2apic and unit is not None and hasattr(unit, "irta"):
        unit.irta |= 0x800                                 # IRTA.EIME, as iommu_set_irq_remapping
    t = IrqRemapTable(unit, x2apic=x2apic, nr_cpus=machine.nr_cpus, kmsg=machine.kmsg)
    # posted-interrupt descriptors are in host memory, where the hardware reads and sets them
    t.pd_memory = (lambda a, n: ram.read(machine, a, n), lambda a, data: ram.write(machine, a, data))
    boot_allocate(t, machine)
    return t


# --- boot-time allocation -------------------------------------------------------------------------------
# setup_IO_APIC_irqs(): ISA irqs 1-15 get pins 1-15 in pin order; irq 0 rides pin 2 (the
# INT_SRC_OVR every PC firmware has), so pin 0 has no entry and 15 IRTEs are taken first.
LEGACY_PINS = tuple(range(1, 16))
# started at boot: timer (irq 0 on pin 2), i8042 keyboard, ttyS0, the ACPI SCI, i8042 aux
LEGACY_STARTED_PINS = {1, 2, 4, 9, 12}
IOAPIC_PINS = 24
# Driver.irq_admin_first: nvme_pci_enable() takes one vector for the admin queue;
# nvme_setup_io_queues() frees it and takes admin + one managed vector per I/O queue once
# the controller is up. Driver.irqs_on_open: network drivers request their irqs in
# ndo_open; until then the vectors stay parked.

def recorded_irq(machine) -> dict | None:
    """The topology's `[recorded.irq]`: what one real boot showed and the rules here do not
    derive (the order asynchronous probes finished in, the vectors the x86 matrix handed
    out, which also depend on irqs the table never shows: the DMAR fault irq, the local
    APIC timer, irqs freed during boot). None when the topology records nothing."""
    rec = getattr(machine, "recorded", {}).get("irq")
    if not rec:
        return None
    return {"probe_order": tuple(rec.get("probe_order", ())),
            "vectors": {index: (vector, cpu) for index, vector, cpu in rec.get("vectors", ())}}


def _gsi(f) -> int | None:
    """The IOAPIC pin pci_enable_device() maps (acpi_pci_irq_enable), if the function has INTx."""
    irq = f.irq if f.intx_irq is None else f.intx_irq      # dev->irq is the MSI's once MSI is on
    if f.config.r8(0x3D) and 16 <= irq < IOAPIC_PINS:
        return irq
    return None


def boot_allocate(t: IrqRemapTable, machine) -> None:
    """Allocate as the kernel does at boot: the IOAPIC's legacy pins, then each bound function
    in probe order (pcieport first, then endpoint drivers): its INTx pin if that GSI is new
    (allocated, never started: not present), then its MSI/MSI-X vectors."""
    for pin in LEGACY_PINS:
        t.alloc_ioapic_pin(pin, requested=pin in LEGACY_STARTED_PINS)
    rec = recorded_irq(machine)
    bound = [f for f in machine.functions if f.driver is not None and not f.is_virtfn]
    ports = [f for f in bound if f.is_bridge]
    ends = [f for f in bound if not f.is_bridge]
    if rec is not None:
        rank = {name: i for i, name in enumerate(rec["probe_order"])}
        ends.sort(key=lambda f: rank.get(f.name, len(rank)))
    gsis, later = set(range(16)), []
    for f in ports + ends:
        gsi = _gsi(f)
        if gsi is not None and gsi not in gsis:
            gsis.add(gsi)
            t.alloc_ioapic_pin(gsi, requested=False)
        if not f.msi_irqs:
            continue
        kind = f.msi_irqs[0][1]
        if f.driver.irq_admin_first and len(f.msi_irqs) > 1:
            t.alloc_msi(f, 1, kind)
            later.append(f)
        else:
            # a driver's own vectors (base/irqs.py) are requested when its netdev is open
            opened = bool(f.msi_names) and irqs.opened(f)
            t.alloc_msi(f, len(f.msi_irqs), kind, requested=not f.driver.irqs_on_open or opened)
    for f in later:
        t.free_msi(f)
        t.alloc_msi(f, len(f.msi_irqs), f.msi_irqs[0][1], managed_from=1)
    if rec is not None and set(map(int, t.present())) == set(rec["vectors"]):
        _apply_vectors(t, rec["vectors"])


def _apply_vectors(t: IrqRemapTable, vectors: dict) -> None:
    t.matrix = VectorMatrix(len(t.matrix.used))
    for index, (vector, cpu) in vectors.items():
        e = t[index]
        t.write(index, t._remapped(vector, cpu, e.svt, e.sq, e.sid))
        if vector != MANAGED_IRQ_SHUTDOWN_VECTOR:
            t.matrix.used[cpu % len(t.matrix.used)].add(vector)
