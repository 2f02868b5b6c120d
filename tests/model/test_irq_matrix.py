"""The x86 vector matrix (kernel/irq/matrix.c, as irq_matrix.VectorMatrix keeps it): the CPU
with the fewest vectors, its lowest free one; a full matrix refuses, and a freed vector is
handed out again, however the search was shortened."""
import pytest

from vfakefs.model.intel.irq_matrix import VectorMatrix
from vfakefs.model.intel.irte import FIRST_DYNAMIC_VECTOR, FIRST_SYSTEM_VECTOR

PER_CPU = FIRST_SYSTEM_VECTOR - FIRST_DYNAMIC_VECTOR


def test_vectors_go_to_the_emptiest_cpu_at_its_lowest_free_vector():
    m = VectorMatrix(2)
    assert [m.alloc() for _ in range(4)] == [(0x21, 0), (0x21, 1), (0x22, 0), (0x22, 1)]
    m.free(0x21, 1)
    assert m.alloc() == (0x21, 1)
    m.used[0].add(0x23)                 # taken at boot, beside alloc (irq_boot)
    assert m.alloc() == (0x23, 1)       # CPU 1 has fewer
    assert m.alloc() == (0x24, 0)       # CPU 0's 0x23 was taken


def test_a_full_matrix_refuses_until_a_vector_is_freed():
    m = VectorMatrix(2)
    got = [m.alloc() for _ in range(2 * PER_CPU)]
    assert len(set(got)) == 2 * PER_CPU
    for _ in range(3):
        with pytest.raises(MemoryError):
            m.alloc()
    assert m.surely_full()
    m.free(0x40, 1)
    assert not m.surely_full()
    assert m.alloc() == (0x40, 1)
    with pytest.raises(MemoryError):
        m.alloc()
