"""MNT/sys/kernel/debug/vfakefs/interrupts: vfakefs's own file, /proc/interrupts as the
kernel prints it (kernel/irq/proc.c show_interrupts(), arch/x86/kernel/irq.c
arch_show_interrupts()) for what the model has: each PCI function's MSI/MSI-X irqs, then
the posted-interrupt notification line. Not the kernel's file: no IOAPIC, timer, IPI or
other per-CPU lines.

A line: `%*d: ` the irq, `%10u ` per online CPU the times it was handled there, ` %8s`
the chip (IR-PCI-MSIX-<bdf>, IR-PCI-MSI-<bdf>; without remapping PCI-MSIX-<bdf>), ` %*lu`
the hwirq (the vector's MSI index in the device's own MSI domain), `-%-8s` the flow
handler's name (edge), then `  ` and the name request_irq gave (no name: not requested).
An irq nobody requested and never counted is not shown, as the kernel skips it."""
from __future__ import annotations

from vfakefs.model.intel.irte import MANAGED_IRQ_SHUTDOWN_VECTOR

NR_IRQS_LEGACY, GSI_TOP = 16, 24


def _prec(m, highest: int) -> int:
    """show_interrupts(): the irq column is as wide as nr_irqs' digits, at least 3
    (arch_probe_nr_irqs(): GSIs + legacy + 8 per CPU + 16 per GSI for MSI)."""
    cpus = m.nr_cpus
    nr_irqs = max(GSI_TOP + NR_IRQS_LEGACY + 8 * cpus + GSI_TOP * 16, highest + 1)
    prec, j = 3, 1000
    while prec < 10 and j <= nr_irqs:
        prec, j = prec + 1, j * 10
    return prec


def _rows(m):
    t = m.irq_remap if m.irq_remap_args is not None else None
    for f in m.functions:
        indices = t.indices(f) if t is not None else []
        for n, (irq, kind) in enumerate(f.msi_irqs):
            index = indices[n] if n < len(indices) else None
            counts = [t.irte_counts.get((index, c), 0) if index is not None else 0 for c in range(m.nr_cpus)]
            name = f.msi_names[n] if n < len(f.msi_names) else ""
            if name and index is not None:
                e = t[index]
                if not e.im and e.vector == MANAGED_IRQ_SHUTDOWN_VECTOR:
                    name = ""                                     # allocated, not requested
            chip = ("IR-" if t is not None else "") + ("PCI-MSIX-" if kind == "msix" else "PCI-MSI-") + f.name
            yield irq, counts, chip, n, name


def interrupts_show(m) -> str:
    rows = sorted(_rows(m))
    prec = _prec(m, max((r[0] for r in rows), default=0))
    out = [" " * (prec + 8) + "".join("CPU%-8d" % c for c in range(m.nr_cpus)) + "\n"]
    for irq, counts, chip, hwirq, name in rows:
        if not name and not any(counts):
            continue
        line = "%*d: " % (prec, irq) + "".join("%10u " % c for c in counts)
        line += " %8s" % chip + " %*d" % (prec, hwirq) + "-%-8s" % "edge"
        out.append(line + ("  " + name if name else "") + "\n")
    t = m.irq_remap if m.irq_remap_args is not None else None
    pin = [t.notifications.get(c, 0) if t is not None else 0 for c in range(m.nr_cpus)]
    out.append("%*s: " % (prec, "PIN") + "".join("%10u " % c for c in pin) + "  Posted-interrupt notification event\n")
    return "".join(out)
