"""The x86 vector space (kernel/irq/matrix.c, arch/x86/kernel/apic/vector.c), enough of
it for interrupt remapping: which dynamic vectors each CPU has handed out."""
from __future__ import annotations

from vfakefs.model.intel.irte import FIRST_DYNAMIC_VECTOR, FIRST_SYSTEM_VECTOR


class VectorMatrix:
    """x86 irq_matrix, enough of it: each CPU's dynamic vectors; a new irq goes to the CPU
    with the fewest allocated (lowest on a tie), at its lowest free vector."""

    def __init__(self, nr_cpus: int):
        self.used = [set() for _ in range(max(1, nr_cpus))]

    def alloc(self, cpu: int | None = None) -> tuple[int, int]:
        if cpu is None:
            cpu = min(range(len(self.used)), key=lambda c: (len(self.used[c]), c))
        cpu %= len(self.used)
        vec = next((v for v in range(FIRST_DYNAMIC_VECTOR, FIRST_SYSTEM_VECTOR) if v not in self.used[cpu]), None)
        if vec is None:
            raise MemoryError(f"no free vector on CPU {cpu}")     # request_irq fails with -ENOSPC
        self.used[cpu].add(vec)
        return vec, cpu

    def free(self, vector: int, cpu: int) -> None:
        if 0 <= cpu < len(self.used):
            self.used[cpu].discard(vector)
