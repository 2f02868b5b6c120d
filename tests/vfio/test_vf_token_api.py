"""The VF token through the Python API (vfakefs.vfio): the PF's user sets it with
VFIO_DEVICE_FEATURE, the VF's user gives it at GROUP_GET_DEVICE_FD (no mount)."""
import errno
import struct
import uuid

import pytest

from vfakefs import vfio
from vfakefs.model.pci import sriov

PF = "0000:03:00.0"
TOKEN = uuid.UUID("bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3")


@pytest.fixture
def m():
    m = vfio.boot("seed-vtd")
    m.vfio_enable_sriov = True                       # modprobe vfio-pci enable_sriov=1
    assert vfio.bind_vfio_pci(m, PF) == "vfio-pci"
    sriov.configure(m, m.lookup(PF), 1)              # echo 1 > sriov_numvfs (vfio-pci captures the VF)
    return m


def test_the_pf_user_sets_the_token_the_vf_user_gives(m):
    vf = m.lookup(PF).sriov.vfs[0].name
    with vfio.Container(m) as c, vfio.Group(m, m.lookup(PF).group.id) as gpf, \
            vfio.Group(m, m.lookup(vf).group.id) as gvf:
        gpf.set_container(c)
        c.set_iommu(vfio.VFIO_TYPE1v2_IOMMU)
        gvf.set_container(c)
        pf = gpf.get_device_fd(PF)
        probe = vfio.VFIO_DEVICE_FEATURE_PROBE | vfio.VFIO_DEVICE_FEATURE_SET
        pf.feature(probe | vfio.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN)
        with pytest.raises(OSError) as e:
            pf.feature(vfio.VFIO_DEVICE_FEATURE_GET | vfio.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN, bytes(16))
        assert e.value.errno == errno.EINVAL
        pf.set_vf_token(TOKEN)
        with pytest.raises(OSError) as e:
            gvf.get_device_fd(vf)
        assert e.value.errno == errno.EACCES
        dev = gvf.get_device_fd(f"{vf} vf_token={TOKEN}")
        with pytest.raises(OSError) as e:               # the PF again: its VF is in use now
            gpf.get_device_fd(PF)
        assert e.value.errno == errno.EACCES
        gpf.get_device_fd(f"{PF} vf_token={TOKEN}").close()
        with pytest.raises(OSError) as e:               # the VF has no token of its own
            dev.set_vf_token(TOKEN)
        assert e.value.errno == errno.ENOTTY
        dev.close()
        pf.close()


def test_low_power_with_a_wakeup_eventfd(m):
    with vfio.Container(m) as c, vfio.Group(m, m.lookup(PF).group.id) as g:
        g.set_container(c)
        c.set_iommu(vfio.VFIO_TYPE1v2_IOMMU)
        pf = g.get_device_fd(PF)
        with vfio.EventFd() as efd:
            entry = vfio.VFIO_DEVICE_FEATURE_SET | vfio.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP
            with pytest.raises(OSError) as e:
                pf.feature(entry, struct.pack("<iI", 1 << 20, 0))       # no such fd
            assert e.value.errno == errno.EBADF
            pf.feature(entry, struct.pack("<iI", efd.fileno(), 0))
            assert not efd.readable()
            pf.feature(vfio.VFIO_DEVICE_FEATURE_SET | vfio.VFIO_DEVICE_FEATURE_LOW_POWER_EXIT)
            assert efd.readable() and efd.read() == 1      # the ioctl woke it: signalled
        pf.close()
