"""VFIO_DEVICE_FEATURE as the seccomp adapter reads it: struct vfio_device_feature from
the calling process's memory (here this process's own, through process_vm_readv)."""
import ctypes
import errno
import os
import uuid

import pytest

from vfakefs import vfio
from vfakefs.model.errors import SysfsError
from vfakefs.model.pci import sriov
from vfakefs.syscall.files import Files
from vfakefs.syscall.vfio import DEVICE_FEATURE, Call, Vfio

PF = "0000:03:00.0"


class Host:
    def __init__(self, m):
        self.machine = m


def test_device_feature_ioctl_reads_argsz_flags_and_the_uuid():
    assert DEVICE_FEATURE == 0x3B75                 # _IO(';', 100 + 17)
    m = vfio.boot("seed-vtd")
    m.vfio_enable_sriov = True
    vfio.bind_vfio_pci(m, PF)
    sriov.configure(m, m.lookup(PF), 1)
    with vfio.Container(m) as c, vfio.Group(m, m.lookup(PF).group.id) as g:
        g.set_container(c)
        c.set_iommu(vfio.VFIO_TYPE1v2_IOMMU)
        dev = g.get_device_fd(PF)
        adapter = Vfio(Host(m), Files())
        call = Call(os.getpid(), None)
        tok = uuid.UUID("bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3")
        buf = ctypes.create_string_buffer((24).to_bytes(4, "little")
                                          + (vfio.VFIO_DEVICE_FEATURE_SET | 0).to_bytes(4, "little") + tok.bytes)
        assert adapter._device_ioctl(call, dev.model, DEVICE_FEATURE, ctypes.addressof(buf)) == 0
        assert m.lookup(PF).vf_token.uuid == tok
        bad = ctypes.create_string_buffer((23).to_bytes(4, "little")
                                          + (vfio.VFIO_DEVICE_FEATURE_SET | 0).to_bytes(4, "little") + bytes(16))
        with pytest.raises(SysfsError) as e:
            adapter._device_ioctl(call, dev.model, DEVICE_FEATURE, ctypes.addressof(bad))
        assert e.value.errno == errno.EINVAL and m.lookup(PF).vf_token.uuid == tok
        dev.close()
