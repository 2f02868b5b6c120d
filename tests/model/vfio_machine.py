"""The machine the VFIO model tests start from: seed-vtd with IOMMU group 42 (the
essay's GPU and its audio function) handed to vfio-pci as a user does it (unbind,
driver_override, bind)."""
from __future__ import annotations

from vfakefs.model import topology
from vfakefs.model.base import binding

GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"


def to_vfio(m, name: str) -> None:
    dev = m.lookup(name)
    if dev.driver is not None:
        binding.unbind(m, dev.driver, name)
    dev.driver_override = "vfio-pci"
    binding.bind(m, m.drivers["vfio-pci"], name)


def group42_machine():
    m = topology.load("seed-vtd")
    to_vfio(m, GPU)
    to_vfio(m, AUDIO)
    return m
