"""The x86 vector space (kernel/irq/matrix.c, arch/x86/kernel/apic/vector.c), enough of
it for interrupt remapping: which dynamic vectors each CPU has handed out."""
from __future__ import annotations

from vfakefs.model.intel.irte import FIRST_DYNAMIC_VECTOR, FIRST_SYSTEM_VECTOR


class VectorMatrix:
    """x86 irq_matrix, enough of it: each CPU's dynamic vectors; a new irq goes to the CPU
    with the fewest allocated (lowest on a tie), at its lowest free vector."""

    def __init__(self, nr_cpus: int):
        self.used = [set() for _ in range(max(1, nr_cpus))]
        # per CPU, a vector below which none is free (a full CPU's is FIRST_SYSTEM_VECTOR): the
        # search for the lowest free one starts there, so thousands of VFs' vectors on a full
        # matrix cost no scan of it each (vectors taken by adding to `used` keep it a lower bound)
        self.low = [FIRST_DYNAMIC_VECTOR] * len(self.used)

    def alloc(self, cpu: int | None = None) -> tuple[int, int]:
        if cpu is None:
            cpu = min(range(len(self.used)), key=lambda c: (len(self.used[c]), c))
        cpu %= len(self.used)
        used = self.used[cpu]
        vec = next((v for v in range(self.low[cpu], FIRST_SYSTEM_VECTOR) if v not in used), None)
        if vec is None:
            self.low[cpu] = FIRST_SYSTEM_VECTOR
            raise MemoryError(f"no free vector on CPU {cpu}")     # request_irq fails with -ENOSPC
        used.add(vec)
        self.low[cpu] = vec + 1
        return vec, cpu

    def surely_full(self) -> bool:
        """Every CPU was found full since its last free (alloc() would raise MemoryError)."""
        return min(self.low) >= FIRST_SYSTEM_VECTOR

    def free(self, vector: int, cpu: int) -> None:
        if 0 <= cpu < len(self.used):
            self.used[cpu].discard(vector)
            self.low[cpu] = min(self.low[cpu], vector)
