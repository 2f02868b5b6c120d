"""The VF token of vfio-pci (drivers/vfio/pci/vfio_pci_core.c): a UUID shared by an SR-IOV
PF bound to vfio-pci and its VFs' users, the proof that whoever drives a VF trusts whoever
drives the PF and the other way round.

- Binding vfio-pci to a PF (a function with the SR-IOV capability: is_physfn) gives it a
  token, random (vfio_pci_vf_init: uuid_gen); unbinding takes it away (vfio_pci_vf_uninit).
- A VF finds its PF's vfio-pci device (sriov_pf_core_dev) only while the PF is on vfio-pci:
  vfio-pci refuses a PF whose VFs exist and disables SR-IOV when it lets the PF go, so a VF
  of a vfio-pci PF was made by vfio-pci's sriov_configure.
- users counts the VFs open through vfio-pci: the first open of a VF device adds one
  (vfio_pci_core_finish_enable), its last close takes it off (vfio_pci_core_close_device).
- VFIO_DEVICE_FEATURE_PCI_VF_TOKEN on the PF sets it (no GET: it would give away the
  previous user's token); so does ` vf_token=<uuid>` at the PF's open while no VF is in use.
"""
from __future__ import annotations

import errno
import uuid

from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_INFO


class VfToken:
    """struct vfio_pci_vf_token."""
    __slots__ = ("uuid", "users")

    def __init__(self, value: uuid.UUID):
        self.uuid, self.users = value, 0

    def __repr__(self) -> str:
        return f"VfToken({self.uuid}, users={self.users})"


def uuid_gen(m) -> uuid.UUID:
    """uuid_gen(): a random version-4 UUID, from the Machine's generator (m.rng: seed it
    for a test that wants the same token every run)."""
    return uuid.UUID(int=m.rng.getrandbits(128), version=4)


def vf_init(m, dev) -> None:
    """vfio_pci_vf_init() for a PF: the token, at bind."""
    if dev.sriov is not None and not dev.is_virtfn:
        dev.vf_token = VfToken(uuid_gen(m))


def vf_uninit(dev) -> None:
    """vfio_pci_vf_uninit(): the token goes with the driver."""
    dev.vf_token = None


def sriov_pf_core_dev(dev):
    """A VF's PF when the PF is a vfio-pci device (it then holds the token), else None."""
    if not dev.is_virtfn:
        return None
    pf = dev.physfn
    return pf if pf is not None and pf.vf_token is not None else None


def validate(m, dev, token: uuid.UUID | None) -> None:
    """vfio_pci_validate_vf_token(), called by the name match of GROUP_GET_DEVICE_FD. The
    messages are pci_info_ratelimited()'s: `vfio-pci <bdf>: ...`."""
    if dev.is_virtfn:
        pf = sriov_pf_core_dev(dev)
        if pf is None:
            if token is not None:
                _info(m, dev, "VF token incorrectly provided, PF not bound to vfio-pci")
                raise SysfsError(errno.EINVAL)
            return
        if token is None:
            _info(m, dev, "VF token required to access device")
            raise SysfsError(errno.EACCES)
        if token != pf.vf_token.uuid:
            _info(m, dev, "Incorrect VF token provided for device")
            raise SysfsError(errno.EACCES)
    elif dev.vf_token is not None:
        tok = dev.vf_token
        if tok.users:
            # the PF's VFs are in use: its user must prove it collaborates with theirs
            if token is None:
                _info(m, dev, "VF token required to access device")
                raise SysfsError(errno.EACCES)
            if token != tok.uuid:
                _info(m, dev, "Incorrect VF token provided for device")
                raise SysfsError(errno.EACCES)
        elif token is not None:
            tok.uuid = token                    # no VF in use: the PF's user sets the token
    elif token is not None:
        _info(m, dev, "VF token incorrectly provided, not a PF or VF")
        raise SysfsError(errno.EINVAL)


def _info(m, dev, text: str) -> None:
    m.kmsg.dev(dev, text, KERN_INFO)
