"""The ConnectX-5's ATS under a VFIO container (seed-vtd, no mount): an unmanaged domain
translates, so ATS stays on; the container's unmap reaches the device's ATC."""
import mmap

from vfakefs import vfio
from vfakefs.model.iommu import ats

CX5 = "0000:0c:00.0"


def tt(u, dev) -> int:
    return (u.context(dev.bdf.rid)[0] >> 2) & 3


def ats_ctl(dev) -> int:
    return dev.config.r16(ats.ats_cap(dev) + ats.ATS_CTRL)


def test_a_vfio_container_domain_keeps_ats_and_its_unmap_reaches_the_atc():
    m = vfio.boot("seed-vtd")
    cx5 = m.lookup(CX5)
    assert vfio.bind_vfio_pci(m, CX5) == "vfio-pci"
    u = m.iommu_unit()
    guest = mmap.mmap(-1, 0x4000)
    with vfio.Container(m) as container, vfio.Group(m, cx5.group.id) as group:
        group.set_container(container)
        container.set_iommu(vfio.VFIO_TYPE1_IOMMU)
        with group.get_device_fd(CX5) as device:
            cmd = int.from_bytes(device.read_config(0x04, 2), "little")
            device.write_config(0x04, (cmd | 0x4).to_bytes(2, "little"))
            container.map_dma(guest, 0x10000, flags=vfio.VFIO_DMA_MAP_FLAG_READ | vfio.VFIO_DMA_MAP_FLAG_WRITE)
            assert tt(u, cx5) == 1 and ats_ctl(cx5) == ats.ATS_CTRL_ENABLE   # an unmanaged domain translates
            assert vfio.dma_write(m, CX5, 0x10000, b"atc!") == 4
            assert vfio.dma_write(m, CX5, 0x10000, b"ATC!") == 4
            assert guest[:4] == b"ATC!" and cx5.atc.hits >= 1 and cx5.atc.entries() == 1
            start = u.iq_tail
            container.unmap_dma(0x10000, 0x4000)
            kinds = [u.iq[i][0] & 0xF for i in range(start, u.iq_tail)]
            assert kinds[:3] == [0x2, 0x3, 0x5] and cx5.atc.entries() == 0      # one submission (6.12 qi_batch)
