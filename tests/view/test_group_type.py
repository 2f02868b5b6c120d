"""/sys/kernel/iommu_groups/<N>/type writes: 6.1 (qemu-ref) answers EINVAL for
groups of several devices and EBUSY while bound; 6.12 (seed-vtd) answers EPERM
while a DMA-API driver owns the group (KERNEL-FACTS §4)."""
from __future__ import annotations

import errno

import pytest

from tests.view.test_binding import dev, drv, expect_error, gtype, log_lines, ok, show
from vfakefs.model import topology
from vfakefs.sysfs.tree import View



def gid(view, bdf):
    return view.m.lookup(bdf).group.id


# --- both kernels -------------------------------------------------------------------------------
@pytest.mark.parametrize("preset, bdf", [("seed-vtd", "0000:00:1f.4"), ("qemu-ref", "0000:00:00.0")])
@pytest.mark.parametrize("text", ["dma\n", "dma-fq", "blocked\n", "unmanaged\n", "\n", "", "Identity\n",
                                  "identity\n\n", " identity", "DMA "])
def test_bad_type_names_are_einval(preset, bdf, text):
    v = View(topology.load(preset))
    assert v.m.lookup(bdf).driver is None
    expect_error(v, gtype(gid(v, bdf)), text, errno.EINVAL)


@pytest.mark.parametrize("preset, bdf", [("seed-vtd", "0000:02:00.0"), ("qemu-ref", "0000:02:00.0")])
def test_dma_to_dma_fq_happens_in_place_even_while_bound(preset, bdf):
    v = View(topology.load(preset))
    g = gid(v, bdf)
    if show(v, gtype(g)) != "DMA\n":              # seed-vtd boots lazy: make it strict first
        d = v.m.lookup(bdf).driver.name
        ok(v, f"{drv(d)}/unbind", bdf)
        ok(v, gtype(g), "DMA\n")
        ok(v, "sys/bus/pci/drivers_probe", bdf)
    assert v.m.lookup(bdf).driver is not None and not v.m.lookup(bdf).driver.driver_managed_dma
    ok(v, gtype(g), "DMA-FQ\n")
    assert show(v, gtype(g)) == "DMA-FQ\n"


# --- 6.1 --------------------------------------------------------------------------------------
def test_6_1_group_of_several_devices_is_einval(qemu):
    g = gid(qemu, "0000:00:1f.0")
    assert len(qemu.m.groups.by_id[g].devices) == 3
    expect_error(qemu, gtype(g), "identity\n", errno.EINVAL)
    assert log_lines(qemu.m)[-1] == "iommu: Cannot change default domain: Group has more than one device"


def test_6_1_group_of_several_devices_is_einval_even_unbound(qemu):
    g = gid(qemu, "0000:04:00.0")                          # switch port + virtio behind it, no ACS
    ok(qemu, f"{drv('virtio-pci')}/unbind", "0000:05:00.0")
    ok(qemu, f"{drv('pcieport')}/unbind", "0000:04:00.0")
    expect_error(qemu, gtype(g), "identity\n", errno.EINVAL)


def test_6_1_bound_device_is_ebusy(qemu):
    g = gid(qemu, "0000:02:00.0")
    expect_error(qemu, gtype(g), "identity\n", errno.EBUSY)
    assert log_lines(qemu.m)[-1] == "iommu: Device is still bound to driver"


def test_6_1_bound_to_a_dma_managing_driver_is_still_ebusy(qemu):
    g = gid(qemu, "0000:00:02.0")                          # root port, pcieport
    expect_error(qemu, gtype(g), "identity\n", errno.EBUSY)


def test_6_1_unbound_single_device_group_changes(qemu):
    g = gid(qemu, "0000:02:00.0")
    ok(qemu, f"{drv('e1000e')}/unbind", "0000:02:00.0")
    ok(qemu, gtype(g), "identity\n")
    assert show(qemu, gtype(g)) == "identity\n"
    ok(qemu, gtype(g), "auto\n")
    assert show(qemu, gtype(g)) == "DMA\n"                 # caching mode: strict


# --- 6.12 -------------------------------------------------------------------------------------
def test_6_12_dma_api_driver_bound_is_eperm(seed):
    expect_error(seed, gtype(gid(seed, "0000:02:00.0")), "identity\n", errno.EPERM)


def test_6_12_one_dma_api_member_makes_the_whole_group_eperm(seed):
    g = gid(seed, "0000:06:00.0")                          # root port, switch and two NVMe, no ACS
    assert len(seed.m.groups.by_id[g].devices) == 6
    ok(seed, f"{drv('nvme')}/unbind", "0000:06:00.0")
    expect_error(seed, gtype(g), "identity\n", errno.EPERM)
    ok(seed, f"{drv('nvme')}/unbind", "0000:07:00.0")
    ok(seed, gtype(g), "identity\n")                       # only pcieport left: allowed, 6.12 has no size rule
    assert show(seed, gtype(g)) == "identity\n"


def test_6_12_pcieport_bound_is_allowed(seed):
    g = gid(seed, "0000:00:1c.0")
    ok(seed, gtype(g), "identity")
    assert show(seed, gtype(g)) == "identity\n"


def test_6_12_vfio_pci_bound_is_allowed(seed):
    bdf = "0000:02:00.0"
    ok(seed, f"{drv('igb')}/unbind", bdf)
    ok(seed, f"{dev(bdf)}/driver_override", "vfio-pci\n")
    ok(seed, "sys/bus/pci/drivers_probe", bdf)
    ok(seed, gtype(gid(seed, bdf)), "identity\n")
    assert show(seed, gtype(gid(seed, bdf))) == "identity\n"


def test_6_12_unbound_group_changes_and_auto_restores_the_default(seed):
    g = gid(seed, "0000:00:1f.4")
    for text, want in [("identity\n", "identity"), ("DMA\n", "DMA"), ("DMA-FQ\n", "DMA-FQ"),
                       ("identity", "identity"), ("auto\n", "DMA-FQ")]:
        ok(seed, gtype(g), text)
        assert show(seed, gtype(g)) == want + "\n"


def test_6_12_dma_fq_to_dma_while_bound_is_eperm(seed):
    expect_error(seed, gtype(gid(seed, "0000:02:00.0")), "DMA\n", errno.EPERM)


def test_6_12_same_type_while_bound_is_still_eperm(seed):
    expect_error(seed, gtype(gid(seed, "0000:02:00.0")), "DMA-FQ\n", errno.EPERM)


def test_6_12_identity_to_dma_fq_while_bound_is_eperm(seed):
    bdf = "0000:02:00.0"
    ok(seed, f"{drv('igb')}/unbind", bdf)
    ok(seed, gtype(gid(seed, bdf)), "identity\n")
    ok(seed, "sys/bus/pci/drivers_probe", bdf)
    expect_error(seed, gtype(gid(seed, bdf)), "DMA-FQ\n", errno.EPERM)


def test_type_survives_unbind_and_rebind(seed):
    bdf = "0000:02:00.0"
    ok(seed, f"{drv('igb')}/unbind", bdf)
    ok(seed, gtype(gid(seed, bdf)), "identity\n")
    ok(seed, f"{drv('igb')}/bind", bdf)
    assert show(seed, gtype(gid(seed, bdf))) == "identity\n"
