"""Simulated time for model tests: what the engine's step does with the machine's
delayed work (the flush queue's 10 ms timer among it), without importing the engine
(tests/model keeps to the model layer)."""
from __future__ import annotations


def fq_timer(m, dt: float = 0.011) -> None:
    """Simulated time moves on by dt and the delayed work due runs."""
    m.clock += dt
    due = [w for w in m.delayed if w[0] <= m.clock]
    m.delayed = [w for w in m.delayed if w[0] > m.clock]
    for _, work in due:
        work()
