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
    # iommu_subsys_init printed "%s %s\n": a trailing space without a command-line
    # note (fixed in 6.5, "iommu: Suppress empty whitespaces in prints")
    iommu_print_trailing_space: bool
    # register_pasid_allocator (CONFIG_INTEL_IOMMU_SVM, removed with the virtual command
    # interface in 6.3): a warning under caching mode without scalable mode
    vtd_vcmd_pasid_warning: bool
    # the amd_iommu_v2 module's banner (Debian loads it on Intel machines too; gone in 6.7)
    amd_iommu_v2_banner: bool
    # the `Linux version` line ({release} filled in)
    banner: str
    # pci_setup_device's line ends with pci_type_str() ("PCIe Endpoint", ...) since 6.9
    pci_setup_type_str: bool = False
    # a bridge's `PCI bridge to` and window lines come from pci_setup_device (pci_read_bridge_windows,
    # 6.8 "PCI: Log bridge info when first enumerating bridge"); 6.1 prints them after the scan of
    # the bus below (pci_read_bridge_bases)
    bridge_windows_at_setup: bool = False
    # arch/x86/pci/mmconfig-shared.c: the MCFG region's lines and its /proc/iomem name ({res} its
    # range as %pR, {base}, {domain}, {bus}); 6.8 renamed MMCONFIG to ECAM ("x86/pci: Rename
    # 'MMCONFIG' to 'ECAM', use pr_fmt") and says "reserved as E820 entry"
    ecam_lines: tuple = ("PCI: MMCONFIG for domain {domain} [bus {bus}] at {res} (base {base})",
                         "PCI: MMCONFIG at {res} reserved in E820")
    ecam_name: str = "PCI MMCONFIG {domain} [bus {bus}]"
    # VT-d's static identity domain uses the reserved FLPT_DEFAULT_DID (1) in legacy mode
    # (6.12, "iommu/vt-d: Reserve a static domain ID"); 6.1 gives it a domain id of its own
    identity_flpt_did: bool = True
    # VFIO_GROUP_SET_CONTAINER with a fd that is no container: EBADFD since the group path
    # also takes iommufd (6.2); 6.1's vfio_group_set_container answered EINVAL
    vfio_set_container_ebadfd: bool = True
    # a VT-d paging domain's pgsize_bitmap has the superpages CAP.SLLPS has
    # (domain_super_pgsize_bitmap); 6.1 advertises SZ_4K only and builds superpages inside map_pages
    vtd_superpage_pgsizes: bool = True
    # an unmap's IOTLB and device-IOTLB descriptors go in one qi_submit_sync with one wait
    # (cache.c qi_batch, 6.12); 6.1 submits each descriptor with a wait of its own
    qi_batch: bool = True
    # the IOTLB descriptor keeps the invalidation hint (IH, leaf-only) the unmap passes:
    # qi_desc_iotlb takes it from addr bit 0 (6.12 stable); 6.1's QI_IOTLB_ADDR masks it off
    qi_iotlb_ih: bool = True
    # node_read_meminfo()'s SecPageTables line (6.3+)
    node_sec_page_tables: bool = True
    # call_driver_probe()'s line for a failed probe: dev_err "probe with driver %s failed with
    # error %d" with the device's prefix (6.10, "driver core: Log probe failure as error and
    # with device metadata"); before, pr_warn "%s: probe of %s failed with error %d"
    probe_failure_dev_err: bool = True


PROFILES = {
    "6.1": KernelProfile(
        "6.1", "6.1.0-56-amd64", False, False, False, True, True, True,
        "Linux version {release} (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) "
        "12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)",
        identity_flpt_did=False, vfio_set_container_ebadfd=False, vtd_superpage_pgsizes=False,
        qi_batch=False, qi_iotlb_ih=False, node_sec_page_tables=False, probe_failure_dev_err=False),
    "6.12": KernelProfile(
        "6.12", "6.12.117-amd64", True, True, True, False, False, False,
        "Linux version {release} (debian-kernel@lists.debian.org) (x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) "
        "14.2.0, GNU ld (GNU Binutils for Debian) 2.44) #1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1 (2026-11-16)",
        pci_setup_type_str=True, bridge_windows_at_setup=True,
        ecam_lines=("PCI: ECAM {res} (base {base}) for domain {domain} [bus {bus}]",
                    "PCI: ECAM {res} reserved as E820 entry"),
        ecam_name="PCI ECAM {domain} [bus {bus}]"),
}
