"""Network interfaces that net drivers register for their devices."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(eq=False, slots=True)
class NetDev:
    name: str
    dev: object              # the PciFunction
    ifindex: int
    mac: str
    subdir: str | None = None  # e.g. "virtio0": the netdev hangs below a virtio device
