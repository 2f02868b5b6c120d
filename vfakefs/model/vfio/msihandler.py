"""A device's MSI reaching the host, and the program when the interrupt is a VFIO one.

Any function can raise a vector whose message is programmed (pci/msi.py): the
message goes through interrupt remapping (source-id checks, faults logged), and
when the IRTE it lands on belongs to a vector a VFIO device enabled with SET_IRQS,
vfio_msihandler() signals the eventfd the program registered for it. That holds
for whoever sent the message, as in the kernel: the handler runs for the irq,
and source-id verification is what keeps other devices out.
"""
from __future__ import annotations

from vfakefs.model.pci.msi import VectorMessage, vector_message
from vfakefs.model.vfio.intrs import VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX


def vfio_irqs(dev) -> list:
    """The interrupt state (intrs.VfioIrqs) of dev's open VFIO device fds."""
    vg = dev.group.vfio if dev is not None and dev.group is not None else None
    if vg is None:
        return []
    return [fd.irqs for fd in vg.devices if fd.dev is dev and not fd.closed]


def deliver(m, source, address: int, data: int):
    """An interrupt message from source (a function) through the remapping hardware,
    then to the handler of the IRTE it reached: the MsiResult."""
    t = m.irq_remap
    result = t.deliver_msi(source, address, data)
    t.handle(result)
    return result


def raise_vector(m, dev, n: int) -> tuple[VectorMessage, object]:
    """dev raises its MSI/MSI-X vector n with the message programmed for it: (the
    message, the MsiResult or None when nothing went through remapping: held back, or
    no remapping). SysfsError(EINVAL) when vector n is not enabled (vector_message)."""
    live = [i for i in vfio_irqs(dev) if i.irq_type in (VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX)]
    table = live[0].msix_table if live and live[0].irq_type == VFIO_PCI_MSIX_IRQ_INDEX else None
    msg = vector_message(dev, n, m.irq_remap, table)
    if msg.held is not None:
        return msg, None
    if m.irq_remap is None:
        for irqs in live:                  # no remapping: the vector's own irq (compatibility format)
            if n < irqs.num_ctx and irqs.ctx[n] is not None:
                irqs.ctx[n].signal()
        return msg, None
    return msg, deliver(m, dev, msg.address, msg.data)
