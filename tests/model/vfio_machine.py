"""The machine the VFIO model tests start from: seed-vtd with IOMMU group 42 (the
essay's GPU and its audio function) handed to vfio-pci as a user does it (unbind,
driver_override, bind)."""
from __future__ import annotations

from vfakefs.model import topology
from vfakefs.model.base import binding
from vfakefs.model.vfio import type1
from vfakefs.model.vfio.container import VfioContainer
from vfakefs.model.vfio.group import VfioGroup

GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"
CONFIG = 7 << 40                 # the config region's offset in a device fd


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


def claim_group42(m, memory):
    """The essay's sequence up to SET_IOMMU (TYPE1v2) with `memory` as the program's, and
    the GPU's device fd with bus mastering set through its config region, as a driver in
    the program would: (container, group, device fd)."""
    c = VfioContainer(m, memory=memory)
    g = VfioGroup.open(m, 42)
    g.set_container(c)
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    vd = g.get_device_fd(GPU)
    cmd = int.from_bytes(vd.read(CONFIG | 4, 2), "little")
    vd.write(CONFIG | 4, (cmd | 0x4).to_bytes(2, "little"))
    return c, g, vd
