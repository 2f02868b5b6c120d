"""What differs between the kernel ABIs we show, as named facts.

Views and model code ask the profile (`machine.profile.enable_busy_when_bound`),
never the version string, so a third kernel is one more entry here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelProfile:
    version: str
    release: str
    # iommu_group `type` store: 6.1 answers EBUSY while bound and EINVAL for
    # multi-device groups; 6.12 answers EPERM while the group is owned.
    group_type_owner_eperm: bool
    # pci-sysfs enable_store: EBUSY when a driver is bound (6.12 only)
    enable_busy_when_bound: bool
    # Intel debugfs: per-device domain_translation_struct directories (6.7+)
    debugfs_per_device_domain: bool


PROFILES = {
    "6.1": KernelProfile("6.1", "6.1.0-56-amd64", False, False, False),
    "6.12": KernelProfile("6.12", "6.12.117-amd64", True, True, True),
}
