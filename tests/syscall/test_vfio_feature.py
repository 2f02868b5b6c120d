"""VFIO_DEVICE_FEATURE as the seccomp adapter reads it: struct vfio_device_feature from
the calling process's memory (here this process's own, through process_vm_readv)."""
import ctypes
import errno
import os
import uuid

import pytest

from vfakefs.model import topology
from vfakefs.model.base import binding
from vfakefs.model.errors import SysfsError
from vfakefs.model.pci import sriov
from vfakefs.model.vfio import type1
from vfakefs.model.vfio.container import VfioContainer
from vfakefs.model.vfio.feature import VFIO_DEVICE_FEATURE_PCI_VF_TOKEN, VFIO_DEVICE_FEATURE_SET
from vfakefs.model.vfio.group import VfioGroup
from vfakefs.syscall.files import Files
from vfakefs.syscall.vfio import DEVICE_FEATURE, Call, Vfio

PF = "0000:03:00.0"


class Host:
    def __init__(self, m):
        self.machine = m


def feature(argsz: int, flags: int, data: bytes):
    return ctypes.create_string_buffer(argsz.to_bytes(4, "little") + flags.to_bytes(4, "little") + data)


def test_device_feature_ioctl_reads_argsz_flags_and_the_uuid():
    assert DEVICE_FEATURE == 0x3B75                 # _IO(';', 100 + 17)
    m = topology.load("seed-vtd")
    m.vfio_enable_sriov = True
    pf = m.lookup(PF)
    binding.unbind(m, pf.driver, PF)
    pf.driver_override = "vfio-pci"
    binding.bind(m, m.drivers["vfio-pci"], PF)
    sriov.configure(m, pf, 1)
    c, g = VfioContainer(m), VfioGroup.open(m, pf.group.id)
    g.set_container(c)
    c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    dev = g.get_device_fd(PF)
    adapter, call = Vfio(Host(m), Files()), Call(os.getpid(), None)
    tok = uuid.UUID("bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3")
    set_token = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN
    buf = feature(24, set_token, tok.bytes)
    assert adapter._device_ioctl(call, dev, DEVICE_FEATURE, ctypes.addressof(buf)) == 0
    assert pf.vf_token.uuid == tok
    bad = feature(23, set_token, bytes(16))
    with pytest.raises(SysfsError) as e:
        adapter._device_ioctl(call, dev, DEVICE_FEATURE, ctypes.addressof(bad))
    assert e.value.errno == errno.EINVAL and pf.vf_token.uuid == tok
    dev.close()
