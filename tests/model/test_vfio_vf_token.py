"""vfio-pci's VF token and VFIO_DEVICE_FEATURE (drivers/vfio/pci/vfio_pci_core.c,
drivers/vfio/vfio_main.c) on seed-vtd's SR-IOV NIC 03:00.0, its PF on vfio-pci (no mount)."""
import errno
import random
import uuid

import pytest

from vfakefs.model import topology
from vfakefs.model.base import binding
from vfakefs.model.errors import SysfsError
from vfakefs.model.pci import sriov
from vfakefs.model.vfio import type1
from vfakefs.model.vfio.container import VfioContainer
from vfakefs.model.vfio.feature import (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
                                        VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, VFIO_DEVICE_FEATURE_GET,
                                        VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY,
                                        VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP,
                                        VFIO_DEVICE_FEATURE_LOW_POWER_EXIT, VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
                                        VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, VFIO_DEVICE_FEATURE_MIGRATION,
                                        VFIO_DEVICE_FEATURE_PCI_VF_TOKEN, VFIO_DEVICE_FEATURE_PROBE,
                                        VFIO_DEVICE_FEATURE_SET)
from vfakefs.model.vfio.group import VfioGroup
from tests.model.vfio_machine import to_vfio

PF, GPU = "0000:03:00.0", "0000:01:00.0"
GET, SET, PROBE = VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_SET, VFIO_DEVICE_FEATURE_PROBE
TOKEN = VFIO_DEVICE_FEATURE_PCI_VF_TOKEN
T1 = uuid.UUID("bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3")
T2 = uuid.UUID("11111111-2222-3333-4444-555555555555")


def errno_of(fn, *args, **kw):
    with pytest.raises(SysfsError) as e:
        fn(*args, **kw)
    return e.value.errno


def last_log(m) -> str:
    return m.kmsg.records[-1].text


@pytest.fixture
def m():
    """The PF on vfio-pci (enable_sriov=1), two VFs (vfio-pci captures them), the PF's and
    the first VF's groups in one type1v2 container."""
    m = topology.load("seed-vtd")
    m.rng.seed(9)
    m.vfio_enable_sriov = True
    to_vfio(m, PF)
    sriov.configure(m, m.lookup(PF), 2)
    m.check()
    return m


def vfs(m):
    return m.lookup(PF).sriov.vfs


def container_with(m, *devs):
    c = VfioContainer(m)
    groups = []
    for dev in devs:
        g = VfioGroup.open(m, dev.group.id)
        g.set_container(c)
        groups.append(g)
        if c.iommu is None:
            c.set_iommu(type1.VFIO_TYPE1v2_IOMMU)
    return groups


def set_token(fd, token: uuid.UUID):
    fd.feature(SET | TOKEN, data=token.bytes)


# --- the token's life: vfio_pci_vf_init / vfio_pci_vf_uninit --------------------------------------------
def test_a_pf_gets_a_random_token_at_bind_and_loses_it_at_unbind():
    m = topology.load("seed-vtd")
    pf = m.lookup(PF)
    assert pf.vf_token is None                           # ixgbe drives it: no token
    m.rng.seed(5)
    to_vfio(m, PF)
    want = uuid.UUID(int=random.Random(5).getrandbits(128), version=4)     # uuid_gen from m.rng
    assert pf.vf_token.uuid == want and pf.vf_token.uuid.version == 4 and pf.vf_token.users == 0
    to_vfio(m, GPU)
    assert m.lookup(GPU).vf_token is None                # no SR-IOV capability: not a PF
    binding.unbind(m, pf.driver, PF)
    assert pf.vf_token is None
    m.rng.seed(6)
    to_vfio(m, PF)                                       # each bind draws a new one
    assert pf.vf_token.uuid == uuid.UUID(int=random.Random(6).getrandbits(128), version=4) != want
    m.check()


def test_vfio_pci_letting_the_pf_go_disables_sr_iov(m):
    """vfio_pci_core_unregister_device() calls sriov_configure(0): the VFs go, no warning."""
    pf = m.lookup(PF)
    names = [vf.name for vf in vfs(m)]
    binding.unbind(m, pf.driver, PF)
    assert pf.sriov.num_vfs == 0 and not any(m.lookup(n) for n in names)
    assert pf.vf_token is None
    assert not any("left SR-IOV enabled" in r.text for r in m.kmsg.records)
    m.check()


def test_vfs_have_no_token_of_their_own(m):
    assert all(vf.vf_token is None for vf in vfs(m))


# --- a VF's open ---------------------------------------------------------------------------------------
def test_a_vf_needs_the_token_its_pf_user_set(m):
    vf = vfs(m)[0]
    gpf, gvf = container_with(m, m.lookup(PF), vf)
    pfd = gpf.get_device_fd(PF)
    set_token(pfd, T1)
    assert m.lookup(PF).vf_token.uuid == T1
    assert errno_of(gvf.get_device_fd, vf.name) == errno.EACCES
    assert last_log(m) == f"vfio-pci {vf.name}: VF token required to access device"
    assert errno_of(gvf.get_device_fd, f"{vf.name} vf_token={T2}") == errno.EACCES
    assert last_log(m) == f"vfio-pci {vf.name}: Incorrect VF token provided for device"
    assert gvf.devices == [] and m.lookup(PF).vf_token.users == 0          # nothing opened
    fd = gvf.get_device_fd(f"{vf.name} vf_token={str(T1).upper()}")       # uuid_parse: either case
    assert fd.dev is vf and m.lookup(PF).vf_token.users == 1
    m.check()


def test_the_random_token_nobody_set_is_not_the_null_uuid(m):
    vf = vfs(m)[0]
    (gvf,) = container_with(m, vf)
    null = uuid.UUID(int=0)
    assert errno_of(gvf.get_device_fd, f"{vf.name} vf_token={null}") == errno.EACCES
    assert gvf.get_device_fd(f"{vf.name} vf_token={m.lookup(PF).vf_token.uuid}").dev is vf


def test_users_count_vf_device_opens_not_fds(m):
    """finish_enable at the first open, close_device at the last: open_count, not fds."""
    a, b = vfs(m)
    tok = m.lookup(PF).vf_token
    ga, gb = container_with(m, a, b)
    fa = ga.get_device_fd(f"{a.name} vf_token={tok.uuid}")
    again = ga.get_device_fd(f"{a.name} vf_token={tok.uuid}")
    assert again is fa and tok.users == 1
    fb = gb.get_device_fd(f"{b.name} vf_token={tok.uuid}")
    assert tok.users == 2
    fa.close()
    assert tok.users == 2                                # a's second open still holds it
    fa.close()
    fb.close()
    assert tok.users == 0
    m.check()


# --- the PF's open (vfio_pci_validate_vf_token, PF side) ---------------------------------------------------------
def test_the_pf_needs_the_token_while_its_vfs_are_open(m):
    pf, vf = m.lookup(PF), vfs(m)[0]
    gpf, gvf = container_with(m, pf, vf)
    pf.vf_token.uuid = T1                                # (as a previous user set it)
    vfd = gvf.get_device_fd(f"{vf.name} vf_token={T1}")
    assert errno_of(gpf.get_device_fd, PF) == errno.EACCES
    assert last_log(m) == f"vfio-pci {PF}: VF token required to access device"
    assert errno_of(gpf.get_device_fd, f"{PF} vf_token={T2}") == errno.EACCES
    assert last_log(m) == f"vfio-pci {PF}: Incorrect VF token provided for device"
    assert gpf.devices == [] and pf.vf_token.uuid == T1 and pf.vf_token.users == 1   # unchanged
    assert gpf.get_device_fd(f"{PF} vf_token={T1}").dev is pf
    assert pf.vf_token.uuid == T1
    vfd.close()
    m.check()


def test_with_no_vf_open_a_token_at_the_pf_open_sets_it(m):
    pf, vf = m.lookup(PF), vfs(m)[0]
    gpf, gvf = container_with(m, pf, vf)
    before = pf.vf_token.uuid
    pfd = gpf.get_device_fd(PF)                          # no VF in use: no token needed
    assert pf.vf_token.uuid == before                    # and none given: unchanged
    gpf.get_device_fd(f"{PF} vf_token={T2}")
    assert pf.vf_token.uuid == T2
    assert errno_of(gvf.get_device_fd, f"{vf.name} vf_token={before}") == errno.EACCES
    assert gvf.get_device_fd(f"{vf.name} vf_token={T2}").dev is vf
    pfd.close()
    m.check()


def test_a_pf_token_given_before_the_container_sets_it_then_einval(m):
    """vfio_device_get_from_name() matches (and sets) before the container check."""
    pf = m.lookup(PF)
    g = VfioGroup.open(m, pf.group.id)
    assert errno_of(g.get_device_fd, f"{PF} vf_token={T2}") == errno.EINVAL
    assert pf.vf_token.uuid == T2 and g.devices == []


def test_token_options_parse_as_the_kernel(m):
    pf = m.lookup(PF)
    (g,) = container_with(m, pf)
    before = pf.vf_token.uuid
    for bad in (f"{PF} vf_token=", f"{PF} vf_token={str(T1)[:-1]}", f"{PF} vf_token={str(T1)[:-1]}g",
                f"{PF} vf_token={T1} vf_token={T1}", f"{PF} vf_token={T1}x", f"{PF} token={T1}"):
        assert errno_of(g.get_device_fd, bad) == errno.EINVAL, bad
    assert errno_of(g.get_device_fd, f"{PF}\tvf_token={T1}") == errno.ENODEV     # not a space: no match
    assert pf.vf_token.uuid == before and g.devices == []
    assert g.get_device_fd(f"{PF}   vf_token={T1}  ").dev is pf
    assert pf.vf_token.uuid == T1


def test_a_token_for_a_device_that_is_neither_pf_nor_vf_is_einval(m):
    to_vfio(m, GPU)
    to_vfio(m, "0000:01:00.1")
    (g,) = container_with(m, m.lookup(GPU))
    assert errno_of(g.get_device_fd, f"{GPU} vf_token={T1}") == errno.EINVAL
    assert last_log(m) == f"vfio-pci {GPU}: VF token incorrectly provided, not a PF or VF"


# --- VFIO_DEVICE_FEATURE ----------------------------------------------------------------------------------
@pytest.fixture
def pfd(m):
    (g,) = container_with(m, m.lookup(PF))
    return g.get_device_fd(PF)


@pytest.mark.parametrize("flags, argsz, err", [
    (SET | TOKEN, 7, errno.EINVAL),                                    # argsz < 8
    (VFIO_DEVICE_FEATURE_MIGRATION | GET, 4, errno.EINVAL),            # ... before the feature
    (SET | TOKEN | 1 << 19, 24, errno.EINVAL),                         # unknown flag bit
    (GET | SET | TOKEN, 24, errno.EINVAL),                             # GET & SET without PROBE
    (GET | SET | 0x1234, 24, errno.EINVAL),                            # ... before the feature
    (GET | VFIO_DEVICE_FEATURE_MIGRATION, 16, errno.ENOTTY),           # no mig_ops
    (SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, 16, errno.ENOTTY),
    (PROBE | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, 8, errno.ENOTTY),
    (SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START, 32, errno.ENOTTY),   # no log_ops
    (PROBE | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, 8, errno.ENOTTY),
    (GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, 40, errno.ENOTTY),
    (PROBE | 10, 8, errno.ENOTTY),                                     # nobody's feature
    (SET | 0xFFFF, 24, errno.ENOTTY),
    (GET | TOKEN, 24, errno.EINVAL),                                   # no GET: the last user's secret
    (PROBE | GET | TOKEN, 8, errno.EINVAL),
    (PROBE | GET | SET | TOKEN, 8, errno.EINVAL),
    (TOKEN, 24, errno.EINVAL),                                         # neither GET, SET nor PROBE
    (SET | TOKEN, 8 + 15, errno.EINVAL),                               # a UUID is 16 bytes
])
def test_feature_errors_change_nothing(m, pfd, flags, argsz, err):
    before = m.lookup(PF).vf_token.uuid
    assert errno_of(pfd.feature, flags, argsz, T1.bytes) == err
    assert m.lookup(PF).vf_token.uuid == before


def test_feature_probe_answers_without_doing(m, pfd):
    before = m.lookup(PF).vf_token.uuid
    pfd.feature(PROBE | TOKEN, 8)
    pfd.feature(PROBE | SET | TOKEN, 8)
    pfd.feature(PROBE | SET | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY, 8)
    assert m.lookup(PF).vf_token.uuid == before and not pfd.pm_runtime_engaged


def test_feature_set_token_reads_only_its_16_bytes(m, pfd):
    pfd.feature(SET | TOKEN, 8 + 32, T2.bytes + b"\xff" * 16)
    assert m.lookup(PF).vf_token.uuid == T2
    read = []
    pfd.feature(PROBE | TOKEN, 8 + 16, lambda n: read.append(n) or b"")     # PROBE reads no data[]
    assert read == []
    assert errno_of(pfd.feature, SET | TOKEN, 24, lambda n: b"") == errno.EFAULT  # copy_from_user
    assert m.lookup(PF).vf_token.uuid == T2


def test_feature_set_token_works_while_vfs_are_open(m, pfd):
    """vfio_pci_core_feature_token() checks no users: the PF's user may change it any time."""
    vf = vfs(m)[0]
    (gvf,) = container_with(m, vf)
    gvf.get_device_fd(f"{vf.name} vf_token={m.lookup(PF).vf_token.uuid}")
    set_token(pfd, T2)
    assert m.lookup(PF).vf_token.uuid == T2 and m.lookup(PF).vf_token.users == 1


def test_token_feature_is_enotty_without_a_token(m):
    """VFs and functions without SR-IOV have no vf_token: ENOTTY before the flags' checks."""
    vf = vfs(m)[0]
    (gvf,) = container_with(m, vf)
    vfd = gvf.get_device_fd(f"{vf.name} vf_token={m.lookup(PF).vf_token.uuid}")
    for flags in (SET | TOKEN, GET | TOKEN, PROBE | TOKEN):
        assert errno_of(vfd.feature, flags, 24, T1.bytes) == errno.ENOTTY


# --- low power: vfio_pci_core_pm_entry / _with_wakeup / _exit -------------------------------------------------
class Efd:
    def __init__(self):
        self.count = 0

    def signal(self):
        self.count += 1


class NotAnEventfd:
    pass


def test_low_power_entry_and_exit(pfd):
    entry, exit_ = VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY, VFIO_DEVICE_FEATURE_LOW_POWER_EXIT
    assert errno_of(pfd.feature, GET | entry, 8) == errno.EINVAL       # SET only
    assert errno_of(pfd.feature, GET | exit_, 8) == errno.EINVAL
    pfd.feature(SET | entry, 8)
    assert pfd.pm_runtime_engaged
    assert errno_of(pfd.feature, SET | entry, 8) == errno.EINVAL       # already engaged
    assert pfd.pm_runtime_engaged                                      # (no wake-up: stays engaged)
    pfd.feature(SET | exit_, 8)
    assert not pfd.pm_runtime_engaged
    pfd.feature(SET | exit_, 8)                                        # exit when not engaged: 0


def test_low_power_with_wakeup_checks_then_signals_on_resume(pfd):
    wake = VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP
    ok = Efd()
    fds = {3: ok, 4: NotAnEventfd()}
    call = lambda fd, argsz=16: pfd.feature(SET | wake, argsz, fd.to_bytes(4, "little", signed=True) + bytes(4),
                                            fdget=lambda n: fds.get(n, n))
    assert errno_of(call, 3, 15) == errno.EINVAL                       # the struct is 8 bytes
    assert errno_of(call, -1) == errno.EINVAL                          # wakeup_eventfd < 0
    assert errno_of(call, 9) == errno.EBADF                            # not open
    assert errno_of(call, 4) == errno.EINVAL                           # not an eventfd
    assert not pfd.pm_runtime_engaged and pfd.pm_wake_eventfd is None
    call(3)
    assert pfd.pm_runtime_engaged and pfd.pm_wake_eventfd is ok and ok.count == 0
    # the next ioctl wakes the device (vfio_device_pm_runtime_get): signalled, low power left
    pfd.feature(PROBE | TOKEN, 8)
    assert ok.count == 1 and not pfd.pm_runtime_engaged and pfd.pm_wake_eventfd is None


def test_closing_the_device_leaves_low_power_without_a_signal(m, pfd):
    ok = Efd()
    pfd.feature(SET | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP, 16, (3).to_bytes(8, "little"),
                fdget=lambda n: ok)
    pfd.close()
    assert not pfd.pm_runtime_engaged and ok.count == 0                # vfio_pci_core_disable
