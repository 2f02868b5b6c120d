"""Posted interrupts on the interrupt remapping table (intel_ir_set_vcpu_affinity; VT-d 9.11):
an entry pointed at a vCPU's posted-interrupt descriptor and back. A part of IrqRemapTable
(irq_remap.py), which keeps the columns, the saved entries and the descriptors."""
from __future__ import annotations

from vfakefs.model.intel.irte import POSTED_INTR_VECTOR, Irte, PostedDescriptor


class PostedInterrupts:
    def set_posted(self, index: int, pda: int, vector: int, *, ndst: int = 0, urgent: bool = False,
                   nv: int = POSTED_INTR_VECTOR) -> PostedDescriptor:
        """Point an entry at a vCPU's posted-interrupt descriptor: IM=1, the guest vector, PDA.
        The remapped entry is kept to restore when the vCPU lets go."""
        e = self[index]
        if not e.present:
            raise ValueError(f"IRTE {index} is not present")
        if pda & 0x3F:
            raise ValueError("posted-interrupt descriptor must be 64-byte aligned")
        if not e.im:
            self.saved[index] = e.encode()
        desc = self.descriptors.setdefault(pda, PostedDescriptor(ndst=ndst, nv=nv))
        self._load(pda, desc)
        desc.ndst, desc.nv = ndst, nv                  # the vCPU's CPU and KVM's notification vector
        self._store(pda, desc)
        self.write(index, Irte(present=True, fpd=e.fpd, avail=e.avail, im=True, urg=urgent, vector=vector,
                               pda=pda, sid=e.sid, sq=e.sq, svt=e.svt))
        return desc

    def _load(self, pda: int, desc: PostedDescriptor) -> None:
        if self.pd_memory is not None:
            desc.load(self.pd_memory[0](pda, 64), self.x2apic)

    def _store(self, pda: int, desc: PostedDescriptor) -> None:
        if self.pd_memory is not None:
            self.pd_memory[1](pda, desc.to_bytes(self.x2apic))

    def descriptor(self, pda: int) -> PostedDescriptor:
        """The posted-interrupt descriptor at pda as it stands (in memory, when there is one)."""
        desc = self.descriptors.get(pda) or PostedDescriptor()
        self._load(pda, desc)
        return desc

    def posted_indices(self) -> list[int]:
        import numpy as np
        return [int(i) for i in np.nonzero((self.lo & np.uint64(1 | 1 << 15)) == np.uint64(1 | 1 << 15))[0]]

    def clear_posted(self, index: int) -> None:
        """irq_set_vcpu_affinity(NULL): back to the remapped entry the host programmed."""
        self._lo[index], self._hi[index] = self.saved.pop(index)
        self._flush_iec(index)
